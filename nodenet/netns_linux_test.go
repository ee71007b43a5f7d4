package nodenet

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netns"

	"github.com/nodedns/nodedns/internal/testutil"
)

// The tests below run the package in a network namespace of their own
// (testutil.EnterNewNetns): the test's goroutine stays in it, on a thread
// that ends with the test. Commands it runs (ip, iptables, nft) inherit
// the namespace, which is how the tests read back what the package did.

// enterNetns moves the test's goroutine into a fresh network namespace
// with lo up. It skips without root, ip and commands, except under CI.
func enterNetns(t *testing.T, commands ...string) netns.NsHandle {
	t.Helper()
	testutil.RequireRoot(t, append([]string{"ip"}, commands...)...)
	return testutil.EnterNewNetns(t)
}

// sh runs a command in the test's namespace and returns its output.
func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	if strings.HasPrefix(name, "ip") && strings.Contains(name, "tables") && !strings.HasSuffix(name, "-save") {
		// The xtables lock is one for the machine: tests in other
		// namespaces (and packages) may hold it for a moment.
		args = append([]string{"-w", "5"}, args...)
	}
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

var (
	dnsAddr   = netip.MustParseAddrPort("169.254.20.10:53")
	svcAddr   = netip.MustParseAddrPort("10.96.0.10:53")
	probeAddr = netip.MustParseAddrPort("169.254.20.10:9253")
)

func newSetup(t *testing.T, cfg Config) (*Setup, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	if cfg.Listen == nil {
		cfg.Listen = []netip.AddrPort{dnsAddr, svcAddr}
		cfg.Probes = []netip.AddrPort{probeAddr}
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, reg
}

// dummySupported reports whether the kernel makes dummy links.
func dummySupported() bool {
	if exec.Command("ip", "link", "add", "nd-probe0", "type", "dummy").Run() != nil {
		return false
	}
	_ = exec.Command("ip", "link", "del", "nd-probe0").Run()
	return true
}

func TestInterface(t *testing.T) {
	for _, tc := range []struct{ name, link string }{
		{"dummy, or lo where the kernel has no dummy links", "nodedns0"},
		{"lo chosen", "lo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enterNetns(t)
			s, reg := newSetup(t, Config{Interface: true, InterfaceName: tc.link})
			if err := s.EnsureInterface(); err != nil {
				t.Fatal(err)
			}
			wantMode := "lo"
			if tc.link != "lo" && dummySupported() {
				wantMode = "dummy"
			}
			if s.InterfaceMode() != wantMode {
				t.Fatalf("mode %q, want %q", s.InterfaceMode(), wantMode)
			}
			dev := map[string]string{"dummy": "nodedns0", "lo": "lo"}[wantMode]
			t.Logf("interface mode %s (the kernel has dummy links: %v)", wantMode, dummySupported())
			show := func() string { return sh(t, "ip", "addr", "show", "dev", dev) }
			out := show()
			for _, a := range []string{"169.254.20.10/32", "10.96.0.10/32"} {
				if !strings.Contains(out, "inet "+a) {
					t.Errorf("ip addr show dev %s:\n%s\nwant %s", dev, out, a)
				}
			}
			if wantMode == "lo" && !strings.Contains(out, loLabel) {
				t.Errorf("the addresses on lo carry no %s label:\n%s", loLabel, out)
			}
			// The address is local: a listener can bind it.
			l, err := net.ListenPacket("udp", "169.254.20.10:0")
			if err != nil {
				t.Fatalf("binding the address: %v", err)
			}
			l.Close()
			if got, _ := s.iface.ensure(); len(got) != 0 {
				t.Errorf("a second ensure added %v; want nothing", got)
			}

			// Someone deletes an address (or the link): the check puts it back.
			if wantMode == "dummy" {
				sh(t, "ip", "link", "del", "nodedns0")
			} else {
				sh(t, "ip", "addr", "del", "169.254.20.10/32", "dev", "lo")
			}
			s.Check()
			if !strings.Contains(show(), "inet 169.254.20.10/32") {
				t.Errorf("not restored:\n%s", show())
			}
			if n := counter(t, reg, "nodedns_setup_restored_total", "address"); n < 1 {
				t.Errorf("nodedns_setup_restored_total{what=address} = %v, want at least 1", n)
			}
			if g := promtest.ToFloat64(s.metrics.interfaceInPlace); g != 1 {
				t.Errorf("nodedns_setup_interface_in_place = %v", g)
			}

			if err := s.Teardown(); err != nil {
				t.Fatal(err)
			}
			out = sh(t, "ip", "addr")
			if strings.Contains(out, "169.254.20.10") || strings.Contains(out, "nodedns0") {
				t.Errorf("after teardown:\n%s", out)
			}
			if !strings.Contains(out, "127.0.0.1/8") {
				t.Errorf("teardown took lo's own address:\n%s", out)
			}
			if err := s.Teardown(); err != nil {
				t.Errorf("a second teardown: %v", err)
			}
		})
	}
}

