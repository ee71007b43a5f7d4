package cache

import "math/bits"

// sketch estimates how often keys are asked for (TinyLFU). A key's first
// lookup only sets its bits in the doorkeeper, a Bloom filter, so that the
// many keys asked once never reach the counters; later lookups count in a
// count-min sketch: four rows of 4-bit counters, sixteen to a word, each
// key in one counter of each row, estimated by the smallest. Counters stop
// at 15. After ten lookups per entry the shard can hold, every counter is
// halved and the doorkeeper cleared, so that what was popular long ago
// fades (TinyLFU's reset). The caller holds the shard's lock.
type sketch struct {
	rows     [4][]uint64
	mask     uint64   // counters per row - 1
	door     []uint64 // the doorkeeper's bits
	doorMask uint64
	added    int
	resetAt  int
}

// sketchSeeds spread one 64-bit hash over the rows and the doorkeeper.
var sketchSeeds = [6]uint64{0x9e3779b97f4a7c15, 0xbf58476d1ce4e5b9, 0x94d049bb133111eb, 0xd6e8feb86659fd93,
	0xa0761d6478bd642f, 0xe7037ed1a0b428db}

// newSketch sizes a sketch for a shard of entries: twice as many counters
// per row as entries, and eight doorkeeper bits an entry, each rounded up
// to a power of two.
func newSketch(entries int) sketch {
	var s sketch
	n := pow2(2 * entries)
	for i := range s.rows {
		s.rows[i] = make([]uint64, n/16)
	}
	s.mask = n - 1
	d := pow2(8 * entries)
	s.door, s.doorMask = make([]uint64, d/64), d-1
	s.resetAt = max(10*entries, 64)
	return s
}

// pow2 is n rounded up to a power of two, at least 64.
func pow2(n int) uint64 {
	p := uint64(64)
	for p < uint64(n) {
		p <<= 1
	}
	return p
}

// mix is h spread by seed i.
func mix(h uint64, i int) uint64 { return bits.RotateLeft64(h*sketchSeeds[i], 31) }

// slot is where row i counts h: the word and the counter's shift in it.
func (s *sketch) slot(h uint64, i int) (word int, shift uint) {
	c := mix(h, i) & s.mask
	return int(c >> 4), uint(c&15) * 4
}

// admitted reports whether the doorkeeper has seen h, and sets its bits.
func (s *sketch) admitted(h uint64) bool {
	seen := true
	for i := 4; i < 6; i++ {
		b := mix(h, i) & s.doorMask
		w, m := b>>6, uint64(1)<<(b&63)
		seen = seen && s.door[w]&m != 0
		s.door[w] |= m
	}
	return seen
}

// add counts one lookup of h.
func (s *sketch) add(h uint64) {
	if s.added++; s.added >= s.resetAt {
		s.halve()
	}
	if !s.admitted(h) {
		return
	}
	for i := range s.rows {
		w, sh := s.slot(h, i)
		if (s.rows[i][w]>>sh)&15 < 15 {
			s.rows[i][w] += 1 << sh
		}
	}
}

// estimate is how often h was asked for, at most 16: the counters, and one
// for the doorkeeper.
func (s *sketch) estimate(h uint64) uint64 {
	est := uint64(15)
	for i := range s.rows {
		w, sh := s.slot(h, i)
		est = min(est, (s.rows[i][w]>>sh)&15)
	}
	seen := true
	for i := 4; i < 6; i++ {
		b := mix(h, i) & s.doorMask
		seen = seen && s.door[b>>6]&(1<<(b&63)) != 0
	}
	if seen {
		est++
	}
	return est
}

// halve ages every counter and clears the doorkeeper.
func (s *sketch) halve() {
	for i := range s.rows {
		for j, w := range s.rows[i] {
			s.rows[i][j] = (w >> 1) & 0x7777777777777777
		}
	}
	clear(s.door)
	s.added /= 2
}

// bytes is the sketch's memory.
func (s *sketch) bytes() int { return (4*len(s.rows[0]) + len(s.door)) * 8 }
