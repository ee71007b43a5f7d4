package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nodedns/nodedns/internal/testutil"
)

// requireRoot skips where network namespaces cannot be made, except in CI,
// where a skip would hide a missing proof.
func requireRoot(t *testing.T) {
	t.Helper()
	_, ipErr := exec.LookPath("ip")
	_, getentErr := exec.LookPath("getent")
	if os.Geteuid() == 0 && ipErr == nil && getentErr == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("CI must run the end-to-end tests: they need root, ip and getent")
	}
	t.Skip("needs root, ip (iproute2) and getent")
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// netns is a network namespace with its loopback and one veth pair up, and
// its own resolv.conf for `ip netns exec`.
type netns struct{ name string }

// netnsSeq numbers the namespaces of one test binary.
var netnsSeq atomic.Int32

func newNetns(t *testing.T, resolvConf string) *netns {
	t.Helper()
	n := &netns{name: fmt.Sprintf("nodedns-e2e-%d-%d", os.Getpid(), netnsSeq.Add(1))}
	run(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "delete", n.name).Run()
		_ = os.RemoveAll(filepath.Join("/etc/netns", n.name))
	})
	run(t, "ip", "-n", n.name, "link", "set", "lo", "up")
	// getaddrinfo (AI_ADDRCONFIG) returns nothing on a host with no address
	// but loopback: give the namespace one, on a veth pair that stays inside
	// it. Nothing is sent to that address.
	run(t, "ip", "-n", n.name, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	run(t, "ip", "-n", n.name, "addr", "add", "192.0.2.1/24", "dev", "v0")
	run(t, "ip", "-n", n.name, "link", "set", "v0", "up")
	run(t, "ip", "-n", n.name, "link", "set", "v1", "up")
	dir := filepath.Join("/etc/netns", n.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(resolvConf), 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *netns) exec(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", n.name}, args...)...)
}

// execStdin runs a command in the namespace with stdin.
func (n *netns) execStdin(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// proc is a process a test started in a namespace.
type proc struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	once sync.Once
}

// stop kills the process (by its PID: `ip netns exec` execs it in place)
// and waits for it.
func (p *proc) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	})
}

// start runs a long-lived process inside the namespace and stops it at
// the end of the test, if it has not been stopped before.
func (n *netns) start(t *testing.T, logName string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...)}
	dieWithTest(p.cmd)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", logName, p.out.String())
		}
	})
	return p
}

// waitDNS waits until something answers DNS on 127.0.0.1:port inside the
// namespace.
func (n *netns) waitDNS(t *testing.T, port string) { t.Helper(); n.waitDNSAt(t, "127.0.0.1", port) }

// setResolvConf replaces the resolv.conf `ip netns exec` gives the
// namespace's processes.
func (n *netns) setResolvConf(t *testing.T, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join("/etc/netns", n.name, "resolv.conf"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitDNSAt waits until something answers DNS on ip:port inside the
// namespace.
func (n *netns) waitDNSAt(t *testing.T, ip, port string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := exec.Command("ip", "netns", "exec", n.name, "dig", "@"+ip, "-p", port,
			"+time=1", "+tries=1", "+short", "ready.probe.", "TXT").Run()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing answers DNS on port %s in %s", port, n.name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func buildNodedns(t *testing.T) string {
	t.Helper()
	return testutil.Binary(t, "./cmd/nodedns")
}

func buildCoreDNS(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "../tools/coredns/build.sh").Output()
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
func metric(t *testing.T, n *netns, series string) float64 {
	t.Helper()
	out := n.exec(t, "curl", "-s", "http://127.0.0.1:9253/metrics")
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
	nodedns := buildNodedns(t)
	corefile := writeClusterDNS(t, externalZone)
	n := newNetns(t, "nameserver 127.0.0.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 attempts:1 timeout:2\n")
	n.start(t, "coredns", coredns, "-conf", corefile)
	n.waitDNS(t, "1053")
	n.start(t, "nodedns", nodedns, "--listen", "127.0.0.1:53", "--http-listen", "127.0.0.1:9253",
		"--upstream", "127.0.0.1:1053", "--log-level", "warn")
	n.waitDNS(t, "53")

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
			out := n.exec(t, "getent", "ahostsv4", tc.name)
			if !strings.Contains(out, tc.want) {
				t.Errorf("getent ahostsv4 %s:\n%s\nwant %s", tc.name, out, tc.want)
			}
		})
	}
	// A name that exists nowhere fails cleanly (exit status 2 from getent).
	if err := exec.Command("ip", "netns", "exec", n.name, "getent", "ahostsv4", "nope.invalid").Run(); err == nil {
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
		n.exec(t, "getent", "ahostsv4", tc.name)
	}
	after := metric(t, n, upstreamSeries) + metric(t, n, `nodedns_upstream_requests_total{rcode="NXDOMAIN",upstream="127.0.0.1:1053"}`)
	if after != before {
		t.Errorf("repeating the lookups sent %v more queries upstream; want all from the cache", after-before)
	}
	if hits := metric(t, n, "nodedns_cache_hits_total") - hitsBefore; hits < 10 {
		t.Errorf("only %v cache hits for the repeated lookups", hits)
	}
}
