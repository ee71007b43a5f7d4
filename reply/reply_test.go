package reply

import (
	"testing"

	"github.com/miekg/dns"
)

func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 4242
	m.CheckingDisabled = true
	return m
}

func rr(t *testing.T, s string) dns.RR {
	t.Helper()
	r, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Every reply has the header of a recursive service's answer to the
// query: its ID and question, RD and CD copied, QR and RA set, AA clear.
func TestHeader(t *testing.T) {
	req := query("a.example.", dns.TypeA)
	found := new(dns.Msg)
	found.Answer = []dns.RR{rr(t, "b.example. 60 IN A 192.0.2.1")}
	for name, m := range map[string]*dns.Msg{
		"To":     To(req),
		"Error":  Error(req, dns.RcodeServerFailure),
		"Denial": Denial(req, true, "cluster.local.", 5, 1),
		"CNAME":  CNAME(req, "b.example.", 30, found),
	} {
		if m.Id != req.Id || !m.Response || !m.RecursionAvailable || m.Authoritative ||
			m.RecursionDesired != req.RecursionDesired || m.CheckingDisabled != req.CheckingDisabled ||
			len(m.Question) != 1 || m.Question[0] != req.Question[0] {
			t.Errorf("%s: header %+v", name, m.MsgHdr)
		}
	}
}

func TestDenial(t *testing.T) {
	req := query("x.default.svc.cluster.local.", dns.TypeA)
	for _, nx := range []bool{true, false} {
		m := Denial(req, nx, "cluster.local.", 5, 77)
		want := dns.RcodeSuccess
		if nx {
			want = dns.RcodeNameError
		}
		soa, ok := m.Ns[0].(*dns.SOA)
		if m.Rcode != want || len(m.Answer) != 0 || len(m.Ns) != 1 || !ok {
			t.Fatalf("nx %v: %v", nx, m)
		}
		if soa.Hdr.Name != "cluster.local." || soa.Hdr.Ttl != 5 || soa.Minttl != 5 || soa.Serial != 77 {
			t.Errorf("nx %v: SOA %v: the denial must be timed by its TTL and MINIMUM (RFC 2308)", nx, soa)
		}
	}
}

// The CNAME of a walk lives no longer than the records after it.
func TestCNAME(t *testing.T) {
	req := query("api.example.com.shop.svc.cluster.local.", dns.TypeA)
	found := new(dns.Msg)
	found.Answer = []dns.RR{rr(t, "api.example.com. 20 IN A 192.0.2.1")}
	found.Extra = []dns.RR{&dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}, rr(t, "ns.example.com. 300 IN A 192.0.2.53")}
	m := CNAME(req, "api.example.com", 300, found)
	c, ok := m.Answer[0].(*dns.CNAME)
	if !ok || len(m.Answer) != 2 || c.Hdr.Name != req.Question[0].Name || c.Target != "api.example.com." || c.Hdr.Ttl != 20 {
		t.Fatalf("%v", m)
	}
	if len(m.Extra) != 1 || m.Extra[0].Header().Rrtype == dns.TypeOPT {
		t.Errorf("extra %v: the OPT is each client's own", m.Extra)
	}
}

func TestOneRRset(t *testing.T) {
	resp := new(dns.Msg)
	resp.SetReply(query("example.", dns.TypeANY))
	resp.Answer = []dns.RR{
		rr(t, "example. 60 IN RRSIG A 13 1 60 20300101000000 20200101000000 1 example. AAAA"),
		rr(t, "example. 60 IN A 192.0.2.1"),
		rr(t, "example. 60 IN A 192.0.2.2"),
		rr(t, "example. 60 IN MX 10 mx.example."),
		rr(t, "example. 60 IN RRSIG MX 13 1 60 20300101000000 20200101000000 1 example. AAAA"),
	}
	resp.Ns = []dns.RR{rr(t, "example. 60 IN NS ns.example.")}
	resp.Extra = []dns.RR{rr(t, "ns.example. 60 IN A 192.0.2.53")}
	m := OneRRset(resp)
	if len(m.Answer) != 3 || len(m.Ns) != 0 || len(m.Extra) != 0 {
		t.Fatalf("%v", m)
	}
	for _, r := range m.Answer {
		if sig, ok := r.(*dns.RRSIG); r.Header().Rrtype != dns.TypeA && !(ok && sig.TypeCovered == dns.TypeA) {
			t.Errorf("kept %v: only the first RRset and its signatures", r)
		}
	}
	if len(resp.Answer) != 5 {
		t.Error("the upstream's reply was changed")
	}
	nx := Error(query("nx.example.", dns.TypeANY), dns.RcodeNameError)
	if OneRRset(nx) != nx {
		t.Error("a denial is passed on as it is")
	}
}

func TestServed(t *testing.T) {
	resp := new(dns.Msg)
	resp.SetReply(query("a.example.", dns.TypeA))
	resp.Authoritative, resp.RecursionAvailable = true, false
	resp.Answer = []dns.RR{rr(t, "a.example. 60 IN A 192.0.2.1")}
	resp.SetEdns0(4096, true)
	m := Served(resp)
	if m.Id != 0 || m.Authoritative || !m.RecursionAvailable || m.IsEdns0() != nil || len(m.Answer) != 1 {
		t.Errorf("%v", m)
	}
	if !resp.Authoritative || resp.IsEdns0() == nil {
		t.Error("the upstream's reply was changed")
	}
}
