package cache

import "math/bits"

// sketch estimates how often keys are asked for (TinyLFU). A key's first
// lookup only sets its bits in the doorkeeper, a Bloom filter, so that the
// many keys asked once never reach the counters; later lookups count in a
// count-min sketch of 4-bit counters, sixteen to a word, each key in four
// counters and estimated by the smallest. Counters stop at 15. After ten
// lookups per entry the shard can hold (lookups that changed a bit or a
// counter), every counter is halved and the doorkeeper cleared, so that
// what was popular long ago fades (TinyLFU's reset). The caller holds the
// shard's lock.
//
// A lookup is on the hit path, so it touches two cache lines whatever the
// sketch's size, as Caffeine's sketch does: a key's four counters lie in
// one 64-byte block (in four different words of its eight), and its two
// doorkeeper bits in one word.
type sketch struct {
	table     []uint64 // blocks of blockWords words
	blockMask uint64   // blocks - 1
	door      []uint64 // the doorkeeper's bits
	doorMask  uint64   // words - 1
	added     int
	resetAt   int
}

// blockWords is the words of a 64-byte block of counters.
const blockWords = 8

// sketchSeeds spread one 64-bit hash over the blocks, the counters in a
// block, and the doorkeeper.
var sketchSeeds = [3]uint64{0x9e3779b97f4a7c15, 0xbf58476d1ce4e5b9, 0x94d049bb133111eb}

// newSketch sizes a sketch for a shard of entries: eight counters per
// entry and eight doorkeeper bits, each rounded up to a power of two.
func newSketch(entries int) sketch {
	var s sketch
	blocks := max(pow2(8*entries)/(16*blockWords), 1)
	s.table, s.blockMask = make([]uint64, blocks*blockWords), blocks-1
	words := pow2(8*entries) / 64
	s.door, s.doorMask = make([]uint64, words), words-1
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

// counter is where counter i (0 to 3) of a key lies: its word in the
// table and its shift in the word. The block comes from mix(h, 0); within
// it, counter i is in word 2i or 2i+1, at a position, all from mix(h, 1).
func (s *sketch) counter(h uint64, i int) (word int, shift uint) {
	block := mix(h, 0) & s.blockMask
	spread := mix(h, 1) >> (i * 5)
	return int(block*blockWords) + 2*i + int(spread&1), uint(spread>>1&15) * 4
}

// doorBits are the doorkeeper's word of h and its two bits in it.
func (s *sketch) doorBits(h uint64) (word int, bits uint64) {
	m := mix(h, 2)
	return int(m & s.doorMask), 1<<(m>>32&63) | 1<<(m>>48&63)
}

// add counts one lookup of h. Only a lookup that changes the sketch
// counts towards the reset, as in Caffeine: a hot key whose counters are
// all at 15 does not age its shard's other keys.
func (s *sketch) add(h uint64) {
	w, b := s.doorBits(h)
	changed := false
	if s.door[w]&b != b { // the first lookup since the reset
		s.door[w] |= b
		changed = true
	} else {
		for i := range 4 {
			w, sh := s.counter(h, i)
			if (s.table[w]>>sh)&15 < 15 {
				s.table[w] += 1 << sh
				changed = true
			}
		}
	}
	if changed {
		if s.added++; s.added >= s.resetAt {
			s.halve()
		}
	}
}

// estimate is how often h was asked for, at most 16: the counters, and one
// for the doorkeeper.
func (s *sketch) estimate(h uint64) uint64 {
	est := uint64(15)
	for i := range 4 {
		w, sh := s.counter(h, i)
		est = min(est, (s.table[w]>>sh)&15)
	}
	if w, b := s.doorBits(h); s.door[w]&b == b {
		est++
	}
	return est
}

// halve ages every counter and clears the doorkeeper.
func (s *sketch) halve() {
	for j, w := range s.table {
		s.table[j] = (w >> 1) & 0x7777777777777777
	}
	clear(s.door)
	s.added /= 2
}

// bytes is the sketch's memory.
func (s *sketch) bytes() int { return (len(s.table) + len(s.door)) * 8 }
