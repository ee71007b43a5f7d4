package nodenet

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Fail-open: a node keeps its DNS when nodedns stops serving, whatever the
// reason (killed, OOM-killed, crashed, hung, not started yet). The kernel
// makes the switch, since the process may be gone:
//
//   - nodedns marks its listen addresses live, with an expiry: an element
//     with a timeout in an nftables set (nftables), an xt_recent entry
//     checked with --seconds (iptables). It renews the mark only after
//     its own probes got answers through the real sockets (Setup.Alive).
//   - The NOTRACK rules for queries to a listen address match only while
//     the address is live. Untracked, a query is delivered to nodedns's
//     socket on the node-local address, as without fail-open.
//   - Once the mark expires, queries are tracked, and so NATed: the
//     fail-open DNAT (a nat chain of nodedns's, after kube-proxy's) sends
//     them to a cluster DNS endpoint (Setup.SetFallback, from the view);
//     for the kube-dns Service address (transparent mode) kube-proxy's own
//     DNAT comes first and sends them to its endpoints. Replies come back
//     through conntrack, their source rewritten to the address asked.
//   - When nodedns answers again, it renews the mark, and new queries are
//     untracked again: the node takes its traffic back.
//
// Two traps: NAT applies once per connection, so the DNAT must name the
// endpoints (a DNAT to the Service address would not be DNATed again by
// kube-proxy); and nodedns's probes of its own sockets must not be sent to
// the cluster DNS while the mark is off, or the cluster DNS would answer
// them and nodedns would never come back: they carry BypassMark, and a
// NOTRACK rule for marked packets delivers them locally whatever the mark.
// nodedns's queries to its upstreams go to other addresses and never meet
// these rules.

// BypassMark is the packet mark (SO_MARK) on nodedns's probes of its own
// listen addresses: they skip conntrack, and so the fail-open DNAT, and
// reach the local sockets even while the addresses are not live.
const BypassMark = 0x00100000

// DefaultLiveFor is how long one Alive keeps the addresses live when
// Config.LiveFor is 0: nodedns renews it several times a second, so the
// node fails open about this long after nodedns stops answering.
const DefaultLiveFor = time.Second

// recentName is the xt_recent list of live addresses (iptables backends).
const recentName = "nodedns-live"

// failOpen is what the fail-open rules need: the listen addresses whose
// queries fall back, and where they fall back to.
type failOpen struct {
	listen  []netip.AddrPort
	liveFor time.Duration
	targets []netip.AddrPort // cluster DNS endpoints; guarded by Setup.mu
	// liveUntil is when the last alive expires, so that a rebuild of the
	// rules keeps the addresses live; zero before the first.
	liveUntil time.Time
}

// ips are the distinct IPs of the listen addresses.
func (fo *failOpen) ips() []netip.Addr {
	var out []netip.Addr
	for _, ap := range fo.listen {
		if a := ap.Addr().Unmap(); !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// dnat is the fail-open DNAT of one listen address and protocol to the
// targets of its family.
type dnat struct {
	proto   string
	to      netip.AddrPort // the listen address
	targets []netip.AddrPort
	comment string
}

// dnats are the DNAT rules for the current targets: one per listen
// address and protocol that has targets of its family. The comment names
// the targets by count and hash, so that a change of targets changes it.
func (fo *failOpen) dnats() []dnat {
	var out []dnat
	seen := map[netip.AddrPort]bool{}
	for _, ap := range fo.listen {
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if seen[ap] {
			continue
		}
		seen[ap] = true
		var ts []netip.AddrPort
		for _, t := range fo.targets {
			if t.Addr().Is4() == ap.Addr().Is4() {
				ts = append(ts, t)
			}
		}
		if len(ts) == 0 {
			continue
		}
		for _, p := range []string{"udp", "tcp"} {
			out = append(out, dnat{proto: p, to: ap, targets: ts,
				comment: fmt.Sprintf("nodedns: fail-open of DNS over %s to %s to %s", p, ap, describeTargets(ts))})
		}
	}
	return out
}

// describeTargets names a set of targets briefly: the only one, or how
// many and a hash of them all.
func describeTargets(ts []netip.AddrPort) string {
	if len(ts) == 1 {
		return ts[0].String()
	}
	h := fnv.New32a()
	for _, t := range ts {
		h.Write([]byte(t.String()))
		h.Write([]byte{0})
	}
	return fmt.Sprintf("%d cluster DNS endpoints (%08x)", len(ts), h.Sum32())
}

// normTargets sorts and deduplicates targets, keeping only usable ones.
func normTargets(in []netip.AddrPort) []netip.AddrPort {
	var out []netip.AddrPort
	for _, t := range in {
		t = netip.AddrPortFrom(t.Addr().Unmap(), t.Port())
		if !t.IsValid() || t.Port() == 0 || t.Addr().IsUnspecified() || t.Addr().IsLoopback() {
			continue
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return slices.Compact(out)
}

// targetsString is targets for logs.
func targetsString(ts []netip.AddrPort) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = t.String()
	}
	return strings.Join(s, ",")
}
