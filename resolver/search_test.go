package resolver

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodedns/nodedns/search"
)

func withSearch(domains ...string) *SearchConfig {
	return &SearchConfig{Rules: search.New(domains, []string{"consul.cluster.local"}), NegativeTTL: 5 * time.Second}
}

// The ndots:5 expansions of an external name that cannot exist under the
// cluster domain are answered on the node, with the cluster domain's SOA,
// and the next identical query is a cache hit; names that may exist, and
// names outside the cluster domain, go upstream untouched.
func TestSearchStageAnswersImpossibleClusterNames(t *testing.T) {
	up := startUpstream(t, zone(t, "api.example.com. 300 IN A 192.0.2.1",
		"kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"))
	s := startServer(t, Config{Search: withSearch("cluster.local")}, forwardTo(up.addr))
	for _, tc := range []struct {
		name     string
		qtype    uint16
		rcode    int
		upstream bool
	}{
		{"api.example.com.default.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, false},
		{"api.example.com.default.svc.cluster.local.", dns.TypeAAAA, dns.RcodeNameError, false},
		{"api.example.com.cluster.local.", dns.TypeA, dns.RcodeNameError, false},
		{"API.Example.COM.Cluster.Local.", dns.TypeAAAA, dns.RcodeNameError, false},
		{"svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, false},          // empty non-terminal: NODATA
		{"default.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, true}, // only a view knows whether namespace default exists: the upstream says
		{"kubernetes.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, true},
		{"api.example.com.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, true}, // may exist: forwarded
		{"x.y.z.consul.cluster.local.", dns.TypeA, dns.RcodeNameError, true},        // an extra zone
		{"api.example.com.", dns.TypeA, dns.RcodeSuccess, true},
	} {
		for _, proto := range []string{"udp", "tcp"} {
			before := up.queries.Load()
			m := query(tc.name, tc.qtype)
			m.SetEdns0(1232, false)
			r := exchange(t, proto, s.addr, m)
			if r.Rcode != tc.rcode {
				t.Errorf("%s %s over %s: %s, want %s", tc.name, dns.TypeToString[tc.qtype], proto, dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
			went := up.queries.Load() > before
			if went != tc.upstream && !(tc.upstream && proto == "tcp") { // the second ask may be a cache hit
				t.Errorf("%s over %s: upstream asked %v, want %v", tc.name, proto, went, tc.upstream)
			}
			if tc.upstream {
				continue
			}
			if len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA || r.Ns[0].Header().Name != "cluster.local." {
				t.Fatalf("%s: authority %v, want the cluster domain's SOA", tc.name, r.Ns)
			}
			if ttl := r.Ns[0].Header().Ttl; ttl == 0 || ttl > 5 {
				t.Errorf("%s: SOA TTL %d, want at most the 5 s negative TTL", tc.name, ttl)
			}
			if r.Question[0].Name != tc.name || r.IsEdns0() == nil || r.Authoritative {
				t.Errorf("%s: reply %v", tc.name, r)
			}
		}
	}
	// The stage's answers went through the cache: the second ask was a hit.
	if n := testutil.ToFloat64(s.metrics.searchAnswered[search.RuleBadSRV]); n != 2 {
		t.Errorf("search_answered{bad_srv} = %v, want 2 (A and AAAA once each; the TCP asks were hits)", n)
	}
}

// Turned off, the stage answers nothing: every name goes upstream.
func TestSearchStageOff(t *testing.T) {
	var calls atomic.Int64
	s := startServer(t, Config{}, answerWith("192.0.2.1", &calls))
	if r := exchange(t, "udp", s.addr, query("api.example.com.default.svc.cluster.local.", dns.TypeA)); len(r.Answer) != 1 || calls.Load() != 1 {
		t.Errorf("with the stage off: %v after %d upstream calls", r, calls.Load())
	}
}

// viewOf is a fixed view of a cluster.
type viewOf struct {
	synced   atomic.Bool
	ns, svcs map[string]bool
}

func (v *viewOf) Synced() bool                 { return v.synced.Load() }
func (v *viewOf) HasNamespace(ns string) bool  { return v.ns[ns] }
func (v *viewOf) HasService(ns, n string) bool { return v.svcs[ns+"/"+n] }

// With a synced view of the cluster, names under a Namespace or Service
// that does not exist are answered on the node; before it has synced they
// go upstream, and names that exist always do.
func TestSearchStageWithView(t *testing.T) {
	var calls atomic.Int64
	v := &viewOf{ns: map[string]bool{"shop": true}, svcs: map[string]bool{"shop/web": true}}
	cfg := withSearch("cluster.local")
	cfg.View = v
	s := startServer(t, Config{Search: cfg}, answerWith("192.0.2.1", &calls))
	ask := func(name string) (*dns.Msg, bool) {
		before := calls.Load()
		r := exchange(t, "udp", s.addr, query(name, dns.TypeA))
		return r, calls.Load() > before
	}
	if _, up := ask("db.shop.svc.cluster.local."); !up {
		t.Error("before the view synced, a name under a Service it lacks was not forwarded")
	}
	v.synced.Store(true)
	for _, tc := range []struct {
		name     string
		rcode    int
		upstream bool
	}{
		{"web.shop.svc.cluster.local.", dns.RcodeSuccess, true},
		{"api.example.com.svc.cluster.local.", dns.RcodeNameError, false}, // no namespace "com"
		{"redis.shop.svc.cluster.local.", dns.RcodeNameError, false},      // no Service "redis"
		{"shop.svc.cluster.local.", dns.RcodeSuccess, false},              // NODATA
		{"api.example.com.", dns.RcodeSuccess, true},
	} {
		r, up := ask(tc.name)
		if r.Rcode != tc.rcode || up != tc.upstream {
			t.Errorf("%s: %s, upstream asked %v; want %s, %v", tc.name, dns.RcodeToString[r.Rcode], up, dns.RcodeToString[tc.rcode], tc.upstream)
		}
	}
	if n := testutil.ToFloat64(s.metrics.searchAnswered[search.RuleNoService]); n != 1 {
		t.Errorf("search_answered{no_service} = %v, want 1", n)
	}
}
