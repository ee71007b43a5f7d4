// Package reply makes every DNS reply nodedns makes up itself, and shapes
// every upstream reply it serves: the one place that decides a reply's
// header (QR, the question echoed, RD and CD copied, RA set, AA clear) and
// what a denial carries (the SOA that times it, RFC 2308).
//
// The messages it makes are rendered by one of the two byte writers:
// cache.Entry.AppendReply for an answer with records (stored or
// transient), dnswire.AppendError for an error with none.
package reply

import (
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// To is an empty NOERROR reply to req.
func To(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	shape(m)
	return m
}

// Error is req's reply with rcode and no records.
func Error(req *dns.Msg, rcode int) *dns.Msg {
	m := To(req)
	m.Rcode = rcode
	return m
}

// Denial is NXDOMAIN (nx) or NODATA for req, answered for zone: the
// authority section holds zone's SOA, whose TTL and MINIMUM are ttl, so
// that clients and caches keep the denial as long as it says (RFC 2308
// section 3). serial is the SOA's serial.
func Denial(req *dns.Msg, nx bool, zone string, ttl, serial uint32) *dns.Msg {
	m := To(req)
	if nx {
		m.Rcode = dns.RcodeNameError
	}
	m.Ns = []dns.RR{&dns.SOA{
		Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns:  "ns.dns." + zone, Mbox: "hostmaster." + zone,
		Serial: serial, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: ttl,
	}}
	return m
}

// CNAME is the reply to req when another name answers it: a CNAME from
// req's name to target, then the records of target's answer found (its
// answer, authority and additional sections, without OPT). The CNAME lives
// no longer than ttl, nor than any record after it.
func CNAME(req *dns.Msg, target string, ttl uint32, found *dns.Msg) *dns.Msg {
	m := To(req)
	for _, rr := range slices.Concat(found.Answer, found.Ns) {
		ttl = min(ttl, rr.Header().Ttl)
	}
	m.Answer = append([]dns.RR{&dns.CNAME{
		Hdr:    dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: ttl},
		Target: dns.Fqdn(target),
	}}, found.Answer...)
	m.Ns = found.Ns
	m.Extra = withoutOPT(found.Extra)
	return m
}

// OneRRset is the reply to a query for ANY as nodedns gives it (RFC 8482
// section 4.1): the first RRset of the upstream's answer resp, with its
// signatures, and nothing else. A denial, a failure or an empty answer is
// resp as it is: whether the name exists is the upstream's to say.
func OneRRset(resp *dns.Msg) *dns.Msg {
	if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) == 0 {
		return resp
	}
	i := slices.IndexFunc(resp.Answer, func(rr dns.RR) bool { return rr.Header().Rrtype != dns.TypeRRSIG })
	if i < 0 {
		return resp
	}
	first := resp.Answer[i].Header()
	m := resp.Copy()
	m.Answer = slices.DeleteFunc(m.Answer, func(rr dns.RR) bool {
		h := rr.Header()
		sig, isSig := rr.(*dns.RRSIG)
		return !strings.EqualFold(h.Name, first.Name) || h.Rrtype != first.Rrtype && !(isSig && sig.TypeCovered == first.Rrtype)
	})
	m.Ns = nil
	m.Extra = slices.DeleteFunc(m.Extra, func(rr dns.RR) bool { return rr.Header().Rrtype != dns.TypeOPT })
	return m
}

// Served is a copy of an upstream's reply as nodedns stores and serves it:
// no ID (each client's is patched in), AA clear (a cache is never the
// authority, RFC 1035 section 4.1.1), RA set (what nodedns offers, whatever
// the upstream said), no OPT (each client gets nodedns's own).
func Served(resp *dns.Msg) *dns.Msg {
	m := resp.Copy()
	m.Id = 0
	shape(m)
	m.Extra = withoutOPT(m.Extra)
	m.Compress = true
	return m
}

// shape sets the header bits every reply of nodedns has.
func shape(m *dns.Msg) {
	m.Response = true
	m.Authoritative = false
	m.RecursionAvailable = true
}

func withoutOPT(rrs []dns.RR) []dns.RR {
	return slices.DeleteFunc(slices.Clone(rrs), func(rr dns.RR) bool { return rr.Header().Rrtype == dns.TypeOPT })
}
