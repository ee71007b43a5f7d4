package cache

import (
	"fmt"
	"testing"
)

// sized is a value of a given accounted size.
type sized int

func (s sized) Size() int { return int(s) }

func present(s *Sharded[sized], keys ...uint64) []uint64 {
	var out []uint64
	for _, k := range keys {
		if _, ok := s.Get(k); ok {
			out = append(out, k)
		}
	}
	return out
}

func keyRange(from, to uint64) []uint64 {
	var out []uint64
	for k := from; k < to; k++ {
		out = append(out, k)
	}
	return out
}

func TestShardedBounds(t *testing.T) {
	tests := []struct {
		name                string
		shards              int
		maxBytes            int64
		maxEntries          int
		n                   uint64 // keys 0..n-1 of 100 bytes each, added in order
		wantLen             int
		wantEvictions       uint64
		newestKept, oldGone uint64 // keys >= newestKept present, keys < oldGone absent
	}{
		{"bytes, one shard", 1, 1000, 1000, 20, 10, 10, 10, 10},
		{"bytes, four shards", 4, 4000, 1000, 100, 40, 60, 60, 60},
		{"bytes not a multiple", 1, 1050, 1000, 20, 10, 10, 10, 10},
		{"entries, one shard", 1, 1 << 20, 5, 50, 5, 45, 45, 45},
		{"entries, two shards", 2, 1 << 20, 10, 50, 10, 40, 40, 40},
		{"under both bounds", 4, 1 << 20, 1000, 50, 50, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSharded[sized](tt.shards, tt.maxBytes, tt.maxEntries)
			for k := range tt.n {
				s.Add(k, 100)
				if s.Bytes() > tt.maxBytes {
					t.Fatalf("after key %d: %d bytes > %d", k, s.Bytes(), tt.maxBytes)
				}
			}
			if s.Len() != tt.wantLen || s.Bytes() != int64(100*tt.wantLen) || s.Evictions() != tt.wantEvictions {
				t.Errorf("Len %d Bytes %d Evictions %d, want %d %d %d",
					s.Len(), s.Bytes(), s.Evictions(), tt.wantLen, 100*tt.wantLen, tt.wantEvictions)
			}
			if got := present(s, keyRange(tt.newestKept, tt.n)...); len(got) != int(tt.n-tt.newestKept) {
				t.Errorf("newest keys present: %v", got)
			}
			if got := present(s, keyRange(0, tt.oldGone)...); len(got) != 0 {
				t.Errorf("oldest keys still present: %v", got)
			}
		})
	}
}

func TestShardedLRUOrder(t *testing.T) {
	s := NewSharded[sized](1, 1000, 1000)
	for k := range uint64(10) {
		s.Add(k, 100)
	}
	s.Get(0) // now the most recently used
	s.Add(10, 100)
	if got := present(s, 0, 1); len(got) != 1 || got[0] != 0 {
		t.Errorf("present %v: Get must protect key 0 and key 1 must go", got)
	}
	s.Add(11, 250) // needs three 100-byte slots
	if got := present(s, 2, 3, 4, 5); len(got) != 1 || got[0] != 5 {
		t.Errorf("present %v, want [5]", got)
	}
	if s.Bytes() != 950 || s.Evictions() != 4 {
		t.Errorf("Bytes %d Evictions %d", s.Bytes(), s.Evictions())
	}
}

func TestShardedReplace(t *testing.T) {
	tests := []struct {
		name          string
		sizes         []int // values added under key 1, in order
		others        int   // 100-byte values under other keys, added first
		wantBytes     int64
		wantLen       int
		wantEvictions uint64
	}{
		{"bigger", []int{100, 300}, 0, 300, 1, 0},
		{"smaller", []int{300, 50}, 0, 50, 1, 0},
		{"same", []int{100, 100, 100}, 0, 100, 1, 0},
		{"bigger evicts others", []int{100, 600}, 5, 1000, 5, 1},
		{"many times", []int{10, 20, 30, 40, 50, 60, 70, 80, 90}, 3, 390, 4, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSharded[sized](1, 1000, 100)
			for k := range tt.others {
				s.Add(uint64(100+k), 100)
			}
			for _, size := range tt.sizes {
				s.Add(1, sized(size))
			}
			if s.Bytes() != tt.wantBytes || s.Len() != tt.wantLen || s.Evictions() != tt.wantEvictions {
				t.Errorf("Bytes %d Len %d Evictions %d, want %d %d %d",
					s.Bytes(), s.Len(), s.Evictions(), tt.wantBytes, tt.wantLen, tt.wantEvictions)
			}
			if v, ok := s.Get(1); !ok || int(v) != tt.sizes[len(tt.sizes)-1] {
				t.Errorf("Get(1) = %v, %v", v, ok)
			}
		})
	}
}

func TestShardedTooBig(t *testing.T) {
	s := NewSharded[sized](2, 1000, 100) // 500 bytes a shard
	s.Add(1, 100)
	s.Add(2, 501) // key 2 is in the other shard
	if _, ok := s.Get(2); ok || s.Bytes() != 100 || s.Len() != 1 || s.Evictions() != 0 {
		t.Errorf("a value larger than a shard was stored: Bytes %d Len %d", s.Bytes(), s.Len())
	}
	s.Add(2, 500)
	if _, ok := s.Get(2); !ok || s.Bytes() != 600 {
		t.Errorf("a value of exactly a shard was not stored: Bytes %d", s.Bytes())
	}
	s.Add(1, 600) // too big: the old value stays
	if v, ok := s.Get(1); !ok || v != 100 || s.Bytes() != 600 {
		t.Errorf("Get(1) = %v, %v; Bytes %d", v, ok, s.Bytes())
	}
}

func TestShardedRemove(t *testing.T) {
	s := NewSharded[sized](4, 1<<20, 100)
	for k := range uint64(8) {
		s.Add(k, sized(10*(k+1)))
	}
	s.Remove(3)
	s.Remove(3)
	s.Remove(99)
	if _, ok := s.Get(3); ok {
		t.Error("key 3 still present")
	}
	if s.Len() != 7 || s.Bytes() != 360-40 || s.Evictions() != 0 {
		t.Errorf("Len %d Bytes %d Evictions %d", s.Len(), s.Bytes(), s.Evictions())
	}
}

func TestNewShardedShardCount(t *testing.T) {
	for _, n := range []int{0, -1, -2, 3, 6, 100, 255} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("NewSharded(%d) did not panic", n)
				}
			}()
			NewSharded[sized](n, 1<<20, 100)
		})
	}
	for _, n := range []int{1, 2, 64, 256} {
		if s := NewSharded[sized](n, 1<<20, 10); len(s.shards) != n || s.mask != uint64(n-1) {
			t.Errorf("NewSharded(%d): %d shards, mask %#x", n, len(s.shards), s.mask)
		}
	}
}