// A link of another type under the interface's name is not nodedns's: it
// is neither used nor deleted.
func TestInterfaceNameTaken(t *testing.T) {
	enterNetns(t)
	sh(t, "ip", "link", "add", "nodedns0", "type", "veth", "peer", "name", "nodedns1")
	s, _ := newSetup(t, Config{Interface: true, InterfaceName: "nodedns0"})
	if err := s.EnsureInterface(); err == nil || !strings.Contains(err.Error(), "veth") {
		t.Errorf("err = %v, want one saying the link is a veth", err)
	}
}

// backends are the ways the tests install rules: each iptables flavour
// and native nftables, with the commands that read them back and flush
// them.
var backends = []struct {
	name    string // the setting
	want    string // the backend chosen
	command string
	list    []string   // read the rules back
	flush   [][]string // what an operator's flush runs
}{
	{"iptables", flavourDefault, "iptables",
		[]string{"iptables-save"}, [][]string{{"iptables", "-t", "raw", "-F"}, {"iptables", "-t", "filter", "-F"}}},
	{"nftables", BackendNFTables, "nft",
		[]string{"nft", "list", "ruleset"}, [][]string{{"nft", "flush", "ruleset"}}},
}

func TestRules(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			enterNetns(t, b.command)
			s, reg := newSetup(t, Config{Rules: true, Backend: b.name})
			if name, _ := s.Backend(); name != b.want {
				t.Fatalf("backend %q, want %q", name, b.want)
			}
			start := time.Now()
			if err := s.EnsureRules(); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %d rules in %v", b.name, s.rules.count(), time.Since(start))
			// The rules, without iptables-save's comment lines, which
			// carry the time to the second.
			list := func() string {
				var lines []string
				for _, l := range strings.Split(sh(t, b.list[0], b.list[1:]...), "\n") {
					if !strings.HasPrefix(l, "#") {
						lines = append(lines, l)
					}
				}
				return strings.Join(lines, "\n")
			}
			out := list()
			for _, r := range ruleSet([]netip.AddrPort{dnsAddr, svcAddr}, []netip.AddrPort{probeAddr}, false) {
				if b.name == "nftables" && r.table == "filter" {
					continue // see nftRules
				}
				if !strings.Contains(out, r.comment) {
					t.Errorf("rule %q missing from:\n%s", r.comment, out)
				}
			}
			if b.name == "nftables" {
				for _, want := range []string{"table inet nodedns", "hook prerouting priority raw", "hook output priority raw",
					"ip daddr 169.254.20.10 udp dport 53", "ip saddr 169.254.20.10 tcp sport 53", "ip daddr 169.254.20.10 tcp dport 9253", "notrack"} {
					if !strings.Contains(out, want) {
						t.Errorf("nft list ruleset has no %q:\n%s", want, out)
					}
				}
			} else {
				for _, want := range []string{"-A PREROUTING -d 169.254.20.10/32 -p udp -m udp --dport 53", "-j NOTRACK",
					"-A INPUT -d 10.96.0.10/32 -p tcp -m tcp --dport 53", "-j ACCEPT", "-A OUTPUT -s 169.254.20.10/32 -p udp -m udp --sport 53"} {
					if !strings.Contains(out, want) {
						t.Errorf("iptables-save has no %q:\n%s", want, out)
					}
				}
			}
			if n, err := s.rules.ensure(); n != 0 || err != nil {
				t.Errorf("a second ensure added %d (%v); want nothing", n, err)
			}
			if again := list(); again != out {
				t.Errorf("a second ensure changed the rules:\n%s\nthen\n%s", out, again)
			}

			for _, f := range b.flush {
				sh(t, f[0], f[1:]...)
			}
			s.Check()
			if again := list(); !strings.Contains(again, "nodedns: no conntrack for DNS over udp to 169.254.20.10:53") {
				t.Errorf("not restored after a flush:\n%s", again)
			}
			if n := counter(t, reg, "nodedns_setup_restored_total", "rules"); n != float64(s.rules.count()) {
				t.Errorf("nodedns_setup_restored_total{what=rules} = %v, want %d", n, s.rules.count())
			}

			if err := s.Teardown(); err != nil {
				t.Fatal(err)
			}
			if out := list(); strings.Contains(out, "nodedns") {
				t.Errorf("after teardown:\n%s", out)
			}
			if err := s.Teardown(); err != nil {
				t.Errorf("a second teardown: %v", err)
			}
		})
	}
}

