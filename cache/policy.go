package cache

import (
	"bytes"
	"fmt"
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

	ttls := make([]uint32, 0, len(m.Answer)+len(m.Ns)+len(m.Extra))
	clampSection := func(rrs []dns.RR) {
		for _, rr := range rrs {
			h := rr.Header()
			v := p.recordTTL(kind, rr, ttl)
			h.Ttl = v
			ttls = append(ttls, v)
		}
	}
	clampSection(m.Answer)
	clampSection(m.Ns)
	clampSection(m.Extra)

	packed, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("cache: packing reply: %w", err)
	}
	offs, err := dnswire.TTLOffsets(packed, make([]uint16, 0, len(ttls)))
	if err != nil || len(offs) != len(ttls) {
		return nil, fmt.Errorf("cache: walking packed reply: %v (%d of %d TTLs)", err, len(offs), len(ttls))
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
	return newEntry(key, packed, offs, ttls, kind, now, ttl), nil
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
