package resolver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/nodedns/nodedns/cache"
	"github.com/nodedns/nodedns/dnswire"
)

// Following a miss. Every decision about a query that a fresh cache entry
// cannot answer is taken in this file, in the order the query meets them;
// what the decisions act on lives in files named for what it holds: the
// flight table (flights.go), the fair accounting of slots and room to wait
// (fair.go), the sweeper (sweep.go), the checks and compact copies of
// queries (query.go), the stages (pipeline.go), search walks (walk.go),
// and the answers, each written once through its query's replyTo
// (answer.go).
//
//  1. The cache, on the reader (fast): a fresh entry is the answer, and a
//     hot one near its end starts a prefetch in the background; a stale
//     one is the answer while its name is in its recheck time (a refresh
//     failed lately), and otherwise the fallback of the miss it becomes.
//  2. Coalescing (dispatch): a miss for a key that a flight resolves
//     already waits for that flight, before anything else is done with it.
//  3. The query (dispatch): unpacked and checked (checkRequest); one of
//     our own loop probes that came back is shed; the first query of a
//     search walk starts the walk; the local stages answer what they can,
//     on the reader, and what they answer is never shed.
//  4. The gate (forward): a query whose upstreams are known to be down, or
//     to loop, and every query while the server stops, is shed on the
//     reader without taking a slot.
//  5. Admission (admit, join): the query starts a flight on a free slot;
//     with every slot taken it is answered stale when it can be, and
//     otherwise waits in its client's queue while there is room to wait;
//     with no room it is shed, or pushes out the newest waiting query of
//     the client that holds the most.
//  6. A flight (lead, run): one upstream resolution on a leader goroutine,
//     within the request timeout; the stale answer goes to its waiters
//     when the upstream is slow or fails, and a SERVFAIL never replaces an
//     entry still good to serve (keepsOnFailure); a leader that finishes
//     takes the next queued flight of the next client in turn (handOff).
//  7. Waiting too long (expireQueued, every 10 ms from the sweeper) and
//     stopping (dropQueued): the query is shed.
//  8. Prefetch (prefetch): started by a hit in step 1, and only while the
//     forward stage is idle.
//
// Every bound is checked without waiting. A query that is shed is answered
// at once, stale if there is a stale entry, SERVFAIL otherwise, and
// counted in nodedns_shed_total.

// staleTTL is the TTL of a stale answer (RFC 8767 section 4 suggests 30 s):
// short, so clients come back soon for a fresh one.
const staleTTL = 30

// staleRecheck is how long a stale entry is served without asking upstream
// again after a refresh failed or was too slow (RFC 8767 section 5, the
// failure recheck timer), so that a dead upstream costs each name one slow
// resolution every 30 s, not one per query.
const staleRecheck = 30 * time.Second

