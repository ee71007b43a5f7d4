package resolver

import (
	"context"
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

// worker holds the buffers one reader goroutine reuses for every packet, so
// that answering a cache hit allocates nothing.
type worker struct {
	s   *Server
	q   dnswire.Query
	key []byte
	out []byte
}

func (s *Server) newWorker() *worker {
	return &worker{
		s:   s,
		key: make([]byte, 0, dnswire.MaxKeyLen),
		out: make([]byte, 0, 2+dns.MaxMsgSize),
	}
}

// action says what the reader must do with a packet after the fast path.
type action int

const (
	actDrop  action = iota // no answer: unreadable, a response, ...
	actReply               // the returned bytes are the answer
	actMiss                // hand the packet to the miss pipeline
)

// fast tries to answer pkt without leaving the reader goroutine: a cache
// hit, or an error answer that needs no lookup. The reply is appended to
// prefix (TCP passes two bytes for the length).
func (w *worker) fast(pkt []byte, src netip.AddrPort, proto int, prefix []byte) ([]byte, action) {
	s := w.s
	q := &w.q
	err := dnswire.ParseQuery(pkt, q)
	switch {
	case errors.Is(err, dnswire.ErrShort):
		s.metrics.dropped.WithLabelValues("malformed").Inc()
		return nil, actDrop
	case q.Flags&dnswire.FlagQR != 0:
		// Never answer a response: that is how reflection loops start.
		s.metrics.dropped.WithLabelValues("response").Inc()
		return nil, actDrop
	case !s.allow.Load().allows(src.Addr()):
		if err != nil {
			s.metrics.dropped.WithLabelValues("refused_unparsable").Inc()
			return nil, actDrop
		}
		s.metrics.countRequest(proto, q.QType, dns.RcodeRefused)
		return dnswire.AppendError(prefix, pkt, q, dns.RcodeRefused), actReply
	case errors.Is(err, dnswire.ErrFormat):
		s.metrics.countRequest(proto, 0, dns.RcodeFormatError)
		return appendHeaderOnly(prefix, pkt, dns.RcodeFormatError), actReply
	case err != nil:
		return nil, actMiss // ErrSlowPath: the full parser decides
	}
	if !cacheable(q) {
		return nil, actMiss
	}
	w.key = dnswire.AppendKey(w.key[:0], q.Name, q.QType, q.QClass, q.DO, q.CD())
	now := s.now()
	e, ok := s.cache.Lookup(w.key, now.UnixNano())
	if !ok {
		return nil, actMiss
	}
	out := e.AppendReply(prefix, pkt, q, now.UnixNano(), s.replyOptions(q, proto))
	s.metrics.countRequest(proto, q.QType, e.Rcode())
	s.metrics.duration[proto].Observe(time.Since(now).Seconds())
	if s.sampleQuery() {
		s.logQuery(src, proto, q.Name, q.QType, e.Rcode(), true, time.Since(now))
	}
	return out, actReply
}

// cacheable reports whether a query may be answered from, and its answer
// stored in, the shared cache. Queries whose answer depends on more than the
// key (no recursion desired, a client subnet, a class other than IN) and
// transfers and ANY are forwarded untouched.
func cacheable(q *dnswire.Query) bool {
	return q.RD() && !q.ECS && q.QClass == dnswire.ClassIN &&
		q.QType != dnswire.TypeANY && q.QType != dnswire.TypeAXFR && q.QType != dnswire.TypeIXFR
}

// replyOptions is the size limit for q's reply: 65535 over TCP; over UDP
// the client's EDNS size (at least 512) capped by ours, or 512 without EDNS
// (RFC 6891 section 6.2.5).
func (s *Server) replyOptions(q *dnswire.Query, proto int) cache.ReplyOptions {
	o := cache.ReplyOptions{MaxSize: dns.MaxMsgSize, UDPSize: s.cfg.MaxUDPSize}
	if proto == protoUDP {
		o.MaxSize = 512
		if q.EDNS {
			o.MaxSize = int(min(max(q.UDPSize, 512), s.cfg.MaxUDPSize))
		}
	}
	return o
}

// appendHeaderOnly answers a packet whose question cannot be read: the
// request header with QR and rcode set and every count zero.
func appendHeaderOnly(dst, pkt []byte, rcode int) []byte {
	start := len(dst)
	dst = append(dst, pkt[:dnswire.HeaderLen]...)
	h := dst[start:]
	f := dnswire.Flags(h)
	f = f&(0xF<<11|dnswire.FlagRD|dnswire.FlagCD) | dnswire.FlagQR | uint16(rcode&0xF)
	dnswire.SetFlags(h, f)
	clear(h[4:dnswire.HeaderLen])
	return dst
}

// dispatch hands a miss to a goroutine if a slot is free, and otherwise
// answers SERVFAIL at once: a query never waits for a slot, so a slow
// upstream cannot pile up work (the lesson of resolvers that spawned a
// goroutine per query until they ran out of memory). pkt must be a copy the
// goroutine may keep; write sends the answer.
func (s *Server) dispatch(w *worker, pkt []byte, src netip.AddrPort, proto int, write func([]byte)) {
	select {
	case s.sem <- struct{}{}:
	default:
		reason := "inflight"
		if s.closing.Load() {
			reason = "shutdown"
		}
		s.metrics.shed.WithLabelValues(reason).Inc()
		var out []byte
		if dnswire.ParseQuery(pkt, &w.q) == nil {
			out = dnswire.AppendError(w.out[:0], pkt, &w.q, dns.RcodeServerFailure)
		} else {
			out = appendHeaderOnly(w.out[:0], pkt, dns.RcodeServerFailure)
		}
		s.metrics.countRequest(proto, w.q.QType, dns.RcodeServerFailure)
		write(out)
		return
	}
	s.misses.Add(1)
	s.metrics.inflight.Inc()
	go func() {
		defer func() {
			s.metrics.inflight.Dec()
			<-s.sem
			s.misses.Done()
		}()
		s.resolveMiss(pkt, src, proto, write)
	}()
}

// resolveMiss answers a query that the fast path could not: it unpacks it
// in full, checks it, runs the pipeline and writes the answer.
func (s *Server) resolveMiss(pkt []byte, src netip.AddrPort, proto int, write func([]byte)) {
	start := s.now()
	var qtype uint16
	rcode := dns.RcodeServerFailure
	defer func() {
		if r := recover(); r != nil {
			s.metrics.panics.Inc()
			s.log.Error("panic while resolving", zap.Any("panic", r), zap.Stack("stack"))
			write(appendHeaderOnly(nil, pkt, dns.RcodeServerFailure))
		}
		s.metrics.countRequest(proto, qtype, rcode)
		s.metrics.duration[proto].Observe(time.Since(start).Seconds())
	}()

	req := new(dns.Msg)
	if err := req.Unpack(pkt); err != nil {
		rcode = dns.RcodeFormatError
		write(appendHeaderOnly(nil, pkt, rcode))
		return
	}
	if len(req.Question) == 1 {
		qtype = req.Question[0].Qtype
	}
	if rc, bad := checkRequest(req); bad {
		rcode = rc
		write(s.packError(req, rc, proto))
		return
	}

	var q dnswire.Query
	var key []byte
	fastOK := dnswire.ParseQuery(pkt, &q) == nil
	if fastOK && cacheable(&q) {
		key = dnswire.AppendKey(make([]byte, 0, dnswire.MaxKeyLen), q.Name, q.QType, q.QClass, q.DO, q.CD())
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.RequestTimeout)
	defer cancel()
	protoName := protoNames[proto]
	ans, err := s.pipeline.Resolve(ctx, &Request{Msg: req, Key: key, Client: src, Proto: protoName})
	if err != nil {
		if ce := s.log.Check(zap.DebugLevel, "resolving failed"); ce != nil {
			ce.Write(zap.String("qname", req.Question[0].Name), zap.Error(err))
		}
		write(s.packError(req, dns.RcodeServerFailure, proto))
		s.maybeLogQuery(src, proto, req, rcode, start)
		return
	}
	now := s.now().UnixNano()
	var out []byte
	switch {
	case ans.Entry != nil && fastOK:
		rcode = ans.Entry.Rcode()
		out = ans.Entry.AppendReply(nil, pkt, &q, now, s.replyOptions(&q, proto))
	case ans.Entry != nil:
		m, err := ans.Entry.Msg(now)
		if err != nil {
			write(s.packError(req, dns.RcodeServerFailure, proto))
			return
		}
		rcode = m.Rcode
		out = s.packReply(req, m, proto)
	default:
		rcode = ans.Msg.Rcode
		out = s.packReply(req, ans.Msg, proto)
	}
	write(out)
	s.maybeLogQuery(src, proto, req, rcode, start)
}

// checkRequest returns the error RCODE for a query nodedns will not
// resolve, and false for a query it will.
func checkRequest(req *dns.Msg) (int, bool) {
	switch {
	case req.Opcode != dns.OpcodeQuery:
		return dns.RcodeNotImplemented, true
	case len(req.Question) != 1:
		return dns.RcodeFormatError, true
	}
	if opt := req.IsEdns0(); opt != nil && opt.Version() != 0 {
		return dns.RcodeBadVers, true // RFC 6891 section 6.1.3
	}
	switch req.Question[0].Qtype {
	case dns.TypeAXFR, dns.TypeIXFR:
		return dns.RcodeRefused, true // a cache has no zones to transfer
	}
	return 0, false
}

// packError builds an error answer to req with the question echoed.
func (s *Server) packError(req *dns.Msg, rcode int, proto int) []byte {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	return s.packReply(req, m, proto)
}

// packReply turns resp into the wire answer to req: req's ID, question and
// RD/CD bits, our OPT record instead of the upstream's, and truncated with
// TC when it does not fit the client's UDP size.
func (s *Server) packReply(req, resp *dns.Msg, proto int) []byte {
	resp.Id = req.Id
	resp.Response = true
	resp.RecursionAvailable = true
	resp.Question = req.Question
	resp.RecursionDesired = req.RecursionDesired
	resp.CheckingDisabled = req.CheckingDisabled
	extra := resp.Extra[:0]
	for _, rr := range resp.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	resp.Extra = extra
	maxSize := dns.MaxMsgSize
	if opt := req.IsEdns0(); opt != nil {
		resp.SetEdns0(s.cfg.MaxUDPSize, opt.Do())
		if proto == protoUDP {
			maxSize = int(min(max(opt.UDPSize(), 512), s.cfg.MaxUDPSize))
		}
	} else if proto == protoUDP {
		maxSize = 512
	}
	resp.Compress = true
	out, err := resp.Pack()
	if err == nil && len(out) <= maxSize {
		return out
	}
	if err == nil {
		resp.Truncate(maxSize)
		if out, err = resp.Pack(); err == nil {
			return out
		}
	}
	s.log.Warn("packing a reply failed", zap.Error(err))
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeServerFailure)
	out, _ = m.Pack()
	return out
}

func (s *Server) maybeLogQuery(src netip.AddrPort, proto int, req *dns.Msg, rcode int, start time.Time) {
	if !s.sampleQuery() {
		return
	}
	s.log.Info("query",
		zap.Stringer("client", src), zap.String("proto", protoNames[proto]),
		zap.String("qname", req.Question[0].Name), zap.String("qtype", dns.TypeToString[req.Question[0].Qtype]),
		zap.String("rcode", rcodeName(rcode)), zap.Bool("cache_hit", false), zap.Duration("duration", time.Since(start)))
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

// sampleQuery decides whether this query goes to the query log.
func (s *Server) sampleQuery() bool {
	p := math.Float64frombits(s.queryLogSample.Load())
	return p > 0 && rand.Float64() < p
}

// frame prefixes a TCP message with its length (RFC 1035 section 4.2.2).
func frame(b []byte) []byte {
	out := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(out, uint16(len(b)))
	copy(out[2:], b)
	return out
}
