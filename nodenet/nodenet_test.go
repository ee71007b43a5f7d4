package nodenet

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestChoose(t *testing.T) {
	all := map[string]bool{flavourDefault: true, flavourLegacy: true, flavourNFT: true}
	tests := []struct {
		name, backend string
		s             signals
		want          string
		reason        string // a part of the reason
	}{
		{"kube-proxy in nftables mode", "auto", signals{nft: true, kubeProxyNFT: true, legacyKube: 3, commands: all}, "nftables", "nftables mode"},
		{"kube-proxy through iptables-legacy", "auto", signals{nft: true, legacyKube: 40, nftKube: 2, commands: all}, "iptables-legacy", "iptables-legacy (40"},
		{"kube-proxy through iptables-nft", "auto", signals{nft: true, legacyKube: 2, nftKube: 40, commands: all}, "iptables-nft", "iptables-nft (40"},
		{"legacy chains but no legacy command", "auto", signals{nft: true, legacyKube: 40, commands: map[string]bool{flavourDefault: true}}, "iptables", "node's iptables command"},
		{"kube-proxy's chains, no iptables command", "auto", signals{nft: true, nftKube: 40, commands: map[string]bool{}}, "nftables", "no iptables command"},
		{"no kube-proxy: native nftables", "auto", signals{nft: true, commands: all}, "nftables", "no kube-proxy rules"},
		{"no kube-proxy, no nf_tables", "auto", signals{commands: all}, "iptables", "no nf_tables"},
		{"forced iptables, nothing tells", "iptables", signals{nft: true, kubeProxyNFT: true, commands: all}, "iptables", "configuration"},
		{"forced iptables, legacy chains", "iptables", signals{nft: true, legacyKube: 5, commands: all}, "iptables-legacy", "configuration"},
		{"forced iptables, only iptables-nft", "iptables", signals{commands: map[string]bool{flavourNFT: true}}, "iptables-nft", "only"},
		{"forced nftables", "nftables", signals{nft: true, legacyKube: 40, commands: all}, "nftables", "configuration"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, reason, err := choose(tc.backend, tc.s)
			if err != nil || got != tc.want || !strings.Contains(reason, tc.reason) {
				t.Errorf("choose = %q, %q, %v; want %q, a reason with %q", got, reason, err, tc.want, tc.reason)
			}
		})
	}
	for _, tc := range []struct {
		name, backend string
		s             signals
	}{
		{"nothing at all", "auto", signals{commands: map[string]bool{}}},
		{"forced nftables without nf_tables", "nftables", signals{commands: map[string]bool{}}},
		{"forced iptables without a command", "iptables", signals{nft: true, commands: map[string]bool{}}},
		{"unknown backend", "ipchains", signals{nft: true, commands: all}},
	} {
		if got, _, err := choose(tc.backend, tc.s); err == nil {
			t.Errorf("%s: chose %q, want an error", tc.name, got)
		}
	}
}

func TestRuleSet(t *testing.T) {
	dns := netip.MustParseAddrPort("169.254.20.10:53")
	svc := netip.MustParseAddrPort("10.96.0.10:53")
	set := ruleSet([]netip.AddrPort{dns, svc, dns},
		[]netip.AddrPort{netip.MustParseAddrPort("169.254.20.10:9253"), netip.MustParseAddrPort("127.0.0.1:9254")}, false)
	// Per address and protocol: PREROUTING, OUTPUT from, OUTPUT to,
	// INPUT, OUTPUT accept. The probe port: OUTPUT to and from, TCP.
	if want := 2*2*5 + 2; len(set) != want {
		t.Fatalf("%d rules, want %d (a repeated address adds nothing; a probe on another IP is ignored)", len(set), want)
	}
	comments := map[string]bool{}
	for _, r := range set {
		key := r.table + " " + r.chain + " " + r.comment
		if comments[key] {
			t.Errorf("comment %q twice in %s %s: the comment identifies a rule", r.comment, r.table, r.chain)
		}
		comments[key] = true
		if r.verdict == "ACCEPT" && r.table != "filter" || r.verdict == "NOTRACK" && r.table != "raw" {
			t.Errorf("%+v: NOTRACK belongs in raw, ACCEPT in filter", r)
		}
	}
}

