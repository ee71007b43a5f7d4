package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodedns/nodedns/internal/testutil"
)

// Node networking (--setup-interface, --setup-rules) with the real binary,
// in a "node" namespace: nodedns on 169.254.20.10 makes the address and
// the rules itself, a stand-in cluster DNS (CoreDNS) answers on loopback,
// and a "pod" namespace behind a veth pair resolves through it with
// glibc. For each rules backend: the set-up is in place at the start
// (within 10 s), pods resolve through it (and its rules count their
// packets), a flush of the rules and the address is restored by the
// re-check (within five periods), and SIGTERM removes it all; with
// --skip-teardown, or while another process serves the address, it stays.
// The times are logged as figures: they depend on the machine's load.

// nodeNetFlags turn the set-up on, with a re-check period of one second.
var nodeNetFlags = []string{"--setup-interface", "--setup-rules", "--setup-interval", "1s"}

const recheck = time.Second

// nodeBed is a node namespace with the stand-in upstream and a pod behind
// a veth pair.
type nodeBed struct {
	node, pod *testutil.Netns
	nodedns   string
}

var podSeq int

func newNodeBed(t *testing.T, coredns, nodedns string) *nodeBed {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "test.db"), []byte(externalZone), 0o644); err != nil {
		t.Fatal(err)
	}
	corefile := fmt.Sprintf("test:1053 {\n    bind 127.0.0.1\n    file %s/test.db\n}\n", dir)
	if err := os.WriteFile(filepath.Join(dir, "Corefile"), []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &nodeBed{node: newNetns(t, "nameserver 169.254.20.10\n"), nodedns: nodedns}
	b.node.Start(t, "coredns", coredns, "-conf", filepath.Join(dir, "Corefile"))
	b.node.WaitDNS(t, "127.0.0.1", "1053")

	podSeq++
	b.pod = newNetns(t, "nameserver 169.254.20.10\noptions attempts:1 timeout:2\n")
	podIf, nodeIf := fmt.Sprintf("nnp%d-%dp", os.Getpid()%10000, podSeq), fmt.Sprintf("nnp%d-%dn", os.Getpid()%10000, podSeq)
	testutil.Run(t, "ip", "link", "add", podIf, "netns", b.pod.Name, "type", "veth", "peer", "name", nodeIf, "netns", b.node.Name)
	testutil.Run(t, "ip", "-n", b.pod.Name, "addr", "add", "10.244.1.7/24", "dev", podIf)
	testutil.Run(t, "ip", "-n", b.pod.Name, "link", "set", podIf, "up")
	testutil.Run(t, "ip", "-n", b.pod.Name, "route", "add", "default", "via", "10.244.1.1")
	testutil.Run(t, "ip", "-n", b.node.Name, "addr", "add", "10.244.1.1/24", "dev", nodeIf)
	testutil.Run(t, "ip", "-n", b.node.Name, "link", "set", nodeIf, "up")
	return b
}

// startNodedns runs nodedns in the node namespace with the set-up on.
func (b *nodeBed) startNodedns(t *testing.T, extra ...string) *testutil.Process {
	t.Helper()
	args := append([]string{b.nodedns, "--listen", "169.254.20.10:53", "--http-listen", "169.254.20.10:9253",
		"--upstream", "127.0.0.1:1053", "--log-level", "info"}, nodeNetFlags...)
	return b.node.Start(t, "nodedns", append(args, extra...)...)
}

// address reports whether the node has 169.254.20.10, and on which link.
func (b *nodeBed) address(t *testing.T) (string, bool) {
	t.Helper()
	for _, line := range strings.Split(testutil.Run(t, "ip", "-n", b.node.Name, "-o", "addr", "show"), "\n") {
		if strings.Contains(line, " 169.254.20.10/32 ") {
			return strings.Fields(line)[1], true
		}
	}
	return "", false
}

// ruleset is what the backend's own command lists in the node namespace.
func (b *nodeBed) ruleset(t *testing.T, backend string) string {
	t.Helper()
	if backend == "nftables" {
		return b.node.Exec(t, "nft", "list", "ruleset")
	}
	return b.node.Exec(t, backend+"-save", "-c")
}

