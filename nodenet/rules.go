package nodenet

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netns"
)

// rule is one rule, whatever the backend: in table (raw or filter) and
// chain, packets of proto to (dst) or from (!dst) addr:port get verdict.
type rule struct {
	table, chain string // "raw" PREROUTING or OUTPUT; "filter" INPUT or OUTPUT
	proto        string // "udp" or "tcp"
	dst          bool   // match the destination (else the source)
	addr         netip.Addr
	port         uint16
	verdict      string // "NOTRACK" or "ACCEPT"
	// live makes the rule match only while addr is live (fail-open: see
	// failopen.go), and socket only while a socket is bound to the
	// destination (PREROUTING only); bypass only packets with BypassMark,
	// nodedns's own probes of its sockets.
	live, socket, bypass bool
	comment              string // says why, on the node (iptables -S, nft list ruleset)
}

// ruleSet is what NodeLocal DNSCache's node-cache installs, for each DNS
// address and both protocols:
//
//   - raw PREROUTING, to the address: NOTRACK. Queries from pods skip
//     conntrack: no entry per UDP query to fill the table, no race between
//     a pod's A and AAAA queries on one socket (the 5 s timeouts of
//     kubernetes#56903), and no DNAT in transparent mode.
//   - raw OUTPUT, from the address: NOTRACK, for the replies; and to the
//     address: NOTRACK, for queries from the node itself (hostNetwork pods).
//   - filter INPUT, to the address, and filter OUTPUT, from it: ACCEPT.
//     Untracked packets match no "ESTABLISHED,RELATED" accept rule, so a
//     node firewall would otherwise drop them.
//
// And, for the probe addresses on the same IPs, raw OUTPUT NOTRACK for TCP
// to and from them: kubelet's probes come from the node.
//
// With failOpen, the NOTRACK rules for queries (to the address) match only
// while the address is live, and in PREROUTING only while a socket is
// bound to it (so a killed nodedns fails open at once); one more raw
// OUTPUT rule lets nodedns's own probes (marked with BypassMark) through
// whatever the liveness: see failopen.go. The replies' rules need no
// condition: only nodedns sends from the address.
func ruleSet(listen, probes []netip.AddrPort, failOpen bool) []rule {
	var out []rule
	seen := map[rule]bool{}
	add := func(r rule) {
		k := r
		k.comment = ""
		if !seen[k] {
			seen[k] = true
			out = append(out, r)
		}
	}
	ips := map[netip.Addr]bool{}
	for _, ap := range listen {
		a, port := ap.Addr().Unmap(), ap.Port()
		ips[a] = true
		to := netip.AddrPortFrom(a, port).String()
		live, when := failOpen, ""
		if failOpen {
			when = " while nodedns serves it"
		}
		for _, p := range []string{"udp", "tcp"} {
			if failOpen {
				add(rule{table: "raw", chain: "OUTPUT", proto: p, dst: true, addr: a, port: port, verdict: "NOTRACK", bypass: true,
					comment: "nodedns: no conntrack for liveness probes over " + p + " to " + to})
			}
			add(rule{table: "raw", chain: "PREROUTING", proto: p, dst: true, addr: a, port: port, verdict: "NOTRACK", live: live, socket: live,
				comment: "nodedns: no conntrack for DNS over " + p + " to " + to + when})
			add(rule{table: "raw", chain: "OUTPUT", proto: p, addr: a, port: port, verdict: "NOTRACK",
				comment: "nodedns: no conntrack for DNS replies over " + p + " from " + to})
			add(rule{table: "raw", chain: "OUTPUT", proto: p, dst: true, addr: a, port: port, verdict: "NOTRACK", live: live,
				comment: "nodedns: no conntrack for DNS over " + p + " to " + to + " from the node" + when})
			add(rule{table: "filter", chain: "INPUT", proto: p, dst: true, addr: a, port: port, verdict: "ACCEPT",
				comment: "nodedns: accept untracked DNS over " + p + " to " + to})
			add(rule{table: "filter", chain: "OUTPUT", proto: p, addr: a, port: port, verdict: "ACCEPT",
				comment: "nodedns: accept untracked DNS replies over " + p + " from " + to})
		}
	}
	for _, ap := range probes {
		a, port := ap.Addr().Unmap(), ap.Port()
		if !ips[a] {
			continue
		}
		to := netip.AddrPortFrom(a, port).String()
		add(rule{table: "raw", chain: "OUTPUT", proto: "tcp", dst: true, addr: a, port: port, verdict: "NOTRACK",
			comment: "nodedns: no conntrack for probes to " + to})
		add(rule{table: "raw", chain: "OUTPUT", proto: "tcp", addr: a, port: port, verdict: "NOTRACK",
			comment: "nodedns: no conntrack for probe replies from " + to})
	}
	return out
}

// rules is a backend's hold on the rule set.
type rules interface {
	// name is the backend: "iptables-legacy", "iptables-nft", "iptables"
	// (whichever the iptables command is), "nftables".
	name() string
	// ensure adds the rules that are missing and says how many it added;
	// a second ensure adds nothing.
	ensure() (added int, err error)
	// remove deletes every rule ensure adds, and nothing else.
	remove() error
	// count is the number of rules installed when all are in place.
	count() int
	// alive marks the listen addresses live for d (fail-open only): the
	// rules with live set match until then.
	alive(d time.Duration) error
	// setTargets gives the fail-open DNAT its targets; the next ensure
	// puts them in place.
	setTargets(targets []netip.AddrPort)
}

// newRules chooses the backend (Detect for BackendAuto) and prepares it;
// it changes nothing on the node. The reason says why that backend.
func newRules(backend string, set []rule, fo *failOpen, ns netns.NsHandle) (rules, string, error) {
	sig := gather(ns)
	flavour, reason, err := choose(backend, sig)
	if err != nil {
		return nil, "", fmt.Errorf("node networking: rules backend %s: %w", backend, err)
	}
	if flavour == BackendNFTables {
		r, err := newNFTRules(set, fo, ns)
		return r, reason, err
	}
	r, err := newIPTRules(flavour, set, fo)
	return r, reason, err
}
