package cache

import (
	"math/rand/v2"
	"testing"
)

func TestSketchCounts(t *testing.T) {
	const entries = 1000
	s := newSketch(entries)
	r := rand.New(rand.NewPCG(1, 1))
	keys := make([]uint64, entries)
	for i := range keys {
		keys[i] = r.Uint64()
	}
	// Key i is asked i%8 times: fewer lookups than the reset.
	for i, h := range keys {
		for range i % 8 {
			s.add(h)
		}
	}
	over := 0
	for i, h := range keys {
		est, want := s.estimate(h), uint64(i%8)
		if est < want {
			t.Fatalf("key %d asked %d times: estimate %d, below", i, want, est)
		}
		if est > want {
			over++
		}
	}
	// A count-min sketch never counts low; with eight counters an entry it
	// rarely counts high: 18 of 1,000 with four rows, 30 with a block.
	if over > entries/20 {
		t.Errorf("%d of %d keys estimated high", over, entries)
	}
}

func TestSketchCapsAndAges(t *testing.T) {
	s := newSketch(1000)
	h := uint64(0x1234_5678_9abc_def0)
	if got := s.estimate(h); got != 0 {
		t.Fatalf("never asked: %d", got)
	}
	s.add(h)
	if got := s.estimate(h); got != 1 {
		t.Fatalf("asked once (the doorkeeper only): %d", got)
	}
	for range 40 {
		s.add(h)
	}
	if got := s.estimate(h); got != 16 {
		t.Fatalf("asked 41 times: %d, want the cap of 16", got)
	}
	s.halve()
	if got := s.estimate(h); got != 7 {
		t.Errorf("after a reset: %d, want 15/2 and no doorkeeper", got)
	}
	// Lookups of other keys trigger the reset by themselves.
	s = newSketch(10)
	for range 8 {
		s.add(h)
	}
	for i := range uint64(s.resetAt) {
		s.add(i * 0x9e3779b97f4a7c15)
	}
	if got := s.estimate(h); got >= 8 {
		t.Errorf("after %d other lookups: %d, want it aged", s.resetAt, got)
	}
	// A hot key at the cap does not age the others: only lookups that
	// change the sketch count towards the reset.
	s = newSketch(10)
	other := uint64(0xfeed_beef_cafe_f00d)
	for range 3 {
		s.add(other)
	}
	for range 100 * s.resetAt {
		s.add(h)
	}
	if got := s.estimate(other); got != 3 {
		t.Errorf("after %d lookups of a hot key: %d, want 3", 100*s.resetAt, got)
	}
}

func TestSketchSizes(t *testing.T) {
	for _, entries := range []int{1, 10, 1000, 100_000} {
		s := newSketch(entries)
		if len(s.table)%blockWords != 0 || uint64(len(s.table)/blockWords) != s.blockMask+1 || uint64(len(s.door)) != s.doorMask+1 {
			t.Errorf("%d entries: %d words of counters, block mask %d, %d doorkeeper words, mask %d",
				entries, len(s.table), s.blockMask, len(s.door), s.doorMask)
		}
		if s.bytes() < entries*5 { // eight 4-bit counters and 8 bits an entry
			t.Errorf("%d entries: %d bytes", entries, s.bytes())
		}
	}
}

// BenchmarkSketchAdd counts lookups of keys spread over a sketch sized
// for 100,000 entries (1 MB): the lookups of a big cache's hit path, where
// the sketch is not in the CPU's cache.
func BenchmarkSketchAdd(b *testing.B) {
	s := newSketch(100_000)
	r := rand.New(rand.NewPCG(1, 1))
	keys := make([]uint64, 1<<16)
	for i := range keys {
		keys[i] = r.Uint64()
	}
	i := 0
	for b.Loop() {
		s.add(keys[i&(len(keys)-1)])
		i++
	}
}
