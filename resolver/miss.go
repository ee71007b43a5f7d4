package resolver

import (
	"context"
	"net/netip"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/nodedns/nodedns/cache"
	"github.com/nodedns/nodedns/dnswire"
)

// A miss is resolved by one leader goroutine. Identical misses (same cache
// key) that arrive while it runs do not start goroutines or upstream
// queries of their own: they wait on its flight as a small record (the
// packet and where to answer), and get the same answer with their own ID
// and question case. Every bound is checked without waiting; when one is
// reached the query is answered at once, stale if there is a stale entry,
// SERVFAIL otherwise, and counted in nodedns_shed_total.

// waiter is a query waiting for a flight.
type waiter struct {
	pkt   []byte // a copy of the query, owned by the waiter
	src   netip.AddrPort
	proto int
	write func([]byte)
	start time.Time
}

// flight is one resolution in progress for a cache key.
type flight struct {
	waiters []waiter     // guarded by Server.flightMu; answered ones removed
	stale   *cache.Entry // fallback answer, may be nil
	// staleServed is set once the waiters got the stale answer because the
	// upstream was slow; queries arriving later get it at once. Guarded by
	// Server.flightMu.
	staleServed bool
}

// Reasons a query was shed or answered stale; indexes into the metrics.
const (
	shedInflight   = iota // the cap on misses resolved at once
	shedWaiters           // the cap on queries waiting for a flight
	shedClientRate        // the client is over its miss budget
	shedShutdown          // the server is stopping
	numShedReasons
)

var shedReasonNames = [numShedReasons]string{"inflight", "waiters", "client_rate", "shutdown"}

// Reasons a stale answer was served, beyond the shed reasons.
const (
	staleUpstreamFailed = numShedReasons + iota // upstream failed or SERVFAILed
	staleSlowUpstream                           // no answer within StaleAnswerTimeout
	staleRecheckReason                          // upstream failed recently: not asked again yet
	numStaleReasons
)

var staleReasonNames = [numStaleReasons]string{"inflight", "waiters", "client_rate", "shutdown",
	"upstream_failed", "slow_upstream", "recheck"}

// dispatch finds or starts the resolution of a query the fast path could
// not answer. pkt is the reader's buffer: dispatch copies what it keeps.
// w.cacheable, w.key and w.stale come from the fast path. write answers the
// query later, from another goroutine; immediate, when not nil, answers it
// now, on the reader's goroutine (the UDP reader adds it to its batch of
// replies, so that shedding a storm costs no system call of its own).
func (s *Server) dispatch(w *worker, pkt []byte, src netip.AddrPort, proto int, write, immediate func([]byte)) {
	now := s.now()
	imm := waiter{pkt: pkt, src: src, proto: proto, write: write, start: now}
	if immediate != nil {
		imm.write = immediate
	}
	s.flightMu.Lock()
	if w.cacheable {
		if f, ok := s.flights[string(w.key)]; ok {
			switch {
			case f.staleServed && f.stale != nil:
				s.flightMu.Unlock()
				s.answerStale(imm, f.stale, staleSlowUpstream)
			case s.waiting < s.cfg.MaxWaiters:
				f.waiters = append(f.waiters, keepWaiter(imm, write))
				s.waiting++
				s.flightMu.Unlock()
				s.metrics.coalesced.Inc()
			default:
				s.flightMu.Unlock()
				s.shed(imm, shedWaiters, f.stale)
			}
			return
		}
	}
	reason := -1
	switch {
	case s.closing.Load():
		reason = shedShutdown
	case s.limiter != nil && !s.limiter.Allow(src.Addr()):
		reason = shedClientRate
	}
	if reason < 0 {
		select {
		case s.sem <- struct{}{}:
		default:
			reason = shedInflight
		}
	}
	if reason >= 0 {
		s.flightMu.Unlock()
		s.shed(imm, reason, w.stale)
		return
	}
	wt := keepWaiter(imm, write)
	var f *flight
	var key string
	if w.cacheable {
		key = string(w.key)
		f = &flight{waiters: []waiter{wt}, stale: w.stale}
		s.flights[key] = f
		s.waiting++
	}
	s.misses.Add(1)
	s.flightMu.Unlock()
	s.metrics.inflight.Inc()
	go s.lead(key, f, wt, false)
}

// keepWaiter makes a waiter that outlives the reader's buffer.
func keepWaiter(w waiter, write func([]byte)) waiter {
	w.pkt = append([]byte(nil), w.pkt...)
	w.write = write
	return w
}

