package resolver

import (
	"net/netip"
	"time"
)

// Overload policy: what is scarce, who gets how much.
//
// Two things are scarce when nodedns forwards: slots (resolutions in
// flight to the upstream, max_inflight) and room to wait (queries waiting
// for a resolution, max_waiters; each holds a copy of its query). A cache
// hit and an answer a local stage gives use neither and are never limited.
//
//   - Work-conserving: while a resource has room, anyone may use it. A pod
//     that looks up 1,000 names at once against an idle upstream gets 1,000
//     answers: what does not get a slot at once waits for one.
//   - Slots are handed out round-robin between clients: a miss that finds
//     every slot taken waits in its client's queue, and each slot that
//     frees goes to the next client in turn that has a query waiting. A
//     quiet pod's miss waits for about one slot to free per busy client,
//     however many queries a noisy pod has queued.
//   - A tenth of the slots is a reserve that no client may fill alone: a
//     client takes a reserved slot only while it holds fewer than its fair
//     share (max_inflight ÷ the clients holding work, at least one) and
//     fewer than the unreserved nine tenths. So however many slots a noisy
//     pod holds, a quiet pod's miss starts at once. Without it, against an
//     upstream with a steady latency the slots free in waves, and a quiet
//     pod arriving between two waves waits most of a round trip for its
//     turn. A client alone still runs nine tenths of max_inflight at once,
//     and its other misses wait for those, not shed.
//   - Room to wait is shared max-min: when it is full, a client that holds
//     fewer waiting queries than the biggest holder takes the newest waiting
//     query of that holder (which gets its answer now: stale, or SERVFAIL);
//     a client that already holds the most is answered at once instead.
//   - Nothing waits forever: a query waits for a slot at most max_queue_wait,
//     and a resolution ends within request_timeout of the query's arrival.
//
// Clients are source addresses (IPv4-mapped addresses as IPv4, zones
// ignored). All hostNetwork pods of a node share the node's address, and so
// share one client's turn; their cache hits, like everyone's, are never
// limited.

// client is one source address that holds waiting queries or queued
// flights. It exists only while it holds something, so the table is bounded
// by max_waiters.
type client struct {
	addr    netip.Addr
	slots   int     // running flights charged to it
	records int     // waiting queries charged to it
	newest  *waiter // its waiting queries, newest first (waiter.cnext)
	// qhead and qtail are its flights waiting for a slot, oldest first
	// (flight.qnext).
	qhead, qtail *flight
	// rnext and rprev link the clients that have flights queued, a ring
	// served round-robin.
	rnext, rprev *client
}

// fair holds the accounting of slots, waiting queries and queued flights.
// Every method is called with Server.flightMu held.
type fair struct {
	maxSlots, slots     int
	reserve             int // slots only clients under their fair share take
	maxRecords, records int
	queued              int // flights in client queues
	clients             map[netip.Addr]*client
	// byCount[k] is the number of clients holding k waiting queries and
	// maxCount the largest k in use: the fair-share test is O(1).
	byCount  []int
	maxCount int
	ring     *client // next client to get a slot; nil when nobody queues
}

func newFair(maxSlots, maxRecords int) *fair {
	return &fair{
		maxSlots: maxSlots, maxRecords: maxRecords, reserve: maxSlots / 10,
		clients: make(map[netip.Addr]*client),
		byCount: make([]int, maxRecords+2),
	}
}

// clientKey is the address a query is accounted to.
func clientKey(src netip.AddrPort) netip.Addr { return src.Addr().Unmap().WithZone("") }

func (fq *fair) client(addr netip.Addr) *client {
	c := fq.clients[addr]
	if c == nil {
		c = &client{addr: addr}
		fq.clients[addr] = c
	}
	return c
}

// release forgets c once it holds nothing.
func (fq *fair) release(c *client) {
	if c.records == 0 && c.qhead == nil && c.slots == 0 {
		delete(fq.clients, c.addr)
	}
}

func (fq *fair) setCount(c *client, n int) {
	if c.records > 0 {
		fq.byCount[c.records]--
	}
	c.records = n
	if n > 0 {
		fq.byCount[n]++
	}
	if n > fq.maxCount {
		fq.maxCount = n
	}
	for fq.maxCount > 0 && fq.byCount[fq.maxCount] == 0 {
		fq.maxCount--
	}
}

// charge accounts one more waiting query, w, to its client. When there is
// room it returns ok. When there is none, a client holding fewer than the
// biggest holder takes that holder's newest waiting query, which is
// returned as victim (the caller answers it at once); otherwise ok is
// false and w must be answered at once.
func (fq *fair) charge(w *waiter, addr netip.Addr) (victim *waiter, ok bool) {
	c := fq.client(addr)
	if fq.records >= fq.maxRecords {
		if c.records+1 >= fq.maxCount {
			fq.release(c)
			return nil, false
		}
		victim = fq.biggest().newest
		fq.discharge(victim)
	}
	w.client = c
	w.cnext, w.cprev = c.newest, nil
	if c.newest != nil {
		c.newest.cprev = w
	}
	c.newest = w
	fq.setCount(c, c.records+1)
	fq.records++
	return victim, true
}

