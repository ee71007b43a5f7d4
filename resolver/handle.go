package resolver

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/nodedns/nodedns/cache"
	"github.com/nodedns/nodedns/dnswire"
)

// staleTTL is the TTL of a stale answer (RFC 8767 section 4 suggests 30 s):
// short, so clients come back soon for a fresh one.
const staleTTL = 30

// staleRecheck is how long a stale entry is served without asking upstream
// again after a refresh failed or was too slow (RFC 8767 section 5, the
// failure recheck timer), so that a dead upstream costs each name one slow
// resolution every 30 s, not one per query.
const staleRecheck = 30 * time.Second

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

// fast tries to answer pkt without leaving the reader goroutine: a cache
// hit, a stale answer while upstreams are known to fail, or an error answer
// that needs no lookup. The reply is appended to prefix (TCP passes two
// bytes for the length).
func (w *worker) fast(pkt []byte, src netip.AddrPort, proto int, prefix []byte) ([]byte, action) {
	s := w.s
	q := &w.q
	w.cacheable, w.stale = false, nil
	err := dnswire.ParseQuery(pkt, q)
	switch {
	case errors.Is(err, dnswire.ErrShort):
		s.metrics.droppedMalformed.Inc()
		return nil, actDrop
	case q.Flags&dnswire.FlagQR != 0:
		// Never answer a response: that is how reflection loops start.
		s.metrics.droppedResponse.Inc()
		return nil, actDrop
	case !s.allow.Load().allows(src.Addr()) && !(err == nil && s.isProbe(q, src)):
		if err != nil {
			s.metrics.droppedRefused.Inc()
			return nil, actDrop
		}
		s.metrics.countRequest(proto, q.QType, dns.RcodeRefused)
		return s.appendError(prefix, q, dns.RcodeRefused), actReply
	case errors.Is(err, dnswire.ErrFormat):
		s.metrics.countRequest(proto, 0, dns.RcodeFormatError)
		return s.appendError(prefix, &dnswire.Query{ID: q.ID, Flags: q.Flags}, dns.RcodeFormatError), actReply
	case err != nil:
		return nil, actMiss // ErrSlowPath: the full parser decides
	}
	if !cacheable(q) {
		if s.isProbe(q, src) {
			// The daemon's liveness probe (probe.go): answered here, on the
			// reader, as a hit is, whatever the allow list says.
			return s.appendError(prefix, q, dns.RcodeSuccess), actReply
		}
		return nil, actMiss
	}
	w.cacheable = true
	w.key = dnswire.AppendKey(w.key[:0], q.Name, q.QType, q.QClass, q.DO, q.CD())
	now := s.now()
	nowNano := now.UnixNano()
	e, state := s.cache.Find(w.key, nowNano)
	opts := s.replyOptions(q, proto)
	switch state {
	case cache.Miss:
		return nil, actMiss
	case cache.Stale:
		if !e.InStaleRecheck(nowNano) {
			w.stale = e
			return nil, actMiss
		}
		opts.StaleTTL = staleTTL
		s.metrics.staleServed[staleRecheckReason].Inc()
	case cache.Fresh:
		if e.Kind() == cache.KindNXDomain && s.walks(src) {
			// A client whose search walk nodedns finishes: the denial of the
			// first name it asks may be the start of one (walk.go).
			return nil, actMiss
		}
		// InStaleRecheck: a refresh failed recently; it is not retried on
		// every hit, so upstream load does not follow client load while the
		// upstream struggles.
		if hits := s.tun.Load().prefetchMinHits; hits > 0 && e.Kind() == cache.KindPositive && e.Hit() >= hits &&
			inPrefetchWindow(e, nowNano) && !e.InStaleRecheck(nowNano) && e.BeginRefresh() {
			s.prefetch(e)
		}
	}
	out := e.AppendReply(prefix, q, nowNano, opts)
	s.metrics.countRequest(proto, q.QType, e.Rcode())
	s.metrics.duration[proto].Observe(time.Since(now).Seconds())
	if s.sampleQuery() {
		s.logQuery(src, proto, q.Name, q.QType, e.Rcode(), true, time.Since(now))
	}
	return out, actReply
}

// inPrefetchWindow reports whether a fresh entry is in the last tenth of
// its TTL (at least the last second, at most the second half), when a hit
// should refresh it so that names in use never expire (after Unbound's
// prefetch). The cap matters for TTLs of a second or two: without it every
// second hit would go upstream. Only positive answers are prefetched: a
// denial that is asked for again is cheap to ask upstream once it expires,
// and refreshing the short-lived NXDOMAINs of search-list expansions would
// only add upstream queries.
func inPrefetchWindow(e *cache.Entry, now int64) bool {
	ttl := e.OrigTTL()
	window := min(max(ttl/10, time.Second), ttl/2)
	return e.TTL(now) <= window
}

// cacheable reports whether a query may be answered from, and its answer
// stored in, the shared cache. Queries whose answer depends on more than the
// key (no recursion desired, a client subnet, a class other than IN) and
// transfers and ANY are forwarded untouched.
func cacheable(q *dnswire.Query) bool {
	return q.RD() && !q.ECS && q.QClass == dnswire.ClassIN &&
		q.QType != dnswire.TypeANY && q.QType != dnswire.TypeAXFR && q.QType != dnswire.TypeIXFR
}

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
	out := s.servfailFor(nil, pkt)
	if to != nil {
		to.send(out)
		return
	}
	direct(out)
}

// servfailFor appends a SERVFAIL answer to pkt to dst, echoing its question
// when it can be read; nil when not even the header can.
func (s *Server) servfailFor(dst, pkt []byte) []byte {
	q, ok := queryOf(pkt)
	if !ok {
		return nil
	}
	return s.appendError(dst, &q, dns.RcodeServerFailure)
}

// frame prefixes a TCP message with its length (RFC 1035 section 4.2.2).
func frame(b []byte) []byte {
	out := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(out, uint16(len(b)))
	copy(out[2:], b)
	return out
}
