package nodenet

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-iptables/iptables"
)

// lockWait is how long an iptables command waits for the xtables lock
// (kube-proxy holds it during its syncs) before it fails; the next
// re-check tries again.
const lockWait = 5

// iptRules holds the rule set through an iptables command: each rule at
// the top of a built-in chain (NodeLocal DNSCache prepends too, so that
// kube-proxy's and a firewall's jumps come after), found by `-C` (exact
// match, comment included).
//
// With fail-open (failopen.go), a live rule checks the xt_recent list
// nodedns-live (`-m recent --rcheck --rdest --seconds N`, N the liveness
// window rounded up to whole seconds), which alive renews through
// /proc/net/xt_recent; and the chain NODEDNS-FAILOPEN in the nat table,
// jumped to at the end of PREROUTING and OUTPUT (after kube-proxy's
// KUBE-SERVICES, which it prepends), holds the DNAT to the cluster DNS,
// rewritten whole by iptables-restore when the targets change.
type iptRules struct {
	flavour string
	v4, v6  *iptables.IPTables // nil when no rule needs it
	set     []rule
	fo      *failOpen
	// recent is the xt_recent list of live addresses, opened by ensure in
	// the set-up's namespace; nil until then, and after a write failed
	// (the list goes with the last rule using it).
	recent *os.File
}

// failOpenChain is the nat chain of the fail-open DNAT; failOpenJump the
// comment of the jumps to it.
const (
	failOpenChain = "NODEDNS-FAILOPEN"
	failOpenJump  = "nodedns: fail-open to the cluster DNS"
)

func newIPTRules(flavour string, set []rule, fo *failOpen) (*iptRules, error) {
	r := &iptRules{flavour: flavour, set: set, fo: fo}
	if fo != nil {
		for _, a := range fo.ips() {
			r.set = append(r.set, rule{addr: a}) // so that both families get a command
		}
	}
	for _, ru := range r.set {
		var err error
		switch {
		case ru.addr.Is4() && r.v4 == nil:
			r.v4, err = iptables.New(iptables.Path(flavour), iptables.Timeout(lockWait))
		case ru.addr.Is6() && r.v6 == nil:
			r.v6, err = iptables.New(iptables.IPFamily(iptables.ProtocolIPv6),
				iptables.Path("ip6"+flavour[len("ip"):]), iptables.Timeout(lockWait))
		}
		if err != nil {
			return nil, err
		}
	}
	r.set = set
	return r, nil
}

func (r *iptRules) name() string { return r.flavour }
func (r *iptRules) count() int {
	n := len(r.set)
	if r.fo != nil {
		n += len(r.fo.dnats()) + 2*len(r.families())
	}
	return n
}

// families are the IP families of the listen addresses, as the commands.
func (r *iptRules) families() []*iptables.IPTables {
	var out []*iptables.IPTables
	for _, a := range r.fo.ips() {
		if ipt := r.cmd(rule{addr: a}); !slices.Contains(out, ipt) {
			out = append(out, ipt)
		}
	}
	return out
}

func (r *iptRules) cmd(ru rule) *iptables.IPTables {
	if ru.addr.Is6() {
		return r.v6
	}
	return r.v4
}

// spec is the rule as iptables arguments.
func (r *iptRules) spec(ru rule) []string {
	addr, port := "-s", "--sport"
	if ru.dst {
		addr, port = "-d", "--dport"
	}
	out := []string{"-p", ru.proto, addr, ru.addr.String(), "-m", ru.proto, port, strconv.Itoa(int(ru.port))}
	if ru.socket {
		out = append(out, "-m", "socket")
	}
	if ru.live {
		out = append(out, "-m", "recent", "--name", recentName, "--rcheck", "--rdest", "--seconds", strconv.Itoa(r.liveSeconds()))
	}
	if ru.bypass {
		out = append(out, "-m", "mark", "--mark", fmt.Sprintf("0x%x/0x%x", BypassMark, BypassMark))
	}
	return append(out, "-m", "comment", "--comment", ru.comment, "-j", ru.verdict)
}

