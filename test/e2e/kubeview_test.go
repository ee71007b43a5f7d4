package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"context"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodedns/nodedns/internal/kubetest"
	"github.com/nodedns/nodedns/internal/testutil"
)

// The Kubernetes view against a real control plane, with the network a
// node has: a "node" namespace holding etcd, kube-apiserver, two CoreDNS
// pods serving the cluster (its kubernetes plugin) behind the kube-dns
// Service's EndpointSlice, and nodedns on 169.254.20.10; and a "pod"
// namespace whose address, 10.244.1.7, is a pod of this node in the API,
// reaching nodedns through a veth pair as a pod does. The test itself
// reaches the API server on the node namespace's end of another veth pair.
//
// It measures the ndots:5 lookup of an external name by glibc and musl in
// the pod, with nodedns (autopath off and on) and with CoreDNS configured
// as NodeLocal DNSCache, then checks existence answers and their
// invalidation, failover between the CoreDNS endpoints, and an API server
// outage.
func TestKubernetesView(t *testing.T) {
	requireRoot(t)
	// Mostly waiting (for processes and the API server): beside the other
	// long tests.
	t.Parallel()
	coredns := buildCoreDNS(t)
	nodedns := testutil.Binary(t, "./cmd/nodedns")
	musl := buildMuslLookup(t)
	dir := t.TempDir()

	node := newNetns(t, "nameserver 169.254.20.10\n")
	// The test's way to the API server: a veth pair, its far end in the
	// node namespace. 198.18.0.0/15 is the benchmarking range (RFC 2544).
	sub := 1 + rand.IntN(250)
	apiAddr := fmt.Sprintf("198.18.%d.2", sub)
	hostIf, nodeIf := fmt.Sprintf("ndk%dh", sub), fmt.Sprintf("ndk%dn", sub)
	testutil.Run(t, "ip", "link", "add", hostIf, "type", "veth", "peer", "name", nodeIf, "netns", node.Name)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "delete", hostIf).Run() })
	testutil.Run(t, "ip", "addr", "add", fmt.Sprintf("198.18.%d.1/30", sub), "dev", hostIf)
	testutil.Run(t, "ip", "link", "set", hostIf, "up")
	testutil.Run(t, "ip", "-n", node.Name, "addr", "add", apiAddr+"/30", "dev", nodeIf)
	testutil.Run(t, "ip", "-n", node.Name, "link", "set", nodeIf, "up")
	for _, a := range []string{"169.254.20.10", "169.254.20.11", "10.244.0.5", "10.244.0.6"} {
		testutil.Run(t, "ip", "-n", node.Name, "addr", "add", a+"/32", "dev", "lo")
	}

	cluster := kubetest.StartWith(t, kubetest.Options{Netns: node.Name, Addr: apiAddr})
	ns := cluster.Namespace(t, "shop")
	cluster.ClusterIPService(t, ns, "web", kubetest.Port("http", corev1.ProtocolTCP, 80))
	cluster.ClusterIPService(t, "kube-system", "kube-dns", kubetest.Port("dns", corev1.ProtocolUDP, 53))
	cluster.EndpointSlice(t, "kube-system", "kube-dns",
		[]discoveryv1.Endpoint{kubetest.Endpoint("10.244.0.5", ""), kubetest.Endpoint("10.244.0.6", "")},
		kubetest.EndpointPort("dns", corev1.ProtocolUDP, 53), kubetest.EndpointPort("dns-tcp", corev1.ProtocolTCP, 53))
	cluster.PodWith(t, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client"},
		Spec:       corev1.PodSpec{NodeName: "node-1", DNSPolicy: corev1.DNSClusterFirst},
	}, "10.244.1.7")

	// The cluster's DNS: two CoreDNS pods with the kubernetes plugin, and
	// an external zone with wildcards so that every lookup is a new name.
	ext := `$ORIGIN test.
@      3600 IN SOA ns.test. hostmaster.test. 1 7200 1800 86400 60
*      300 IN A 192.0.2.30
*      300 IN AAAA 2001:db8::30
`
	if err := os.WriteFile(filepath.Join(dir, "test.db"), []byte(ext), 0o644); err != nil {
		t.Fatal(err)
	}
	standIns := map[string]*testutil.Process{}
	startStandIn := func(ip string) {
		conf := filepath.Join(dir, "Corefile-"+ip)
		corefile := fmt.Sprintf(`cluster.local:53 {
    bind %[1]s
    prometheus %[1]s:9153
    kubernetes cluster.local {
        kubeconfig %[2]s %[3]s
        pods insecure
        ttl 5
    }
}
test:53 {
    bind %[1]s
    prometheus %[1]s:9153
    file %[4]s/test.db
}
.:53 {
    bind %[1]s
    prometheus %[1]s:9153
    template ANY ANY {
        rcode NXDOMAIN
        authority ". 60 IN SOA a.root. nstld.root. 1 1800 900 604800 86400"
    }
}
`, ip, cluster.Kubeconfig, kubetest.ContextName, dir)
		if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
			t.Fatal(err)
		}
		standIns[ip] = node.Start(t, "coredns "+ip, coredns, "-conf", conf)
		node.WaitDNS(t, ip, "53")
	}
	startStandIn("10.244.0.5")
	startStandIn("10.244.0.6")

	// The pod: 10.244.1.7 behind a veth pair, routed to the node.
	pod := newNetns(t, fmt.Sprintf("nameserver 169.254.20.10\nsearch %s.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n", ns))
	podIf, podPeer := fmt.Sprintf("ndp%dp", sub), fmt.Sprintf("ndp%dn", sub)
	testutil.Run(t, "ip", "link", "add", podIf, "netns", pod.Name, "type", "veth", "peer", "name", podPeer, "netns", node.Name)
	testutil.Run(t, "ip", "-n", pod.Name, "addr", "add", "10.244.1.7/24", "dev", podIf)
	testutil.Run(t, "ip", "-n", pod.Name, "link", "set", podIf, "up")
	testutil.Run(t, "ip", "-n", pod.Name, "route", "add", "default", "via", "10.244.1.1")
	testutil.Run(t, "ip", "-n", node.Name, "addr", "add", "10.244.1.1/24", "dev", podPeer)
	testutil.Run(t, "ip", "-n", node.Name, "link", "set", podPeer, "up")

	startNodedns := func(extra ...string) *testutil.Process {
		args := append([]string{nodedns, "--listen", "169.254.20.10:53", "--http-listen", "127.0.0.1:9253",
			"--upstream", "10.244.0.5:53", "--kube=true", "--kubeconfig", cluster.Kubeconfig,
			"--node-name", "node-1", "--log-level", "info"}, extra...)
		p := node.Start(t, "nodedns", args...)
		node.WaitDNS(t, "169.254.20.10", "53")
		testutil.WaitFor(t, 60*time.Second, "the view to sync and see both CoreDNS endpoints", func() bool {
			return metric(t, node, `nodedns_kube_view_synced{resource="services"}`) == 1 &&
				metric(t, node, `nodedns_kube_view_synced{resource="pods"}`) == 1 &&
				metric(t, node, "nodedns_kube_view_dns_endpoints") == 2
		})
		return p
	}

	// --- ndots:5 lookups from the pod, with three node-local caches.
	clients := map[string][]string{"glibc": {"getent", "ahosts"}, "musl": {musl}}
	type measured struct{ clientQueries, upstream, latency float64 }
	lookups := func(label string, count func() (client, upstream float64)) map[string]measured {
		out := map[string]measured{}
		for _, libc := range []string{"glibc", "musl"} {
			const n = 20
			c0, u0 := count()
			start := time.Now()
			for i := range n {
				name := fmt.Sprintf("api-%s-%s-%d.example.test", label, libc, i) // two dots, a new name each time
				if got := pod.Exec(t, append(clients[libc], name)...); !strings.Contains(got, "192.0.2.30") {
					t.Fatalf("%s, %s: lookup of %s: %q", label, libc, name, got)
				}
			}
			c1, u1 := count()
			out[libc] = measured{(c1 - c0) / n, (u1 - u0) / n, float64(time.Since(start).Microseconds()) / n / 1000}
		}
		return out
	}
	nodeddnsCounts := func() (float64, float64) {
		return metricSum(t, node, "127.0.0.1:9253", "nodedns_requests_total"),
			metricSum(t, node, "127.0.0.1:9253", "nodedns_upstream_requests_total")
	}

	// CoreDNS as NodeLocal DNSCache (cache, forward; force_tcp for the
	// cluster zone), on 169.254.20.11; nodedns is not running.
	nodelocal := filepath.Join(dir, "Corefile-nodelocal")
	if err := os.WriteFile(nodelocal, []byte(`cluster.local:53 {
    bind 169.254.20.11
    cache {
        success 9984 30
        denial 9984 5
    }
    forward . 10.244.0.5 10.244.0.6 {
        force_tcp
    }
    prometheus 169.254.20.11:9153
}
.:53 {
    bind 169.254.20.11
    cache 30
    forward . 10.244.0.5 10.244.0.6
    prometheus 169.254.20.11:9153
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	nl := node.Start(t, "coredns nodelocal", coredns, "-conf", nodelocal)
	node.WaitDNS(t, "169.254.20.11", "53")
	pod.SetResolvConf(t, fmt.Sprintf("nameserver 169.254.20.11\nsearch %s.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n", ns))
	coreResults := lookups("nodelocal", func() (float64, float64) {
		return metricSum(t, node, "169.254.20.11:9153", "coredns_dns_requests_total"),
			metricSum(t, node, "10.244.0.5:9153", "coredns_dns_requests_total") + metricSum(t, node, "10.244.0.6:9153", "coredns_dns_requests_total")
	})
	nl.Kill()
	pod.SetResolvConf(t, fmt.Sprintf("nameserver 169.254.20.10\nsearch %s.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n", ns))

	p := startNodedns("--autopath=false")
	plainResults := lookups("plain", nodeddnsCounts)
	p.Kill()
	startNodedns()
	autoResults := lookups("autopath", nodeddnsCounts)
	if n := metric(t, node, `nodedns_autopath_total{result="found"}`); n < 80 {
		t.Errorf("autopath{found} = %v after 40 lookups of A and AAAA, want 80", n)
	}
	for _, libc := range []string{"glibc", "musl"} {
		for _, r := range []struct {
			label string
			m     measured
		}{{"CoreDNS (NodeLocal DNSCache)", coreResults[libc]}, {"nodedns, autopath off", plainResults[libc]}, {"nodedns, autopath on", autoResults[libc]}} {
			t.Logf("%-5s %-29s per lookup: %.1f client queries, %.1f upstream queries, %.2f ms (with the client's start-up)",
				libc, r.label, r.m.clientQueries, r.m.upstream, r.m.latency)
		}
		a := autoResults[libc]
		if a.upstream > 2 {
			t.Errorf("%s with autopath: %.1f upstream queries per lookup, want at most 2", libc, a.upstream)
		}
		if a.clientQueries > 2 {
			t.Errorf("%s with autopath: %.1f client queries per lookup, want 2 (A and AAAA, one round trip)", libc, a.clientQueries)
		}
		if plainResults[libc].clientQueries < 8 {
			t.Errorf("%s without autopath: %.1f client queries per lookup: the walk is not being measured", libc, plainResults[libc].clientQueries)
		}
	}

	// --- Existence: a Service the view lacks is denied on the node; once
	// created it resolves at once (the denials under it are flushed); once
	// deleted it is denied again.
	db := "db." + ns + ".svc.cluster.local."
	denied := metric(t, node, `nodedns_search_answered_total{rule="no_service"}`)
	if rc, _ := digIn(t, node, "169.254.20.10", db, "A"); rc != "NXDOMAIN" {
		t.Fatalf("%s before it exists: %s", db, rc)
	}
	if metric(t, node, `nodedns_search_answered_total{rule="no_service"}`) != denied+1 {
		t.Errorf("%s was not denied by the view", db)
	}
	created := time.Now()
	cluster.ClusterIPService(t, ns, "db", kubetest.Port("pg", corev1.ProtocolTCP, 5432))
	testutil.WaitFor(t, 5*time.Second, db+" to resolve after its Service was created", func() bool {
		rc, _ := digIn(t, node, "169.254.20.10", db, "A")
		return rc == "NOERROR"
	})
	t.Logf("a new Service resolved %v after it was created (the denial cached before had a 5 s TTL)", time.Since(created).Round(10*time.Millisecond))
	web := "web." + ns + ".svc.cluster.local."
	if rc, ans := digIn(t, node, "169.254.20.10", web, "A"); rc != "NOERROR" || len(ans) != 1 {
		t.Fatalf("%s: %s %v", web, rc, ans)
	}
	deleted := time.Now()
	deleteService(t, cluster, ns, "web")
	testutil.WaitFor(t, 5*time.Second, web+" to be denied after its Service was deleted", func() bool {
		rc, _ := digIn(t, node, "169.254.20.10", web, "A")
		return rc == "NXDOMAIN"
	})
	t.Logf("a deleted Service was denied %v after its deletion", time.Since(deleted).Round(10*time.Millisecond))

	// --- Failover between the cluster DNS pods: one dies; once nodedns
	// has taken it out, no query fails; back, it is used again.
	standIns["10.244.0.5"].Kill()
	testutil.WaitFor(t, 30*time.Second, "nodedns to take the dead CoreDNS out", func() bool {
		return metric(t, node, `nodedns_upstream_healthy{upstream="10.244.0.5:53"}`) == 0
	})
	for i := range 40 {
		name := fmt.Sprintf("failover-%d.example.test.", i)
		if rc, _ := digIn(t, node, "169.254.20.10", name, "A"); rc != "NOERROR" {
			t.Errorf("%s with one CoreDNS dead: %s", name, rc)
		}
	}
	startStandIn("10.244.0.5")
	testutil.WaitFor(t, 30*time.Second, "nodedns to take the CoreDNS back", func() bool {
		return metric(t, node, `nodedns_upstream_healthy{upstream="10.244.0.5:53"}`) == 1
	})
	back := metricSum(t, node, "10.244.0.5:9153", "coredns_dns_requests_total")
	for i := range 40 {
		name := fmt.Sprintf("back-%d.example.test.", i)
		if rc, _ := digIn(t, node, "169.254.20.10", name, "A"); rc != "NOERROR" {
			t.Errorf("%s after the CoreDNS came back: %s", name, rc)
		}
	}
	if metricSum(t, node, "10.244.0.5:9153", "coredns_dns_requests_total") <= back {
		t.Error("the CoreDNS that came back got none of 40 queries")
	}
	var ready struct {
		Ready  bool `json:"ready"`
		Detail struct {
			KubeView struct {
				Endpoints []string `json:"dns_endpoints"`
			} `json:"kube_view"`
		} `json:"detail"`
	}
	if err := json.Unmarshal([]byte(node.Exec(t, "curl", "-s", "http://127.0.0.1:9253/ready?verbose")), &ready); err != nil ||
		!ready.Ready || !slices.Equal(ready.Detail.KubeView.Endpoints, []string{"10.244.0.5:53", "10.244.0.6:53"}) {
		t.Errorf("/ready?verbose: %+v, %v", ready, err)
	}

	// --- The API server goes away for 35 s: every answer stays the same
	// and nodedns stays ready; when it is back, changes apply again.
	names := []struct{ name, qtype string }{
		{db, "A"}, {web, "A"}, {"nothing." + ns + ".svc.cluster.local.", "A"},
		{"x.nowhere.svc.cluster.local.", "AAAA"}, {"api.example.test.", "A"},
		{"kube-dns.kube-system.svc.cluster.local.", "A"},
	}
	want := map[string]string{}
	for _, q := range names {
		rc, ans := digIn(t, node, "169.254.20.10", q.name, q.qtype)
		want[q.name] = rc + " " + strings.Join(ans, " ")
	}
	cluster.StopAPIServer()
	outage := time.Now()
	const outageFor = 35 * time.Second
	for time.Since(outage) < outageFor {
		for _, q := range names {
			rc, ans := digIn(t, node, "169.254.20.10", q.name, q.qtype)
			if got := rc + " " + strings.Join(ans, " "); got != want[q.name] {
				t.Errorf("%v into the outage, %s %s: %q, was %q", time.Since(outage).Round(time.Second), q.name, q.qtype, got, want[q.name])
			}
		}
		if code := strings.TrimSpace(node.Exec(t, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:9253/ready")); code != "200" {
			t.Errorf("/ready %s during the outage", code)
		}
		time.Sleep(3 * time.Second)
	}
	if age := metric(t, node, "nodedns_kube_view_age_seconds"); age < 30 {
		t.Errorf("view age %v s after %v without the API server", age, outageFor)
	}
	if s := metric(t, node, `nodedns_kube_view_synced{resource="services"}`); s != 0 {
		t.Errorf("the view still counts as synced %v into the outage: it would deny Services created meanwhile", outageFor)
	}
	if err := cluster.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	cart := "cart." + ns + ".svc.cluster.local."
	cluster.ClusterIPService(t, ns, "cart", kubetest.Port("http", corev1.ProtocolTCP, 80))
	restarted := time.Now()
	// Client-go's reflectors (nodedns's and CoreDNS's) come back with their
	// backoff, up to half a minute after such an outage, more on a loaded
	// machine.
	testutil.WaitFor(t, 3*time.Minute, cart+" to resolve after the API server came back", func() bool {
		rc, _ := digIn(t, node, "169.254.20.10", cart, "A")
		return rc == "NOERROR"
	})
	t.Logf("after the outage, a new Service resolved %v after its creation", time.Since(restarted).Round(100*time.Millisecond))
	testutil.WaitFor(t, 90*time.Second, "the view to watch again", func() bool {
		return metric(t, node, `nodedns_kube_view_synced{resource="services"}`) == 1
	})
}

// digIn asks server, from inside n, and returns the rcode and the answer
// records' data.
func digIn(t *testing.T, n *testutil.Netns, server, name, qtype string) (string, []string) {
	t.Helper()
	out := n.Exec(t, "dig", "@"+server, "+tries=1", "+time=3", "+nocmd", "+noall", "+comments", "+answer", name, qtype)
	m := regexp.MustCompile(`status: ([A-Z]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("dig %s %s: %s", name, qtype, out)
	}
	var ans []string
	for _, line := range strings.Split(out, "\n") {
		if line == "" || strings.HasPrefix(line, ";") {
			continue
		}
		if f := strings.Fields(line); len(f) >= 5 {
			ans = append(ans, f[3]+" "+strings.Join(f[4:], " "))
		}
	}
	slices.Sort(ans)
	return m[1], ans
}

// metricSum sums every sample of a metric family served at addr inside n.
func metricSum(t *testing.T, n *testutil.Netns, addr, family string) float64 {
	t.Helper()
	out := n.Exec(t, "curl", "-s", "http://"+addr+"/metrics")
	var sum float64
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(family) + `(\{[^}]*\})? ([0-9.e+]+)$`)
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		sum += v
	}
	return sum
}

// deleteService deletes a Service through the API.
func deleteService(t *testing.T, c *kubetest.Cluster, ns, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Client.CoreV1().Services(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("deleting Service %s/%s: %v", ns, name, err)
	}
}