// fast tries to answer pkt without leaving the reader goroutine: a cache
// hit, a stale answer while upstreams are known to fail, or an error answer
// that needs no lookup. The reply is appended to prefix (TCP passes two
// bytes for the length). A hit is the hot path: it allocates nothing
// (BenchmarkFastPathHit). The caller reads the clock (w.start) before and
// records the hits' durations (w.observeHits) after, once per batch.
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
	nowNano := w.now.UnixNano()
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
	w.hits++
	if s.sampleQuery() {
		s.logQuery(src, proto, q.Name, q.QType, e.Rcode(), true, s.now().Sub(w.now))
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

// miss is a query on its way through the decisions below: the query as
// its reader holds it (pkt is the reader's buffer: what outlives dispatch
// is copied), its cache key (nil for a query that is not cached) and the
// expired entry the fast path found for it, if any.
type miss struct {
	waiter
	key   []byte
	stale *cache.Entry
	req   *dns.Msg // pkt unpacked, when dispatch has it
}

// dispatch answers a query the fast path could not. w.cacheable, w.key and
// w.stale come from the fast path. to is where the answer goes, from the
// reader's goroutine or, once the query waits, from another.
func (s *Server) dispatch(w *worker, pkt []byte, src netip.AddrPort, proto int, to *replyTo) {
	// Real time, not s.now (the cache's clock): deadlines and queue waits
	// are timers.
	m := &miss{waiter: waiter{pkt: pkt, src: src, proto: proto, to: to, start: time.Now()}, stale: w.stale}
	if w.cacheable {
		m.key = w.key
	}
	imm := &m.waiter
	// A client whose search walk nodedns finishes must not join a plain
	// query's flight before startWalk has seen its query.
	walks := w.cacheable && s.walks(src)
	if w.cacheable && !walks {
		if v, joined := s.joinExisting(m); joined {
			s.carryOut(imm, v)
			return
		}
	}

	req := new(dns.Msg)
	if err := req.Unpack(pkt); err != nil {
		s.answerError(imm, dns.RcodeFormatError)
		return
	}
	if rc, bad := checkRequest(req); bad {
		s.answerError(imm, rc)
		return
	}
	qname := req.Question[0].Name
	if s.checker != nil && s.checker.IsLoopProbe(qname, src.Addr()) {
		s.log.Warn("forwarding loop: one of our own loop probes came back", zap.String("qname", qname), zap.Stringer("from", src))
		s.shed(imm, shedLoop, nil)
		return
	}
	if walks && s.startWalk(imm, req) {
		return
	}
	ans, err := s.local.Resolve(s.ctx, &Request{Msg: req, Key: m.key, Client: src, Proto: protoNames[proto]})
	if err != nil {
		if ce := s.log.Check(zap.DebugLevel, "answering locally failed"); ce != nil {
			ce.Write(zap.String("qname", qname), zap.Error(err))
		}
		s.answerError(imm, dns.RcodeServerFailure)
		return
	}
	if !ans.Forward {
		s.answer(imm, ans)
		return
	}
	m.req = req
	s.forward(m, qname)
}

// forward sends a query that must leave the node to admission, unless
// forwarding it would fail at once: every upstream of its group is down,
// or the group forwards in a loop (ForwardChecker), or the server is
// stopping. Such a query is shed on the reader, within its batch, without
// taking a slot.
func (s *Server) forward(m *miss, qname string) {
	if s.checker != nil {
		if err := s.checker.Check(qname); err != nil {
			reason := shedUpstreamDown
			if errors.Is(err, ErrLoop) {
				reason = shedLoop
			}
			s.shed(&m.waiter, reason, m.stale)
			return
		}
	}
	if s.closing.Load() {
		s.shed(&m.waiter, shedShutdown, m.stale)
		return
	}
	s.carryOut(&m.waiter, s.admit(m))
}

// forwardStep sends one name of a search walk (walk.go) upstream as a
// query of the client's own: with the stale entry the fast path would have
// found for it, through the same checks and admission, so that it is
// coalesced, queued and shed as the client's other queries are. It is
// asked over TCP, so that the answer is never cut to a UDP size, and is
// not counted as a client's query; its answer goes to to.
func (s *Server) forwardStep(client *waiter, name string, pkt, key []byte, to *replyTo) {
	m := &miss{waiter: waiter{pkt: pkt, src: client.src, proto: protoTCP, to: to, start: client.start, internal: true}, key: key}
	if e, ok := s.cache.LookupStale(key, s.now().UnixNano()); ok && !e.InStaleRecheck(s.now().UnixNano()) {
		m.stale = e
	}
	s.forward(m, name)
}

// verdict is what admission decided for a query, under flightMu;
// carryOut acts on it once the lock is released.
type verdict struct {
	act    verdictAct
	reason int          // why a query is shed or answered stale
	stale  *cache.Entry // the stale answer, when there is one
	lead   *flight      // a flight to run on a new leader goroutine
	// victim is another client's waiting query pushed out to make room,
	// to be answered at once.
	victim *waiter
}

type verdictAct int

const (
	vKept      verdictAct = iota // waits in a flight, which answers it
	vCoalesced                   // waits in a flight started by an identical query
	vQueued                      // waits in its flight, queued for a slot
	vStale                       // answered now, stale
	vShed                        // answered now, stale or SERVFAIL, and counted as shed
)

// joinExisting adds a query to the flight for its key, if there is one.
func (s *Server) joinExisting(m *miss) (v verdict, joined bool) {
	s.flightMu.Lock()
	defer s.unlockFlights()
	fault("join")
	f, ok := s.flights[string(m.key)]
	if !ok {
		return verdict{}, false
	}
	return s.join(f, &m.waiter), true
}

// admit decides what becomes of a query that must go upstream. It joins
// the flight for its key when another reader started one since dispatch
// looked; it starts a flight on a free slot; with every slot taken, it is
// answered stale at once when it has a stale entry, and otherwise waits
// for a slot in its client's queue (fair.go) when there is room to wait;
// with neither a slot nor room, it is shed. A query too large to keep
// never waits: it runs on a free slot, uncharged, or is shed.
func (s *Server) admit(m *miss) verdict {
	imm := &m.waiter
	s.flightMu.Lock()
	defer s.unlockFlights()
	fault("admit")
	if m.key != nil {
		if f, ok := s.flights[string(m.key)]; ok {
			return s.join(f, imm)
		}
	}
	f := &flight{src: imm.src, proto: imm.proto, start: imm.start, stale: m.stale}
	slot := s.fair.takeSlot(f, clientKey(imm.src))
	if !slot && m.stale != nil {
		// Every slot is taken: a stale answer now beats waiting for one
		// (RFC 8767); a later query refreshes the entry.
		return verdict{act: vStale, stale: m.stale, reason: staleBusy}
	}
	if m.key != nil {
		f.key = string(m.key)
	}
	kw, kept := keepWaiter(imm)
	var victim *waiter
	charged := false
	if kept {
		victim, charged = s.fair.charge(kw, clientKey(imm.src))
	}
	switch {
	case charged:
		f.query = kw.pkt
		s.addWaiter(f, kw)
		if victim != nil {
			s.pushOut(victim)
		}
	case slot:
		// No room to wait (or too large to), but nothing to wait for: it
		// runs at once, uncharged, its copy bounded by the slots.
		if !kept {
			kw.pkt = bytes.Clone(imm.pkt)
		}
		f.query = kw.pkt
		s.addWaiter(f, kw)
	default:
		return verdict{act: vShed, reason: shedWaiters}
	}
	if slot && len(f.query) == len(imm.pkt) {
		f.req = m.req // the same bytes: nothing was compacted away
	}
	if f.key != "" {
		s.flights[f.key] = f
	}
	if slot {
		s.misses.Add(1)
		return verdict{act: vKept, lead: f, victim: victim}
	}
	s.fair.enqueue(f, clientKey(imm.src), imm.start)
	return verdict{act: vQueued, victim: victim}
}

// join makes a query wait for a flight for the same key; flightMu is
// held. Once the flight's waiters got the stale answer because the
// upstream is slow, later queries get it at once. Otherwise the query
// waits when there is room (charge may push out the newest waiting query
// of the client that holds the most), and is shed when there is none.
func (s *Server) join(f *flight, imm *waiter) verdict {
	if f.staleServed && f.stale != nil {
		return verdict{act: vStale, stale: f.stale, reason: staleSlowUpstream}
	}
	kw, kept := keepWaiter(imm)
	if !kept {
		return verdict{act: vShed, reason: shedWaiters, stale: f.stale}
	}
	victim, ok := s.fair.charge(kw, clientKey(imm.src))
	if !ok {
		return verdict{act: vShed, reason: shedWaiters, stale: f.stale}
	}
	s.addWaiter(f, kw)
	if victim != nil {
		s.pushOut(victim)
	}
	return verdict{act: vCoalesced, victim: victim}
}

// carryOut acts on v for the query imm.
func (s *Server) carryOut(imm *waiter, v verdict) {
	switch v.act {
	case vStale:
		s.answerStale(imm, v.stale, v.reason)
	case vShed:
		s.shed(imm, v.reason, v.stale)
	case vCoalesced:
		s.metrics.coalesced.Inc()
	case vQueued:
		s.metrics.queued.Inc()
	}
	if v.lead != nil {
		go s.lead(v.lead)
	}
	if v.victim != nil {
		s.shed(v.victim, shedPushedOut, v.victim.flight.stale)
	}
}

// shed answers a query at once because it cannot be kept or forwarded:
// stale if an entry is there, SERVFAIL otherwise. SERVFAIL, not REFUSED or
// silence: glibc and musl both move on at once after SERVFAIL (to the next
// server or search domain), while a drop costs the client its whole timeout
// (5 s by default) and musl handles REFUSED like a timeout.
func (s *Server) shed(wt *waiter, reason int, stale *cache.Entry) {
	s.metrics.shed[reason].Inc()
	s.shedTally.add(clientKey(wt.src))
	if stale != nil {
		s.answerStale(wt, stale, reason)
		return
	}
	s.answerError(wt, dns.RcodeServerFailure)
}

// lead runs flights on one slot: f, then every queued flight the fair
// order hands the slot to, until nobody waits for one.
func (s *Server) lead(f *flight) {
	defer s.misses.Done()
	for f != nil {
		s.run(f)
		f = s.handOff(f)
	}
}

// handOff passes the slot of a finished flight to the next queued flight,
// or frees it.
func (s *Server) handOff(finished *flight) *flight {
	s.flightMu.Lock()
	defer s.unlockFlights()
	fault("handOff")
	next := s.fair.next(finished)
	// At shutdown, queued flights were answered by Shutdown: nothing new
	// starts.
	for next != nil && s.closing.Load() {
		next = s.fair.next(next)
	}
	return next
}

// run resolves one flight and answers every query waiting for it.
func (s *Server) run(f *flight) {
	s.metrics.inflight.Inc()
	defer s.metrics.inflight.Dec()
	if f.refreshOf != nil {
		defer f.refreshOf.EndRefresh()
	}
	defer func() {
		if r := recover(); r != nil {
			s.metrics.panics.Inc()
			s.log.Error("panic while resolving", zap.Any("panic", r), zap.Stack("stack"))
			for _, wt := range s.takeWaiters(f) {
				s.answerError(wt, dns.RcodeServerFailure)
			}
		}
	}()

	tun := s.tun.Load()
	ctx, cancel := context.WithDeadline(s.ctx, f.start.Add(tun.requestTimeout))
	defer cancel()
	if f.stale != nil && tun.staleAnswerTimeout > 0 {
		wait := tun.staleAnswerTimeout - time.Since(f.start)
		t := time.AfterFunc(max(wait, 0), func() { s.serveStaleNow(f) })
		defer t.Stop()
	}
	var rkey []byte
	if f.key != "" {
		rkey = []byte(f.key)
	}
	req := f.req
	f.req = nil
	if req == nil {
		req = new(dns.Msg)
		if err := req.Unpack(f.query); err != nil { // unpacked once already by dispatch
			panic(fmt.Sprintf("a flight's query no longer unpacks: %v", err))
		}
	}
	ans, err := s.remote.Resolve(ctx, &Request{Msg: req, Key: rkey, Client: f.src, Proto: protoNames[f.proto]})
	if err == nil && ans.Entry == nil {
		// Not cached: one transient entry renders it for every waiter.
		var e *cache.Entry
		if e, err = s.entryOf(ans); err == nil {
			ans = Answer{Entry: e}
		}
	}
	waiters := s.takeWaiters(f)

	failed := err != nil || ans.rcode() == dns.RcodeServerFailure
	if failed && f.refreshOf != nil {
		// A failed prefetch is not retried on every hit: the entry is
		// served as it is until the recheck time (its TTL still runs).
		f.refreshOf.ServeStaleUntil(s.now().UnixNano() + int64(staleRecheck))
	}
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

// serveStaleNow answers the waiters of a flight whose upstream is slow with
// the stale entry; the resolution goes on and refreshes the cache.
func (s *Server) serveStaleNow(f *flight) {
	ws, ok := s.takeForStale(f)
	if !ok {
		return
	}
	f.stale.ServeStaleUntil(s.now().UnixNano() + int64(staleRecheck))
	for _, wt := range ws {
		s.answerStale(wt, f.stale, staleSlowUpstream)
	}
}

// keepsOnFailure reports whether the entry stored under key stays as it
// is when the upstream answers SERVFAIL: an answer still good to serve,
// fresh (a failed prefetch) or stale (RFC 8767), is not replaced by a
// failure. The store stage asks it.
func keepsOnFailure(c *cache.Cache, key []byte, now int64) bool {
	old, ok := c.Get(key)
	return ok && (old.Fresh(now) || c.StaleUsable(old, now))
}

// expireQueued answers the queued flights that waited max_queue_wait for a
// slot; the sweeper calls it.
func (s *Server) expireQueued(now time.Time, buf []*flight) []*flight {
	expired, ws := s.takeQueued("expireQueued", now, s.tun.Load().maxQueueWait, buf)
	for _, w := range ws {
		s.shed(w, shedQueueTimeout, w.flightStale())
	}
	clear(expired)
	return expired
}

// dropQueued answers every queued flight at shutdown.
func (s *Server) dropQueued() {
	_, ws := s.takeQueued("dropQueued", time.Time{}, -1, nil)
	for _, w := range ws {
		s.shed(w, shedShutdown, w.flightStale())
	}
}

// prefetch refreshes a fresh entry that is still in use shortly before it
// expires, in the background, so that hot names never miss. It runs only
// when the forward stage is idle, at most half its slots in use and no
// miss waiting for one (fair.idle): prefetching never delays a client's
// miss. e.BeginRefresh has been called.
func (s *Server) prefetch(e *cache.Entry) {
	query, ok := queryForKey(e.Key(), s.cfg.MaxUDPSize)
	if !ok {
		e.EndRefresh()
		return
	}
	f := s.startPrefetch(e, query)
	if f == nil {
		e.EndRefresh()
		s.metrics.prefetchSkipped.Inc()
		return
	}
	s.metrics.prefetches.Inc()
	go s.lead(f)
}

// startPrefetch makes the flight of a prefetch when the forward stage is
// idle and nothing resolves the name already; nil otherwise.
func (s *Server) startPrefetch(e *cache.Entry, query []byte) *flight {
	key := string(e.Key())
	s.flightMu.Lock()
	defer s.unlockFlights()
	fault("prefetch")
	if _, busy := s.flights[key]; busy || s.closing.Load() || !s.fair.idle() || !s.fair.takeBackgroundSlot() {
		return nil
	}
	// The flight lets queries that miss while the prefetch runs wait for it.
	// The entry is their stale answer: once it expires, a slow refresh
	// must not hold them past the stale answer timeout.
	f := &flight{key: key, query: query, start: time.Now(), refreshOf: e, stale: e}
	s.flights[key] = f
	s.misses.Add(1)
	return f
}
