package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodedns/nodedns/internal/kubetest"
	"github.com/nodedns/nodedns/internal/testutil"
)

// xcheckKnown are the differences between CoreDNS and nodedns the
// cross-check expects, each with its reason: places where CoreDNS's
// answer in one query type contradicts its own answers in the others.
// Each must still occur (an entry that no longer matches anything fails
// the test, so the list cannot go stale); anything else fails.
var xcheckKnown = []struct {
	qtype uint16         // 0: any
	name  *regexp.Regexp // matched against the lower-cased query name
	// aNXDomain: only where CoreDNS answers the same name's A query
	// NXDOMAIN (the name does not exist by CoreDNS's own account).
	aNXDomain bool
	// mixedCase: only for the query in mixed case.
	mixedCase bool
	reason    string
}{
	{
		qtype: dns.TypeSOA, name: regexp.MustCompile(`cluster\.local\.$`), aNXDomain: true,
		reason: "CoreDNS answers an SOA query at any name under its zone NOERROR without looking the name up " +
			"(kubernetes/handler.go: SOA records only at the apex, no existence check), while it answers the same " +
			"name NXDOMAIN in every other type; a name exists for all types or for none (RFC 8020), so the stage's " +
			"NXDOMAIN agrees with CoreDNS's other answers",
	},
	{
		qtype: dns.TypeTXT, name: regexp.MustCompile(`^(svc|pod)\.cluster\.local\.$`),
		reason: "CoreDNS answers TXT at the empty non-terminals svc.<cd> and pod.<cd> NXDOMAIN (its TXT path says " +
			"NXDOMAIN whenever it finds no records) and every other type NODATA; the stage answers NODATA in every type",
	},
	{
		name: regexp.MustCompile(`^ns\.dns\.cluster\.local\.$`), mixedCase: true,
		reason: "a CoreDNS bug: isDefaultNS (kubernetes/ns.go) looks for the zone, in the query's case, in the " +
			"lower-cased name, so ns.dns.<cd> asked in mixed case is NXDOMAIN; nodedns's cache compares names " +
			"case-insensitively (RFC 4343) and gives the answer to the lower-case query, asked first",
	},
}

// xcheckQtypes are the query types each name is asked in.
var xcheckQtypes = []uint16{
	dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypeTXT, dns.TypePTR,
	dns.TypeNS, dns.TypeSOA, dns.TypeCNAME, dns.TypeANY,
}

// TestSearchStageAgainstCoreDNSKubernetes is the cross-check the search
// stage's issue asks for: every cluster name that the real CoreDNS
// kubernetes plugin answers must not be answered NXDOMAIN by the stage.
// It starts a real API server (internal/kubetest), fills a namespace with
// the kinds of objects the Kubernetes DNS specification names (a ClusterIP
// Service with named TCP, UDP and SCTP ports, headless Services with
// endpoints with and without hostnames, IPv4 and IPv6, an unnamed port,
// an ExternalName Service, Service and namespace names at the edges of
// what the API accepts, pods), runs CoreDNS's kubernetes plugin on it and
// nodedns in front of CoreDNS, and asks both every name the objects make
// and a set of names that cannot exist, in every query type that matters,
// in lower and mixed case. nodedns forwards what the stage does not
// answer, so any difference in rcode is the stage's doing: each fails the
// test, unless listed in xcheckKnown with its reason.
//
// CoreDNS runs twice: as kubeadm configures it (pods insecure), and with
// the options that add names (zonal: zone-scoped names of headless
// Services; endpoint_pod_names: endpoints named after their pods).
// What the stage cannot see by a name's shape is documented in package
// search's doc: names other plugins serve under the cluster domain,
// multicluster zones, and CoreDNS's SOA answers.
func TestSearchStageAgainstCoreDNSKubernetes(t *testing.T) {
	// Mostly waiting for the API server: beside the other long tests.
	t.Parallel()
	cluster := kubetest.Start(t)
	coredns := buildCoreDNS(t)
	nodedns := testutil.Binary(t, "./cmd/nodedns")
	fx := xcheckFixtures(t, cluster)
	for _, cfg := range []xcheckConfig{
		{name: "kubeadm", expect: fx.expect},
		{name: "zonal,endpoint_pod_names", options: "zonal\n        endpoint_pod_names", expect: slices.Concat(fx.expect, fx.expectOptions)},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			xcheckRun(t, cluster, coredns, nodedns, cfg, fx)
		})
	}
}