// liveSeconds is the liveness window in whole seconds, at least one.
func (r *iptRules) liveSeconds() int {
	return max(int((r.fo.liveFor+time.Second-1)/time.Second), 1)
}

// ensure lists each chain once and inserts the rules whose comment it
// lacks: one command per chain instead of one `-C` per rule, which counts
// on a node where kube-proxy has thousands of rules (iptables-nft reads
// the whole ruleset for every command).
func (r *iptRules) ensure() (int, error) {
	type chainKey struct {
		v6           bool
		table, chain string
	}
	listed := map[chainKey][]string{}
	added := 0
	var errs []error
	for _, ru := range r.set {
		ipt := r.cmd(ru)
		k := chainKey{ru.addr.Is6(), ru.table, ru.chain}
		lines, ok := listed[k]
		if !ok {
			var err error
			if lines, err = ipt.List(ru.table, ru.chain); err != nil {
				errs = append(errs, fmt.Errorf("listing %s %s: %w", ru.table, ru.chain, err))
				continue
			}
			listed[k] = lines
		}
		if hasComment(lines, ru.comment) {
			continue
		}
		if err := ipt.Insert(ru.table, ru.chain, 1, r.spec(ru)...); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", ru.table, ru.chain, err))
			continue
		}
		added++
	}
	if r.fo != nil {
		n, err := r.ensureFailOpen()
		added += n
		if err != nil {
			errs = append(errs, err)
		}
		if r.recent == nil && err == nil {
			// In the set-up's namespace, as ensure always is.
			r.recent, err = os.OpenFile("/proc/thread-self/net/xt_recent/"+recentName, os.O_WRONLY, 0)
			if err != nil {
				errs = append(errs, fmt.Errorf("the list of live addresses: %w", err))
			}
		}
	}
	return added, errors.Join(errs...)
}

// ensureFailOpen puts the fail-open DNAT chain and the jumps to it in
// place, per family: the chain is rewritten whole when its rules are not
// the wanted ones, the jumps appended when missing.
func (r *iptRules) ensureFailOpen() (int, error) {
	added := 0
	var errs []error
	for _, ipt := range r.families() {
		v6 := ipt.Proto() == iptables.ProtocolIPv6
		var want []dnat
		for _, d := range r.fo.dnats() {
			if d.to.Addr().Is6() == v6 {
				want = append(want, d)
			}
		}
		have, err := ipt.List("nat", failOpenChain)
		same := err == nil
		for _, d := range want {
			same = same && hasComment(have, d.comment)
		}
		if same && countRules(have) == countDNAT(want) {
			// in place
		} else if err := r.restoreChain(v6, want); err != nil {
			errs = append(errs, err)
			continue
		} else {
			added += countDNAT(want)
		}
		for _, hook := range []string{"PREROUTING", "OUTPUT"} {
			lines, err := ipt.List("nat", hook)
			if err != nil {
				errs = append(errs, fmt.Errorf("listing nat %s: %w", hook, err))
				continue
			}
			if hasComment(lines, failOpenJump) {
				continue
			}
			if err := ipt.Append("nat", hook, "-m", "comment", "--comment", failOpenJump, "-j", failOpenChain); err != nil {
				errs = append(errs, fmt.Errorf("nat %s: %w", hook, err))
				continue
			}
			added++
		}
	}
	return added, errors.Join(errs...)
}

// countRules counts the rules of an `iptables -S CHAIN` listing.
func countRules(lines []string) int {
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "-A ") {
			n++
		}
	}
	return n
}

// countDNAT is the number of rules the DNAT of ds takes: one per target.
func countDNAT(ds []dnat) int {
	n := 0
	for _, d := range ds {
		n += len(d.targets)
	}
	return n
}

