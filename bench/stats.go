package bench

import (
	"encoding/binary"
	"sync/atomic"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, 3 significant digits, up to
// histMaxUs; larger values are clamped (and still count for Max).
const histMaxUs = 3_600_000_000 // one hour

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, histMaxUs, 3) }

func recordUs(h *hdrhistogram.Histogram, ns int64) {
	us := ns / 1000
	if us < 1 {
		us = 1 // below resolution; 0 would be out of the [1, max] range
	}
	if us > histMaxUs {
		us = histMaxUs
	}
	_ = h.RecordValue(us)
}

// replyStats is owned by one goroutine that receives replies; merged after
// it has exited.
type replyStats struct {
	answered   uint64
	rcodes     [16]uint64
	nodata     uint64 // NOERROR with an empty answer section
	truncated  uint64 // TC bit set
	late       uint64 // reply to a query already counted lost
	unexpected uint64 // reply with an ID not in flight
	mismatched uint64 // ID in flight but a different question
	garbage    uint64 // not a DNS reply
	recvErrors uint64
	lastNs     int64 // arrival time of the last measured reply
	hist       *hdrhistogram.Histogram
	_          [64]byte // keep the next worker's hot fields off this cache line
}

func newReplyStats() *replyStats { return &replyStats{hist: newHist()} }

// answer counts a matched reply msg (at least a header) that arrived at now
// with latency ns.
func (s *replyStats) answer(msg []byte, now, ns int64) {
	s.answered++
	s.lastNs = now
	rc := msg[3] & 0x0F
	s.rcodes[rc]++
	if rc == 0 && binary.BigEndian.Uint16(msg[6:]) == 0 {
		s.nodata++
	}
	if msg[2]&flagTC != 0 {
		s.truncated++
	}
	recordUs(s.hist, ns)
}

func (s *replyStats) merge(o *replyStats) {
	s.answered += o.answered
	for i := range s.rcodes {
		s.rcodes[i] += o.rcodes[i]
	}
	s.nodata += o.nodata
	s.truncated += o.truncated
	s.late += o.late
	s.unexpected += o.unexpected
	s.mismatched += o.mismatched
	s.garbage += o.garbage
	s.recvErrors += o.recvErrors
	s.lastNs = max(s.lastNs, o.lastNs)
	s.hist.Merge(o.hist)
}

// sendStats is owned by one sending goroutine.
type sendStats struct {
	sent       uint64 // measured queries put on the wire (or that failed to be)
	lost       uint64 // measured queries not answered within the timeout
	sendErrors uint64 // sends that failed (counted sent and lost)
	skipped    uint64 // open loop: not sent, no free ID (never counted sent)
	resent     uint64 // TCP: re-sent over a new connection
	conns      uint64 // TCP connections opened
	lastNs     int64  // time of the last measured send
	maxLagNs   int64  // open loop: worst actual-minus-intended send time
	lag        *hdrhistogram.Histogram
	_          [64]byte
}

func (s *sendStats) merge(o *sendStats) {
	s.sent += o.sent
	s.lost += o.lost
	s.sendErrors += o.sendErrors
	s.skipped += o.skipped
	s.resent += o.resent
	s.conns += o.conns
	s.lastNs = max(s.lastNs, o.lastNs)
	s.maxLagNs = max(s.maxLagNs, o.maxLagNs)
	if s.lag != nil && o.lag != nil {
		s.lag.Merge(o.lag)
	}
}

// progress counters, read by the progress reporter while the run goes on.
type progress struct {
	sent     atomic.Uint64
	answered atomic.Uint64
	lost     atomic.Uint64
	_        [40]byte
}