func TestNewRefusesWhatCannotBeSetUp(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"wildcard", Config{Listen: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:53")}, Interface: true, InterfaceName: "nodedns0"}, "wildcard"},
		{"long name", Config{Listen: []netip.AddrPort{netip.MustParseAddrPort("169.254.20.10:53")}, Interface: true, InterfaceName: "a-very-long-link-name"}, "link name"},
		{"bad backend", Config{Listen: []netip.AddrPort{netip.MustParseAddrPort("169.254.20.10:53")}, Rules: true, Backend: "ipchains"}, "ipchains"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one naming %q", tc.name, err, tc.want)
		}
	}
}

// counter reads one labelled counter of reg's.
func counter(t *testing.T, reg *prometheus.Registry, name, what string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == what {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// gauge reads one unlabelled gauge of reg's.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

func TestRuleSetFailOpen(t *testing.T) {
	dns := netip.MustParseAddrPort("169.254.20.10:53")
	set := ruleSet([]netip.AddrPort{dns}, nil, true)
	// Per protocol: the bypass rule, PREROUTING and OUTPUT to (live),
	// OUTPUT from, INPUT and OUTPUT accept.
	if want := 2 * 6; len(set) != want {
		t.Fatalf("%d rules, want %d", len(set), want)
	}
	var live, bypass int
	for _, r := range set {
		switch {
		case r.live:
			live++
			if !r.dst || r.verdict != "NOTRACK" {
				t.Errorf("%+v: only NOTRACK of queries (to the address) waits for liveness", r)
			}
		case r.bypass:
			bypass++
			if r.chain != "OUTPUT" || !r.dst {
				t.Errorf("%+v: the bypass is for nodedns's own probes, sent from the node", r)
			}
		}
	}
	if live != 4 || bypass != 2 {
		t.Errorf("%d live and %d bypass rules, want 4 and 2", live, bypass)
	}
}

func TestFailOpenDNAT(t *testing.T) {
	fo := &failOpen{listen: []netip.AddrPort{
		netip.MustParseAddrPort("169.254.20.10:53"), netip.MustParseAddrPort("[fd00::10]:53"),
		netip.MustParseAddrPort("169.254.20.10:53")}}
	if d := fo.dnats(); len(d) != 0 {
		t.Errorf("no targets: %d DNAT rules, want none", len(d))
	}
	fo.targets = normTargets([]netip.AddrPort{
		netip.MustParseAddrPort("10.244.2.10:53"), netip.MustParseAddrPort("127.0.0.1:1053"),
		netip.MustParseAddrPort("10.244.1.5:53"), netip.MustParseAddrPort("10.244.2.10:53"),
		netip.MustParseAddrPort("[::ffff:10.244.3.3]:53")})
	if want := "10.244.1.5:53,10.244.2.10:53,10.244.3.3:53"; targetsString(fo.targets) != want {
		t.Fatalf("targets %s, want %s (sorted, unmapped, no loopback, no repeats)", targetsString(fo.targets), want)
	}
	d := fo.dnats()
	if len(d) != 2 {
		t.Fatalf("%d DNAT rules, want 2 (UDP and TCP to the IPv4 address; no IPv6 target)", len(d))
	}
	c := d[0].comment
	fo.targets = fo.targets[:2]
	if fo.dnats()[0].comment == c {
		t.Errorf("the comment %q does not change with the targets: a re-check would not see the change", c)
	}
	fo.targets = fo.targets[:1]
	if got := fo.dnats()[0].comment; !strings.Contains(got, "10.244.1.5:53") {
		t.Errorf("one target is named: %q", got)
	}
}
