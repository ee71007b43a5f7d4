package search

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/internal/testutil"
)

// podsAt is a fixed set of pods by address.
type podsAt map[netip.Addr]*PodDNS

func (p podsAt) Pod(a netip.Addr) (*PodDNS, bool) {
	d, ok := p[a]
	return d, ok
}

var shopPod = &PodDNS{Namespace: "shop", Ndots: 5,
	Search: []string{"shop.svc.cluster.local.", "svc.cluster.local.", "cluster.local.", "node.example."}}

// startAutopath starts a node with a view of the cluster and autopath for
// a pod at 127.0.0.1, forwarding to a zone.
func startAutopath(t *testing.T, records ...string) (*node, *testutil.Upstream) {
	t.Helper()
	up := testutil.StartUpstream(t, testutil.Zone(t, records...))
	v := &viewOf{ns: map[string]bool{"shop": true, "default": true}, svcs: map[string]bool{"shop/web": true}}
	v.synced.Store(true)
	return startNode(t, nodeOf{view: v, pods: podsAt{netip.MustParseAddr("127.0.0.1"): shopPod}}, forwardTo(up.Addr)), up
}

func (n *node) walks(t *testing.T, result string) float64 {
	t.Helper()
	return testutil.Metric(t, n.reg, "nodedns_autopath_total", "result", result)
}

// The first query of a pod's search walk for an external name is answered
// with a CNAME to the name itself and its records: the walk ran on the
// node, its cluster expansions denied locally, and the upstream saw only
// the node domain's expansion and the name. The next lookup costs the
// upstream nothing; another client, not a known pod, gets the plain
// answer.
func TestAutopathAnswersTheWalkInOneRoundTrip(t *testing.T) {
	s, up := startAutopath(t, "api.example.com. 300 IN A 192.0.2.1")
	first := "api.example.com.shop.svc.cluster.local."
	for round := range 2 {
		before := up.Queries.Load()
		r := testutil.ExchangeFrom(t, "127.0.0.1", s.addr, testutil.Query(first, dns.TypeA))
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
			t.Fatalf("round %d: %v", round, r)
		}
		cname, ok := r.Answer[0].(*dns.CNAME)
		if !ok || cname.Hdr.Name != first || cname.Target != "api.example.com." {
			t.Fatalf("round %d: first record %v, want a CNAME %s -> api.example.com.", round, r.Answer[0], first)
		}
		if a, ok := r.Answer[1].(*dns.A); !ok || a.A.String() != "192.0.2.1" || a.Hdr.Name != "api.example.com." {
			t.Errorf("round %d: second record %v", round, r.Answer[1])
		}
		if cname.Hdr.Ttl > 5 {
			t.Errorf("round %d: CNAME TTL %d, longer than the 5 s denials it stands for", round, cname.Hdr.Ttl)
		}
		want := int64(2) // api.example.com.node.example. and api.example.com.
		if round == 1 {
			want = 0
		}
		if got := up.Queries.Load() - before; got != want {
			t.Errorf("round %d: the upstream saw %d queries, want %d", round, got, want)
		}
	}
	if n := s.walks(t, "found"); n != 2 {
		t.Errorf("autopath{found} = %v, want 2", n)
	}
	// Another client gets the plain denial, from the cache.
	before := up.Queries.Load()
	if r := testutil.ExchangeFrom(t, "127.0.0.2", s.addr, testutil.Query(first, dns.TypeA)); r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
		t.Errorf("another client: %v, want the plain NXDOMAIN", r)
	}
	if up.Queries.Load() != before {
		t.Error("another client's query went upstream")
	}
}

// The walk keeps the pod's own semantics: the first name that exists wins
// (here a Service reached through the svc.<cd> search domain), the pod's
// own name is answered plainly when it exists, and when nothing exists the
// pod gets NXDOMAIN and its own walk that follows is answered from the
// cache.
func TestAutopathWalkSemantics(t *testing.T) {
	s, up := startAutopath(t,
		"web.shop.svc.cluster.local. 5 IN A 10.96.0.10",
		"api.example.com. 300 IN A 192.0.2.1")

	// "web.shop": web.shop.shop.svc... is denied (no Service "shop"), then
	// web.shop.svc.cluster.local exists.
	r := testutil.ExchangeFrom(t, "127.0.0.1", s.addr, testutil.Query("web.shop.shop.svc.cluster.local.", dns.TypeA))
	if len(r.Answer) != 2 || r.Answer[0].(*dns.CNAME).Target != "web.shop.svc.cluster.local." {
		t.Errorf("web.shop: %v, want a CNAME to web.shop.svc.cluster.local.", r)
	}

	// "web": the first expansion is the Service itself: a plain answer
	// (the A record went by the fast path, cached by the walk above; the
	// AAAA, not cached yet, is a NODATA from upstream: it exists).
	r = testutil.ExchangeFrom(t, "127.0.0.1", s.addr, testutil.Query("web.shop.svc.cluster.local.", dns.TypeA))
	if len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeA {
		t.Errorf("web: %v, want the plain A record", r)
	}
	r = testutil.ExchangeFrom(t, "127.0.0.1", s.addr, testutil.Query("web.shop.svc.cluster.local.", dns.TypeAAAA))
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
		t.Errorf("web AAAA: %v, want the plain NODATA", r)
	}

	// Nothing exists: NXDOMAIN, then the pod's own walk costs nothing.
	r = testutil.ExchangeFrom(t, "127.0.0.1", s.addr, testutil.Query("nothing.example.shop.svc.cluster.local.", dns.TypeAAAA))
	if r.Rcode != dns.RcodeNameError {
		t.Fatalf("nothing.example: %v, want NXDOMAIN", r)
	}
	before := up.Queries.Load()
	for _, d := range shopPod.Search[1:] {
		if r := testutil.ExchangeFrom(t, "127.0.0.1", s.addr, testutil.Query("nothing.example."+d, dns.TypeAAAA)); r.Rcode != dns.RcodeNameError {
			t.Errorf("nothing.example.%s: %v", d, r)
		}
	}
	if r := testutil.ExchangeFrom(t, "127.0.0.1", s.addr, testutil.Query("nothing.example.", dns.TypeAAAA)); r.Rcode != dns.RcodeNameError {
		t.Errorf("nothing.example.: %v", r)
	}
	if got := up.Queries.Load() - before; got != 0 {
		t.Errorf("the pod's own walk after the node's sent %d queries upstream, want 0", got)
	}
	for _, result := range []string{"found", "exists", "none"} {
		if n := s.walks(t, result); n != 1 {
			t.Errorf("autopath{%s} = %v, want 1", result, n)
		}
	}
}

