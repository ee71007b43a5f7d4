package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/upstream"
)

// RFC 6891 section 6.1.1: an EDNS query gets an OPT record back, whatever
// the RCODE: an upstream failure, a shed query, a refusal.
func TestErrorsToEDNSQueriesCarryOPT(t *testing.T) {
	fail := ForwarderFunc(func(context.Context, *dns.Msg) (*dns.Msg, error) {
		return nil, errors.New("every upstream is down")
	})
	s := startServer(t, Config{Allow: mustPrefixes("127.0.0.1/32")}, fail)
	for _, proto := range []string{"udp", "tcp"} {
		m := query("fail.test.", dns.TypeA)
		m.SetEdns0(1232, true)
		r := exchange(t, proto, s.addr, m)
		if r.Rcode != dns.RcodeServerFailure || r.IsEdns0() == nil || !r.IsEdns0().Do() {
			t.Errorf("%s SERVFAIL: %v, want an OPT with DO echoed", proto, r)
		}
		// Without EDNS, no OPT (RFC 6891 section 7).
		r = exchange(t, proto, s.addr, query("fail.test.", dns.TypeA))
		if r.Rcode != dns.RcodeServerFailure || r.IsEdns0() != nil {
			t.Errorf("%s SERVFAIL without EDNS: %v, want no OPT", proto, r)
		}
	}
	// REFUSED to a client outside allow, from the fast path.
	c := &dns.Client{Timeout: 3 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP("127.0.0.2")}}}
	m := query("x.test.", dns.TypeA)
	m.SetEdns0(1232, false)
	r, _, err := c.Exchange(m, s.addr)
	if err != nil || r.Rcode != dns.RcodeRefused || r.IsEdns0() == nil {
		t.Errorf("REFUSED: %v, %v; want an OPT", r, err)
	}
}

func TestTwoOPTRecordsAreFORMERR(t *testing.T) {
	var calls = 0
	s := startServer(t, Config{}, ForwarderFunc(func(context.Context, *dns.Msg) (*dns.Msg, error) {
		calls++
		return nil, errors.New("not reached")
	}))
	m := query("two.test.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.Extra = append(m.Extra, m.Extra[0])
	pkt, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	out := rawExchange(t, s.addr, pkt, 2*time.Second)
	r := new(dns.Msg)
	if err := r.Unpack(out); err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeFormatError || calls != 0 {
		t.Errorf("two OPT records: %s, forwarded %d times; want FORMERR at once", dns.RcodeToString[r.Rcode], calls)
	}
}

// The SRV answer of a headless Service with its glue comes out the same
// whether it was forwarded or served from the cache, at every size: whole
// RRsets, TC only when the SRV RRset itself does not fit.
func TestTruncationIsTheSameFromUpstreamAndFromTheCache(t *testing.T) {
	var records []string
	for i := range 7 {
		target := fmt.Sprintf("pod-%02d.web.default.svc.cluster.local.", i)
		records = append(records, "_http._tcp.web.default.svc.cluster.local. 30 IN SRV 0 14 80 "+target,
			fmt.Sprintf("%s 30 IN A 10.244.1.%d", target, i+1))
	}
	z := zone(t, records...)
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		// Answer the SRV with its targets' addresses as glue, as CoreDNS's
		// kubernetes plugin does for a headless Service.
		if r.Question[0].Qtype == dns.TypeSRV {
			m := new(dns.Msg)
			m.SetReply(r)
			for _, s := range records {
				rr, _ := dns.NewRR(s)
				if rr.Header().Rrtype == dns.TypeSRV {
					m.Answer = append(m.Answer, rr)
				} else {
					m.Extra = append(m.Extra, rr)
				}
			}
			if o := r.IsEdns0(); o != nil {
				m.SetEdns0(4096, o.Do())
			}
			_ = w.WriteMsg(m)
			return
		}
		z(w, r)
	})
	g, err := upstream.NewGroup(upstream.GroupConfig{Name: "test", Zones: []string{"."}, Addrs: []string{up.Addr}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	for _, size := range []uint16{0, 512, 700, 1232} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			s := startServer(t, Config{}, ForwarderFunc(g.Exchange))
			ask := func() []byte {
				m := query("_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV)
				m.Id = 42
				if size > 0 {
					m.SetEdns0(size, false)
				}
				pkt, _ := m.Pack()
				return rawExchange(t, s.addr, pkt, 2*time.Second)
			}
			forwarded, cached := ask(), ask()
			if string(forwarded) != string(cached) {
				t.Errorf("EDNS size %d: the forwarded reply (%d bytes) and the cached one (%d bytes) differ", size, len(forwarded), len(cached))
			}
			limit := 512
			if size > 512 {
				limit = int(size)
			}
			r := new(dns.Msg)
			if err := r.Unpack(cached); err != nil {
				t.Fatal(err)
			}
			if len(cached) > limit {
				t.Errorf("%d bytes for a client that takes %d", len(cached), limit)
			}
			if len(r.Answer) != 0 && len(r.Answer) != 7 {
				t.Errorf("%d of 7 SRV records: a partial RRset", len(r.Answer))
			}
			if r.Truncated != (len(r.Answer) == 0) {
				t.Errorf("TC %v with %d answers", r.Truncated, len(r.Answer))
			}
		})
	}
}

func mustPrefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}
