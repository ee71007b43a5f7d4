package cache

import (
	"sync"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Sized is a value whose memory cost the store accounts for.
type Sized interface {
	// Size returns the approximate number of bytes the value holds.
	Size() int
}

// Sharded is a set of LRU maps from a 64-bit key hash to a value, bounded by
// total bytes and by entries. It knows nothing of DNS. The shard is chosen by
// the low bits of the hash, so each shard has its own lock and concurrent
// lookups of different names rarely contend.
//
// It resists scans: LRU alone admits every new value, so one client asking
// many names once each (or a few huge answers) would evict the names every
// other client uses. Each shard keeps a frequency sketch of the keys looked
// up (TinyLFU, as Caffeine and Ristretto do): once the shard is full, a new
// value is stored only if its key has been asked more often than the least
// recently used value's, which it would evict (see admit). One-off keys lose to
// the working set; a key asked again and again wins its place. LimitValues
// keeps large values out altogether: they may be served, but not push out
// dozens of small ones.
type Sharded[V Sized] struct {
	shards []shard[V]
	mask   uint64
}

type shard[V Sized] struct {
	mu       sync.Mutex
	lru      *simplelru.LRU[uint64, V] // guarded by mu
	freq     sketch                    // guarded by mu
	bytes    int64                     // guarded by mu; sum of Size() of stored values
	maxBytes int64
	maxValue int64 // the largest value stored
	rejected atomic.Uint64
	// evicting is true while Add removes old entries to make room, so that
	// the eviction callback can tell an eviction from an explicit Remove.
	evicting  bool // guarded by mu
	evictions atomic.Uint64
	entryCap  int
	_         [64]byte // keeps neighbouring shards' locks off one cache line
}

// NewSharded returns a store of n shards (n must be a power of two) holding
// at most maxBytes and maxEntries in total, split evenly between shards.
func NewSharded[V Sized](n int, maxBytes int64, maxEntries int) *Sharded[V] {
	if n <= 0 || n&(n-1) != 0 {
		panic("cache: shard count must be a power of two")
	}
	s := &Sharded[V]{shards: make([]shard[V], n), mask: uint64(n - 1)}
	perEntries := max(maxEntries/n, 1)
	perBytes := max(maxBytes/int64(n), 1)
	for i := range s.shards {
		sh := &s.shards[i]
		sh.maxBytes = perBytes
		sh.maxValue = perBytes
		sh.freq = newSketch(perEntries)
		sh.entryCap = perEntries
		lru, err := simplelru.NewLRU[uint64, V](perEntries, func(_ uint64, v V) {
			sh.bytes -= int64(v.Size())
			if sh.evicting {
				sh.evictions.Add(1)
			}
		})
		if err != nil {
			panic(err) // only for a size <= 0, excluded above
		}
		sh.lru = lru
	}
	return s
}

func (s *Sharded[V]) shard(h uint64) *shard[V] { return &s.shards[h&s.mask] }

// Get returns the value stored under h and marks it recently used, and
// counts h as asked for (a lookup that misses counts too): once per
// client's question, not per look the code takes.
func (s *Sharded[V]) Get(h uint64) (V, bool) {
	sh := s.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.freq.add(h)
	return sh.lru.Get(h)
}

// Peek returns the value stored under h, counting nothing and leaving its
// recency alone.
func (s *Sharded[V]) Peek(h uint64) (V, bool) {
	sh := s.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.lru.Peek(h)
}

// Add stores v under h, replacing any value there, and evicts the least
// recently used values of the shard until it fits both of its bounds. A new
// key that would evict a value asked for more often is not stored, nor is
// a value over the limit (LimitValues). It reports whether v was stored.
func (s *Sharded[V]) Add(h uint64, v V) bool {
	sh := s.shard(h)
	size := int64(v.Size())
	if size > sh.maxValue {
		sh.rejected.Add(1)
		return false
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if old, ok := sh.lru.Peek(h); ok {
		sh.bytes -= int64(old.Size())
	} else if !sh.admit(h, size) {
		sh.rejected.Add(1)
		return false
	}
	sh.evicting = true
	sh.lru.Add(h, v) // may evict the oldest entry when the entry bound is hit
	sh.bytes += size
	for sh.bytes > sh.maxBytes {
		if _, _, ok := sh.lru.RemoveOldest(); !ok {
			break
		}
	}
	sh.evicting = false
	return true
}

// admit decides whether a new key h with a value of size may take room in
// the shard: always while there is room, else only when h has been asked
// for more often than the least recently used key, which would go first,
// or that key has not been asked since the sketch last aged. A tie keeps
// the incumbent, as Caffeine's admission does: a one-off name asked once
// does not push out a name asked once since the aging and several times
// before it, and a new name that matters is asked again. mu is held.
func (sh *shard[V]) admit(h uint64, size int64) bool {
	if sh.bytes+size <= sh.maxBytes && sh.lru.Len() < sh.maxEntries() {
		return true
	}
	victim, _, ok := sh.lru.GetOldest()
	if !ok {
		return true
	}
	v := sh.freq.estimate(victim)
	return v == 0 || sh.freq.estimate(h) > v
}

func (sh *shard[V]) maxEntries() int { return sh.entryCap }

// Remove deletes the value stored under h, if any.
func (s *Sharded[V]) Remove(h uint64) {
	sh := s.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.lru.Remove(h)
}

// Len returns the number of stored values.
func (s *Sharded[V]) Len() int {
	n := 0
	for i := range s.shards {
		n += s.shards[i].len()
	}
	return n
}

func (sh *shard[V]) len() int {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.lru.Len()
}

func (sh *shard[V]) size() int64 {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.bytes
}

// Bytes returns the accounted size of all stored values.
func (s *Sharded[V]) Bytes() int64 {
	var n int64
	for i := range s.shards {
		n += s.shards[i].size()
	}
	return n
}

// LimitValues stops values larger than n bytes from being stored (by
// default, the size of a shard).
func (s *Sharded[V]) LimitValues(n int64) {
	for i := range s.shards {
		s.shards[i].maxValue = min(n, s.shards[i].maxBytes)
	}
}

// Rejected returns how many new values were not stored: too large, or
// their key asked for less often than the one they would evict.
func (s *Sharded[V]) Rejected() uint64 {
	var n uint64
	for i := range s.shards {
		n += s.shards[i].rejected.Load()
	}
	return n
}

// Evictions returns how many values were evicted to respect the bounds.
func (s *Sharded[V]) Evictions() uint64 {
	var n uint64
	for i := range s.shards {
		n += s.shards[i].evictions.Load()
	}
	return n
}

// RemoveIf removes every value for which drop returns true, shard by
// shard, and returns how many it removed. It walks the whole store: for
// rare events (a namespace created, a name invalidated), not per query.
func (s *Sharded[V]) RemoveIf(drop func(V) bool) int {
	n := 0
	for i := range s.shards {
		n += s.shards[i].removeIf(drop)
	}
	return n
}

func (sh *shard[V]) removeIf(drop func(V) bool) int {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := 0
	for _, h := range sh.lru.Keys() {
		if v, ok := sh.lru.Peek(h); ok && drop(v) {
			sh.lru.Remove(h)
			n++
		}
	}
	return n
}

// each calls f for every stored value, least recently used first within
// each shard, without marking any as used. A shard's lock is held while
// its values are collected, not while f runs.
func (s *Sharded[V]) each(f func(V)) {
	var vs []V
	for i := range s.shards {
		vs = s.shards[i].values(vs[:0])
		for _, v := range vs {
			f(v)
		}
	}
}

// values appends the shard's values to vs, least recently used first.
func (sh *shard[V]) values(vs []V) []V {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, h := range sh.lru.Keys() {
		if v, ok := sh.lru.Peek(h); ok {
			vs = append(vs, v)
		}
	}
	return vs
}
