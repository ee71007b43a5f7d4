package cache

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/dnswire"
)

// Kind classifies a reply once, so that the rules that depend on it are a
// switch and not a chain of conditions (after CoreDNS's response.Type).
type Kind uint8

// Kinds of cached replies.
const (
	KindPositive Kind = iota // NOERROR with records in the answer section
	KindNXDomain             // name does not exist (RFC 2308 section 2.1)
	KindNoData               // name exists, type does not (RFC 2308 section 2.2)
	KindServFail             // upstream failure, cached briefly to absorb retries
	KindUncacheable
)

// String names the kind for metrics and logs.
func (k Kind) String() string {
	switch k {
	case KindPositive:
		return "positive"
	case KindNXDomain:
		return "nxdomain"
	case KindNoData:
		return "nodata"
	case KindServFail:
		return "servfail"
	}
	return "uncacheable"
}

// Policy holds the TTL rules applied when a reply is stored.
type Policy struct {
	// MinTTL and MaxTTL clamp the TTL of positive answers.
	MinTTL, MaxTTL time.Duration
	// NegativeTTL caps the TTL of NXDOMAIN and NODATA answers, which RFC 2308
	// section 5 takes from the SOA record of the authority section.
	NegativeTTL time.Duration
	// ServFailTTL is how long an upstream SERVFAIL is kept; RFC 2308 section
	// 7.1 allows up to five minutes, but a few seconds are enough to absorb
	// a retry storm without hiding the upstream's recovery. 0 disables it.
	ServFailTTL time.Duration
	// ServeStale is how long an entry is kept after its TTL ran out, to be
	// served when upstreams fail or are too slow (RFC 8767). 0 disables it.
	ServeStale time.Duration
}

// Entry is one cached reply, stored packed: the header with ID 0 and AA
// cleared, the question in lower case, and the records with the OPT record
// removed. Serving it is a copy and a few patches, never a repack.
type Entry struct {
	key  []byte   // as built by dnswire.AppendKey; compared on every hit
	msg  []byte   // packed reply
	qEnd int      // offset just past the question in msg
	ttls []ttlRef // TTL fields to count down, in message order
	// stored and expires are UnixNano times. An entry is fresh while
	// now < expires.
	stored, expires int64
	kind            Kind

	// hits counts fresh hits, to prefetch only entries that are in use.
	hits atomic.Uint32
	// staleRecheck is the UnixNano time until which a stale entry is served
	// without asking upstream again, after a refresh failed (the "failure
	// recheck timer" of RFC 8767 section 5).
	staleRecheck atomic.Int64
	// refreshing is set while a prefetch or stale refresh of this entry is
	// running, so that at most one runs (CAS from false to true).
	refreshing atomic.Bool
}

// ttlRef is one TTL field of the packed reply and the value it had when
// stored, after clamping.
type ttlRef struct {
	off uint16
	ttl uint32
}

// entryOverhead approximates the struct, slice headers, LRU list element
// and map slot of an entry, so that the byte bound tracks real memory.
const entryOverhead = 200

// Size implements Sized.
func (e *Entry) Size() int { return entryOverhead + len(e.key) + cap(e.msg) + 8*cap(e.ttls) }

// Kind returns the reply's classification.
func (e *Entry) Kind() Kind { return e.kind }

// Fresh reports whether the entry's TTL has not run out at now (UnixNano).
func (e *Entry) Fresh(now int64) bool { return now < e.expires }

// Key returns the cache key the entry is stored under. Callers must not
// modify it.
func (e *Entry) Key() []byte { return e.key }

// OrigTTL returns the TTL the entry was stored with.
func (e *Entry) OrigTTL() time.Duration { return time.Duration(e.expires - e.stored) }

// Hit counts a fresh hit and returns the number of hits so far.
func (e *Entry) Hit() uint32 { return e.hits.Add(1) }

// BeginRefresh claims the right to refresh the entry; it returns false when
// a refresh is already running. EndRefresh gives it back.
func (e *Entry) BeginRefresh() bool { return e.refreshing.CompareAndSwap(false, true) }

// ServeStaleUntil makes the entry be served stale without a new upstream
// attempt until t (UnixNano).
func (e *Entry) ServeStaleUntil(t int64) { e.staleRecheck.Store(t) }

// InStaleRecheck reports whether now is within the time set by
// ServeStaleUntil.
func (e *Entry) InStaleRecheck(now int64) bool { return now < e.staleRecheck.Load() }

// EndRefresh ends a refresh claimed with BeginRefresh.
func (e *Entry) EndRefresh() { e.refreshing.Store(false) }

// TTL returns the remaining time to live at now (UnixNano).
func (e *Entry) TTL(now int64) time.Duration { return time.Duration(e.expires - now) }

// Rcode returns the DNS response code of the stored reply.
func (e *Entry) Rcode() int { return dnswire.Rcode(e.msg) }

