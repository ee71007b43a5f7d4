package cache

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/dnswire"
	"github.com/nodedns/nodedns/reply"
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

// NewEntry builds the entry for resp, the upstream's reply to a question
// whose cache key is key. It returns a nil entry and no error when the
// reply must not be cached (truncated, an unusual RCODE, no SOA to time a
// negative answer, a zero TTL), and an error when the reply's question is
// not the key's. resp is not modified.
//
// Every record gets its own TTL (clamped, or the negative TTL for the SOA
// of a denial), and the entry lives as long as its shortest one: no record
// is ever served with TTL 0 while the entry lives (Unbound times a message
// by its shortest RRset too).
func (p Policy) NewEntry(key []byte, resp *dns.Msg, now time.Time) (*Entry, error) {
	kind, limit := p.classify(resp)
	if kind == KindUncacheable || limit <= 0 {
		return nil, nil
	}
	m := reply.Served(resp)
	ttls := make([]uint32, 0, len(m.Answer)+len(m.Ns)+len(m.Extra))
	life := limit
	for _, rrs := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range rrs {
			v := p.recordTTL(kind, rr, limit)
			rr.Header().Ttl = v
			ttls = append(ttls, v)
			life = min(life, time.Duration(v)*time.Second)
		}
	}
	if life <= 0 {
		return nil, nil
	}
	return build(key, m, ttls, kind, now, life)
}

// NewTransient builds an entry that is not stored: the reply to a query
// whose answer is not cached (RD=0, ECS, a TTL of 0...), shaped like every
// other reply (no AA, RA set, our OPT instead of the upstream's), its TTLs
// as the upstream gave them. Rendering it is AppendReply, the one way
// nodedns renders an answer with records.
func NewTransient(resp *dns.Msg, now time.Time) (*Entry, error) {
	if len(resp.Question) != 1 {
		return nil, fmt.Errorf("cache: reply with %d questions", len(resp.Question))
	}
	key := KeyOf(nil, resp)
	if key == nil {
		return nil, fmt.Errorf("cache: reply for %q: bad name", resp.Question[0].Name)
	}
	m := reply.Served(resp)
	var ttls []uint32
	for _, rrs := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range rrs {
			ttls = append(ttls, rr.Header().Ttl)
		}
	}
	return build(key, m, ttls, KindUncacheable, now, 0)
}

// build packs m and makes the entry; ttls are its records' TTLs, in order.
func build(key []byte, m *dns.Msg, ttls []uint32, kind Kind, now time.Time, life time.Duration) (*Entry, error) {
	packed, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("cache: packing reply: %w", err)
	}
	offs, err := dnswire.TTLOffsets(packed, make([]uint16, 0, len(ttls)))
	if err != nil || len(offs) != len(ttls) {
		return nil, fmt.Errorf("cache: walking packed reply: %v (%d of %d TTLs)", err, len(offs), len(ttls))
	}
	qEnd, err := dnswire.LowerQuestion(packed)
	if err != nil {
		return nil, err
	}
	// AppendReply copies the client's question name over the stored one, so
	// the reply must be for the very question the key was made from.
	if len(key) != qEnd-dnswire.HeaderLen+1 || !bytes.Equal(key[:len(key)-1], packed[dnswire.HeaderLen:qEnd]) {
		return nil, fmt.Errorf("cache: reply for %s %s does not match the key",
			m.Question[0].Name, dns.Type(m.Question[0].Qtype))
	}
	return newEntry(key, packed, offs, ttls, kind, now, life), nil
}

// classify returns the reply's kind and the longest it may be cached: the
// negative TTL of a denial, servfail_ttl for SERVFAIL, max_ttl (or the most
// an entry holds) for a positive answer, whose records then decide.
func (p Policy) classify(resp *dns.Msg) (Kind, time.Duration) {
	if resp.Truncated || len(resp.Question) != 1 || resp.Opcode != dns.OpcodeQuery {
		return KindUncacheable, 0
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
		if answersQuestion(resp) {
			return KindPositive, p.clamp(maxEntryTTL)
		}
		// NODATA, possibly after a CNAME chain (RFC 2308 section 5: the
		// chain ends in a denial, timed by the SOA like any other).
		if ttl, ok := p.negativeTTL(resp); ok {
			return KindNoData, ttl
		}
		return KindUncacheable, 0 // a referral, or a denial with no SOA to time it
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

// answersQuestion reports whether the answer section holds data of the
// asked type for the asked name, directly or at the end of a CNAME chain
// (a DNAME comes with the CNAME it synthesizes).
func answersQuestion(resp *dns.Msg) bool {
	q := resp.Question[0]
	switch q.Qtype {
	case dns.TypeCNAME, dns.TypeANY, dns.TypeRRSIG:
		return len(resp.Answer) > 0
	}
	name := q.Name
	for range len(resp.Answer) + 1 { // each step follows one CNAME: bounded, even in a loop
		next := ""
		for _, rr := range resp.Answer {
			h := rr.Header()
			if !strings.EqualFold(h.Name, name) {
				continue
			}
			if h.Rrtype == q.Qtype {
				return true
			}
			if c, ok := rr.(*dns.CNAME); ok {
				next = c.Target
			}
		}
		if next == "" {
			return false
		}
		name = next
	}
	return false
}

func (p Policy) clamp(d time.Duration) time.Duration {
	if d < p.MinTTL {
		d = p.MinTTL
	}
	if p.MaxTTL > 0 && d > p.MaxTTL {
		d = p.MaxTTL
	}
	d = min(d, maxEntryTTL) // what an entry can hold: 49 days
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

// recordTTL is the TTL a record is stored with: its own, clamped by
// min_ttl and max_ttl, and never above limit (what classify allows). In a
// denial the SOA carries the negative TTL itself (RFC 2308 section 3), so a
// client caches the denial exactly as long as we do, and a CNAME before it
// lives no longer than it.
func (p Policy) recordTTL(kind Kind, rr dns.RR, limit time.Duration) uint32 {
	if _, ok := rr.(*dns.SOA); ok && (kind == KindNXDomain || kind == KindNoData) {
		return uint32(limit / time.Second)
	}
	d := min(p.clamp(time.Duration(rr.Header().Ttl)*time.Second), limit)
	return uint32(d / time.Second)
}
