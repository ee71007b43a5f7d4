package resolver

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"

	nodetest "github.com/nodedns/nodedns/internal/testutil"
)

// suffixWalker walks the queries of one client through fixed search
// domains, as a stub resolver with that search list and ndots:5 would.
// Package search's Autopath is the Walker a node runs; its tests cover
// the Kubernetes walk.
type suffixWalker struct {
	client netip.Addr
	search []string // "a.test." ...
}

func (w suffixWalker) Knows(c netip.Addr) bool { return c == w.client }

func (w suffixWalker) Walk(c netip.Addr, qname string) ([]string, bool) {
	base, ok := strings.CutSuffix(qname, w.search[0])
	if c != w.client || !ok {
		return nil, false
	}
	names := []string{qname}
	for _, d := range w.search[1:] {
		names = append(names, base+d)
	}
	return append(names, base), true
}

func startWalker(t *testing.T, records ...string) (*testServer, *nodetest.Upstream) {
	t.Helper()
	up := startUpstream(t, zone(t, records...))
	s := startServer(t, Config{Walker: suffixWalker{netip.MustParseAddr("127.0.0.1"), []string{"a.test.", "b.test."}}}, forwardTo(up.Addr))
	return s, up
}

// The first query of a walk is answered with a CNAME to the name that
// exists and its records, the walk having run on the node; the next
// identical query costs the upstream nothing, and another client gets the
// plain answer from the cache.
func TestWalkAnswersInOneRoundTrip(t *testing.T) {
	s, up := startWalker(t, "api.example.com. 300 IN A 192.0.2.1")
	first := "api.example.com.a.test."
	for round, want := range []int64{3, 0} { // api.example.com.{a.test,b.test,} then nothing
		before := up.Queries.Load()
		r := nodetest.ExchangeFrom(t, "127.0.0.1", s.addr, query(first, dns.TypeA))
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
			t.Fatalf("round %d: %v", round, r)
		}
		if c, ok := r.Answer[0].(*dns.CNAME); !ok || c.Hdr.Name != first || c.Target != "api.example.com." {
			t.Fatalf("round %d: first record %v, want a CNAME %s -> api.example.com.", round, r.Answer[0], first)
		}
		if got := up.Queries.Load() - before; got != want {
			t.Errorf("round %d: the upstream saw %d queries, want %d", round, got, want)
		}
	}
	if n := testutil.ToFloat64(s.metrics.autopath[walkFound]); n != 2 {
		t.Errorf("autopath{found} = %v, want 2", n)
	}
	before := up.Queries.Load()
	if r := nodetest.ExchangeFrom(t, "127.0.0.2", s.addr, query(first, dns.TypeA)); r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
		t.Errorf("another client: %v, want the plain NXDOMAIN", r)
	}
	if up.Queries.Load() != before {
		t.Error("another client's query went upstream")
	}
}

// A query padded to 4 KiB (RFC 7830) walks like any other, its
// copy kept without the padding, so that a walk costs what WorstCase
// says; and WorstCase counts walks when a Walker is set.
func TestWalkKeepsACompactQuery(t *testing.T) {
	s, _ := startWalker(t, "api.example.com. 300 IN A 192.0.2.1")
	m := query("api.example.com.a.test.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_PADDING{Padding: make([]byte, 3900)})
	if b, _ := m.Pack(); len(b) < 3900 {
		t.Fatalf("padded query of %d bytes", len(b))
	}
	r := nodetest.ExchangeFrom(t, "127.0.0.1", s.addr, m)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
		t.Fatalf("padded query: %v", r)
	}
	// What a walk keeps of that query.
	pkt, _ := m.Pack()
	kept, req, ok := keepForWalk(pkt, m)
	if !ok || len(kept) > maxKeptQuery {
		t.Errorf("a padded query is kept at %d bytes (ok %v), want at most %d", len(kept), ok, maxKeptQuery)
	}
	if ok {
		for _, o := range req.IsEdns0().Option {
			if _, pad := o.(*dns.EDNS0_PADDING); pad {
				t.Error("the unpacked query a walk keeps still has its padding")
			}
		}
	}
	with := WorstCase(Config{Listen: []string{"127.0.0.1:53"}, Walker: suffixWalker{}})
	without := WorstCase(Config{Listen: []string{"127.0.0.1:53"}})
	if with.Walks == 0 || without.Walks != 0 || with.Total() <= without.Total() {
		t.Errorf("WorstCase walks: %v with autopath, %v without", with, without)
	}
}