// restoreChain writes the fail-open chain of one family in one
// iptables-restore transaction (--noflush: the rest of the table stays;
// the chain, declared, is flushed first). A query picks one target at
// random: of n targets, the first rule takes 1/n, the next 1/(n-1) of what
// is left, and the last all the rest, as kube-proxy spreads a Service.
func (r *iptRules) restoreChain(v6 bool, ds []dnat) error {
	var b strings.Builder
	b.WriteString("*nat\n:" + failOpenChain + " - [0:0]\n")
	for _, d := range ds {
		for i, t := range d.targets {
			fmt.Fprintf(&b, "-A %s -d %s -p %s -m %s --dport %d", failOpenChain, d.to.Addr(), d.proto, d.proto, d.to.Port())
			if left := len(d.targets) - i; left > 1 {
				fmt.Fprintf(&b, " -m statistic --mode random --probability %.10f", 1/float64(left))
			}
			fmt.Fprintf(&b, " -m comment --comment %q -j DNAT --to-destination %s\n", d.comment, t)
		}
	}
	b.WriteString("COMMIT\n")
	cmd := r.flavour + "-restore"
	if v6 {
		cmd = "ip6" + cmd[len("ip"):]
	}
	c := exec.Command(cmd, "-w", strconv.Itoa(lockWait), "--noflush")
	c.Stdin = strings.NewReader(b.String())
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", cmd, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// alive renews the listen addresses in the xt_recent list: each write of
// "+ADDR" sets the address's last-seen time to now. The window is the
// rules' --seconds, not d.
func (r *iptRules) alive(time.Duration) error {
	if r.fo == nil {
		return nil
	}
	if r.recent == nil {
		return errors.New("the list of live addresses is not in place")
	}
	for _, a := range r.fo.ips() {
		// One address per write, each from offset 0: the kernel takes
		// nothing written past it.
		_, err := r.recent.Seek(0, io.SeekStart)
		if err == nil {
			_, err = r.recent.WriteString("+" + a.String() + "\n")
		}
		if err != nil {
			_ = r.recent.Close()
			r.recent = nil
			return fmt.Errorf("renewing %s in /proc/net/xt_recent/%s: %w", a, recentName, err)
		}
	}
	return nil
}

func (r *iptRules) setTargets(ts []netip.AddrPort) {
	if r.fo != nil {
		r.fo.targets = ts
	}
}

// hasComment reports whether one of the `iptables -S` lines carries the
// comment: each rule's comment is unique (it names the protocol, the
// direction and the address).
func hasComment(lines []string, comment string) bool {
	quoted := `--comment "` + comment + `"`
	for _, l := range lines {
		if strings.Contains(l, quoted) {
			return true
		}
	}
	return false
}

// remove deletes every copy of each rule (a copy left by an older process
// too), and the fail-open chain with the jumps to it.
func (r *iptRules) remove() error {
	var errs []error
	if r.recent != nil {
		_ = r.recent.Close()
		r.recent = nil
	}
	if r.fo != nil {
		for _, ipt := range r.families() {
			for _, hook := range []string{"PREROUTING", "OUTPUT"} {
				for range 10 {
					jump := []string{"-m", "comment", "--comment", failOpenJump, "-j", failOpenChain}
					ok, err := ipt.Exists("nat", hook, jump...)
					if err == nil && ok {
						err = ipt.Delete("nat", hook, jump...)
					}
					if err != nil {
						if !isNoChain(err) {
							errs = append(errs, fmt.Errorf("nat %s: %w", hook, err))
						}
						break
					}
					if !ok {
						break
					}
				}
			}
			if ok, err := ipt.ChainExists("nat", failOpenChain); err == nil && ok {
				if err := ipt.ClearAndDeleteChain("nat", failOpenChain); err != nil {
					errs = append(errs, fmt.Errorf("nat %s: %w", failOpenChain, err))
				}
			}
		}
	}
	for _, ru := range r.set {
		ipt := r.cmd(ru)
		for range 10 {
			ok, err := ipt.Exists(ru.table, ru.chain, r.spec(ru)...)
			if err == nil && ok {
				err = ipt.Delete(ru.table, ru.chain, r.spec(ru)...)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s %s: %w", ru.table, ru.chain, err))
			}
			if err != nil || !ok {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// isNoChain reports whether an iptables error says a chain or table is
// missing: nothing to remove.
func isNoChain(err error) bool {
	var e *iptables.Error
	return errors.As(err, &e) && e.IsNotExist()
}
