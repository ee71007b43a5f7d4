package bench

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Latency summarises a latency distribution, in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Report is the result of a run. Counts cover the measured part of the run
// (after Warmup). Invariant once a run has finished: Sent == Answered + Lost.
type Report struct {
	Server      string  `json:"server"`
	Transport   string  `json:"transport"` // "udp" or "tcp"
	Mode        string  `json:"mode"`      // "open", "closed" or "ndots"
	TargetQPS   float64 `json:"target_qps,omitempty"`
	Concurrency int     `json:"concurrency,omitempty"`
	Sockets     int     `json:"sockets"`

	// Duration is the measured time, from the end of the warmup to the last
	// send or measured reply, whichever is later (not the wait for lost
	// queries). Wall is the whole run including warmup and that wait.
	Duration float64 `json:"duration_s"`
	Wall     float64 `json:"wall_s"`
	QPS      float64 `json:"qps"`      // answered queries per second of Duration
	SendQPS  float64 `json:"send_qps"` // sent queries per second of Duration

	Sent     uint64            `json:"sent"`
	Answered uint64            `json:"answered"`
	Lost     uint64            `json:"lost"`
	Rcodes   map[string]uint64 `json:"rcodes"`
	NoData   uint64            `json:"nodata"`    // NOERROR without answers
	TC       uint64            `json:"truncated"` // replies with the TC bit

	Late       uint64 `json:"late"`        // replies after the query was counted lost
	Unexpected uint64 `json:"unexpected"`  // replies with an ID not in flight
	Mismatched uint64 `json:"mismatched"`  // ID in flight, question different
	Garbage    uint64 `json:"garbage"`     // not a DNS reply
	SendErrors uint64 `json:"send_errors"` // failed sends (counted sent and lost)
	RecvErrors uint64 `json:"recv_errors"`
	// Open loop: Skipped queries found no free ID; Unsent ones were due
	// before the end but the generator had fallen behind. Neither is sent.
	Skipped uint64 `json:"skipped"`
	Unsent  uint64 `json:"unsent"`
	// TCP: connections opened, and queries re-sent after a connection
	// closed under them (counted once in Sent).
	Connections uint64 `json:"connections,omitempty"`
	Resent      uint64 `json:"resent,omitempty"`

	Latency Latency `json:"latency_ms"`
	// SendLag (open loop) is how late queries left against their schedule;
	// it is included in Latency.
	SendLag *Latency `json:"send_lag_ms,omitempty"`

	Lookups *LookupReport `json:"lookups,omitempty"` // ndots mode

	// Curve is the latency distribution at CurvePercentiles (Config.Curve).
	Curve []CurvePoint `json:"curve,omitempty"`
}

// CurvePoint is the latency (ms) at a percentile of a distribution.
type CurvePoint struct {
	Percentile float64 `json:"p"`
	Ms         float64 `json:"ms"`
}

// CurvePercentiles are the percentiles of Report.Curve: dense in the tail,
// where servers differ.
var CurvePercentiles = []float64{0, 10, 25, 50, 75, 90, 95, 98, 99, 99.5, 99.8, 99.9, 99.95, 99.99, 100}

func curveOf(h *hdrhistogram.Histogram) []CurvePoint {
	if h.TotalCount() == 0 {
		return nil
	}
	out := make([]CurvePoint, 0, len(CurvePercentiles))
	for _, p := range CurvePercentiles {
		var us int64
		switch p {
		case 0:
			us = h.Min()
		case 100:
			us = h.Max()
		default:
			us = h.ValueAtQuantile(p)
		}
		out = append(out, CurvePoint{Percentile: p, Ms: float64(us) / 1000})
	}
	return out
}

// LookupReport describes ndots-mode lookups (each one or more queries).
type LookupReport struct {
	Lookups   uint64  `json:"lookups"`
	Found     uint64  `json:"found"`     // a candidate had an answer
	NotFound  uint64  `json:"not_found"` // every candidate NXDOMAIN/NODATA/SERVFAIL
	Failed    uint64  `json:"failed"`    // timeout or another error stopped it
	PerSecond float64 `json:"per_second"`
	// QueriesPerLookup is queries sent per completed lookup.
	QueriesPerLookup float64      `json:"queries_per_lookup"`
	Latency          Latency      `json:"latency_ms"`
	Curve            []CurvePoint `json:"curve,omitempty"`
}

func latencyOf(h *hdrhistogram.Histogram, maxNs int64) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	l := Latency{
		P50:  ms(h.ValueAtQuantile(50)),
		P90:  ms(h.ValueAtQuantile(90)),
		P99:  ms(h.ValueAtQuantile(99)),
		P999: ms(h.ValueAtQuantile(99.9)),
		Max:  ms(h.Max()),
		Mean: h.Mean() / 1000,
	}
	if maxNs > 0 {
		l.Max = float64(maxNs) / 1e6
	}
	return l
}

