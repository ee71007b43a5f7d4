package resolver

import (
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/nodedns/nodedns/cache"
)

// The flight table: the resolutions queued or running (flights), by cache
// key, and the queries waiting for each (waiters). A flight is one
// upstream resolution; every query that waits for it is a small record
// (its query and where to answer) charged to its client (fair.go), not a
// goroutine. The table and the fair accounting are guarded by
// Server.flightMu; every critical section ends with unlockFlights. What to
// do with a query, and when, is decided in miss.go; the functions here
// only add and take waiters and flights.

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
	done   bool // taken out of its flight before it ended (pushed out); guarded by flightMu
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
	// req is query unpacked, kept only by a flight that runs at once (its
	// slot bounds how many there are), so that run does not unpack what
	// dispatch already did; run takes it.
	req   *dns.Msg
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

// flightStale is the stale entry of the waiter's flight, if any. Waiters
// taken from a flight keep the pointer; the flight is no longer shared.
func (w *waiter) flightStale() *cache.Entry {
	if w.flight == nil {
		return nil
	}
	return w.flight.stale
}