// TestRulesIPTablesFlavours runs the rules through iptables-legacy and
// iptables-nft, chosen the way auto chooses them: by where the KUBE-*
// chains are.
func TestRulesIPTablesFlavours(t *testing.T) {
	for _, flavour := range []string{flavourLegacy, flavourNFT} {
		t.Run(flavour, func(t *testing.T) {
			enterNetns(t, flavour, "nft")
			// kubelet's canary, as a node with kube-proxy in iptables mode has.
			sh(t, flavour, "-t", "mangle", "-N", "KUBE-KUBELET-CANARY")
			sh(t, flavour, "-t", "nat", "-N", "KUBE-SERVICES")
			s, _ := newSetup(t, Config{Rules: true, Backend: "auto"})
			if name, why := s.Backend(); name != flavour {
				t.Fatalf("auto chose %q (%s), want %q", name, why, flavour)
			}
			if err := s.EnsureRules(); err != nil {
				t.Fatal(err)
			}
			out := sh(t, flavour, "-t", "raw", "-S")
			if !strings.Contains(out, "nodedns: no conntrack for DNS over udp to 169.254.20.10:53") {
				t.Errorf("%s -t raw -S:\n%s", flavour, out)
			}
			// The rules come first, before kube-proxy's jumps.
			sh(t, flavour, "-t", "filter", "-N", "KUBE-FIREWALL")
			sh(t, flavour, "-t", "filter", "-I", "INPUT", "1", "-j", "KUBE-FIREWALL")
			sh(t, flavour, "-t", "filter", "-D", "INPUT", "-p", "udp", "-d", "169.254.20.10", "-m", "udp", "--dport", "53",
				"-m", "comment", "--comment", "nodedns: accept untracked DNS over udp to 169.254.20.10:53", "-j", "ACCEPT")
			s.Check()
			var lines []string
			for _, l := range strings.Split(sh(t, flavour, "-t", "filter", "-S", "INPUT"), "\n") {
				if strings.HasPrefix(l, "-A") {
					lines = append(lines, l)
				}
			}
			if len(lines) < 2 || !strings.Contains(lines[0], "nodedns") {
				t.Errorf("a restored rule is not first in INPUT:\n%s", strings.Join(lines, "\n"))
			}
			if err := s.Teardown(); err != nil {
				t.Fatal(err)
			}
			if out := sh(t, flavour+"-save"); strings.Contains(out, "nodedns") {
				t.Errorf("after teardown:\n%s", out)
			}
		})
	}
}