// NewEntry builds the entry for resp, the upstream's reply to a question
// whose cache key is key. It returns a nil entry and no error when the
// reply must not be cached (truncated, an unusual RCODE, no SOA to time a
// negative answer, a zero TTL), and an error when the reply's question is
// not the key's. resp is not modified.
func (p Policy) NewEntry(key []byte, resp *dns.Msg, now time.Time) (*Entry, error) {
	kind, ttl := p.classify(resp)
	if kind == KindUncacheable || ttl <= 0 {
		return nil, nil
	}
	m := resp.Copy()
	m.Id = 0
	m.Authoritative = false     // a cache is never the authority
	m.RecursionAvailable = true // it is what nodedns offers, whatever the upstream said
	m.Extra = stripOPT(m.Extra)
	m.Compress = true

	refs := make([]ttlRef, 0, len(m.Answer)+len(m.Ns)+len(m.Extra))
	clampSection := func(rrs []dns.RR) {
		for _, rr := range rrs {
			h := rr.Header()
			v := p.recordTTL(kind, rr, ttl)
			h.Ttl = v
			refs = append(refs, ttlRef{ttl: v})
		}
	}
	clampSection(m.Answer)
	clampSection(m.Ns)
	clampSection(m.Extra)

	packed, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("cache: packing reply: %w", err)
	}
	// Pack's buffer is sized for the message without compression, often
	// twice what it holds: keep only the bytes, for they live in the cache.
	packed = bytes.Clone(packed)
	offs, err := dnswire.TTLOffsets(packed, make([]uint16, 0, len(refs)))
	if err != nil || len(offs) != len(refs) {
		return nil, fmt.Errorf("cache: walking packed reply: %v (%d of %d TTLs)", err, len(offs), len(refs))
	}
	for i, off := range offs {
		refs[i].off = off
	}
	qEnd, err := lowerQuestion(packed)
	if err != nil {
		return nil, err
	}
	// AppendReply copies the client's question name over the stored one, so
	// the reply must be for the very question the key was made from.
	if len(key) != qEnd-dnswire.HeaderLen+1 || !bytes.Equal(key[:len(key)-1], packed[dnswire.HeaderLen:qEnd]) {
		return nil, fmt.Errorf("cache: reply for %s %s does not match the key",
			resp.Question[0].Name, dns.Type(resp.Question[0].Qtype))
	}
	st := now.UnixNano()
	return &Entry{
		key:     append([]byte(nil), key...),
		msg:     packed,
		qEnd:    qEnd,
		ttls:    refs,
		stored:  st,
		expires: st + int64(ttl),
		kind:    kind,
	}, nil
}

// lowerQuestion lower-cases, in place, the name of the single question of a
// packed message (uncompressed: it is the first name) and returns the offset
// just past the question. It works on the wire form, where a name like
// "A\.B" is three bytes, and not on the presentation form.
func lowerQuestion(msg []byte) (int, error) {
	off := dnswire.HeaderLen
	for off < len(msg) && msg[off] != 0 {
		l := int(msg[off])
		if l > 63 || off+1+l > len(msg) {
			return 0, fmt.Errorf("cache: bad question name in packed reply")
		}
		for i := off + 1; i <= off+l; i++ {
			if 'A' <= msg[i] && msg[i] <= 'Z' {
				msg[i] += 'a' - 'A'
			}
		}
		off += 1 + l
	}
	off += 1 + 4 // root label, qtype, qclass
	if off > len(msg) {
		return 0, fmt.Errorf("cache: short question in packed reply")
	}
	return off, nil
}

// classify returns the reply's kind and how long it may be cached.
func (p Policy) classify(resp *dns.Msg) (Kind, time.Duration) {
	if resp.Truncated || len(resp.Question) != 1 || resp.Opcode != dns.OpcodeQuery {
		return KindUncacheable, 0
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
		if len(resp.Answer) > 0 {
			return KindPositive, p.positiveTTL(resp.Answer)
		}
		if ttl, ok := p.negativeTTL(resp); ok {
			return KindNoData, ttl
		}
		return KindUncacheable, 0 // a referral or a reply with no SOA
	case dns.RcodeNameError:
		if ttl, ok := p.negativeTTL(resp); ok {
			return KindNXDomain, ttl
		}
		return KindUncacheable, 0
	case dns.RcodeServerFailure:
		return KindServFail, p.ServFailTTL
	}
	return KindUncacheable, 0
}

// positiveTTL is the smallest TTL of the answer section, clamped.
func (p Policy) positiveTTL(answer []dns.RR) time.Duration {
	minTTL := uint32(1<<32 - 1)
	for _, rr := range answer {
		minTTL = min(minTTL, rr.Header().Ttl)
	}
	return p.clamp(time.Duration(minTTL) * time.Second)
}

