package resolver

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/nodedns/nodedns/cache"
)

// A query the fast path could not answer goes through dispatch, on the
// reader's goroutine: the local stages of the pipeline run there (they never
// block), and only a query that must go upstream is admitted to the forward
// stage (fair.go): it starts a flight on a free slot, or waits for one in
// its client's queue. Identical queries (same cache key) that arrive while a
// flight is queued or running do not start one of their own: they wait on
// it as a small record (their query and where to answer), and get the same
// answer with their own ID and question case. Flights run on leader
// goroutines, at most one per slot; a leader that finishes a flight takes
// the next queued one. Every bound is checked without waiting; a query that
// cannot be kept is answered at once, stale if there is a stale entry,
// SERVFAIL otherwise, and counted in nodedns_shed_total.

// waiter is a query waiting for a flight's answer.
type waiter struct {
	pkt   []byte // the query; a waiter kept past dispatch owns a copy
	src   netip.AddrPort
	proto int
	to    *replyTo // where its answer goes, shared by every waiter of the query
	start time.Time
	// internal marks a query nodedns asks itself (a step of an autopath
	// walk): it is answered like a client's, but not counted as one.
	internal bool

	flight *flight
	done   bool // answered before its flight ended (pushed out); guarded by flightMu
	// client, cnext and cprev account the waiter to its client (fair.go);
	// guarded by flightMu.
	client       *client
	cnext, cprev *waiter
}

// flight is one resolution, queued or running.
type flight struct {
	key string // cache key; "" for a query that is not cached
	// query is the query to forward, packed (a queued flight keeps no
	// unpacked message: room to wait is bounded in bytes); it is shared with
	// the first waiter, and never modified.
	query []byte
	src   netip.AddrPort
	proto int
	start time.Time // arrival of its first query (real time): its deadline counts from here
	// refreshOf is the entry a prefetch refreshes; nil for a client's miss.
	refreshOf *cache.Entry
	stale     *cache.Entry // fallback answer, may be nil

	// Guarded by Server.flightMu.
	waiters []*waiter
	live    int // waiters not yet answered
	// staleServed is set once the waiters got the stale answer because the
	// upstream was slow; queries arriving later get it at once.
	staleServed bool
	// owner, queuedAt, qnext and qprev place a flight waiting for a slot in
	// its client's queue (fair.go); owner is nil once it runs.
	owner        *client
	queuedAt     time.Time
	qnext, qprev *flight
	// slotOwner is the client a running flight's slot is charged to; nil
	// while queued, and for a prefetch.
	slotOwner *client
}