// What autopath leaves alone: queries with DO (a CNAME made here cannot be
// signed), later names of a walk the pod runs itself, and names under the
// cluster domain; and a failure in the middle of a walk gives the pod the
// plain answer, so that its own walk meets the failure as it would
// without nodedns.
func TestAutopathLeavesAlone(t *testing.T) {
	up := testutil.StartUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if strings.HasSuffix(r.Question[0].Name, ".node.example.") {
			m := new(dns.Msg)
			m.SetRcode(r, dns.RcodeServerFailure)
			_ = w.WriteMsg(m)
			return
		}
		testutil.Zone(t, "api.example.com. 300 IN A 192.0.2.1")(w, r)
	})
	v := &viewOf{ns: map[string]bool{"shop": true}}
	v.synced.Store(true)
	s := startNode(t, nodeOf{view: v, pods: podsAt{netip.MustParseAddr("127.0.0.1"): shopPod}}, forwardTo(up.Addr))

	do := testutil.Query("api.example.com.shop.svc.cluster.local.", dns.TypeA)
	do.SetEdns0(1232, true)
	if r := testutil.ExchangeFrom(t, "127.0.0.1", s.addr, do); r.Rcode != dns.RcodeNameError {
		t.Errorf("with DO: %v, want the plain NXDOMAIN", r)
	}
	if r := testutil.ExchangeFrom(t, "127.0.0.1", s.addr, testutil.Query("api.example.com.svc.cluster.local.", dns.TypeA)); r.Rcode != dns.RcodeNameError {
		t.Errorf("a later name of the walk: %v, want the plain NXDOMAIN", r)
	}
	if r := testutil.ExchangeFrom(t, "127.0.0.1", s.addr, testutil.Query("kubernetes.default.svc.cluster.local.shop.svc.cluster.local.", dns.TypeA)); r.Rcode != dns.RcodeNameError {
		t.Errorf("a cluster name's expansion: %v, want the plain NXDOMAIN", r)
	}
	// The node domain fails: the walk stops, the pod gets its name's NXDOMAIN.
	if r := testutil.ExchangeFrom(t, "127.0.0.1", s.addr, testutil.Query("api.example.com.shop.svc.cluster.local.", dns.TypeAAAA)); r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
		t.Errorf("a walk through a failing name: %v, want the plain NXDOMAIN", r)
	}
	if n := s.walks(t, "aborted"); n != 1 {
		t.Errorf("autopath{aborted} = %v, want 1", n)
	}
	if n := s.walks(t, "found") + s.walks(t, "none"); n != 0 {
		t.Errorf("%v walks found or denied something, want 0", n)
	}
}

// Many pods' walks at once, for the race detector: each gets its own
// answer.
func TestAutopathConcurrentWalks(t *testing.T) {
	s, _ := startAutopath(t, "api.example.com. 300 IN A 192.0.2.1", "www.example.org. 300 IN A 192.0.2.2")
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			name, want := "api.example.com.", "192.0.2.1"
			if i%2 == 1 {
				name, want = "www.example.org.", "192.0.2.2"
			}
			for range 5 {
				c := &dns.Client{Net: "udp", Timeout: 3 * time.Second,
					Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP("127.0.0.1")}}}
				r, _, err := c.Exchange(testutil.Query(name+"shop.svc.cluster.local.", dns.TypeA), s.addr)
				if err != nil {
					t.Error(err)
					return
				}
				if len(r.Answer) != 2 || r.Answer[1].(*dns.A).A.String() != want {
					t.Errorf("%s: %v", name, r)
					return
				}
			}
		})
	}
	wg.Wait()
}