// inPlace reports whether the address and every kind of rule are there.
func (b *nodeBed) inPlace(t *testing.T, backend string) bool {
	t.Helper()
	if _, ok := b.address(t); !ok {
		return false
	}
	rs := b.ruleset(t, backend)
	for _, c := range []string{"nodedns: no conntrack for DNS over udp to 169.254.20.10:53",
		"nodedns: no conntrack for DNS replies over tcp from 169.254.20.10:53",
		"nodedns: no conntrack for probes to 169.254.20.10:9253"} {
		if !strings.Contains(rs, c) {
			return false
		}
	}
	if backend != "nftables" && !strings.Contains(rs, "nodedns: accept untracked DNS over udp to 169.254.20.10:53") {
		return false
	}
	return true
}

// gone reports whether neither the address nor any rule is left.
func (b *nodeBed) gone(t *testing.T, backend string) bool {
	t.Helper()
	_, ok := b.address(t)
	return !ok && !strings.Contains(b.ruleset(t, backend), "nodedns")
}

// resolves looks a name up from the pod with glibc, through 169.254.20.10.
func (b *nodeBed) resolves(t *testing.T) {
	t.Helper()
	if out := b.pod.Exec(t, "getent", "ahosts", "example.test"); !strings.Contains(out, "192.0.2.10") {
		t.Fatalf("getent ahosts example.test from the pod: %q", out)
	}
}

