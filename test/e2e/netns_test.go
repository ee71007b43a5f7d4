package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nodedns/nodedns/internal/testutil"
)

// requireRoot skips where network namespaces cannot be made, except in CI,
// where a skip would hide a missing proof.
func requireRoot(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "ip", "getent")
}

// newNetns makes a network namespace whose processes get resolvConf as
// their resolv.conf, with an address besides loopback (192.0.2.1), which
// getaddrinfo needs.
func newNetns(t *testing.T, resolvConf string) *testutil.Netns {
	t.Helper()
	n := testutil.NewNetns(t, "nodedns-e2e")
	n.AddAddress(t, "192.0.2.1/24")
	n.SetResolvConf(t, resolvConf)
	return n
}

// terminate sends SIGTERM (`ip netns exec` execs nodedns in place) and
// waits for the process to exit; its output is complete afterwards.
func terminate(t *testing.T, p *testutil.Process) {
	t.Helper()
	if err := p.Stop(20 * time.Second); err != nil {
		t.Fatalf("nodedns did not stop within 20 s of SIGTERM:\n%s", p.Out)
	}
}

// signal sends sig to the process.
func signal(t *testing.T, p *testutil.Process, sig syscall.Signal) {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

func buildCoreDNS(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, testutil.Path(t, "tools/coredns/build.sh")).Output()
	if err != nil {
		t.Fatalf("building CoreDNS: %v", err)
	}
	return strings.TrimSpace(string(out))
}

const clusterZone = `$ORIGIN cluster.local.
@   30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5
kubernetes.default.svc  5 IN A 10.96.0.1
api.shop.svc            5 IN A 10.96.4.2
`

const externalZone = `$ORIGIN test.
@   3600 IN SOA ns.test. hostmaster.test. 1 7200 1800 86400 60
example      300 IN A 192.0.2.10
www.example  300 IN CNAME example.test.
`

// writeClusterDNS writes the configuration of a CoreDNS stand-in for a
// cluster DNS on 127.0.0.1:1053: clusterZone, the zone "test." given, and
// NXDOMAIN for everything else. It returns the Corefile's path.
func writeClusterDNS(t *testing.T, testZone string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{"cluster.local.db": clusterZone, "test.db": testZone} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	corefile := fmt.Sprintf(`cluster.local:1053 {
    bind 127.0.0.1
    file %[1]s/cluster.local.db
}
test:1053 {
    bind 127.0.0.1
    file %[1]s/test.db
}
.:1053 {
    bind 127.0.0.1
    template ANY ANY {
        rcode NXDOMAIN
        authority ". 60 IN SOA a.root. nstld.root. 1 1800 900 604800 86400"
    }
}
`, dir)
	path := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(path, []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// metric reads one sample from nodedns's metrics inside the namespace.
func metric(t *testing.T, n *testutil.Netns, series string) float64 {
	t.Helper()
	out := n.Exec(t, "curl", "-s", "http://127.0.0.1:9253/metrics")
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+]+)$`)
	m := re.FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestGlibcThroughNodednsToCoreDNS runs the whole chain a pod sees: glibc's
// resolver with the Kubernetes search list and ndots:5, nodedns on port 53,
// and CoreDNS serving the cluster zone and an external zone.
func TestGlibcThroughNodednsToCoreDNS(t *testing.T) {
	requireRoot(t)
	coredns := buildCoreDNS(t)
	nodedns := testutil.Binary(t, "./cmd/nodedns")
	corefile := writeClusterDNS(t, externalZone)
	n := newNetns(t, "nameserver 127.0.0.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 attempts:1 timeout:2\n")
	n.Start(t, "coredns", coredns, "-conf", corefile)
	n.WaitDNS(t, "127.0.0.1", "1053")
	n.Start(t, "nodedns", nodedns, "--listen", "127.0.0.1:53", "--http-listen", "127.0.0.1:9253",
		"--upstream", "127.0.0.1:1053", "--log-level", "warn")
	n.WaitDNS(t, "127.0.0.1", "53")

	tests := []struct {
		name, want string
	}{
		{"api", "10.96.4.2"},                // first search domain: api.shop.svc.cluster.local
		{"kubernetes.default", "10.96.0.1"}, // second: kubernetes.default.svc.cluster.local
		{"kubernetes.default.svc.cluster.local", "10.96.0.1"},
		{"example.test", "192.0.2.10"},     // three NXDOMAINs through the search list, then as given
		{"www.example.test", "192.0.2.10"}, // through a CNAME
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := n.Exec(t, "getent", "ahostsv4", tc.name)
			if !strings.Contains(out, tc.want) {
				t.Errorf("getent ahostsv4 %s:\n%s\nwant %s", tc.name, out, tc.want)
			}
		})
	}
	// A name that exists nowhere fails cleanly (exit status 2 from getent).
	if err := exec.Command("ip", "netns", "exec", n.Name, "getent", "ahostsv4", "nope.invalid").Run(); err == nil {
		t.Error("getent resolved a name that does not exist")
	}

	// Every lookup again: glibc sends the same search-list expansions, and
	// nodedns answers all of them, positive and negative, from its cache.
	const upstreamSeries = `nodedns_upstream_requests_total{rcode="NOERROR",upstream="127.0.0.1:1053"}`
	before := metric(t, n, upstreamSeries) + metric(t, n, `nodedns_upstream_requests_total{rcode="NXDOMAIN",upstream="127.0.0.1:1053"}`)
	if before == 0 {
		t.Fatal("no upstream requests counted: is the metric name right?")
	}
	hitsBefore := metric(t, n, "nodedns_cache_hits_total")
	for _, tc := range tests {
		n.Exec(t, "getent", "ahostsv4", tc.name)
	}
	after := metric(t, n, upstreamSeries) + metric(t, n, `nodedns_upstream_requests_total{rcode="NXDOMAIN",upstream="127.0.0.1:1053"}`)
	if after != before {
		t.Errorf("repeating the lookups sent %v more queries upstream; want all from the cache", after-before)
	}
	if hits := metric(t, n, "nodedns_cache_hits_total") - hitsBefore; hits < 10 {
		t.Errorf("only %v cache hits for the repeated lookups", hits)
	}
}