// xcheckConfig is one run of the cross-check.
type xcheckConfig struct {
	name     string
	options  string         // CoreDNS: in the kubernetes block
	nodeArgs []string       // nodedns: more flags
	expect   []xcheckExpect // answers CoreDNS must give
}

// xcheckRun starts CoreDNS with the kubernetes plugin options and nodedns
// in front of it, and compares their answers.
func xcheckRun(t *testing.T, cluster *kubetest.Cluster, coredns, nodedns string, cfg xcheckConfig, fx xcheckFixture) {
	// CoreDNS starts after the objects exist: /ready says its informers
	// have synced, so it answers from all of them.
	corePort := testutil.FreePort(t)
	ports, err := testutil.TCPPorts(3)
	if err != nil {
		t.Fatal(err)
	}
	health, ready := ports[0], ports[1]
	dir := t.TempDir()
	corefile := fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    errors
    health 127.0.0.1:%d
    ready 127.0.0.1:%d
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s %s
        pods insecure
        ttl 5
        %s
    }
}
`, corePort, health, ready, cluster.Kubeconfig, kubetest.ContextName, cfg.options)
	if err := os.WriteFile(filepath.Join(dir, "Corefile"), []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.StartProcess(t, "coredns", exec.Command(coredns, "-conf", filepath.Join(dir, "Corefile")))
	testutil.WaitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/ready", ready), 60*time.Second)
	coreAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(corePort))

	nodePort := testutil.FreePort(t)
	metricsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))
	testutil.StartProcess(t, "nodedns", exec.Command(nodedns, append([]string{
		"--listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(nodePort)),
		"--http-listen", metricsAddr,
		"--upstream", coreAddr,
		"--cluster-domain", "cluster.local",
		"--search=true",
		"--log-level", "warn"}, cfg.nodeArgs...)...))
	nodeAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(nodePort))
	xcheckWaitDNS(t, nodeAddr)

	// The test can fail: names the stage answers NXDOMAIN itself, and
	// CoreDNS too. Asked first, so that none is in nodedns's cache, and
	// counted in nodedns_search_answered_total.
	before := xcheckStageAnswers(t, metricsAddr)
	asked := 0
	for _, name := range fx.impossible {
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
			c, n := xcheckExchange(t, coreAddr, name, qt), xcheckExchange(t, nodeAddr, name, qt)
			asked++
			if c.Rcode != dns.RcodeNameError || n.Rcode != dns.RcodeNameError {
				t.Errorf("%s %s: CoreDNS %s, nodedns %s; want NXDOMAIN from both (a name that cannot exist)",
					name, dns.TypeToString[qt], dns.RcodeToString[c.Rcode], dns.RcodeToString[n.Rcode])
			}
		}
	}
	if got := xcheckStageAnswers(t, metricsAddr) - before; got != float64(asked) {
		t.Errorf("the search stage answered %v of the %d queries for names that cannot exist; want all: is the stage on?", got, asked)
	}

	// CoreDNS sees the cluster: a few answers the fixtures must give.
	for _, want := range cfg.expect {
		r := xcheckExchange(t, coreAddr, want.name, want.qtype)
		if r.Rcode != dns.RcodeSuccess || !strings.Contains(fmt.Sprint(r.Answer), want.contains) {
			t.Errorf("CoreDNS %s %s: %s %v; want an answer with %q", want.name, dns.TypeToString[want.qtype],
				dns.RcodeToString[r.Rcode], r.Answer, want.contains)
		}
	}

	// The walk.
	type result struct{ core, node int }
	results := map[string]result{} // "name qtype"
	var mismatches []string
	positive, total := 0, 0
	matched := make([]int, len(xcheckKnown))
	names := append(append([]string{}, fx.names...), fx.impossible...)
	for _, lower := range names {
		for _, name := range []string{lower, xcheckMixedCase(lower)} {
			for _, qt := range xcheckQtypes {
				c, n := xcheckExchange(t, coreAddr, name, qt), xcheckExchange(t, nodeAddr, name, qt)
				total++
				results[name+" "+dns.TypeToString[qt]] = result{c.Rcode, n.Rcode}
				if c.Rcode != dns.RcodeNameError {
					positive++
				}
				diff := ""
				switch {
				case c.Rcode != n.Rcode && n.Rcode == dns.RcodeNameError:
					diff = "FALSE NXDOMAIN"
				case c.Rcode != n.Rcode:
					diff = "rcode differs"
				case len(c.Answer) > 0 && len(n.Answer) == 0:
					diff = "answer lost"
				}
				if diff == "" {
					continue
				}
				line := fmt.Sprintf("%s %s: CoreDNS %s (%d answers), nodedns %s (%d answers): %s",
					name, dns.TypeToString[qt], dns.RcodeToString[c.Rcode], len(c.Answer),
					dns.RcodeToString[n.Rcode], len(n.Answer), diff)
				known := false
				for i, k := range xcheckKnown {
					if k.aNXDomain && results[name+" A"].core != dns.RcodeNameError {
						continue
					}
					if k.mixedCase && name == lower {
						continue
					}
					if (k.qtype == 0 || k.qtype == qt) && k.name.MatchString(lower) {
						matched[i]++
						known = true
						t.Logf("known: %s (%s)", line, k.reason)
						break
					}
				}
				if !known {
					mismatches = append(mismatches, line)
				}
			}
		}
	}
	t.Logf("cross-check: %d names, each in lower and mixed case, in %d types: %d queries to each server, %d not NXDOMAIN from CoreDNS",
		len(names), len(xcheckQtypes), total, positive)
	sort.Strings(mismatches)
	for _, m := range mismatches {
		t.Error(m)
	}
	for i, k := range xcheckKnown {
		if matched[i] == 0 {
			t.Errorf("known difference %s %s (%s) no longer occurs: remove it", k.name, dns.TypeToString[k.qtype], k.reason)
		}
	}
	if positive < 100 {
		t.Errorf("only %d queries answered other than NXDOMAIN by CoreDNS: does it see the cluster?", positive)
	}
	if testing.Verbose() || t.Failed() {
		keys := make([]string, 0, len(results))
		for k := range results {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%-75s %-9s %s\n", k, dns.RcodeToString[results[k].core], dns.RcodeToString[results[k].node])
		}
		t.Logf("every query: name type, CoreDNS's rcode, nodedns's rcode\n%s", b.String())
	}
}

// xcheckExpect is an answer CoreDNS must give.
type xcheckExpect struct {
	name     string
	qtype    uint16
	contains string
}

// xcheckFixture is what the cross-check asks about.
type xcheckFixture struct {
	names      []string // every name the objects make, and the names above them
	impossible []string // names the stage answers NXDOMAIN
	expect     []xcheckExpect
	// expectOptions: answers only with the zonal and endpoint_pod_names
	// options.
	expectOptions []xcheckExpect
}

// xcheckFixtures creates the objects and returns the names they make.
func xcheckFixtures(t *testing.T, c *kubetest.Cluster) xcheckFixture {
	t.Helper()
	const cd = "cluster.local."
	tcp, udp, sctp := corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP
	ns := c.Namespace(t, "xcheck")
	// A namespace name at the edge: 63 characters, starting with a digit
	// (a DNS-1123 label may).
	ns63 := c.Namespace(t, "0"+strings.Repeat("n", 53))
	var fx xcheckFixture
	add := func(names ...string) { fx.names = append(fx.names, names...) }
	svcName := func(svc, namespace string) string { return svc + "." + namespace + ".svc." + cd }

	// The tree above the objects.
	add(cd, "dns-version."+cd, "ns.dns."+cd, "dns."+cd, "svc."+cd, "pod."+cd,
		ns+".svc."+cd, ns+".pod."+cd, ns63+".svc."+cd, ns63+".pod."+cd,
		"no-such-ns.svc."+cd, "no-such-ns.pod."+cd, "no-such-svc."+ns+".svc."+cd)

	// A ClusterIP Service with named ports over each protocol, and
	// endpoints with and without a hostname.
	web := c.ClusterIPService(t, ns, "web", kubetest.Port("http", tcp, 80), kubetest.Port("dns", udp, 53),
		kubetest.Port("dns-tcp", tcp, 53), kubetest.Port("diameter", sctp, 3868))
	// 10.244.1.6 has no hostname but a pod: with endpoint_pod_names its
	// name is the pod's.
	web1 := kubetest.Endpoint("10.244.1.6", "")
	web1.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "web-1"}
	c.EndpointSlice(t, ns, "web",
		[]discoveryv1.Endpoint{kubetest.Endpoint("10.244.1.5", "web-0"), web1},
		kubetest.EndpointPort("http", tcp, 8080), kubetest.EndpointPort("dns", udp, 5353),
		kubetest.EndpointPort("dns-tcp", tcp, 5353), kubetest.EndpointPort("diameter", sctp, 3868))
	w := svcName("web", ns)
	add(w, "web-0."+w, "10-244-1-6."+w, "10-244-1-5."+w, "web-1."+w, "no-such-endpoint."+w,
		"_http._tcp."+w, "_dns._udp."+w, "_dns-tcp._tcp."+w, "_diameter._sctp."+w,
		"_http._udp."+w, "_nope._tcp."+w, // no such port: NXDOMAIN
		"http.tcp."+w, "_http.tcp."+w, "http._tcp."+w, // CoreDNS takes the underscores as optional
		"_._tcp."+w, "_http._."+w, // an empty port or protocol matches any
		"_tcp."+w, "_udp."+w) // the _<proto> level of the SRV names
	fx.expect = append(fx.expect,
		xcheckExpect{w, dns.TypeA, web.Spec.ClusterIP},
		xcheckExpect{"_http._tcp." + w, dns.TypeSRV, " 80 "},
		xcheckExpect{"web-0." + w, dns.TypeA, "10.244.1.5"})

	// A headless Service: endpoints by hostname and by dashed address,
	// IPv4 and IPv6.
	c.HeadlessService(t, ns, "db", kubetest.Port("postgres", tcp, 5432))
	// Topology zones, for the zonal option's names; one has dots.
	db0, db1 := kubetest.Endpoint("10.244.2.10", "db-0"), kubetest.Endpoint("10.244.2.11", "db-1")
	zoneA, zoneDots := "zone-a", "corp.example.com"
	db0.Zone, db1.Zone = &zoneA, &zoneDots
	c.EndpointSlice(t, ns, "db",
		[]discoveryv1.Endpoint{db0, db1, kubetest.Endpoint("10.244.2.12", "")},
		kubetest.EndpointPort("postgres", tcp, 5432))
	c.EndpointSlice(t, ns, "db",
		[]discoveryv1.Endpoint{kubetest.Endpoint("fd00:10:244::12", ""), kubetest.Endpoint("fd00:10:244::13", "db-v6"),
			// The dashed form of an address ending in "::" gets a "0"
			// (CoreDNS endpointHostname); one starting with "::" begins
			// with "--", not a DNS-1123 label.
			kubetest.Endpoint("fd00:10:244::", ""), kubetest.Endpoint("::a", "")},
		kubetest.EndpointPort("postgres", tcp, 5432))
	d := svcName("db", ns)
	add(d, "db-0."+d, "db-1."+d, "10-244-2-12."+d, "db-v6."+d, "fd00-10-244--12."+d, "fd00-10-244--0."+d, "--a."+d,
		"_postgres._tcp."+d, "_tcp."+d, "10-244-2-10."+d,
		// Zone-scoped names (the zonal option): by zone, with the
		// fallback of "prefer" for a zone without endpoints, a zone with
		// dots, an unknown directive, and a ClusterIP Service (NXDOMAIN).
		"zone-a.pin._zone."+d, "zone-b.pin._zone."+d, "zone-b.prefer._zone."+d, "corp.example.com.pin._zone."+d,
		"zone-a.other._zone."+d, "zone-a.pin._zone."+w)
	fx.expect = append(fx.expect,
		xcheckExpect{d, dns.TypeA, "10.244.2.10"},
		xcheckExpect{d, dns.TypeAAAA, "fd00:10:244::12"},
		xcheckExpect{"db-0." + d, dns.TypeA, "10.244.2.10"},
		xcheckExpect{"_postgres._tcp." + d, dns.TypeSRV, "db-1." + d})
	fx.expectOptions = append(fx.expectOptions,
		xcheckExpect{"zone-a.pin._zone." + d, dns.TypeA, "10.244.2.10"},
		xcheckExpect{"corp.example.com.pin._zone." + d, dns.TypeA, "10.244.2.11"},
		xcheckExpect{"zone-b.prefer._zone." + d, dns.TypeA, "10.244.2.12"},
		xcheckExpect{"web-1." + w, dns.TypeA, "10.244.1.6"})

	// A headless Service with one unnamed port.
	c.HeadlessService(t, ns, "raw", corev1.ServicePort{Protocol: tcp, Port: 9000})
	c.EndpointSlice(t, ns, "raw", []discoveryv1.Endpoint{kubetest.Endpoint("10.244.3.7", "")}, kubetest.EndpointPort("", tcp, 9000))
	r := svcName("raw", ns)
	add(r, "10-244-3-7."+r, "_._tcp."+r, "_tcp."+r)

	// An ExternalName Service: a CNAME.
	c.Service(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "ext", Namespace: ns},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.invalid"},
	})
	add(svcName("ext", ns), "x."+svcName("ext", ns), "_http._tcp."+svcName("ext", ns))

	// Service names at the edges: 63 characters; starting with a digit, and
	// all digits (Kubernetes 1.37 takes Service names as DNS-1123 labels:
	// RelaxedServiceNameValidation, GA and locked on).
	edge := "edge-" + strings.Repeat("a1", 29)
	for _, name := range []string{edge, "1st", "8080"} {
		s := c.ClusterIPService(t, ns, name, kubetest.Port("http", tcp, 80))
		add(svcName(name, ns), "_http._tcp."+svcName(name, ns))
		fx.expect = append(fx.expect, xcheckExpect{svcName(name, ns), dns.TypeA, s.Spec.ClusterIP})
	}
	c.HeadlessService(t, ns, "3d", kubetest.Port("http", tcp, 80))
	c.EndpointSlice(t, ns, "3d", []discoveryv1.Endpoint{kubetest.Endpoint("10.244.4.4", "0")}, kubetest.EndpointPort("http", tcp, 80))
	add(svcName("3d", ns), "0."+svcName("3d", ns), "_http._tcp."+svcName("3d", ns))
	web63 := c.ClusterIPService(t, ns63, "web", kubetest.Port("http", tcp, 80))
	add(svcName("web", ns63), "_http._tcp."+svcName("web", ns63))
	fx.expect = append(fx.expect, xcheckExpect{svcName("web", ns63), dns.TypeA, web63.Spec.ClusterIP})

	// Pods. With "pods insecure" CoreDNS answers any address in a
	// namespace that exists; the pods are there for "pods verified".
	c.Pod(t, ns, "web-0", "10.244.1.5")
	c.Pod(t, ns, "web-1", "10.244.1.6")
	c.Pod(t, ns, "dual", "10.244.5.5", "fd00:10:244::55")
	p := ns + ".pod." + cd
	add("10-244-1-5."+p, "10-244-5-5."+p, "fd00-10-244--55."+p, "10-244-9-9."+p, "1-2-3-4."+ns63+".pod."+cd,
		"10-244-1-5.no-such-ns.pod."+cd, "10-244-1-300."+p, "web-0."+p,
		"x.10-244-1-5."+p, "_http._tcp.10-244-1-5."+p)
	fx.expect = append(fx.expect, xcheckExpect{"10-244-1-5." + p, dns.TypeA, "10.244.1.5"},
		xcheckExpect{"fd00-10-244--55." + p, dns.TypeAAAA, "fd00:10:244::55"})

	// Reverse names of the Service and endpoint addresses.
	for _, ip := range []string{web.Spec.ClusterIP, web63.Spec.ClusterIP, "10.244.1.5", "10.244.2.10", "10.244.2.12", "fd00:10:244::13", "10.244.9.9"} {
		rev, err := dns.ReverseAddr(ip)
		if err != nil {
			t.Fatal(err)
		}
		add(rev)
	}
	rev, _ := dns.ReverseAddr(web.Spec.ClusterIP)
	fx.expect = append(fx.expect, xcheckExpect{rev, dns.TypePTR, w})

	// Names that cannot exist: the stage's work. Search-list expansions
	// of external names, and names deeper than any shape.
	fx.impossible = []string{
		"api.example.com." + ns + ".svc." + cd,
		"api.example.com.cluster.local.",
		"www.example.com." + cd,
		"a.b.c.d." + ns + ".svc." + cd,
		"-bad." + ns + ".svc." + cd,
		"x.y.z." + ns + ".pod." + cd,
	}
	return fx
}

// xcheckMixedCase upper-cases every other letter.
func xcheckMixedCase(s string) string {
	b := []byte(s)
	up := true
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			if up {
				b[i] = c - 'a' + 'A'
			}
			up = !up
		}
	}
	return string(b)
}

// xcheckExchange asks addr one question over UDP (TCP when truncated),
// with retries, and fails t if no answer comes.
func xcheckExchange(t *testing.T, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(1232, false)
	var err error
	for try := 0; try < 3; try++ {
		c := &dns.Client{Net: "udp", Timeout: 3 * time.Second}
		var r *dns.Msg
		r, _, err = c.Exchange(m, addr)
		if err == nil && r.Truncated {
			c.Net = "tcp"
			r, _, err = c.Exchange(m, addr)
		}
		if err == nil {
			return r
		}
	}
	t.Fatalf("%s %s to %s: %v", name, dns.TypeToString[qtype], addr, err)
	return nil
}

var stageSeries = regexp.MustCompile(`(?m)^nodedns_search_answered_total\{[^}]*\} ([0-9.e+]+)$`)

// xcheckStageAnswers sums nodedns_search_answered_total over its rules.
func xcheckStageAnswers(t *testing.T, metricsAddr string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	found := false
	for _, m := range stageSeries.FindAllStringSubmatch(string(b), -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		sum += v
		found = true
	}
	if !found {
		t.Fatal("no nodedns_search_answered_total series in the metrics: is the metric name right?")
	}
	return sum
}

// xcheckWaitDNS waits until addr answers DNS.
func xcheckWaitDNS(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	m := new(dns.Msg)
	m.SetQuestion("cluster.local.", dns.TypeSOA)
	for {
		c := &dns.Client{Timeout: time.Second}
		if _, _, err := c.Exchange(m, addr); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing answers DNS on %s", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
