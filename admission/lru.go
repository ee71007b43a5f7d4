package admission

import (
	"net/netip"
	"sync"
	"time"
)

// Segments of the two-segment LRU.
const (
	probation = 0 // seen once; evicted first
	protected = 1 // seen at least twice
)

const none = -1 // null link

// node is one tracked client: its token bucket, its denials in one window
// and its links in a segment's list. Nodes live in a per-shard slab and are
// recycled on eviction, so a flood of new addresses does not allocate once
// the slab is full.
type node struct {
	addr       netip.Addr
	tokens     float64
	last       time.Duration // since the limiter's epoch
	window     int64         // window of denied
	denied     uint64
	prev, next int32
	seg        uint8
}

type list struct {
	head, tail int32
	n          int
}

// shard is a mutex-protected two-segment LRU of at most capacity nodes.
type shard struct {
	mu       sync.Mutex
	index    map[netip.Addr]int32
	nodes    []node // len = tracked clients; cap grows to capacity
	lists    [2]list
	capacity int
	protCap  int
	_        [64]byte // keeps neighbouring shards' hot fields off this cache line
}

func (s *shard) init(capacity int) {
	s.capacity = max(1, capacity)
	// 80% protected leaves a 20% probation segment for newcomers: a flood
	// of one-off sources only ever churns that fifth.
	s.protCap = s.capacity * 4 / 5
	s.index = make(map[netip.Addr]int32)
	s.lists = [2]list{{none, none, 0}, {none, none, 0}}
}

// get returns the index of a's node, creating it with a full bucket (evicting
// the least recently used probationary client if the shard is full) or
// promoting it on a repeat visit.
func (s *shard) get(a netip.Addr, now time.Duration, burst float64) int32 {
	if i, ok := s.index[a]; ok {
		switch {
		case s.nodes[i].seg == probation:
			s.unlink(i)
			s.pushFront(protected, i)
			if s.lists[protected].n > s.protCap {
				t := s.lists[protected].tail
				s.unlink(t)
				s.pushFront(probation, t)
			}
		case s.lists[protected].head != i:
			s.unlink(i)
			s.pushFront(protected, i)
		}
		return i
	}
	var i int32
	if len(s.nodes) < s.capacity {
		s.nodes = append(s.nodes, node{})
		i = int32(len(s.nodes) - 1)
	} else {
		i = s.lists[probation].tail
		if i == none { // only when protCap == capacity, which init rules out
			i = s.lists[protected].tail
		}
		s.unlink(i)
		delete(s.index, s.nodes[i].addr)
	}
	s.nodes[i] = node{addr: a, tokens: burst, last: now, prev: none, next: none}
	s.index[a] = i
	s.pushFront(probation, i)
	return i
}

func (s *shard) pushFront(seg uint8, i int32) {
	l := &s.lists[seg]
	nd := &s.nodes[i]
	nd.seg, nd.prev, nd.next = seg, none, l.head
	if l.head != none {
		s.nodes[l.head].prev = i
	} else {
		l.tail = i
	}
	l.head = i
	l.n++
}

func (s *shard) unlink(i int32) {
	nd := &s.nodes[i]
	l := &s.lists[nd.seg]
	if nd.prev != none {
		s.nodes[nd.prev].next = nd.next
	} else {
		l.head = nd.next
	}
	if nd.next != none {
		s.nodes[nd.next].prev = nd.prev
	} else {
		l.tail = nd.prev
	}
	nd.prev, nd.next = none, none
	l.n--
}
