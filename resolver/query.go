package resolver

import (
	"bytes"
	"slices"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/dnswire"
)

// What nodedns checks in a query it resolves, and what it keeps of one
// while the query waits: the full parser's checks (checkRequest), the
// compact copy a waiting query or a walk holds (compactQuery,
// keepForWalk), and the
// query a prefetch rebuilds from a cache key (queryForKey).

// checkRequest returns the error RCODE for a query nodedns answers without
// resolving it, and false for a query it resolves. RFC 8906: every query
// gets an answer, never silence.
func checkRequest(req *dns.Msg) (int, bool) {
	switch {
	case req.Opcode != dns.OpcodeQuery:
		return dns.RcodeNotImplemented, true
	case len(req.Question) != 1:
		return dns.RcodeFormatError, true
	}
	opts := 0
	for _, rr := range req.Extra {
		if rr.Header().Rrtype == dns.TypeOPT {
			opts++
		}
	}
	if opts > 1 {
		return dns.RcodeFormatError, true // RFC 6891 section 6.1.1
	}
	if opt := req.IsEdns0(); opt != nil && opt.Version() != 0 {
		return dns.RcodeBadVers, true // RFC 6891 section 6.1.3
	}
	if req.Question[0].Qclass != dns.ClassINET {
		// CHAOS, Hesiod, NONE, ANY and unassigned classes: a cluster's DNS
		// serves none of them, and forwarding one gets silence from some
		// upstreams.
		return dns.RcodeRefused, true
	}
	switch req.Question[0].Qtype {
	case dns.TypeAXFR, dns.TypeIXFR:
		return dns.RcodeRefused, true // a cache has no zones to transfer
	}
	return 0, false
}

// maxKeptQuery bounds the copy a waiting query keeps, so that room to wait
// is bounded in bytes. A stub's query is a header, a name and an OPT record:
// far below it; EDNS padding (RFC 7830, meaningless over plain DNS) is
// dropped from the copy. A query larger still never waits: it runs if a
// slot is free and is answered SERVFAIL otherwise.
const maxKeptQuery = 512

// compactQuery copies a query to keep while it waits, without EDNS padding,
// or reports false when even that is larger than maxKeptQuery.
func compactQuery(pkt []byte) ([]byte, bool) {
	if len(pkt) <= maxKeptQuery {
		return bytes.Clone(pkt), true
	}
	m := new(dns.Msg)
	if m.Unpack(pkt) != nil {
		return nil, false
	}
	if opt := m.IsEdns0(); opt != nil {
		opt.Option = slices.DeleteFunc(opt.Option, func(o dns.EDNS0) bool {
			_, pad := o.(*dns.EDNS0_PADDING)
			return pad
		})
	}
	b, err := m.Pack()
	if err != nil || len(b) > maxKeptQuery {
		return nil, false
	}
	return b, true
}

// keepForWalk is what a walk keeps of the client's query while it runs, as a
// waiting query does: without EDNS padding, at most maxKeptQuery bytes,
// and unpacked from that copy; ok is false for a query too large to walk,
// which takes the plain path.
func keepForWalk(pkt []byte, req *dns.Msg) ([]byte, *dns.Msg, bool) {
	kept, ok := compactQuery(pkt)
	if !ok {
		return nil, nil, false
	}
	if len(kept) != len(pkt) {
		req = new(dns.Msg)
		if req.Unpack(kept) != nil {
			return nil, nil, false
		}
	}
	return kept, req, true
}

// queryForKey rebuilds the query a cache key was made from, packed, for a
// prefetch.
func queryForKey(key []byte, udpSize uint16) ([]byte, bool) {
	name, qtype, qclass, do, cd, ok := dnswire.ParseKey(key)
	if !ok {
		return nil, false
	}
	qname, _, err := dns.UnpackDomainName(name, 0)
	if err != nil {
		return nil, false
	}
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.Question[0].Qclass = qclass
	m.CheckingDisabled = cd
	if do {
		m.SetEdns0(udpSize, true)
	}
	b, err := m.Pack()
	return b, err == nil
}
