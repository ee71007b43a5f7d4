package search

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	r := New([]string{"cluster.local"}, []string{"consul.cluster.local"})
	for _, tc := range []struct {
		name string
		want Verdict
		rule Rule
	}{
		// Outside the cluster domain: never touched.
		{"api.example.com.", Forward, RuleNone},
		{"local.", Forward, RuleNone},
		{"notcluster.local.", Forward, RuleNone},
		// The apex and the schema version exist.
		{"cluster.local.", Forward, RuleNone},
		{"Cluster.Local.", Forward, RuleNone},
		{"dns-version.cluster.local.", Forward, RuleNone},
		// The apex's NS target, which CoreDNS answers with its own
		// address; not the level above it (NXDOMAIN from CoreDNS too).
		{"ns.dns.cluster.local.", Forward, RuleNone},
		{"NS.Dns.cluster.local.", Forward, RuleNone},
		{"dns.cluster.local.", NXDomain, RuleUnknownBranch},
		{"x.ns.dns.cluster.local.", NXDomain, RuleUnknownBranch},
		{"ns.x.cluster.local.", NXDomain, RuleUnknownBranch},
		// Empty non-terminals: NODATA.
		{"svc.cluster.local.", NoData, RuleEmptyNonTerminal},
		{"pod.cluster.local.", NoData, RuleEmptyNonTerminal},
		// A namespace's: empty if it exists, NXDOMAIN if not; without a
		// view, the cluster DNS says which (a NODATA would end a musl
		// client's search walk at "redis.svc.cluster.local").
		{"default.svc.cluster.local.", Forward, RuleNone},
		{"kube-system.svc.cluster.local.", Forward, RuleNone},
		{"default.pod.cluster.local.", Forward, RuleNone},
		// Services, endpoints, SRV: may exist.
		{"kubernetes.default.svc.cluster.local.", Forward, RuleNone},
		{"KubeRnetes.Default.SVC.cluster.local.", Forward, RuleNone},
		{"web-0.web.default.svc.cluster.local.", Forward, RuleNone},
		{"10-244-1-7.web.default.svc.cluster.local.", Forward, RuleNone},
		{"fd00-10-244--7.web.default.svc.cluster.local.", Forward, RuleNone},
		// The dashed form of an endpoint at ::a (the API accepts it).
		{"--a.web.default.svc.cluster.local.", Forward, RuleNone},
		// Service names may start with a digit since Kubernetes 1.34
		// (RelaxedServiceNameValidation, GA in 1.37): found by the
		// cross-check against CoreDNS (e2e/kubernetes_test.go).
		{"1st.default.svc.cluster.local.", Forward, RuleNone},
		{"8080.default.svc.cluster.local.", Forward, RuleNone},
		{"9svc.default.svc.cluster.local.", Forward, RuleNone},
		{"0.3d.default.svc.cluster.local.", Forward, RuleNone},
		{"_http._tcp.8080.default.svc.cluster.local.", Forward, RuleNone},
		{"_tcp.web.default.svc.cluster.local.", Forward, RuleNone},
		{"_http._tcp.web.default.svc.cluster.local.", Forward, RuleNone},
		{"_dns._udp.kube-dns.kube-system.svc.cluster.local.", Forward, RuleNone},
		// CoreDNS takes the SRV labels without their underscores too, and an
		// unnamed port or protocol as "_".
		{"http.tcp.web.default.svc.cluster.local.", Forward, RuleNone},
		{"http._tcp.web.default.svc.cluster.local.", Forward, RuleNone},
		{"_http.SCTP.web.default.svc.cluster.local.", Forward, RuleNone},
		{"_._udp.web.default.svc.cluster.local.", Forward, RuleNone},
		{"_http._.web.default.svc.cluster.local.", Forward, RuleNone},
		// Zone-scoped names of CoreDNS's zonal option: the zone may span
		// labels; other directives are NXDOMAIN, as from CoreDNS.
		{"us-west-2a.pin._zone.db.default.svc.cluster.local.", Forward, RuleNone},
		{"us-west-2a.PREFER._Zone.db.default.svc.cluster.local.", Forward, RuleNone},
		{"corp.example.com.pin._zone.db.default.svc.cluster.local.", Forward, RuleNone},
		{"a.b.c.d.e.f.g.pin._zone.db.default.svc.cluster.local.", Forward, RuleNone},
		{"us-west-2a.any._zone.db.default.svc.cluster.local.", NXDomain, RuleTooDeep},
		{"pin._zone.db.default.svc.cluster.local.", NXDomain, RuleBadSRV},
		{"a.b.pin._zone.db.default.pod.cluster.local.", NXDomain, RuleTooDeep},
		{"us-west-2a.pin._zone.9-.default.svc.cluster.local.", NXDomain, RuleBadService},
		// Pods by address.
		{"10-244-1-7.default.pod.cluster.local.", Forward, RuleNone},
		{"fd00-10-244--7.default.pod.cluster.local.", Forward, RuleNone},
		{"2001-db8-0-0-0-0-0-1.default.pod.cluster.local.", Forward, RuleNone},
		// ...after one or two labels CoreDNS ignores.
		{"x.10-244-1-7.default.pod.cluster.local.", Forward, RuleNone},
		{"_http._tcp.10-244-1-7.default.pod.cluster.local.", Forward, RuleNone},
		{"a_b.-.fd00--7.default.pod.cluster.local.", Forward, RuleNone},
		// The ndots:5 expansions of external names.
		{"api.example.com.default.svc.cluster.local.", NXDomain, RuleBadSRV},
		{"www.google.com.default.svc.cluster.local.", NXDomain, RuleBadSRV},
		{"api.example.com.cluster.local.", NXDomain, RuleUnknownBranch},
		{"example.com.cluster.local.", NXDomain, RuleUnknownBranch},
		{"a.b.c.d.e.default.svc.cluster.local.", NXDomain, RuleTooDeep},
		// ...some of which the shape cannot rule out: only the Kubernetes
		// view knows whether namespace "com" exists.
		{"api.example.com.svc.cluster.local.", Forward, RuleNone},
		{"example.com.default.svc.cluster.local.", Forward, RuleNone},
		// Syntax.
		{"-bad.svc.cluster.local.", NXDomain, RuleBadNamespace},
		{"under_score.svc.cluster.local.", NXDomain, RuleBadNamespace},
		{"web-.default.svc.cluster.local.", NXDomain, RuleBadService},
		{"-web.default.svc.cluster.local.", NXDomain, RuleBadService},
		{"w_b.default.svc.cluster.local.", NXDomain, RuleBadService},
		{"a_b.web.default.svc.cluster.local.", NXDomain, RuleBadEndpoint},
		{"-a.web.default.svc.cluster.local.", NXDomain, RuleBadEndpoint},
		{"_http._quic.web.default.svc.cluster.local.", NXDomain, RuleBadSRV},
		{"a_b._tcp.web.default.svc.cluster.local.", NXDomain, RuleBadSRV},
		{"10-244-1.default.pod.cluster.local.", NXDomain, RuleBadPodAddress},
		{"10-244-1-300.default.pod.cluster.local.", NXDomain, RuleBadPodAddress},
		{"web.default.pod.cluster.local.", NXDomain, RuleBadPodAddress},
		{"x.y.z.10-244-1-7.default.pod.cluster.local.", NXDomain, RuleTooDeep},
		{"x.y.web.default.pod.cluster.local.", NXDomain, RuleBadPodAddress},
		{"www.cluster.local.", NXDomain, RuleUnknownBranch},
		{"x.dns-version.cluster.local.", NXDomain, RuleUnknownBranch},
		// An extra zone is left alone, however deep.
		{"consul.cluster.local.", Forward, RuleNone},
		{"a.b.c.consul.cluster.local.", Forward, RuleNone},
		{"xconsul.cluster.local.", NXDomain, RuleUnknownBranch},
		{"a.b.c.d.e.f.g.h.cluster.local.", NXDomain, RuleTooDeep},
	} {
		got, rule := r.Check(tc.name)
		if got != tc.want || rule != tc.rule {
			t.Errorf("Check(%q) = %v, %q; want %v, %q", tc.name, got, rule, tc.want, tc.rule)
		}
	}
}