func TestDetect(t *testing.T) {
	enterNetns(t, "nft", flavourLegacy)
	s, _ := newSetup(t, Config{Rules: true, Backend: "auto"})
	if name, why := s.Backend(); name != BackendNFTables || !strings.Contains(why, "no kube-proxy") {
		t.Errorf("an empty node: %s (%s), want nftables", name, why)
	}
	if legacyTablesExist() {
		t.Error("detection created iptables-legacy tables: iptables-nft would warn about them from now on")
	}
	// kube-proxy in nftables mode, with leftover legacy chains of an
	// earlier iptables mode.
	sh(t, flavourLegacy, "-t", "nat", "-N", "KUBE-SERVICES")
	s, _ = newSetup(t, Config{Rules: true, Backend: "auto"})
	if name, why := s.Backend(); name != flavourLegacy {
		t.Errorf("KUBE-* chains in iptables-legacy: %s (%s), want iptables-legacy", name, why)
	}
	sh(t, "nft", "add", "table", "ip", "kube-proxy")
	s, _ = newSetup(t, Config{Rules: true, Backend: "auto"})
	if name, why := s.Backend(); name != BackendNFTables || !strings.Contains(why, "nftables mode") {
		t.Errorf("kube-proxy's nftables table: %s (%s), want nftables", name, why)
	}
}

// TestRecheckLoop runs the periodic re-check: started from the test's
// namespace, its goroutine follows it there (a thread of its own), and
// restores a flushed set-up within the period.
func TestRecheckLoop(t *testing.T) {
	enterNetns(t, "nft")
	const period = 300 * time.Millisecond
	s, reg := newSetup(t, Config{Interface: true, InterfaceName: "lo", Rules: true, Backend: "nftables", Interval: period})
	if err := s.EnsureInterface(); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureRules(); err != nil {
		t.Fatal(err)
	}
	s.Start()
	sh(t, "nft", "flush", "ruleset")
	sh(t, "ip", "addr", "del", "169.254.20.10/32", "dev", "lo")
	flushed := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*period)
	defer cancel()
	for {
		if strings.Contains(sh(t, "nft", "list", "ruleset"), "nodedns") && strings.Contains(sh(t, "ip", "addr", "show", "dev", "lo"), "169.254.20.10") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("not restored within %v", 10*period)
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(flushed)
	t.Logf("restored %v after the flush (period %v)", took, period)
	if took > period+250*time.Millisecond { // the period, and the check's own time
		t.Errorf("restored after %v; want within the period %v", took, period)
	}
	for _, what := range []string{"rules", "address"} {
		if counter(t, reg, "nodedns_setup_restored_total", what) == 0 {
			t.Errorf("nodedns_setup_restored_total{what=%s} = 0", what)
		}
	}
	if err := s.Teardown(); err != nil {
		t.Fatal(err)
	}
}

// TestTwoSetupsShareTheRules: during an upgrade two processes, perhaps
// with different settings, ensure the rules side by side. Each adds only
// what it lacks and leaves the other's alone, so they never take turns
// rewriting the rules.
func TestTwoSetupsShareTheRules(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			enterNetns(t, b.command)
			old, _ := newSetup(t, Config{Rules: true, Backend: b.name,
				Listen: []netip.AddrPort{dnsAddr}, Probes: []netip.AddrPort{probeAddr}})
			next, _ := newSetup(t, Config{Rules: true, Backend: b.name,
				Listen: []netip.AddrPort{dnsAddr}, Probes: []netip.AddrPort{netip.MustParseAddrPort("169.254.20.10:9254")}})
			if err := old.EnsureRules(); err != nil {
				t.Fatal(err)
			}
			if n, err := next.rules.ensure(); err != nil || n != 2 {
				t.Errorf("the second set-up added %d rules (%v), want only its 2 probe rules", n, err)
			}
			for i, s := range []*Setup{old, next, old} {
				if n, err := s.rules.ensure(); err != nil || n != 0 {
					t.Errorf("ensure %d added %d rules (%v), want none", i, n, err)
				}
			}
			out := sh(t, b.list[0], b.list[1:]...)
			for _, c := range []string{"probes to 169.254.20.10:9253", "probes to 169.254.20.10:9254"} {
				if !strings.Contains(out, c) {
					t.Errorf("%q missing:\n%s", c, out)
				}
			}
		})
	}
}

