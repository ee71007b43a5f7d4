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
type Sharded[V Sized] struct {
	shards []shard[V]
	mask   uint64
}

type shard[V Sized] struct {
	mu       sync.Mutex
	lru      *simplelru.LRU[uint64, V] // guarded by mu
	bytes    int64                     // guarded by mu; sum of Size() of stored values
	maxBytes int64
	// evicting is true while Add removes old entries to make room, so that
	// the eviction callback can tell an eviction from an explicit Remove.
	evicting  bool // guarded by mu
	evictions atomic.Uint64
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

// Get returns the value stored under h and marks it recently used.
func (s *Sharded[V]) Get(h uint64) (V, bool) {
	sh := s.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.lru.Get(h)
}

// Add stores v under h, replacing any value there, and evicts the least
// recently used values of the shard until it fits both of its bounds. A value
// larger than a whole shard is not stored.
func (s *Sharded[V]) Add(h uint64, v V) {
	sh := s.shard(h)
	size := int64(v.Size())
	if size > sh.maxBytes {
		return
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if old, ok := sh.lru.Peek(h); ok {
		sh.bytes -= int64(old.Size())
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
}

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
