package resolver

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

var (
	clientA = netip.MustParseAddr("10.0.0.1")
	clientB = netip.MustParseAddr("10.0.0.2")
	clientC = netip.MustParseAddr("10.0.0.3")
)

// checkFair verifies the accounting's invariants.
func checkFair(t *testing.T, fq *fair) {
	t.Helper()
	total, maxc := 0, 0
	for addr, c := range fq.clients {
		n := 0
		for w := c.newest; w != nil; w = w.cnext {
			if w.client != c {
				t.Fatalf("waiter of %v points at another client", addr)
			}
			n++
		}
		if n != c.records {
			t.Fatalf("%v: %d waiters listed, %d counted", addr, n, c.records)
		}
		if c.records == 0 && c.qhead == nil && c.slots == 0 {
			t.Fatalf("%v holds nothing but is still tracked", addr)
		}
		total += n
		maxc = max(maxc, n)
	}
	if total != fq.records || maxc != fq.maxCount {
		t.Fatalf("records %d (counted %d), max %d (counted %d)", fq.records, total, fq.maxCount, maxc)
	}
}

func TestFairRoomToWaitIsSharedMaxMin(t *testing.T) {
	fq := newFair(1, 4)
	var aw []*waiter
	for range 4 { // A alone may fill the room: nothing else wants it
		w := &waiter{}
		if v, ok := fq.charge(w, clientA); !ok || v != nil {
			t.Fatalf("charge with room: ok=%v victim=%v", ok, v)
		}
		aw = append(aw, w)
	}
	checkFair(t, fq)
	// A holds the most: its next query is refused.
	if _, ok := fq.charge(&waiter{}, clientA); ok {
		t.Fatal("the biggest holder got room in a full pool")
	}
	// B holds nothing: it takes A's newest.
	bw := &waiter{}
	v, ok := fq.charge(bw, clientB)
	if !ok || v != aw[3] {
		t.Fatalf("B in a full pool: ok=%v, victim %p, want A's newest %p", ok, v, aw[3])
	}
	if v.client != nil {
		t.Error("the victim is still charged")
	}
	checkFair(t, fq)
	// A: 3, B: 1. B takes another (2 < 3).
	if v, ok := fq.charge(&waiter{}, clientB); !ok || v != aw[2] {
		t.Fatalf("B's second: ok=%v victim=%p", ok, v)
	}
	// A: 2, B: 2: equal shares, nobody takes from anybody.
	for _, c := range []netip.Addr{clientA, clientB} {
		if _, ok := fq.charge(&waiter{}, c); ok {
			t.Errorf("%v took room from an equal holder", c)
		}
	}
	// C (0) takes from one of them.
	cv, ok := fq.charge(&waiter{}, clientC)
	if !ok || cv == nil || cv.client != nil {
		t.Fatal("a new client found no room in a pool held 2:2")
	}
	checkFair(t, fq)
	// Answered waiters leave the accounting; discharge is idempotent.
	want := fq.records
	for _, w := range []*waiter{aw[0], aw[1], bw} {
		if w.client != nil {
			want--
		}
		fq.discharge(w)
		fq.discharge(w)
	}
	checkFair(t, fq)
	if fq.records != want {
		t.Errorf("records %d after discharges, want %d", fq.records, want)
	}
}

func TestFairSlotsGoRoundRobin(t *testing.T) {
	fq := newFair(1, 100)
	running := &flight{key: "running"}
	if !fq.takeSlot(running, clientC) {
		t.Fatal("no free slot")
	}
	if fq.takeSlot(&flight{}, clientA) {
		t.Fatal("a second slot out of one")
	}
	now := time.Now()
	queue := func(c netip.Addr, name string) {
		fq.enqueue(&flight{key: name}, c, now)
	}
	// A queues three, then B one, then C one: each slot that frees goes
	// to the next client in turn, so B and C wait for one of A's, not
	// for all three.
	queue(clientA, "a1")
	queue(clientA, "a2")
	queue(clientA, "a3")
	queue(clientB, "b1")
	queue(clientC, "c1")
	checkFair(t, fq)
	var order []string
	for f := fq.next(running); f != nil; f = fq.next(f) {
		order = append(order, f.key)
	}
	want := []string{"a1", "b1", "c1", "a2", "a3"}
	if !slices.Equal(order, want) {
		t.Fatalf("served %v, want %v", order, want)
	}
	if fq.slots != 0 || fq.queued != 0 || len(fq.clients) != 0 || fq.ring != nil {
		t.Errorf("after the queue ran dry: slots %d, queued %d, clients %d", fq.slots, fq.queued, len(fq.clients))
	}
}

// The reserve (a tenth of the slots) is never filled by one client: a
// newcomer's miss takes it at once, however much the first client holds.
func TestFairReserveIsForClientsUnderTheirShare(t *testing.T) {
	fq := newFair(10, 100) // a reserve of 1
	var hog []*flight
	for range 9 {
		f := &flight{}
		if !fq.takeSlot(f, clientA) {
			t.Fatal("a client alone did not get the unreserved slots")
		}
		hog = append(hog, f)
	}
	if fq.takeSlot(&flight{}, clientA) {
		t.Fatal("a client alone took the reserve")
	}
	fq.enqueue(&flight{key: "a-queued"}, clientA, time.Now())
	// B holds nothing: the reserve is its, at once.
	if !fq.takeSlot(&flight{}, clientB) {
		t.Fatal("a newcomer under its share did not get the reserved slot")
	}
	// One of A's flights ends: with B's flight in the reserve, the slot
	// freed is the reserve's again, kept for a newcomer; when another ends,
	// A's queued flight takes it.
	if f := fq.next(hog[0]); f != nil {
		t.Fatalf("next = %v, want the slot kept free", f.key)
	}
	if f := fq.next(hog[1]); f == nil || f.key != "a-queued" {
		t.Fatalf("next = %v, want A's queued flight", f)
	}
	checkFair(t, fq)
	// A pool too small for a reserve is plain round-robin.
	small := newFair(4, 100)
	for range 4 {
		if !small.takeSlot(&flight{}, clientA) {
			t.Fatal("a client alone did not get all of a pool of 4")
		}
	}
}

func TestFairExpiresOnlyWhatWaitedTooLong(t *testing.T) {
	fq := newFair(1, 100)
	running := &flight{}
	fq.takeSlot(running, clientC)
	t0 := time.Now()
	fq.enqueue(&flight{key: "old"}, clientA, t0)
	fq.enqueue(&flight{key: "new"}, clientA, t0.Add(time.Second))
	fq.enqueue(&flight{key: "b"}, clientB, t0.Add(500*time.Millisecond))
	got := fq.expired(t0.Add(1200*time.Millisecond), time.Second, nil)
	if len(got) != 1 || got[0].key != "old" {
		t.Fatalf("expired %v, want [old]", got)
	}
	got = fq.expired(t0.Add(1600*time.Millisecond), time.Second, nil)
	if len(got) != 1 || got[0].key != "b" {
		t.Fatalf("expired %v, want [b]", got)
	}
	if f := fq.next(running); f == nil || f.key != "new" {
		t.Fatalf("next %v, want new", f)
	}
	all := fq.expired(time.Time{}, -1, nil)
	if len(all) != 0 || fq.queued != 0 {
		t.Errorf("left queued: %d", fq.queued)
	}
}
