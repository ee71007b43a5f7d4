package cache

import (
	"encoding/binary"
	"sync/atomic"
	"time"

	"github.com/nodedns/nodedns/dnswire"
)

// Entry is one cached reply, stored packed: the header with ID 0 and AA
// cleared, the question in lower case, and the records with the OPT record
// removed. Serving it is a copy and a few patches, never a repack.
//
// An entry is small because a cache holds hundreds of thousands: the key,
// the reply and the table of TTL fields share one immutable string, and the
// struct itself fits Go's 48-byte size class.
type Entry struct {
	// data holds, back to back: the key (dnswire.AppendKey), the packed
	// reply, and for each TTL field to count down, in message order, its
	// offset in the reply (2 bytes) and its stored value (4 bytes).
	data string
	// stored is the UnixNano time the entry was stored at; it is fresh
	// until stored + ttl milliseconds.
	stored int64
	// staleRecheck is the UnixNano time until which the upstream is not
	// asked about this entry again, after a refresh failed: a stale entry is
	// served as it is (the "failure recheck timer" of RFC 8767 section 5),
	// and a fresh one is not prefetched.
	staleRecheck atomic.Int64
	ttl          uint32        // milliseconds: at most 49 days (maxEntryTTL)
	hits         atomic.Uint32 // fresh hits, to prefetch only entries in use
	// refreshing is set while a prefetch or stale refresh of this entry is
	// running, so that at most one runs (CAS from false to true).
	refreshing atomic.Bool
	// keyKind holds the key's length (low 12 bits; at most
	// dnswire.MaxKeyLen) and the Kind (high 4 bits), to keep the struct in
	// its size class.
	keyKind uint16
	mlen    uint16 // length of the reply in data
}

// ttlRefLen is the size of one TTL reference in Entry.data.
const ttlRefLen = 6

// maxEntryTTL is the longest an entry stays fresh, whatever the policy:
// what Entry.ttl holds.
const maxEntryTTL = time.Duration(1<<32-1) * time.Millisecond

// newEntry assembles an entry; refs pairs each TTL offset with its value.
func newEntry(key, msg []byte, offs []uint16, ttls []uint32, kind Kind, stored time.Time, ttl time.Duration) *Entry {
	b := make([]byte, 0, len(key)+len(msg)+ttlRefLen*len(offs))
	b = append(b, key...)
	b = append(b, msg...)
	for i, off := range offs {
		b = binary.BigEndian.AppendUint16(b, off)
		b = binary.BigEndian.AppendUint32(b, ttls[i])
	}
	return &Entry{
		data:    string(b),
		stored:  stored.UnixNano(),
		ttl:     uint32(min(ttl, maxEntryTTL) / time.Millisecond),
		keyKind: uint16(len(key)) | uint16(kind)<<12,
		mlen:    uint16(len(msg)),
	}
}

func (e *Entry) klen() int   { return int(e.keyKind & 0xFFF) }
func (e *Entry) key() string { return e.data[:e.klen()] }
func (e *Entry) msg() string { return e.data[e.klen() : e.klen()+int(e.mlen)] }

// qEnd is the offset just past the question in the reply: the key is the
// question's name, type, class and one byte of flags.
func (e *Entry) qEnd() int { return dnswire.HeaderLen + e.klen() - 1 }

// ttlRefs is the TTL table: ttlRefLen bytes per TTL field.
func (e *Entry) ttlRefs() string { return e.data[e.klen()+int(e.mlen):] }

// ttlRef returns the offset and stored value of the TTL field at table
// position p (a multiple of ttlRefLen).
func ttlRef(refs string, p int) (off int, ttl uint32) {
	off = int(refs[p])<<8 | int(refs[p+1])
	ttl = uint32(refs[p+2])<<24 | uint32(refs[p+3])<<16 | uint32(refs[p+4])<<8 | uint32(refs[p+5])
	return off, ttl
}

// entryOverhead is what an entry costs besides the struct and its data,
// measured with Go 1.26 (TestAccountedBytesMatchTheHeap checks it): the
// LRU list element of golang-lru (80 bytes) and the shard map's slot with
// its share of free slots (about 30).
const entryOverhead = 110

// entryStructSize is the size class of the Entry struct.
const entryStructSize = 48

// Size implements Sized: the heap an entry takes.
func (e *Entry) Size() int { return entryStructSize + allocSize(len(e.data)) + entryOverhead }

// allocSize rounds a heap allocation up to Go's size class, which is what
// it takes (runtime/sizeclasses.go; classes above 1 KiB step more coarsely,
// which the round-up to 128 bytes approximates within a few percent).
func allocSize(n int) int {
	switch {
	case n <= 0:
		return 0
	case n <= 16:
		return (n + 7) &^ 7
	case n <= 128:
		return (n + 15) &^ 15
	case n <= 256:
		return (n + 31) &^ 31
	case n <= 512:
		return (n + 63) &^ 63
	}
	return (n + 127) &^ 127
}

// Kind returns the reply's classification.
func (e *Entry) Kind() Kind { return Kind(e.keyKind >> 12) }

// expires is the UnixNano time the entry's TTL runs out.
func (e *Entry) expires() int64 { return e.stored + int64(e.ttl)*int64(time.Millisecond) }

// Fresh reports whether the entry's TTL has not run out at now (UnixNano).
func (e *Entry) Fresh(now int64) bool { return now < e.expires() }

// Key returns the cache key the entry is stored under.
func (e *Entry) Key() []byte { return []byte(e.key()) }

// OrigTTL returns the TTL the entry was stored with.
func (e *Entry) OrigTTL() time.Duration { return time.Duration(e.ttl) * time.Millisecond }

// Hit counts a fresh hit and returns the number of hits so far.
func (e *Entry) Hit() uint32 { return e.hits.Add(1) }

// BeginRefresh claims the right to refresh the entry; it returns false when
// a refresh is already running. EndRefresh gives it back.
func (e *Entry) BeginRefresh() bool { return e.refreshing.CompareAndSwap(false, true) }

// EndRefresh ends a refresh claimed with BeginRefresh.
func (e *Entry) EndRefresh() { e.refreshing.Store(false) }

// ServeStaleUntil makes the upstream not be asked about the entry again
// until t (UnixNano): a stale entry is served as it is, a fresh one is not
// prefetched.
func (e *Entry) ServeStaleUntil(t int64) { e.staleRecheck.Store(t) }

// InStaleRecheck reports whether now is within the time set by
// ServeStaleUntil.
func (e *Entry) InStaleRecheck(now int64) bool { return now < e.staleRecheck.Load() }

// TTL returns the remaining time to live at now (UnixNano).
func (e *Entry) TTL(now int64) time.Duration { return time.Duration(e.expires() - now) }

// Rcode returns the DNS response code of the stored reply.
func (e *Entry) Rcode() int { return int(e.data[e.klen()+3] & 0xF) }

// elapsed is the number of whole seconds since the entry was stored, never
// negative: a clock stepped back must not raise a TTL above the stored one.
func (e *Entry) elapsed(now int64) int64 { return max(now-e.stored, 0) / int64(time.Second) }

// keyName is the name part of the entry's key, in lower-case wire form.
func (e *Entry) keyName() string { k := e.key(); return k[:len(k)-5] }