// biggest returns a client holding maxCount waiting queries. It scans, but
// runs only when room is short and an imbalance is to be corrected.
func (fq *fair) biggest() *client {
	for _, c := range fq.clients {
		if c.records == fq.maxCount {
			return c
		}
	}
	panic("resolver: fair accounting lost its biggest client")
}

// discharge removes a waiting query from its client's account. It is
// idempotent: a query answered early (pushed out) is discharged once.
func (fq *fair) discharge(w *waiter) {
	c := w.client
	if c == nil {
		return
	}
	if w.cprev != nil {
		w.cprev.cnext = w.cnext
	} else {
		c.newest = w.cnext
	}
	if w.cnext != nil {
		w.cnext.cprev = w.cprev
	}
	w.client, w.cnext, w.cprev = nil, nil, nil
	fq.setCount(c, c.records-1)
	fq.records--
	fq.release(c)
}

// mayTake reports whether c may start a flight with used slots taken:
// below the reserve anyone may; in the reserve, only a client under its
// fair share and under the unreserved slots.
func (fq *fair) mayTake(c *client, used int) bool {
	unreserved := fq.maxSlots - fq.reserve
	switch {
	case used < unreserved:
		return true
	case used >= fq.maxSlots:
		return false
	}
	share := max(fq.maxSlots/max(len(fq.clients), 1), 1)
	return c.slots < min(share, unreserved)
}

// takeSlot takes a slot for f, a flight of the client at addr, if one is
// free to it, and charges it to that client.
func (fq *fair) takeSlot(f *flight, addr netip.Addr) bool {
	c := fq.client(addr)
	if !fq.mayTake(c, fq.slots) {
		fq.release(c)
		return false
	}
	fq.slots++
	c.slots++
	f.slotOwner = c
	return true
}

// takeBackgroundSlot takes a slot charged to nobody (a prefetch).
func (fq *fair) takeBackgroundSlot() bool {
	if fq.slots >= fq.maxSlots-fq.reserve {
		return false
	}
	fq.slots++
	return true
}

// idle reports whether a background refresh may take a slot: at most half
// are in use and nobody waits for one, so a prefetch never delays a client.
func (fq *fair) idle() bool { return fq.slots < fq.maxSlots/2 && fq.queued == 0 }

// enqueue puts f at the end of its owner's queue.
func (fq *fair) enqueue(f *flight, addr netip.Addr, now time.Time) {
	c := fq.client(addr)
	f.owner, f.queuedAt = c, now
	f.qprev, f.qnext = c.qtail, nil
	if c.qtail != nil {
		c.qtail.qnext = f
	} else {
		c.qhead = f
		fq.ringAdd(c)
	}
	c.qtail = f
	fq.queued++
}

// unqueue removes a queued flight from its owner's queue.
func (fq *fair) unqueue(f *flight) {
	c := f.owner
	if c == nil {
		return
	}
	if f.qprev != nil {
		f.qprev.qnext = f.qnext
	} else {
		c.qhead = f.qnext
	}
	if f.qnext != nil {
		f.qnext.qprev = f.qprev
	} else {
		c.qtail = f.qprev
	}
	f.owner, f.qnext, f.qprev = nil, nil, nil
	fq.queued--
	if c.qhead == nil {
		fq.ringRemove(c)
		fq.release(c)
	}
}

// next hands the slot of finished, a flight that ended, to the oldest
// queued flight of the next client in turn that may take it, or frees it
// when none may.
func (fq *fair) next(finished *flight) *flight {
	if o := finished.slotOwner; o != nil {
		finished.slotOwner = nil
		o.slots--
		fq.release(o)
	}
	if fq.ring != nil {
		start := fq.ring
		for c := start; ; {
			if fq.mayTake(c, fq.slots-1) {
				fq.ring = c.rnext
				f := c.qhead
				fq.unqueue(f)
				c.slots++
				f.slotOwner = c
				return f
			}
			if c = c.rnext; c == start {
				break
			}
		}
	}
	fq.slots--
	return nil
}

func (fq *fair) ringAdd(c *client) {
	if fq.ring == nil {
		c.rnext, c.rprev = c, c
		fq.ring = c
		return
	}
	// Insert just before the current turn: the newcomer is served after
	// everyone already waiting has had one slot.
	last := fq.ring.rprev
	c.rprev, c.rnext = last, fq.ring
	last.rnext = c
	fq.ring.rprev = c
}

func (fq *fair) ringRemove(c *client) {
	if c.rnext == c {
		fq.ring = nil
	} else {
		c.rprev.rnext = c.rnext
		c.rnext.rprev = c.rprev
		if fq.ring == c {
			fq.ring = c.rnext
		}
	}
	c.rnext, c.rprev = nil, nil
}

// expired removes and returns the queued flights that have waited longer
// than maxWait at now (every one when maxWait is negative). Each queue is
// oldest first, so only the expired heads are looked at.
func (fq *fair) expired(now time.Time, maxWait time.Duration, out []*flight) []*flight {
	if fq.ring == nil {
		return out
	}
	var owners []*client
	c := fq.ring
	for {
		owners = append(owners, c)
		c = c.rnext
		if c == fq.ring {
			break
		}
	}
	for _, c := range owners {
		for f := c.qhead; f != nil && (maxWait < 0 || now.Sub(f.queuedAt) >= maxWait); f = c.qhead {
			fq.unqueue(f)
			out = append(out, f)
		}
	}
	return out
}
