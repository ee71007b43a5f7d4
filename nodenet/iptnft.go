package nodenet

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// A firewall made with iptables-nft (a distribution's, or kube-proxy's
// KUBE-FIREWALL) lives in the nf_tables tables "ip filter" and "ip6
// filter". An accept in nodedns's own table would let nothing through it
// (see nftRules), so the nftables backend puts the ACCEPT rules for the
// untracked DNS packets there, at the top of INPUT and OUTPUT, written
// exactly as iptables-nft writes them: iptables-nft lists them as its own
// (`iptables-save` shows `-A INPUT -d ... -j ACCEPT`), and kube-proxy's
// iptables-restore keeps working. This is how an image without an iptables
// program still installs every rule on an iptables-mode node. Where those
// chains do not exist, nothing there drops, and nothing is added.

// iptNFTTables are iptables-nft's filter tables, by family.
var iptNFTTables = []*nftables.Table{
	{Name: "filter", Family: nftables.TableFamilyIPv4},
	{Name: "filter", Family: nftables.TableFamilyIPv6},
}

// accepts are the filter ACCEPT rules of the set, for iptables-nft's tables.
type accepts struct {
	set []rule
}

// chainsOf returns iptables-nft's INPUT and OUTPUT chains of table t that
// exist, by name.
func chainsOf(c *nftables.Conn, t *nftables.Table) (map[string]*nftables.Chain, error) {
	chains, err := c.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return nil, fmt.Errorf("listing chains: %w", err)
	}
	out := map[string]*nftables.Chain{}
	for _, ch := range chains {
		if ch.Table.Name == t.Name && (ch.Name == "INPUT" || ch.Name == "OUTPUT") {
			out[ch.Name] = ch
		}
	}
	return out, nil
}

// commentOf is the iptables comment (`-m comment`) of an iptables-nft rule.
func commentOf(r *nftables.Rule) (string, bool) {
	for _, e := range r.Exprs {
		if m, ok := e.(*expr.Match); ok && m.Name == "comment" {
			if c, ok := m.Info.(*xt.Comment); ok {
				return string(*c), true
			}
		}
	}
	return "", false
}

// ensure inserts the ACCEPT rules missing from iptables-nft's INPUT and
// OUTPUT chains, in one transaction with the caller's other changes
// (c.Flush is the caller's), and says how many it inserted.
func (a *accepts) ensure(c *nftables.Conn) (int, error) {
	added := 0
	for _, t := range iptNFTTables {
		chains, err := chainsOf(c, t)
		if err != nil {
			return 0, err
		}
		present := map[string]bool{}
		for name, ch := range chains {
			rules, err := c.GetRules(t, ch)
			if err != nil {
				return 0, fmt.Errorf("listing %s %s: %w", t.Name, name, err)
			}
			for _, r := range rules {
				if comment, ok := commentOf(r); ok {
					present[name+" "+comment] = true
				}
			}
		}
		for _, ru := range a.set {
			ch := chains[ru.chain]
			if ch == nil || ru.addr.Is4() != (t.Family == nftables.TableFamilyIPv4) || present[ru.chain+" "+ru.comment] {
				continue
			}
			comment := xt.Comment(ru.comment)
			c.InsertRule(&nftables.Rule{Table: t, Chain: ch, Exprs: iptNFTExprs(ru, &comment)})
			added++
		}
	}
	return added, nil
}

// remove deletes the ACCEPT rules ensure inserts (by their comments).
func (a *accepts) remove(c *nftables.Conn) error {
	ours := map[string]bool{}
	for _, ru := range a.set {
		ours[ru.comment] = true
	}
	for _, t := range iptNFTTables {
		chains, err := chainsOf(c, t)
		if err != nil {
			return err
		}
		for _, ch := range chains {
			rules, err := c.GetRules(t, ch)
			if err != nil {
				return err
			}
			for _, r := range rules {
				if comment, ok := commentOf(r); ok && ours[comment] {
					if err := c.DelRule(r); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// iptNFTExprs is an ACCEPT rule as iptables-nft 1.8 writes `-d ADDR -p
// udp -m udp --dport PORT -m comment --comment C -j ACCEPT` (or -s and
// --sport): the protocol first, then the address and the port, natively;
// the comment as the xt comment match.
func iptNFTExprs(ru rule, comment *xt.Comment) []expr.Any {
	l4 := byte(unix.IPPROTO_UDP)
	if ru.proto == "tcp" {
		l4 = unix.IPPROTO_TCP
	}
	portOff := uint32(0)
	if ru.dst {
		portOff = 2
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{l4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: addrOffset(ru.addr, ru.dst), Len: uint32(ru.addr.BitLen() / 8)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ru.addr.AsSlice()},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: portOff, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(ru.port)},
		&expr.Match{Name: "comment", Rev: 0, Info: comment},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
}

// acceptsOf picks the filter ACCEPT rules of a set.
func acceptsOf(set []rule) *accepts {
	a := &accepts{}
	for _, ru := range set {
		if ru.table == "filter" && ru.verdict == "ACCEPT" {
			a.set = append(a.set, ru)
		}
	}
	return a
}