// TestIPv6 sets up an IPv6 listen address: on the interface (no duplicate
// address detection, so it binds at once) and in the rules of each
// backend (ip6tables; the inet table's IPv6 matches).
func TestIPv6(t *testing.T) {
	v6 := netip.MustParseAddrPort("[fd00:10::a]:53")
	for _, b := range []struct{ backend, command, list, want string }{
		{"iptables", "ip6tables", "ip6tables-save", "-A PREROUTING -d fd00:10::a/128 -p udp -m udp --dport 53"},
		{"nftables", "nft", "nft", "ip6 daddr fd00:10::a udp dport 53"},
	} {
		t.Run(b.backend, func(t *testing.T) {
			enterNetns(t, b.command)
			s, _ := newSetup(t, Config{Listen: []netip.AddrPort{v6}, Interface: true, InterfaceName: "nodedns0", Rules: true, Backend: b.backend})
			if err := s.EnsureInterface(); err != nil {
				t.Fatal(err)
			}
			l, err := net.ListenPacket("udp", v6.String())
			if err != nil {
				t.Fatalf("binding %s right after the set-up: %v", v6, err)
			}
			l.Close()
			if err := s.EnsureRules(); err != nil {
				t.Fatal(err)
			}
			args := []string{}
			if b.list == "nft" {
				args = []string{"list", "ruleset"}
			}
			if out := sh(t, b.list, args...); !strings.Contains(out, b.want) {
				t.Errorf("%s has no %q:\n%s", b.list, b.want, out)
			}
			if err := s.Teardown(); err != nil {
				t.Fatal(err)
			}
			if out := sh(t, "ip", "-6", "addr"); strings.Contains(out, "fd00:10::a") {
				t.Errorf("after teardown:\n%s", out)
			}
		})
	}
}