func TestSeveralClusterDomains(t *testing.T) {
	r := New([]string{"cluster.local.", "Cluster.Example."}, nil)
	for name, want := range map[string]Verdict{
		"api.example.com.cluster.example.": NXDomain,
		"web.default.svc.cluster.example.": Forward,
		"www.cluster.local.":               NXDomain,
		"www.example.":                     Forward,
	} {
		if got, _ := r.Check(name); got != want {
			t.Errorf("Check(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestClassify(t *testing.T) {
	r := New([]string{"cluster.local"}, nil)
	node := []string{"us-east-1.compute.internal."}
	type reading struct {
		form     Form
		name, ns string
		domain   string
	}
	for _, tc := range []struct {
		qname string
		want  []reading
	}{
		{"api.example.com.default.svc.cluster.local.", []reading{
			{FormNamespaceSvc, "api.example.com", "default", "default.svc.cluster.local."},
			{FormSvc, "api.example.com.default", "", "svc.cluster.local."},
			{FormDomain, "api.example.com.default.svc", "", "cluster.local."},
		}},
		{"api.example.com.svc.cluster.local.", []reading{
			{FormNamespaceSvc, "api.example", "com", "com.svc.cluster.local."},
			{FormSvc, "api.example.com", "", "svc.cluster.local."},
			{FormDomain, "api.example.com.svc", "", "cluster.local."},
		}},
		{"API.Example.COM.cluster.local.", []reading{{FormDomain, "API.Example.COM", "", "cluster.local."}}},
		{"web.svc.cluster.local.", []reading{
			{FormSvc, "web", "", "svc.cluster.local."},
			{FormDomain, "web.svc", "", "cluster.local."},
		}},
		{"api.example.com.us-east-1.compute.internal.", []reading{{FormNode, "api.example.com", "", "us-east-1.compute.internal."}}},
		{"cluster.local.", nil},
		{"svc.cluster.local.", []reading{{FormDomain, "svc", "", "cluster.local."}}},
		{"api.example.com.", nil},
		{"compute.internal.", nil},
	} {
		e := r.Classify(tc.qname, node)
		var got []reading
		for i := range e.Len() {
			x := e.At(i)
			got = append(got, reading{x.Form, x.Name, x.Namespace, x.Domain})
		}
		if len(got) != len(tc.want) {
			t.Errorf("Classify(%q) = %v, want %v", tc.qname, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("Classify(%q)[%d] = %+v, want %+v", tc.qname, i, got[i], tc.want[i])
			}
			if x := got[i]; x.name+"."+x.domain != tc.qname {
				t.Errorf("Classify(%q)[%d]: %q + %q is not the name", tc.qname, i, x.name, x.domain)
			}
		}
	}
}

func TestDashedIP(t *testing.T) {
	for s, want := range map[string]bool{
		"10-244-1-7": true, "0-0-0-0": true, "255-255-255-255": true,
		"fd00--1": true, "2001-db8-0-0-0-0-0-1": true, "--1": true, "fe80--": true,
		"10-244-1": false, "10-244-1-256": false, "10-244-1-7-8": false, "a-b-c-d": false,
		"fd00---1": false, "1-2-3-4-5-6-7-8-9": false, "fd00-1": false, "-": false, "": false,
		"10-0-0-01x": false, "ffff1-0-0-0-0-0-0-0": false,
	} {
		if got := isDashedIP(s); got != want {
			t.Errorf("isDashedIP(%q) = %v, want %v", s, got, want)
		}
	}
}

// Classify allocates nothing; Check only for pod addresses.
func TestNoAllocation(t *testing.T) {
	r := New([]string{"cluster.local"}, []string{"consul.cluster.local"})
	node := []string{"compute.internal."}
	names := []string{"api.example.com.default.svc.cluster.local.", "kubernetes.default.svc.cluster.local.",
		"api.example.com.", "_http._tcp.web.default.svc.cluster.local."}
	if n := testing.AllocsPerRun(100, func() {
		for _, q := range names {
			r.Check(q)
			r.Classify(q, node)
		}
	}); n != 0 {
		t.Errorf("%v allocations per run", n)
	}
}

// FuzzClassify checks, for any name, that the readings recompose it and
// that Check never panics and gives a known rule.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{"api.example.com.default.svc.cluster.local.", "cluster.local.",
		"10-244-1-7.default.pod.cluster.local.", "a..svc.cluster.local.", ".cluster.local.", "x.compute.internal."} {
		f.Add(s)
	}
	r := New([]string{"cluster.local"}, []string{"consul.cluster.local"})
	node := []string{"compute.internal."}
	f.Fuzz(func(t *testing.T, qname string) {
		v, rule := r.Check(qname)
		if rule >= numRules || (v == Forward) != (rule == RuleNone) {
			t.Fatalf("Check(%q) = %v, %d", qname, v, rule)
		}
		e := r.Classify(qname, node)
		for i := range e.Len() {
			x := e.At(i)
			if x.Name+"."+x.Domain != qname || x.Name == "" {
				t.Fatalf("Classify(%q) reading %+v does not recompose the name", qname, x)
			}
			if x.Form == FormNamespaceSvc && !strings.HasPrefix(strings.ToLower(x.Domain), strings.ToLower(x.Namespace)+".svc.") {
				t.Fatalf("Classify(%q): namespace %q not in domain %q", qname, x.Namespace, x.Domain)
			}
		}
	})
}

// fakeView is a view of a cluster with fixed contents.
type fakeView struct {
	synced   bool
	ns       map[string]bool
	services map[string]bool // "ns/name"
}

func (v *fakeView) Synced() bool                 { return v.synced }
func (v *fakeView) HasNamespace(ns string) bool  { return v.ns[ns] }
func (v *fakeView) HasService(ns, n string) bool { return v.services[ns+"/"+n] }

func TestCheckView(t *testing.T) {
	r := New([]string{"cluster.local"}, []string{"consul.cluster.local"})
	v := &fakeView{
		synced:   true,
		ns:       map[string]bool{"default": true, "shop": true},
		services: map[string]bool{"default/kubernetes": true, "shop/web": true},
	}
	for _, tc := range []struct {
		name string
		want Verdict
		rule Rule
	}{
		// What the view has: forwarded, or empty.
		{"kubernetes.default.svc.cluster.local.", Forward, RuleNone},
		{"Web.Shop.svc.cluster.local.", Forward, RuleNone},
		{"web-0.web.shop.svc.cluster.local.", Forward, RuleNone},
		{"_http._tcp.web.shop.svc.cluster.local.", Forward, RuleNone},
		{"10-244-1-7.shop.pod.cluster.local.", Forward, RuleNone},
		{"shop.svc.cluster.local.", NoData, RuleEmptyNonTerminal},
		{"Default.pod.cluster.local.", NoData, RuleEmptyNonTerminal},
		// What it has not.
		{"api.example.com.svc.cluster.local.", NXDomain, RuleNoNamespace},
		{"example.com.default.svc.cluster.local.", NXDomain, RuleNoService},
		{"redis.svc.cluster.local.", NXDomain, RuleNoNamespace},
		{"web.nowhere.svc.cluster.local.", NXDomain, RuleNoNamespace},
		{"db.shop.svc.cluster.local.", NXDomain, RuleNoService},
		{"web-0.db.shop.svc.cluster.local.", NXDomain, RuleNoService},
		{"_http._tcp.db.shop.svc.cluster.local.", NXDomain, RuleNoService},
		{"10-244-1-7.nowhere.pod.cluster.local.", NXDomain, RuleNoNamespace},
		{"nowhere.pod.cluster.local.", NXDomain, RuleNoNamespace},
		// The shape rules still come first, and the rest is untouched.
		{"api.example.com.default.svc.cluster.local.", NXDomain, RuleBadSRV},
		{"svc.cluster.local.", NoData, RuleEmptyNonTerminal},
		{"cluster.local.", Forward, RuleNone},
		{"a.b.consul.cluster.local.", Forward, RuleNone},
		{"api.example.com.", Forward, RuleNone},
	} {
		got, rule := r.CheckView(tc.name, v)
		if got != tc.want || rule != tc.rule {
			t.Errorf("CheckView(%q) = %v, %q; want %v, %q", tc.name, got, rule, tc.want, tc.rule)
		}
	}
	// Until the view has synced it denies nothing.
	v.synced = false
	for _, name := range []string{"db.shop.svc.cluster.local.", "web.nowhere.svc.cluster.local.", "shop.svc.cluster.local."} {
		if got, _ := r.CheckView(name, v); got != Forward {
			t.Errorf("CheckView(%q) before the view synced = %v, want forward", name, got)
		}
	}
}

func TestPodWalk(t *testing.T) {
	p := &PodDNS{Namespace: "shop", Ndots: 5,
		Search: []string{"shop.svc.cluster.local.", "svc.cluster.local.", "cluster.local.", "c.example.internal."}}
	name, rest, ok := p.Walk("API.Example.com.Shop.SVC.cluster.local.")
	want := []string{"API.Example.com.svc.cluster.local.", "API.Example.com.cluster.local.", "API.Example.com.c.example.internal.", "API.Example.com."}
	if !ok || name != "API.Example.com" || strings.Join(rest, " ") != strings.Join(want, " ") {
		t.Errorf("Walk = %q, %q, %v; want %q, %q", name, rest, ok, "API.Example.com", want)
	}
	for _, q := range []string{
		"api.example.com.svc.cluster.local.",  // a later expansion: the client is walking already
		"shop.svc.cluster.local.",             // the search domain itself
		"xshop.svc.cluster.local.",            // not on a label boundary
		"a.b.c.d.e.f.shop.svc.cluster.local.", // five dots: the client asked the name first
		"api.example.com.",                    // the name itself
	} {
		if _, _, ok := p.Walk(q); ok {
			t.Errorf("Walk(%q) took it for the first query of a walk", q)
		}
	}
	if _, _, ok := (&PodDNS{}).Walk("a.shop.svc.cluster.local."); ok {
		t.Error("a pod without a search list walks")
	}
}

// The stage's cost per query on the miss path: a cluster name's verdict,
// by the shape rules alone and with a view.
func BenchmarkCheck(b *testing.B) {
	r := New([]string{"cluster.local"}, nil)
	v := &fakeView{synced: true, ns: map[string]bool{"shop": true}, services: map[string]bool{"shop/web": true}}
	for _, name := range []string{
		"web.shop.svc.cluster.local.",             // may exist: forwarded
		"api.example.com.shop.svc.cluster.local.", // an ndots expansion: denied by shape
		"api.example.com.svc.cluster.local.",      // denied by the view
		"api.example.com.",                        // not a cluster name
	} {
		b.Run("rules/"+name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r.Check(name)
			}
		})
		b.Run("view/"+name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r.CheckView(name, v)
			}
		})
	}
}
