package nodenet

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

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
type iptRules struct {
	flavour string
	v4, v6  *iptables.IPTables // nil when no rule needs it
	set     []rule
}

func newIPTRules(flavour string, set []rule) (*iptRules, error) {
	r := &iptRules{flavour: flavour, set: set}
	for _, ru := range set {
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
	return r, nil
}

func (r *iptRules) name() string { return r.flavour }
func (r *iptRules) count() int   { return len(r.set) }

func (r *iptRules) cmd(ru rule) *iptables.IPTables {
	if ru.addr.Is6() {
		return r.v6
	}
	return r.v4
}

// spec is the rule as iptables arguments.
func spec(ru rule) []string {
	addr, port := "-s", "--sport"
	if ru.dst {
		addr, port = "-d", "--dport"
	}
	return []string{"-p", ru.proto, addr, ru.addr.String(), "-m", ru.proto, port, strconv.Itoa(int(ru.port)),
		"-m", "comment", "--comment", ru.comment, "-j", ru.verdict}
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
		if err := ipt.Insert(ru.table, ru.chain, 1, spec(ru)...); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", ru.table, ru.chain, err))
			continue
		}
		added++
	}
	return added, errors.Join(errs...)
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
// too).
func (r *iptRules) remove() error {
	var errs []error
	for _, ru := range r.set {
		ipt := r.cmd(ru)
		for range 10 {
			ok, err := ipt.Exists(ru.table, ru.chain, spec(ru)...)
			if err == nil && ok {
				err = ipt.Delete(ru.table, ru.chain, spec(ru)...)
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