// TestFailOpenRules installs the fail-open rules through each backend,
// IPv4 and IPv6: the NOTRACK of queries depends on the liveness mark, which
// Alive renews and which lapses after LiveFor; the DNAT follows the targets
// SetFallback gives; Teardown leaves nothing behind. What the packets do is
// e2e's TestFailOpen.
func TestFailOpenRules(t *testing.T) {
	v4, v6 := dnsAddr, netip.MustParseAddrPort("[fd00:10::a]:53")
	t4 := []netip.AddrPort{netip.MustParseAddrPort("10.244.2.10:53"), netip.MustParseAddrPort("10.244.3.10:5353")}
	t6 := []netip.AddrPort{netip.MustParseAddrPort("[fd00:244::10]:53")}
	const liveFor = time.Second
	for _, b := range []struct {
		name, backend, command string
		list                   func(t *testing.T) string
		live                   func(t *testing.T) string // what shows the live addresses
	}{
		{"nftables", BackendNFTables, "nft",
			func(t *testing.T) string { return sh(t, "nft", "list", "ruleset") },
			func(t *testing.T) string {
				return sh(t, "nft", "list", "set", "inet", "nodedns", "live4") + sh(t, "nft", "list", "set", "inet", "nodedns", "live6")
			}},
		{"iptables-legacy", flavourLegacy, flavourLegacy,
			func(t *testing.T) string { return sh(t, "iptables-legacy-save") + sh(t, "ip6tables-legacy-save") },
			readRecent},
		{"iptables-nft", flavourNFT, flavourNFT,
			func(t *testing.T) string { return sh(t, "iptables-nft-save") + sh(t, "ip6tables-nft-save") },
			readRecent},
	} {
		t.Run(b.name, func(t *testing.T) {
			enterNetns(t, b.command)
			backend := b.backend
			if backend != BackendNFTables {
				// The flavour is chosen as auto chooses it: by where
				// kube-proxy's chains are.
				sh(t, b.command, "-t", "nat", "-N", "KUBE-SERVICES")
				backend = BackendAuto
			}
			s, reg := newSetup(t, Config{Rules: true, Backend: backend, FailOpen: true, LiveFor: liveFor,
				Listen: []netip.AddrPort{v4, v6}})
			if name, _ := s.Backend(); name != b.backend && !(b.backend == BackendNFTables && name == "nftables") {
				t.Fatalf("backend %s, want %s", name, b.backend)
			}
			if err := s.InPlace(); err == nil {
				t.Error("InPlace is nil before the rules were ever installed")
			}
			if err := s.SetFallback(append(append([]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")}, t4...), t6...)); err != nil {
				t.Fatal(err)
			}
			if err := s.EnsureRules(); err != nil {
				t.Fatal(err)
			}
			if err := s.InPlace(); err != nil {
				t.Errorf("InPlace: %v", err)
			}
			out := b.list(t)
			for _, want := range []string{
				"nodedns: no conntrack for DNS over udp to 169.254.20.10:53 while nodedns serves it",
				"nodedns: no conntrack for DNS over tcp to [fd00:10::a]:53 from the node while nodedns serves it",
				"nodedns: no conntrack for liveness probes over udp to 169.254.20.10:53",
				"nodedns: fail-open of DNS over udp to 169.254.20.10:53 to 2 cluster DNS endpoints",
				"nodedns: fail-open of DNS over tcp to [fd00:10::a]:53 to [fd00:244::10]:53",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("no %q in:\n%s", want, out)
				}
			}
			if strings.Contains(out, "127.0.0.1") {
				t.Errorf("a loopback target was installed:\n%s", out)
			}
			if b.backend == BackendNFTables {
				for _, want := range []string{"ip daddr @live4", "ip6 daddr @live6", "meta mark & 0x00100000 == 0x00100000",
					"dnat ip to numgen random mod 2 map @fallback4", "elements = { 0 : 10.244.2.10 . 53, 1 : 10.244.3.10 . 5353 }",
					"hook prerouting priority dstnat + 10", "hook output priority -90"} {
					if !strings.Contains(out, want) {
						t.Errorf("nft list ruleset has no %q:\n%s", want, out)
					}
				}
			} else {
				for _, want := range []string{"-m recent --rcheck --seconds 1 --name nodedns-live --mask 255.255.255.255 --rdest",
					"-m mark --mark 0x100000/0x100000", "-A PREROUTING -m comment --comment \"nodedns: fail-open to the cluster DNS\" -j NODEDNS-FAILOPEN",
					"-m statistic --mode random --probability 0.50000000000 -m comment",
					"-j DNAT --to-destination 10.244.3.10:5353", "-j DNAT --to-destination [fd00:244::10]:53"} {
					if !strings.Contains(out, want) {
						t.Errorf("%s-save has no %q:\n%s", b.command, want, out)
					}
				}
			}
			if n, err := s.rules.ensure(); n != 0 || err != nil {
				t.Errorf("a second ensure added %d (%v); want nothing", n, err)
			}

			// Live: renewed by Alive, lapsed LiveFor later.
			if got := b.live(t); strings.Contains(got, "169.254.20.10") {
				t.Errorf("live before the first Alive:\n%s", got)
			}
			if err := s.Alive(); err != nil {
				t.Fatal(err)
			}
			if got := b.live(t); !strings.Contains(got, "169.254.20.10") ||
				!strings.Contains(got, "fd00:10::a") && !strings.Contains(got, "fd00:0010:0000:0000:0000:0000:0000:000a") {
				t.Errorf("not live after Alive:\n%s", got)
			}
			if b.backend == BackendNFTables {
				time.Sleep(liveFor + 200*time.Millisecond)
				if got := b.live(t); strings.Contains(got, "169.254.20.10") {
					t.Errorf("still live %v after the last Alive:\n%s", liveFor, got)
				}
			}

			// New targets replace the DNAT at once.
			if err := s.SetFallback(t4[:1]); err != nil {
				t.Fatal(err)
			}
			out = b.list(t)
			if strings.Contains(out, "10.244.3.10") || !strings.Contains(out, "fail-open of DNS over udp to 169.254.20.10:53 to 10.244.2.10:53") {
				t.Errorf("the DNAT did not follow the targets:\n%s", out)
			}
			if strings.Contains(out, "fd00:244::10") {
				t.Errorf("the IPv6 DNAT stayed without an IPv6 target:\n%s", out)
			}
			if n := gauge(t, reg, "nodedns_failopen_targets"); n != 1 {
				t.Errorf("nodedns_failopen_targets = %v, want 1", n)
			}

			if err := s.Teardown(); err != nil {
				t.Fatal(err)
			}
			if out := b.list(t); strings.Contains(out, "nodedns") || strings.Contains(out, "NODEDNS") {
				t.Errorf("after teardown:\n%s", out)
			}
		})
	}
}

// readRecent is the xt_recent list of live addresses, "" when it is gone.
func readRecent(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/thread-self/net/xt_recent/" + recentName)
	if err != nil {
		return ""
	}
	return string(b)
}

// TestNFTablesAcceptsInAnIPTablesNFTFirewall: a node whose firewall is
// made with iptables-nft, INPUT dropping by default and accepting only
// what conntrack knows, drops every untracked DNS packet. The nftables
// backend (an image without an iptables program) puts its ACCEPT rules
// into that firewall's chains, as iptables-nft writes them: iptables-nft
// lists them as its own, a second ensure adds nothing, teardown removes
// them and nothing else.
func TestNFTablesAcceptsInAnIPTablesNFTFirewall(t *testing.T) {
	enterNetns(t, "nft", flavourNFT)
	sh(t, flavourNFT, "-P", "INPUT", "DROP")
	sh(t, flavourNFT, "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
	sh(t, flavourNFT, "-P", "OUTPUT", "DROP")
	sh(t, "ip6tables-nft", "-P", "INPUT", "DROP")
	v6 := netip.MustParseAddrPort("[fd00:10::a]:53")
	s, _ := newSetup(t, Config{Rules: true, Backend: BackendNFTables, Listen: []netip.AddrPort{dnsAddr, v6}})
	if err := s.EnsureRules(); err != nil {
		t.Fatal(err)
	}
	save := func() string { return sh(t, "iptables-nft-save") + sh(t, "ip6tables-nft-save") }
	out := save()
	for _, want := range []string{
		`-A INPUT -d 169.254.20.10/32 -p udp -m udp --dport 53 -m comment --comment "nodedns: accept untracked DNS over udp to 169.254.20.10:53" -j ACCEPT`,
		`-A OUTPUT -s 169.254.20.10/32 -p tcp -m tcp --sport 53 -m comment --comment "nodedns: accept untracked DNS replies over tcp from 169.254.20.10:53" -j ACCEPT`,
		`-A INPUT -d fd00:10::a/128 -p tcp -m tcp --dport 53 -m comment --comment "nodedns: accept untracked DNS over tcp to [fd00:10::a]:53" -j ACCEPT`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("iptables-nft-save lacks\n  %s\nin:\n%s", want, out)
		}
	}
	if strings.Contains(out, "incompatible") {
		t.Errorf("iptables-nft cannot read the table any more:\n%s", out)
	}
	// First in INPUT, before the conntrack accept and the policy.
	var input []string
	for _, l := range strings.Split(sh(t, flavourNFT, "-S", "INPUT"), "\n") {
		if strings.HasPrefix(l, "-A") {
			input = append(input, l)
		}
	}
	if len(input) < 3 || !strings.Contains(input[0], "nodedns") || !strings.Contains(input[len(input)-1], "ESTABLISHED") {
		t.Errorf("INPUT:\n%s", strings.Join(input, "\n"))
	}
	if n, err := s.rules.ensure(); n != 0 || err != nil {
		t.Errorf("a second ensure added %d (%v)", n, err)
	}
	if err := s.Teardown(); err != nil {
		t.Fatal(err)
	}
	if out := save(); strings.Contains(out, "nodedns") || !strings.Contains(out, "ESTABLISHED") {
		t.Errorf("after teardown (the firewall's own rules stay):\n%s", out)
	}
}
