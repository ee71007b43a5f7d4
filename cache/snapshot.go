package cache

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/nodedns/nodedns/dnswire"
)

// A snapshot carries the cache from one process to the next across an
// upgrade, so that the new one answers the names in use without asking the
// upstream again. It is the entries as they are stored (packed replies,
// TTL tables, the time each was stored), in a file of its own format:
//
//	magic "NODEDNS-CACHE\n" | version uint16 | count uint32 | created int64 (UnixNano)
//	count records: length uint32 | stored int64 | ttl uint32 (ms) | kind uint8 | klen uint16 | mlen uint16 | data
//	CRC-32C of all the above, uint32
//
// all big-endian. A snapshot is read in full and checked before any entry
// is used: a wrong magic or version (a foreign file, a newer format), a
// bad checksum (a torn or corrupt file), or a record that does not hold
// together (its reply does not walk, its TTL table does not point at its
// TTL fields, its question is not its key's) rejects the whole file.

const (
	snapshotMagic   = "NODEDNS-CACHE\n"
	snapshotVersion = 1
	snapshotHeader  = len(snapshotMagic) + 2 + 4 + 8
	recordHeader    = 4 + 8 + 4 + 1 + 2 + 2
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrSnapshot marks a snapshot that was rejected: foreign, corrupt or
// inconsistent.
var ErrSnapshot = errors.New("cache snapshot rejected")

// WriteSnapshot writes every entry still worth keeping at now (fresh, or
// within the serve-stale window) to w, least recently used first within
// each shard, and returns how many it wrote.
func (c *Cache) WriteSnapshot(w io.Writer, now time.Time) (int, error) {
	nowNano := now.UnixNano()
	var entries []*Entry
	c.store.each(func(e *Entry) {
		if e.Fresh(nowNano) || c.usableStale(e, nowNano) {
			entries = append(entries, e)
		}
	})
	crc := crc32.New(crcTable)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 64<<10)
	var hdr [snapshotHeader]byte
	copy(hdr[:], snapshotMagic)
	binary.BigEndian.PutUint16(hdr[len(snapshotMagic):], snapshotVersion)
	binary.BigEndian.PutUint32(hdr[len(snapshotMagic)+2:], uint32(len(entries)))
	binary.BigEndian.PutUint64(hdr[len(snapshotMagic)+6:], uint64(nowNano))
	if _, err := bw.Write(hdr[:]); err != nil {
		return 0, err
	}
	var rec [recordHeader]byte
	for _, e := range entries {
		binary.BigEndian.PutUint32(rec[0:], uint32(recordHeader+len(e.data)))
		binary.BigEndian.PutUint64(rec[4:], uint64(e.stored))
		binary.BigEndian.PutUint32(rec[12:], e.ttl)
		rec[16] = byte(e.Kind())
		binary.BigEndian.PutUint16(rec[17:], uint16(e.klen()))
		binary.BigEndian.PutUint16(rec[19:], e.mlen)
		if _, err := bw.Write(rec[:]); err != nil {
			return 0, err
		}
		if _, err := bw.WriteString(e.data); err != nil {
			return 0, err
		}
	}
	if err := bw.Flush(); err != nil {
		return 0, err
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc.Sum32())
	if _, err := w.Write(sum[:]); err != nil {
		return 0, err
	}
	return len(entries), nil
}

// LoadSnapshot reads a snapshot from r (at most limit bytes) and adds its
// entries that are still worth keeping at now, skipping keys the cache
// already holds (what this process stored is newer) and stopping once the
// cache is full. Entries stored after now are dropped, and TTLs are held
// to what the cache's policy allows today, as for an upstream's answer. It
// returns how many it added; on ErrSnapshot nothing was added.
func (c *Cache) LoadSnapshot(r io.Reader, now time.Time, limit int64) (int, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return 0, err
	}
	if int64(len(b)) > limit {
		return 0, fmt.Errorf("%w: larger than %d bytes", ErrSnapshot, limit)
	}
	entries, err := parseSnapshot(b)
	if err != nil {
		return 0, err
	}
	nowNano := now.UnixNano()
	room := c.maxBytes - c.Bytes()
	added := 0
	policy := c.policy.Load()
	for _, e := range entries {
		// A file is trusted no further than an upstream: no entry from the
		// future (a clock set back, or a forged file), and no TTL beyond
		// what this configuration allows.
		if e.stored > nowNano+int64(time.Second) {
			continue
		}
		if e = policy.reclamp(e); e == nil {
			continue
		}
		if !e.Fresh(nowNano) && !c.usableStale(e, nowNano) {
			continue
		}
		if room -= int64(e.Size()); room < 0 {
			break
		}
		key := []byte(e.key())
		if _, ok := c.Get(key); ok {
			continue
		}
		c.store.Add(c.hash(key), e)
		added++
	}
	return added, nil
}

