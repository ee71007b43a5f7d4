package resolver

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/nodedns/nodedns/cache"
	"github.com/nodedns/nodedns/dnswire"
)

// What the readers (udp_linux.go, udp_other.go, tcp.go) share around each
// query: the worker whose buffers a reader reuses, what the fast path
// tells the reader to do (action), the query log, and the recovery that
// answers a query after a panic.

// worker holds the buffers one reader goroutine reuses for every packet, so
// that answering a cache hit allocates nothing.
type worker struct {
	s   *Server
	q   dnswire.Query
	key []byte
	out []byte
	// After fast returned actMiss: cacheable says key is the query's cache
	// key; stale is an expired entry to fall back on, or nil.
	cacheable bool
	stale     *cache.Entry
	// now is the reader's clock for the packet or batch in hand: read
	// once per batch, not per query, as reading it costs as much as a
	// third of a hit. hits counts the hits answered since then, whose
	// durations observeHits records.
	now  time.Time
	hits int
}

// start reads the clock for the next packet or batch.
func (w *worker) start() { w.now = w.s.now() }

// observeHits records the duration of the hits answered since start: each
// from start to now, the time it spent in its batch included.
func (w *worker) observeHits(proto int) {
	if w.hits == 0 {
		return
	}
	d := w.s.now().Sub(w.now).Seconds()
	h := w.s.metrics.duration[proto]
	for range w.hits {
		h.Observe(d)
	}
	w.hits = 0
}

func (s *Server) newWorker(outCap int) *worker {
	return &worker{
		s:   s,
		key: make([]byte, 0, dnswire.MaxKeyLen),
		out: make([]byte, 0, outCap),
	}
}

// action says what the reader must do with a packet after the fast path.
type action int

const (
	actDrop  action = iota // no answer: unreadable, a response, ...
	actReply               // the returned bytes are the answer
	actMiss                // hand the packet to dispatch
)

// sampleQuery decides whether this query goes to the query log.
func (s *Server) sampleQuery() bool {
	p := math.Float64frombits(s.queryLogSample.Load())
	return p > 0 && rand.Float64() < p
}

func (s *Server) logQuery(src netip.AddrPort, proto int, name []byte, qtype uint16, rcode int, hit bool, d time.Duration) {
	qname, _, err := dns.UnpackDomainName(name, 0)
	if err != nil {
		qname = "?"
	}
	s.log.Info("query",
		zap.Stringer("client", src), zap.String("proto", protoNames[proto]),
		zap.String("qname", qname), zap.String("qtype", dns.TypeToString[qtype]),
		zap.String("rcode", rcodeName(rcode)), zap.Bool("cache_hit", hit), zap.Duration("duration", d))
}

// recoverQuery records a panic while a reader handled one query, and
// answers the query SERVFAIL; the reader goes on with the next one. to is
// the replyTo the query was dispatched with: the SERVFAIL goes through it,
// and is not written when something answered the query first. When the
// panic came before the query was dispatched, to is nil: nothing else
// holds the query, and direct writes the answer (a nil answer when not
// even the header can be read).
func (s *Server) recoverQuery(p any, pkt []byte, to *replyTo, direct func([]byte)) {
	s.metrics.panics.Inc()
	s.log.Error("panic while handling a query; answered SERVFAIL", zap.Any("panic", p), zap.Stack("stack"))
	out := s.servfailFor(pkt)
	if to != nil {
		to.send(out)
		return
	}
	direct(out)
}

// servfailFor is a SERVFAIL answer to pkt, echoing its question when it
// can be read; nil when not even the header can.
func (s *Server) servfailFor(pkt []byte) []byte {
	q, ok := queryOf(pkt)
	if !ok {
		return nil
	}
	return s.appendError(nil, &q, dns.RcodeServerFailure)
}

// frame prefixes a TCP message with its length (RFC 1035 section 4.2.2).
func frame(b []byte) []byte {
	out := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(out, uint16(len(b)))
	copy(out[2:], b)
	return out
}