// shed answers a query at once because a bound was reached: stale if an
// entry is there, SERVFAIL otherwise. SERVFAIL, not REFUSED or silence:
// glibc and musl both move on at once after SERVFAIL (to the next server or
// search domain), while a drop costs the client its whole timeout (5 s by
// default) and musl handles REFUSED like a timeout.
func (s *Server) shed(wt waiter, reason int, stale *cache.Entry) {
	s.metrics.shed[reason].Inc()
	if stale != nil {
		s.answerStale(wt, stale, reason)
		return
	}
	s.answerError(wt, dns.RcodeServerFailure)
}

// lead resolves one miss and answers every query waiting for it. key and f
// are empty for a query that is not cached (nothing waits with it); refresh
// is set for a prefetch, which bypasses the cache lookup.
func (s *Server) lead(key string, f *flight, first waiter, refresh bool) {
	defer func() {
		s.metrics.inflight.Dec()
		<-s.sem
		s.misses.Done()
	}()
	defer func() {
		if r := recover(); r != nil {
			s.metrics.panics.Inc()
			s.log.Error("panic while resolving", zap.Any("panic", r), zap.Stack("stack"))
			for _, wt := range s.takeWaiters(key, f, first) {
				s.answerError(wt, dns.RcodeServerFailure)
			}
		}
	}()

	req := new(dns.Msg)
	if err := req.Unpack(first.pkt); err != nil {
		for _, wt := range s.takeWaiters(key, f, first) {
			s.countAndWrite(wt, appendHeaderOnly(nil, wt.pkt, dns.RcodeFormatError), 0, dns.RcodeFormatError)
		}
		return
	}
	if rc, bad := checkRequest(req); bad {
		for _, wt := range s.takeWaiters(key, f, first) {
			s.answerError(wt, rc)
		}
		return
	}

	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.RequestTimeout)
	defer cancel()
	var staleTimer *time.Timer
	if f != nil && f.stale != nil && s.cfg.StaleAnswerTimeout > 0 {
		staleTimer = time.AfterFunc(s.cfg.StaleAnswerTimeout, func() { s.serveStaleNow(key, f) })
	}
	var rkey []byte
	if key != "" {
		rkey = []byte(key)
	}
	ans, err := s.pipeline.Resolve(ctx, &Request{Msg: req, Key: rkey, Client: first.src,
		Proto: protoNames[first.proto], Refresh: refresh})
	if staleTimer != nil {
		staleTimer.Stop()
	}
	waiters := s.takeWaiters(key, f, first)

	failed := err != nil || ans.rcode() == dns.RcodeServerFailure
	if failed && rkey != nil {
		now := s.now().UnixNano()
		if st, ok := s.cache.LookupStale(rkey, now); ok {
			st.ServeStaleUntil(now + int64(staleRecheck))
			for _, wt := range waiters {
				s.answerStale(wt, st, staleUpstreamFailed)
			}
			return
		}
	}
	if err != nil {
		if ce := s.log.Check(zap.DebugLevel, "resolving failed"); ce != nil {
			ce.Write(zap.String("qname", req.Question[0].Name), zap.Error(err))
		}
		for _, wt := range waiters {
			s.answerError(wt, dns.RcodeServerFailure)
		}
		return
	}
	for _, wt := range waiters {
		s.answer(wt, ans)
	}
}

// takeWaiters ends a flight and returns the queries still waiting for it.
func (s *Server) takeWaiters(key string, f *flight, first waiter) []waiter {
	if f == nil {
		if first.write == nil {
			return nil // a prefetch: nobody waits
		}
		return []waiter{first}
	}
	s.flightMu.Lock()
	defer s.flightMu.Unlock()
	if s.flights[key] == f {
		delete(s.flights, key)
	}
	ws := f.waiters
	f.waiters = nil
	s.waiting -= len(ws)
	return ws
}

// serveStaleNow answers the waiters of a flight whose upstream is slow with
// the stale entry; the resolution goes on and refreshes the cache.
func (s *Server) serveStaleNow(key string, f *flight) {
	s.flightMu.Lock()
	if s.flights[key] != f {
		s.flightMu.Unlock()
		return
	}
	ws := f.waiters
	f.waiters = nil
	f.staleServed = true
	s.waiting -= len(ws)
	s.flightMu.Unlock()
	f.stale.ServeStaleUntil(s.now().UnixNano() + int64(staleRecheck))
	for _, wt := range ws {
		if wt.write != nil {
			s.answerStale(wt, f.stale, staleSlowUpstream)
		}
	}
}

