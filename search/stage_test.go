package search

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nodedns/nodedns/cache"
	"github.com/nodedns/nodedns/internal/testutil"
	"github.com/nodedns/nodedns/resolver"
)

// node is a resolver on loopback with the search stage and autopath, as
// a node runs them.
type node struct {
	addr string
	reg  *prometheus.Registry
}

// nodeOf says what a test node runs besides the resolver.
type nodeOf struct {
	noStage bool      // no search stage
	view    View      // refines the stage's rules, when not nil
	pods    PodLookup // autopath for these pods, when not nil
}

// startNode starts a resolver on a loopback port forwarding to fwd, with
// the search stage for the cluster domain cluster.local (and the extra
// zone consul.cluster.local) unless told not to, and what o adds.
func startNode(t *testing.T, o nodeOf, fwd resolver.Forwarder) *node {
	t.Helper()
	// Port 0 picks a UDP port; the TCP port of the same number may be
	// taken by another process, so try a few times.
	for i := 0; ; i++ {
		n, s, err := newNode(o, fwd)
		if err == nil {
			err = s.Start()
		}
		if err == nil {
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = s.Shutdown(ctx)
			})
			n.addr = s.Addrs()[0].String()
			return n
		}
		if i == 20 {
			t.Fatal(err)
		}
	}
}

func newNode(o nodeOf, fwd resolver.Forwarder) (*node, *resolver.Server, error) {
	reg := prometheus.NewRegistry()
	rules := New([]string{"cluster.local"}, []string{"consul.cluster.local"})
	cfg := resolver.Config{Listen: []string{"127.0.0.1:0"}, UDPSockets: 2}
	if !o.noStage {
		cfg.Local = []resolver.Middleware{Stage(StageConfig{Rules: rules, View: o.view,
			NegativeTTL: 5 * time.Second, Log: zap.NewNop(), Registerer: reg})}
	}
	if o.pods != nil {
		cfg.Walker = Autopath{Pods: o.pods, Rules: rules}
	}
	c, err := cache.New(cache.Config{MaxBytes: 1 << 20, Policy: cache.Policy{MaxTTL: time.Hour, NegativeTTL: time.Minute, ServFailTTL: 2 * time.Second}}, reg)
	if err != nil {
		return nil, nil, err
	}
	s, err := resolver.New(cfg, c, fwd, zap.NewNop(), reg)
	return &node{reg: reg}, s, err
}

func forwardTo(addr string) resolver.Forwarder {
	return resolver.ForwarderFunc(testutil.Forward(addr))
}

// answerWith answers every query with one A record, counting the calls.
func answerWith(ip string, calls *atomic.Int64) resolver.Forwarder {
	return resolver.ForwarderFunc(func(_ context.Context, req *dns.Msg) (*dns.Msg, error) {
		calls.Add(1)
		m := new(dns.Msg)
		m.SetReply(req)
		rr, err := dns.NewRR(req.Question[0].Name + " 30 IN A " + ip)
		if err != nil {
			return nil, err
		}
		m.Answer = append(m.Answer, rr)
		return m, nil
	})
}

func (n *node) answered(t *testing.T, rule Rule) float64 {
	t.Helper()
	return testutil.Metric(t, n.reg, "nodedns_search_answered_total", "rule", rule.String())
}

// The ndots:5 expansions of an external name that cannot exist under the
// cluster domain are answered on the node, with the cluster domain's SOA,
// and the next identical query is a cache hit; names that may exist, and
// names outside the cluster domain, go upstream untouched.
func TestSearchStageAnswersImpossibleClusterNames(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.Zone(t, "api.example.com. 300 IN A 192.0.2.1",
		"kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"))
	s := startNode(t, nodeOf{}, forwardTo(up.Addr))
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
			before := up.Queries.Load()
			m := testutil.Query(tc.name, tc.qtype)
			m.SetEdns0(1232, false)
			r := testutil.Exchange(t, proto, s.addr, m)
			if r.Rcode != tc.rcode {
				t.Errorf("%s %s over %s: %s, want %s", tc.name, dns.TypeToString[tc.qtype], proto, dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
			went := up.Queries.Load() > before
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
	if n := s.answered(t, RuleBadSRV); n != 2 {
		t.Errorf("search_answered{bad_srv} = %v, want 2 (A and AAAA once each; the TCP asks were hits)", n)
	}
}

// Turned off, the stage answers nothing: every name goes upstream.
func TestSearchStageOff(t *testing.T) {
	var calls atomic.Int64
	s := startNode(t, nodeOf{noStage: true}, answerWith("192.0.2.1", &calls))
	if r := testutil.Exchange(t, "udp", s.addr, testutil.Query("api.example.com.default.svc.cluster.local.", dns.TypeA)); len(r.Answer) != 1 || calls.Load() != 1 {
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
	s := startNode(t, nodeOf{view: v}, answerWith("192.0.2.1", &calls))
	ask := func(name string) (*dns.Msg, bool) {
		before := calls.Load()
		r := testutil.Exchange(t, "udp", s.addr, testutil.Query(name, dns.TypeA))
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
	if n := s.answered(t, RuleNoService); n != 1 {
		t.Errorf("search_answered{no_service} = %v, want 1", n)
	}
}