// parseSnapshot checks a whole snapshot and returns its entries.
func parseSnapshot(b []byte) ([]*Entry, error) {
	bad := func(format string, args ...any) ([]*Entry, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{ErrSnapshot}, args...)...)
	}
	if len(b) < snapshotHeader+4 || string(b[:len(snapshotMagic)]) != snapshotMagic {
		return bad("not a nodedns cache snapshot")
	}
	if v := binary.BigEndian.Uint16(b[len(snapshotMagic):]); v != snapshotVersion {
		return bad("format version %d, this nodedns reads %d", v, snapshotVersion)
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return bad("checksum mismatch (a torn or corrupt file)")
	}
	count := int(binary.BigEndian.Uint32(b[len(snapshotMagic)+2:]))
	if count > len(body)/recordHeader {
		return bad("%d records cannot fit in %d bytes", count, len(body))
	}
	entries := make([]*Entry, 0, count)
	p := body[snapshotHeader:]
	offs := make([]uint16, 0, 16)
	for i := range count {
		if len(p) < recordHeader {
			return bad("record %d: truncated", i)
		}
		n := int(binary.BigEndian.Uint32(p))
		if n < recordHeader || n > len(p) {
			return bad("record %d: length %d", i, n)
		}
		e, err := recordEntry(p[:n], offs)
		if err != nil {
			return bad("record %d: %v", i, err)
		}
		entries = append(entries, e)
		p = p[n:]
	}
	if len(p) != 0 {
		return bad("%d bytes after the last record", len(p))
	}
	return entries, nil
}

// recordEntry rebuilds one entry and checks that it holds together, as
// build does for an entry made from an upstream's reply: the fast path
// trusts an entry's TTL table and question.
func recordEntry(rec []byte, offs []uint16) (*Entry, error) {
	stored := int64(binary.BigEndian.Uint64(rec[4:]))
	ttl := binary.BigEndian.Uint32(rec[12:])
	kind := Kind(rec[16])
	klen := int(binary.BigEndian.Uint16(rec[17:]))
	mlen := int(binary.BigEndian.Uint16(rec[19:]))
	data := rec[recordHeader:]
	switch {
	case kind > KindUncacheable:
		return nil, fmt.Errorf("kind %d", kind)
	case klen < 6 || klen > dnswire.MaxKeyLen || klen+mlen > len(data) || (len(data)-klen-mlen)%ttlRefLen != 0:
		return nil, fmt.Errorf("lengths: key %d, reply %d, data %d", klen, mlen, len(data))
	}
	key, msg, refs := data[:klen], data[klen:klen+mlen], data[klen+mlen:]
	if _, _, _, _, _, ok := dnswire.ParseKey(key); !ok {
		return nil, errors.New("bad key")
	}
	got, err := dnswire.TTLOffsets(msg, offs[:0])
	if err != nil {
		return nil, fmt.Errorf("reply: %v", err)
	}
	if len(got)*ttlRefLen != len(refs) {
		return nil, fmt.Errorf("%d TTL fields, a table of %d", len(got), len(refs)/ttlRefLen)
	}
	for i, off := range got {
		if int(binary.BigEndian.Uint16(refs[i*ttlRefLen:])) != int(off) {
			return nil, fmt.Errorf("TTL table entry %d does not point at a TTL", i)
		}
	}
	qEnd := dnswire.HeaderLen + klen - 1
	if mlen < qEnd || !bytes.Equal(msg[dnswire.HeaderLen:qEnd], key[:klen-1]) {
		return nil, errors.New("the reply's question is not the key's")
	}
	return &Entry{
		data:    string(data),
		stored:  stored,
		ttl:     ttl,
		keyKind: uint16(klen) | uint16(kind)<<12,
		mlen:    uint16(mlen),
	}, nil
}

// reclamp returns e with its lifetime and record TTLs held to what p
// allows for its kind (max_ttl, negative_ttl, servfail_ttl), e itself when
// they already are, or nil for an entry the policy would not store.
func (p Policy) reclamp(e *Entry) *Entry {
	var limit time.Duration
	switch e.Kind() {
	case KindPositive:
		limit = p.clamp(maxEntryTTL)
	case KindNXDomain, KindNoData:
		limit = maxEntryTTL
		if p.NegativeTTL > 0 {
			limit = p.NegativeTTL
		}
	case KindServFail:
		limit = p.ServFailTTL
	default:
		return nil
	}
	if limit <= 0 {
		return nil
	}
	secs := uint32(limit / time.Second)
	refs := e.ttlRefs()
	over := e.OrigTTL() > limit
	for i := 0; i < len(refs) && !over; i += ttlRefLen {
		_, ttl := ttlRef(refs, i)
		over = ttl > secs
	}
	if !over {
		return e
	}
	data := []byte(e.data)
	table := data[len(data)-len(refs):]
	for i := 0; i < len(table); i += ttlRefLen {
		if _, ttl := ttlRef(refs, i); ttl > secs {
			binary.BigEndian.PutUint32(table[i+2:], secs)
		}
	}
	return &Entry{data: string(data), stored: e.stored, ttl: uint32(min(e.OrigTTL(), limit) / time.Millisecond),
		keyKind: e.keyKind, mlen: e.mlen}
}