// answer writes ans to one waiter, shaped for its own query.
func (s *Server) answer(wt waiter, ans Answer) {
	var q dnswire.Query
	now := s.now().UnixNano()
	if ans.Entry != nil && dnswire.ParseQuery(wt.pkt, &q) == nil {
		out := ans.Entry.AppendReply(nil, wt.pkt, &q, now, s.replyOptions(&q, wt.proto))
		s.countAndWrite(wt, out, q.QType, ans.Entry.Rcode())
		return
	}
	req := new(dns.Msg)
	if err := req.Unpack(wt.pkt); err != nil {
		s.countAndWrite(wt, appendHeaderOnly(nil, wt.pkt, dns.RcodeFormatError), 0, dns.RcodeFormatError)
		return
	}
	var m *dns.Msg
	if ans.Entry != nil {
		var err error
		if m, err = ans.Entry.Msg(now); err != nil {
			s.answerError(wt, dns.RcodeServerFailure)
			return
		}
	} else {
		m = ans.Msg.Copy() // packReply changes it, and other waiters share it
	}
	s.countAndWrite(wt, s.packReply(req, m, wt.proto), req.Question[0].Qtype, m.Rcode)
}

// answerStale writes a stale entry with the stale TTL to one waiter.
func (s *Server) answerStale(wt waiter, e *cache.Entry, reason int) {
	var q dnswire.Query
	if dnswire.ParseQuery(wt.pkt, &q) != nil {
		s.answerError(wt, dns.RcodeServerFailure)
		return
	}
	s.metrics.staleServed[reason].Inc()
	opts := s.replyOptions(&q, wt.proto)
	opts.StaleTTL = staleTTL
	s.countAndWrite(wt, e.AppendReply(nil, wt.pkt, &q, s.now().UnixNano(), opts), q.QType, e.Rcode())
}

// answerError writes an error answer echoing the waiter's question.
func (s *Server) answerError(wt waiter, rcode int) {
	var q dnswire.Query
	if dnswire.ParseQuery(wt.pkt, &q) == nil {
		s.countAndWrite(wt, dnswire.AppendError(nil, wt.pkt, &q, rcode), q.QType, rcode)
		return
	}
	req := new(dns.Msg)
	if err := req.Unpack(wt.pkt); err == nil && len(req.Question) == 1 {
		s.countAndWrite(wt, s.packError(req, rcode, wt.proto), req.Question[0].Qtype, rcode)
		return
	}
	s.countAndWrite(wt, appendHeaderOnly(nil, wt.pkt, rcode), 0, rcode)
}

func (s *Server) countAndWrite(wt waiter, out []byte, qtype uint16, rcode int) {
	if wt.write == nil {
		return
	}
	wt.write(out)
	d := time.Since(wt.start)
	s.metrics.countRequest(wt.proto, qtype, rcode)
	s.metrics.duration[wt.proto].Observe(d.Seconds())
	if s.sampleQuery() {
		var q dnswire.Query
		if dnswire.ParseQuery(wt.pkt, &q) == nil {
			s.logQuery(wt.src, wt.proto, q.Name, q.QType, rcode, false, d)
		}
	}
}

// prefetch refreshes a fresh entry that is still in use shortly before it
// expires, in the background, so that hot names never miss. It runs only
// when a slot is free at once: prefetching is never worth shedding a query.
// e.BeginRefresh has been called.
func (s *Server) prefetch(e *cache.Entry) {
	name, qtype, qclass, do, cd, ok := dnswire.ParseKey(e.Key())
	if !ok {
		e.EndRefresh()
		return
	}
	qname, _, err := dns.UnpackDomainName(name, 0)
	if err != nil {
		e.EndRefresh()
		return
	}
	key := string(e.Key())
	s.flightMu.Lock()
	if _, busy := s.flights[key]; busy || s.closing.Load() {
		s.flightMu.Unlock()
		e.EndRefresh()
		return
	}
	select {
	case s.sem <- struct{}{}:
	default:
		s.flightMu.Unlock()
		e.EndRefresh()
		s.metrics.prefetchSkipped.Inc()
		return
	}
	// The flight lets queries that miss while the prefetch runs wait for it.
	f := &flight{}
	s.flights[key] = f
	s.misses.Add(1)
	s.flightMu.Unlock()
	s.metrics.inflight.Inc()
	s.metrics.prefetches.Inc()

	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.Question[0].Qclass = qclass
	m.CheckingDisabled = cd
	if do {
		m.SetEdns0(s.cfg.MaxUDPSize, true)
	}
	pkt, err := m.Pack()
	if err != nil {
		s.takeWaiters(key, f, waiter{})
		e.EndRefresh()
		s.metrics.inflight.Dec()
		<-s.sem
		s.misses.Done()
		return
	}
	go func() {
		defer e.EndRefresh()
		s.lead(key, f, waiter{pkt: pkt, start: s.now()}, true)
	}()
}