// dispatch answers a query the fast path could not. pkt is the reader's
// buffer: dispatch copies what it keeps. w.cacheable, w.key and w.stale come
// from the fast path. to is where the answer goes, from the reader's
// goroutine or, once the query waits, from another.
func (s *Server) dispatch(w *worker, pkt []byte, src netip.AddrPort, proto int, to *replyTo) {
	// Real time, not s.now (the cache's clock): deadlines and queue waits
	// are timers.
	imm := &waiter{pkt: pkt, src: src, proto: proto, to: to, start: time.Now()}
	// A client whose search walk nodedns finishes must not join a plain
	// query's flight before startWalk has seen its query.
	walks := w.cacheable && s.walks(src)
	if w.cacheable && !walks {
		if v, joined := s.joinExisting(w.key, imm); joined {
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
	var key []byte
	if w.cacheable {
		key = w.key
	}
	ans, err := s.local.Resolve(s.ctx, &Request{Msg: req, Key: key, Client: src, Proto: protoNames[proto]})
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
	s.forwardMiss(w, imm, key, qname)
}

// forwardMiss sends a query that must leave the node to admission, unless
// forwarding it would fail at once.
func (s *Server) forwardMiss(w *worker, imm *waiter, key []byte, qname string) {
	if s.checker != nil {
		if err := s.checker.Check(qname); err != nil {
			reason := shedUpstreamDown
			if isLoop(err) {
				reason = shedLoop
			}
			s.shed(imm, reason, w.stale)
			return
		}
	}
	if s.closing.Load() {
		s.shed(imm, shedShutdown, w.stale)
		return
	}
	s.admit(w, imm, key)
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

// unlockFlights ends a critical section of flightMu. A panic inside one
// leaves the flights and the fair accounting half-changed, which no later
// query can trust: the lock is released (nothing waits on it forever) and
// the process ends (crash): the node's fail-open and kubelet's restart
// carry on from there.
func (s *Server) unlockFlights() {
	if p := recover(); p != nil {
		s.flightMu.Unlock()
		s.crash(p)
		panic(p) // where crash returns (tests): the caller's recover answers
	}
	s.flightMu.Unlock()
}

// crashProcess is Server.crash outside tests: log the panic with its stack
// and exit.
func crashProcess(log *zap.Logger) func(any) {
	return func(p any) {
		log.Error("panic with the flight table locked: exiting, its state cannot be trusted", zap.Any("panic", p), zap.Stack("stack"))
		_ = log.Sync()
		os.Exit(2)
	}
}

// faultHook, when set (tests only), is called at the start of every
// critical section of flightMu with its name, to inject panics there.
var faultHook atomic.Pointer[func(site string)]

func fault(site string) {
	if h := faultHook.Load(); h != nil {
		(*h)(site)
	}
}

// joinExisting adds a query to the flight for key, if there is one.
func (s *Server) joinExisting(key []byte, imm *waiter) (v verdict, joined bool) {
	s.flightMu.Lock()
	defer s.unlockFlights()
	fault("join")
	f, ok := s.flights[string(key)]
	if !ok {
		return verdict{}, false
	}
	return s.join(f, imm), true
}

// admit starts a flight for a query that must go upstream, or queues it
// for a slot.
func (s *Server) admit(w *worker, imm *waiter, key []byte) {
	s.carryOut(imm, s.admitLocked(w, imm, key))
}

func (s *Server) admitLocked(w *worker, imm *waiter, key []byte) verdict {
	s.flightMu.Lock()
	defer s.unlockFlights()
	fault("admit")
	if key != nil {
		// Another reader may have started the flight since dispatch looked.
		if f, ok := s.flights[string(key)]; ok {
			return s.join(f, imm)
		}
	}
	f := &flight{src: imm.src, proto: imm.proto, start: imm.start, stale: w.stale}
	slot := s.fair.takeSlot(f, clientKey(imm.src))
	if !slot && w.stale != nil {
		// Every slot is taken: a stale answer now beats waiting for one
		// (RFC 8767); a later query refreshes the entry.
		return verdict{act: vStale, stale: w.stale, reason: staleBusy}
	}
	if key != nil {
		f.key = string(key)
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

// join adds a query to a flight for the same key; flightMu is held.
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

// keepWaiter makes a waiter that outlives the reader's buffer, holding a
// compact copy of the query; kept is false for a query too large to wait.
func keepWaiter(imm *waiter) (w *waiter, kept bool) {
	w = &waiter{src: imm.src, proto: imm.proto, to: imm.to, start: imm.start, internal: imm.internal}
	w.pkt, kept = compactQuery(imm.pkt)
	return w, kept
}

// addWaiter adds a charged waiter to f; flightMu is held. From here on
// the query may be answered from any goroutine: never into its reader's
// batch.
func (s *Server) addWaiter(f *flight, w *waiter) {
	w.to.now = nil
	w.flight = f
	f.waiters = append(f.waiters, w)
	f.live++
}

// pushOut takes a waiter that lost its room out of its flight; the caller
// answers it once flightMu is released. A queued flight left with nobody
// waiting is dropped: no client wants its answer any more. flightMu is held.
func (s *Server) pushOut(v *waiter) {
	v.done = true
	f := v.flight
	f.live--
	if f.live == 0 && f.owner != nil {
		s.fair.unqueue(f)
		s.forget(f)
	}
}

// forget removes f from the flights map; flightMu is held.
func (s *Server) forget(f *flight) {
	if f.key != "" && s.flights[f.key] == f {
		delete(s.flights, f.key)
	}
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
	req := new(dns.Msg)
	if err := req.Unpack(f.query); err != nil { // unpacked once already by dispatch
		panic(fmt.Sprintf("a flight's query no longer unpacks: %v", err))
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

// takeWaiters ends a flight and returns the queries still waiting for it,
// discharged from their clients.
func (s *Server) takeWaiters(f *flight) []*waiter {
	s.flightMu.Lock()
	defer s.unlockFlights()
	fault("takeWaiters")
	s.forget(f)
	return s.takeLive(f)
}

// takeLive removes and discharges f's waiters not yet answered; flightMu
// is held.
func (s *Server) takeLive(f *flight) []*waiter {
	ws := f.waiters[:0]
	for _, w := range f.waiters {
		if !w.done {
			w.done = true
			s.fair.discharge(w)
			ws = append(ws, w)
		}
	}
	f.waiters, f.live = nil, 0
	return ws
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

// takeForStale takes the waiters of a flight still running, to answer
// them stale, and marks it so that later queries get the stale answer at
// once.
func (s *Server) takeForStale(f *flight) ([]*waiter, bool) {
	s.flightMu.Lock()
	defer s.unlockFlights()
	fault("serveStaleNow")
	if f.key == "" || s.flights[f.key] != f {
		return nil, false
	}
	ws := s.takeLive(f)
	f.staleServed = true
	return ws, true
}

// takeQueued removes the queued flights that waited maxWait at now (every
// one when maxWait is negative) and returns their waiters.
func (s *Server) takeQueued(site string, now time.Time, maxWait time.Duration, buf []*flight) ([]*flight, []*waiter) {
	s.flightMu.Lock()
	defer s.unlockFlights()
	fault(site)
	expired := s.fair.expired(now, maxWait, buf[:0])
	var ws []*waiter
	for _, f := range expired {
		s.forget(f)
		ws = append(ws, s.takeLive(f)...)
	}
	return expired, ws
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

// flightStale is the stale entry of the waiter's flight, if any. Waiters
// taken from a flight keep the pointer; the flight is no longer shared.
func (w *waiter) flightStale() *cache.Entry {
	if w.flight == nil {
		return nil
	}
	return w.flight.stale
}

// sweep expires queued flights until the server stops.
func (s *Server) sweep() {
	defer s.readers.Done()
	// Every 10 ms: a queued query waits at most max_queue_wait plus that.
	period := 10 * time.Millisecond
	t := time.NewTicker(period)
	defer t.Stop()
	var buf []*flight
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.stopSweep:
			return
		case <-t.C:
			buf = s.expireQueued(time.Now(), buf)
		}
	}
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
// when the forward stage is idle (fair.idle): prefetching never delays a
// client's miss. e.BeginRefresh has been called.
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