func newReport(cfg *Config, sockets int, ss *sendStats, rs *replyStats, wall time.Duration) *Report {
	r := &Report{
		Server:      cfg.Server,
		Transport:   "udp",
		Mode:        "closed",
		TargetQPS:   cfg.QPS,
		Concurrency: cfg.Concurrency,
		Sockets:     sockets,
		Wall:        wall.Seconds(),
		Sent:        ss.sent,
		Answered:    rs.answered,
		Lost:        ss.lost,
		Rcodes:      map[string]uint64{},
		NoData:      rs.nodata,
		TC:          rs.truncated,
		Late:        rs.late,
		Unexpected:  rs.unexpected,
		Mismatched:  rs.mismatched,
		Garbage:     rs.garbage,
		SendErrors:  ss.sendErrors,
		RecvErrors:  rs.recvErrors,
		Skipped:     ss.skipped,
		Connections: ss.conns,
		Resent:      ss.resent,
		Latency:     latencyOf(rs.hist, 0),
	}
	if cfg.Curve {
		r.Curve = curveOf(rs.hist)
	}
	if cfg.TCP {
		r.Transport = "tcp"
	}
	if cfg.QPS > 0 {
		r.Mode = "open"
	}
	for rc, n := range rs.rcodes {
		if n > 0 {
			r.Rcodes[rcodeName(rc)] = n
		}
	}
	end := max(ss.lastNs, rs.lastNs)
	if d := time.Duration(end) - cfg.Warmup; d > 0 {
		r.Duration = d.Seconds()
		r.QPS = float64(r.Answered) / r.Duration
		r.SendQPS = float64(r.Sent) / r.Duration
	}
	return r
}

// WriteText writes a human-readable report.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	pct := func(n uint64) string {
		if r.Sent == 0 {
			return ""
		}
		return fmt.Sprintf(" (%.3f%%)", 100*float64(n)/float64(r.Sent))
	}
	fmt.Fprintf(&b, "%s %s loop against %s", strings.ToUpper(r.Transport), r.Mode, r.Server)
	switch {
	case r.Mode == "open":
		fmt.Fprintf(&b, ", target %.0f qps", r.TargetQPS)
	case r.Mode == "ndots":
		fmt.Fprintf(&b, ", %d concurrent lookups", r.Concurrency)
	default:
		fmt.Fprintf(&b, ", %d outstanding", r.Concurrency)
	}
	if r.Mode != "ndots" {
		fmt.Fprintf(&b, ", %d %s", r.Sockets, map[string]string{"udp": "sockets", "tcp": "connections"}[r.Transport])
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "  duration     %.3f s (wall %.3f s)\n", r.Duration, r.Wall)
	fmt.Fprintf(&b, "  qps          %.1f answered/s (sent %.1f/s)\n", r.QPS, r.SendQPS)
	fmt.Fprintf(&b, "  sent         %d\n", r.Sent)
	fmt.Fprintf(&b, "  answered     %d%s\n", r.Answered, pct(r.Answered))
	fmt.Fprintf(&b, "  lost         %d%s\n", r.Lost, pct(r.Lost))
	b.WriteString("  rcodes      ")
	names := make([]string, 0, len(r.Rcodes))
	for k := range r.Rcodes {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return r.Rcodes[names[i]] > r.Rcodes[names[j]] })
	for _, k := range names {
		fmt.Fprintf(&b, " %s %d%s", k, r.Rcodes[k], pct(r.Rcodes[k]))
	}
	if len(names) == 0 {
		b.WriteString(" -")
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "  nodata       %d   truncated %d\n", r.NoData, r.TC)
	if n := r.Late + r.Unexpected + r.Mismatched + r.Garbage + r.SendErrors + r.RecvErrors + r.Skipped + r.Unsent; n > 0 {
		fmt.Fprintf(&b, "  anomalies    late %d, unexpected ID %d, mismatched %d, garbage %d, send errors %d, recv errors %d, skipped %d, unsent %d\n",
			r.Late, r.Unexpected, r.Mismatched, r.Garbage, r.SendErrors, r.RecvErrors, r.Skipped, r.Unsent)
	}
	if r.Transport == "tcp" && r.Mode != "ndots" {
		fmt.Fprintf(&b, "  connections  %d opened, %d queries re-sent\n", r.Connections, r.Resent)
	}
	writeLat := func(label string, l Latency) {
		fmt.Fprintf(&b, "  %-12s p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f ms\n",
			label, l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean)
	}
	writeLat("latency", r.Latency)
	if r.SendLag != nil {
		writeLat("send lag", *r.SendLag)
	}
	if l := r.Lookups; l != nil {
		fmt.Fprintf(&b, "  lookups      %d (%.1f/s): found %d, not found %d, failed %d; %.2f queries/lookup\n",
			l.Lookups, l.PerSecond, l.Found, l.NotFound, l.Failed, l.QueriesPerLookup)
		writeLat("lookup lat.", l.Latency)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