func (p Policy) clamp(d time.Duration) time.Duration {
	if d < p.MinTTL {
		d = p.MinTTL
	}
	if p.MaxTTL > 0 && d > p.MaxTTL {
		d = p.MaxTTL
	}
	return d.Truncate(time.Second)
}

// negativeTTL is min(SOA TTL, SOA MINIMUM) of the authority section's SOA,
// capped by NegativeTTL (RFC 2308 section 5).
func (p Policy) negativeTTL(resp *dns.Msg) (time.Duration, bool) {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			d := time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
			if p.NegativeTTL > 0 && d > p.NegativeTTL {
				d = p.NegativeTTL
			}
			return d.Truncate(time.Second), true
		}
	}
	return 0, false
}

// recordTTL is the TTL a record is stored with. Positive records are
// clamped like the answer; in a negative answer the SOA carries the negative
// TTL itself (RFC 2308 section 3), so a client caches the denial exactly as
// long as we do.
func (p Policy) recordTTL(kind Kind, rr dns.RR, entryTTL time.Duration) uint32 {
	if _, ok := rr.(*dns.SOA); ok && (kind == KindNXDomain || kind == KindNoData) {
		return uint32(entryTTL / time.Second)
	}
	d := p.clamp(time.Duration(rr.Header().Ttl) * time.Second)
	if kind != KindPositive && d > entryTTL {
		d = entryTTL // a CNAME before a denial lives no longer than the denial
	}
	return uint32(d / time.Second)
}

func stripOPT(rrs []dns.RR) []dns.RR {
	out := rrs[:0]
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}

// ReplyOptions says how to shape a reply for one client.
type ReplyOptions struct {
	// MaxSize is the largest reply the transport takes: the client's EDNS
	// UDP size (capped by ours) or 512 over UDP, 65535 over TCP.
	MaxSize int
	// UDPSize is the payload size nodedns advertises in its OPT record.
	UDPSize uint16
	// StaleTTL, when not zero, replaces every TTL of the reply: a stale
	// answer goes out with a short TTL (RFC 8767 section 4 suggests 30 s)
	// so that clients come back soon for a fresh one.
	StaleTTL uint32
}

// AppendReply appends the reply to the query q (parsed from req) to dst:
// the stored packet with the query's ID, RD and CD bits and question name
// (so the case the client used comes back), AD only when the query set AD
// or DO (RFC 6840 section 5.8; the key does not tell AD apart), TTLs counted
// down to now (UnixNano), an OPT record when the query had one, and
// truncated with TC when it does not fit opts.MaxSize. It does not allocate
// when dst has room.
func (e *Entry) AppendReply(dst []byte, req []byte, q *dnswire.Query, now int64, opts ReplyOptions) []byte {
	start := len(dst)
	dst = append(dst, e.msg...)
	r := dst[start:]
	dnswire.SetID(r, q.ID)
	f := dnswire.Flags(r)&^(dnswire.FlagRD|dnswire.FlagCD) | q.Flags&(dnswire.FlagRD|dnswire.FlagCD)
	if !q.DO && q.Flags&dnswire.FlagAD == 0 {
		f &^= dnswire.FlagAD
	}
	dnswire.SetFlags(r, f)
	copy(r[dnswire.HeaderLen:], q.Name) // same length: the key matched

	elapsed := e.elapsed(now)
	for _, t := range e.ttls {
		v := int64(t.ttl) - elapsed
		if v < 0 {
			v = 0
		}
		if opts.StaleTTL != 0 {
			v = int64(opts.StaleTTL)
		}
		binary.BigEndian.PutUint32(r[t.off:], uint32(v))
	}
	optLen := 0
	if q.EDNS {
		optLen = dnswire.OPTLen
	}
	if len(r)+optLen > opts.MaxSize {
		dst = dst[:start+len(dnswire.Truncate(r, e.qEnd))]
	}
	if q.EDNS {
		dst = dnswire.AppendOPT(dst, start, opts.UDPSize, q.DO)
	}
	return dst
}

// elapsed is the number of whole seconds since the entry was stored, never
// negative: a clock stepped back must not raise a TTL above the stored one.
func (e *Entry) elapsed(now int64) int64 { return max(now-e.stored, 0) / int64(time.Second) }

// Msg returns the entry as a message with TTLs counted down to now, for the
// paths that work on unpacked messages.
func (e *Entry) Msg(now int64) (*dns.Msg, error) {
	buf := make([]byte, len(e.msg))
	copy(buf, e.msg)
	elapsed := e.elapsed(now)
	for _, t := range e.ttls {
		binary.BigEndian.PutUint32(buf[t.off:], uint32(max(int64(t.ttl)-elapsed, 0)))
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf); err != nil {
		return nil, fmt.Errorf("cache: unpacking entry: %w", err)
	}
	return m, nil
}
