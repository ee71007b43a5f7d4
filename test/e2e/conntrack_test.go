package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodedns/nodedns/internal/testutil"
)

// Each UDP query nodedns forwards uses a fresh socket (a fresh source port
// and ID: the defence against spoofed answers), so each miss leaves a
// conntrack entry on the node for the UDP timeout (30 s); a node at a
// thousand misses a second keeps tens of thousands, and the UDP conntrack
// races are what made cluster DNS slow in the first place. Over TCP with
// reused connections (force_tcp, as NodeLocal DNSCache does for the cluster
// zone) the misses share a few connections. Measured with conntrack on in
// a network namespace, for 500 distinct misses; the figures are in
// docs/design.md.
func TestConntrackEntriesPerMiss(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat("/proc/sys/net/netfilter/nf_conntrack_count"); err != nil {
		t.Skip("no conntrack in this kernel")
	}
	coredns := buildCoreDNS(t)
	nodedns := testutil.Binary(t, "./cmd/nodedns")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "test.db"), []byte(`$ORIGIN test.
@ 3600 IN SOA ns.test. hostmaster.test. 1 7200 1800 86400 60
* 300 IN A 192.0.2.30
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Corefile"), []byte(fmt.Sprintf(`.:1053 {
    bind 127.0.0.1
    file %s/test.db test
}
`, dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	n := newNetns(t, "nameserver 127.0.0.1\n")
	// A rule that looks at connection state turns conntrack on in the
	// namespace, as kube-proxy's rules do on a node.
	n.Exec(t, "nft", "add table inet track; add chain inet track out { type filter hook output priority 0; }; add rule inet track out ct state established,related accept")
	// Clients' queries to nodedns are kept out of conntrack, as nodedns's
	// own node set-up does (nodenet): what is left is nodedns's upstream
	// traffic.
	for _, hook := range []string{"prerouting", "output"} {
		n.Exec(t, "nft", fmt.Sprintf("add chain inet track raw%[1]s { type filter hook %[1]s priority raw; }; add rule inet track raw%[1]s udp dport 53 notrack; add rule inet track raw%[1]s udp sport 53 notrack", hook))
	}
	n.Start(t, "coredns", coredns, "-conf", filepath.Join(dir, "Corefile"))
	n.WaitDNS(t, "127.0.0.1", "1053")

	count := func() int {
		v, err := strconv.Atoi(strings.TrimSpace(n.Exec(t, "cat", "/proc/sys/net/netfilter/nf_conntrack_count")))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	const misses = 500
	measure := func(label string, extra ...string) int {
		p := n.Start(t, "nodedns", append([]string{nodedns, "--listen", "127.0.0.1:53", "--http-listen", "127.0.0.1:9253",
			"--upstream", "127.0.0.1:1053", "--log-level", "warn"}, extra...)...)
		defer p.Kill()
		n.WaitDNS(t, "127.0.0.1", "53")
		before := count()
		var names []string
		for i := range misses {
			names = append(names, fmt.Sprintf("%s-%d.test", label, i))
		}
		// dig reads one query per line of a batch file; one client socket,
		// so the client side adds one entry.
		batch := filepath.Join(dir, label+".batch")
		if err := os.WriteFile(batch, []byte(strings.Join(names, " A\n")+" A\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out := n.Exec(t, "dig", "@127.0.0.1", "+tries=1", "+time=3", "+short", "-f", batch)
		if got := strings.Count(out, "192.0.2.30"); got != misses {
			t.Fatalf("%s: %d of %d misses answered", label, got, misses)
		}
		time.Sleep(100 * time.Millisecond)
		return count() - before
	}
	udp := measure("udp")
	tcp := measure("tcp", "--upstream-force-tcp")
	t.Logf("conntrack entries added by %d distinct misses: %d over UDP (a fresh socket each), %d over TCP (force_tcp, reused connections)", misses, udp, tcp)
	if udp < misses/2 {
		t.Errorf("UDP: %d conntrack entries for %d misses: is conntrack on?", udp, misses)
	}
	if tcp > 20 {
		t.Errorf("force_tcp: %d conntrack entries for %d misses, want a handful", tcp, misses)
	}
}