// loggedSetupTime is the "since_process_start" of nodedns's "node
// networking in place" line.
func loggedSetupTime(t *testing.T, out string) time.Duration {
	t.Helper()
	m := regexp.MustCompile(`"node networking in place".*"since_process_start":([0-9.e-]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no \"node networking in place\" line with since_process_start in:\n%s", out)
	}
	s, _ := strconv.ParseFloat(m[1], 64)
	return time.Duration(s * float64(time.Second))
}

// requireFirewallTools skips without iptables and nft, except under CI.
func requireFirewallTools(t *testing.T) {
	t.Helper()
	for _, c := range []string{"iptables", "iptables-legacy", "iptables-save", "iptables-legacy-save", "nft"} {
		if _, err := exec.LookPath(c); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("CI must run the node networking tests: %s is missing (make tools installs it)", c)
			}
			t.Skipf("needs %s", c)
		}
	}
}

func TestNodeNetworking(t *testing.T) {
	requireRoot(t)
	requireFirewallTools(t)
	coredns := buildCoreDNS(t)
	nodedns := testutil.Binary(t, "./cmd/nodedns")

	for _, backend := range []string{"iptables", "nftables"} {
		t.Run(backend, func(t *testing.T) {
			b := newNodeBed(t, coredns, nodedns)
			p := b.startNodedns(t, "--setup-rules-backend", backend)
			seen := testutil.WaitFor(t, 10*time.Second, "address and rules in place", func() bool { return b.inPlace(t, backend) })
			link, _ := b.address(t)
			t.Logf("%s: address (on %s) and rules seen in place %v after the process started (polling every 10 ms)", backend, link, seen.Round(time.Millisecond))
			b.node.WaitDNS(t, "169.254.20.10", "53")
			b.resolves(t)
			if got := metricSum(t, b.node, "169.254.20.10:9253", "nodedns_setup_rules_in_place") +
				metricSum(t, b.node, "169.254.20.10:9253", "nodedns_setup_interface_in_place"); got != 2 {
				t.Errorf("nodedns_setup_rules_in_place + nodedns_setup_interface_in_place = %v, want 2", got)
			}
			// The pod's queries went through the NOTRACK rule: its counter moved.
			if !prerouteCounted(b.ruleset(t, backend)) {
				t.Errorf("the PREROUTING NOTRACK rule counted no packet after the pod's lookups:\n%s", b.ruleset(t, backend))
			}

			// Someone flushes the rules and deletes the address.
			switch backend {
			case "nftables":
				b.node.Exec(t, "nft", "flush", "ruleset")
			default:
				b.node.Exec(t, "iptables", "-w", "5", "-t", "raw", "-F")
				b.node.Exec(t, "iptables", "-w", "5", "-t", "filter", "-F")
			}
			if link == "lo" {
				testutil.Run(t, "ip", "-n", b.node.Name, "addr", "del", "169.254.20.10/32", "dev", "lo")
			} else {
				testutil.Run(t, "ip", "-n", b.node.Name, "link", "del", link)
			}
			if b.inPlace(t, backend) {
				t.Fatal("still in place after the flush")
			}
			restored := testutil.WaitFor(t, 5*recheck, "restored after a flush", func() bool { return b.inPlace(t, backend) })
			t.Logf("%s: restored %v after the flush (re-check period %v)", backend, restored.Round(time.Millisecond), recheck)
			b.resolves(t)
			for _, what := range []string{"rules", "address"} {
				if n := metricSum(t, b.node, "169.254.20.10:9253", `nodedns_setup_restored_total{what="`+what+`"}`); n == 0 {
					t.Errorf("nodedns_setup_restored_total{what=%q} = 0 after the restore", what)
				}
			}

			terminate(t, p)
			if !b.gone(t, backend) {
				t.Errorf("after SIGTERM: address or rules left:\n%s\n%s", testutil.Run(t, "ip", "-n", b.node.Name, "addr"), b.ruleset(t, backend))
			}
			// A figure, not a verdict: how long the set-up takes depends
			// on the machine's load (docs/operations.md has it measured).
			took := loggedSetupTime(t, p.Out.String())
			t.Logf("%s: nodedns logged the set-up in place %v after its start", backend, took.Round(time.Millisecond))
		})
	}

	// The interface fallback chosen on purpose (--interface-name lo), and
	// --skip-teardown: SIGTERM leaves everything; a second process finds it
	// all in place (adds nothing) and removes it when it stops.
	t.Run("skip-teardown", func(t *testing.T) {
		b := newNodeBed(t, coredns, nodedns)
		p := b.startNodedns(t, "--skip-teardown", "--interface-name", "lo")
		testutil.WaitFor(t, 10*time.Second, "set-up in place", func() bool { return b.inPlace(t, "nftables") })
		b.node.WaitDNS(t, "169.254.20.10", "53")
		terminate(t, p)
		if !b.inPlace(t, "nftables") {
			t.Fatalf("--skip-teardown: the set-up went away at SIGTERM:\n%s", p.Out.String())
		}
		if link, _ := b.address(t); link != "lo" {
			t.Errorf("the address is on %s, want lo (--interface-name lo)", link)
		}
		p2 := b.startNodedns(t, "--interface-name", "lo")
		b.node.WaitDNS(t, "169.254.20.10", "53")
		b.resolves(t)
		terminate(t, p2)
		if !strings.Contains(p2.Out.String(), `"added":0`) {
			t.Errorf("the second process added rules to a complete set:\n%s", p2.Out.String())
		}
		if !b.gone(t, "nftables") {
			t.Error("the second process left the set-up at SIGTERM")
		}
	})

	// An upgrade: while a new process serves the address, the old one's
	// SIGTERM leaves the set-up to it; pods keep resolving.
	t.Run("old process leaves the set-up to the new one", func(t *testing.T) {
		b := newNodeBed(t, coredns, nodedns)
		old := b.startNodedns(t)
		testutil.WaitFor(t, 10*time.Second, "set-up in place", func() bool { return b.inPlace(t, "nftables") })
		b.node.WaitDNS(t, "169.254.20.10", "53")
		next := b.startNodedns(t, "--http-listen", "127.0.0.1:9254")
		testutil.WaitFor(t, 10*time.Second, "the new process serving", func() bool {
			// Not metricSum: curl fails until the new process listens.
			out, err := exec.Command("ip", "netns", "exec", b.node.Name, "curl", "-s", "http://127.0.0.1:9254/metrics").Output()
			return err == nil && strings.Contains(string(out), "\nnodedns_setup_rules_in_place 1\n")
		})
		terminate(t, old)
		if !strings.Contains(old.Out.String(), "another process serves the listen addresses") || !b.inPlace(t, "nftables") {
			t.Fatalf("the old process removed the set-up the new one serves on:\n%s", old.Out.String())
		}
		b.resolves(t)
		terminate(t, next)
		if !b.gone(t, "nftables") {
			t.Error("the last process left the set-up at SIGTERM")
		}
	})

	// A node firewall made with iptables-nft that drops what conntrack does
	// not know, and nodedns with no iptables program (the image): the
	// nftables backend puts the ACCEPTs into that firewall's chains, and
	// the pod resolves; without them, its untracked queries are dropped.
	t.Run("default-drop iptables-nft firewall, no iptables program", func(t *testing.T) {
		b := newNodeBed(t, coredns, nodedns)
		b.node.Exec(t, "iptables-nft", "-w", "5", "-P", "INPUT", "DROP")
		b.node.Exec(t, "iptables-nft", "-w", "5", "-A", "INPUT", "-i", "lo", "-j", "ACCEPT")
		b.node.Exec(t, "iptables-nft", "-w", "5", "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
		p := b.startNodedns(t, "--setup-rules-backend", "nftables")
		testutil.WaitFor(t, 10*time.Second, "set-up in place", func() bool { return b.inPlace(t, "nftables") })
		b.node.WaitDNS(t, "169.254.20.10", "53")
		if !strings.Contains(b.node.Exec(t, "iptables-nft-save"), "nodedns: accept untracked DNS over udp to 169.254.20.10:53") {
			t.Fatalf("no ACCEPT in the iptables-nft firewall:\n%s", b.node.Exec(t, "iptables-nft-save"))
		}
		b.resolves(t)
		// The same firewall without nodedns's ACCEPTs drops the pod's query.
		b.node.Exec(t, "iptables-nft", "-w", "5", "-D", "INPUT", "-d", "169.254.20.10/32", "-p", "udp", "-m", "udp", "--dport", "53",
			"-m", "comment", "--comment", "nodedns: accept untracked DNS over udp to 169.254.20.10:53", "-j", "ACCEPT")
		if out, err := exec.Command("ip", "netns", "exec", b.pod.Name, "dig", "@169.254.20.10", "+time=1", "+tries=1", "example.test").CombinedOutput(); err == nil && strings.Contains(string(out), "status: NOERROR") {
			t.Errorf("the firewall let an untracked query through without the ACCEPT:\n%s", out)
		}
		terminate(t, p)
		if out := b.node.Exec(t, "iptables-nft-save"); strings.Contains(out, "nodedns") {
			t.Errorf("ACCEPTs left after SIGTERM:\n%s", out)
		}
	})

	// auto follows kube-proxy: with its chains in iptables-legacy, the rules
	// go there.
	t.Run("auto follows kube-proxy's iptables-legacy", func(t *testing.T) {
		b := newNodeBed(t, coredns, nodedns)
		b.node.Exec(t, "iptables-legacy", "-w", "5", "-t", "nat", "-N", "KUBE-SERVICES")
		b.node.Exec(t, "iptables-legacy", "-w", "5", "-t", "mangle", "-N", "KUBE-KUBELET-CANARY")
		p := b.startNodedns(t, "--setup-rules-backend", "auto")
		testutil.WaitFor(t, 10*time.Second, "set-up in place", func() bool { return b.inPlace(t, "iptables-legacy") })
		b.node.WaitDNS(t, "169.254.20.10", "53")
		b.resolves(t)
		if got := metricSum(t, b.node, "169.254.20.10:9253", `nodedns_setup_info{backend="iptables-legacy",interface="`+
			map[bool]string{true: "lo", false: "dummy"}[mustLink(t, b) == "lo"]+`"}`); got != 1 {
			t.Errorf("nodedns_setup_info does not say iptables-legacy")
		}
		terminate(t, p)
		if !b.gone(t, "iptables-legacy") {
			t.Error("left behind at SIGTERM")
		}
	})
}

func mustLink(t *testing.T, b *nodeBed) string {
	t.Helper()
	link, ok := b.address(t)
	if !ok {
		t.Fatal("no address")
	}
	return link
}

// prerouteCounted reports whether the UDP PREROUTING NOTRACK rule counted
// packets, in `iptables-save -c` ("[packets:bytes] -A ...") or `nft list
// ruleset` ("counter packets N") form.
func prerouteCounted(ruleset string) bool {
	for _, line := range strings.Split(ruleset, "\n") {
		if !strings.Contains(line, "no conntrack for DNS over udp to 169.254.20.10:53") || strings.Contains(line, "from the node") {
			continue
		}
		if strings.Contains(line, "OUTPUT") {
			continue
		}
		if m := regexp.MustCompile(`^\[(\d+):`).FindStringSubmatch(line); m != nil {
			return m[1] != "0"
		}
		if m := regexp.MustCompile(`counter packets (\d+)`).FindStringSubmatch(line); m != nil {
			return m[1] != "0"
		}
	}
	return false
}
