package nodenet

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nftTableName is the table nodedns owns, in the inet family (IPv4 and
// IPv6 in one). Owning a whole table is how nftables is meant to be
// shared (kube-proxy does the same with its kube-proxy table): nodedns
// never touches another table, and rebuilding its own is atomic.
const nftTableName = "nodedns"

// nftRules holds the rule set in the table inet nodedns: base chains
// prerouting and output at the raw priority (-300, before conntrack at
// -200) with the NOTRACK rules.
//
// The filter ACCEPT rules of the set are not installed here: in nftables
// an accept ends the packet's walk through one base chain only, and every
// other base chain on the hook (the node firewall's, in its own table)
// still sees it and may drop it; only a rule inside that firewall's chain
// could let it through, and nodedns does not edit others' tables.
// kube-proxy's nftables mode drops nothing that is untracked.
type nftRules struct {
	ns    netns.NsHandle
	set   []rule // the NOTRACK rules only
	table *nftables.Table
}

// nftChains are the base chains, by the iptables chain name the rule set
// uses.
var nftChains = map[string]*nftables.Chain{
	"PREROUTING": {Name: "prerouting", Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw},
	"OUTPUT":     {Name: "output", Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRaw},
}

func newNFTRules(set []rule, ns netns.NsHandle) (*nftRules, error) {
	r := &nftRules{ns: ns, table: &nftables.Table{Name: nftTableName, Family: nftables.TableFamilyINet}}
	for _, ru := range set {
		if ru.table == "raw" {
			r.set = append(r.set, ru)
		}
	}
	return r, nil
}

func (r *nftRules) name() string { return BackendNFTables }
func (r *nftRules) count() int   { return len(r.set) }

func (r *nftRules) conn() (*nftables.Conn, error) {
	return nftConn(r.ns)
}

// inspect reads the table: whether it and its base chains are there as
// they should be (ok), and which of the set's rules each chain has, by
// comment. Rules it does not know (another nodedns's with other addresses,
// an operator's) are left alone.
func (r *nftRules) inspect(c *nftables.Conn) (ok bool, present map[string]bool, err error) {
	present = map[string]bool{} // chain name + " " + comment
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, nil, fmt.Errorf("listing tables: %w", err)
	}
	found := false
	for _, t := range tables {
		found = found || t.Name == nftTableName
	}
	if !found {
		return false, present, nil
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, nil, fmt.Errorf("listing chains: %w", err)
	}
	have := map[string]*nftables.Chain{}
	for _, ch := range chains {
		if ch.Table.Name == nftTableName {
			have[ch.Name] = ch
		}
	}
	ok = true
	for _, spec := range nftChains {
		ch := have[spec.Name]
		if ch == nil {
			ok = false
			continue
		}
		if ch.Hooknum == nil || *ch.Hooknum != *spec.Hooknum || ch.Priority == nil || *ch.Priority != *spec.Priority || ch.Type != spec.Type {
			ok = false // not ours as it should be: rebuilt whole
			continue
		}
		rules, err := c.GetRules(r.table, ch)
		if err != nil {
			return false, nil, fmt.Errorf("listing chain %s: %w", ch.Name, err)
		}
		for _, ru := range rules {
			if comment, found := userdata.GetString(ru.UserData, userdata.TypeComment); found {
				present[ch.Name+" "+comment] = true
			}
		}
	}
	return ok, present, nil
}

// ensure adds the missing rules to the chains in one transaction. When
// the table or a chain is missing or altered, it rebuilds the table
// instead, also in one transaction: the kernel swaps the old table for the
// new one atomically, so a packet sees one or the other, never half.
func (r *nftRules) ensure() (int, error) {
	c, err := r.conn()
	if err != nil {
		return 0, err
	}
	ok, present, err := r.inspect(c)
	if err != nil {
		return 0, err
	}
	var missing []rule
	for _, ru := range r.set {
		if !present[nftChains[ru.chain].Name+" "+ru.comment] {
			missing = append(missing, ru)
		}
	}
	if ok && len(missing) == 0 {
		return 0, nil
	}
	chains := map[string]*nftables.Chain{}
	add := r.set
	if ok {
		for ipt, spec := range nftChains {
			chains[ipt] = &nftables.Chain{Name: spec.Name, Table: r.table}
		}
		add = missing
	} else {
		c.AddTable(r.table) // so that the delete below finds a table
		c.DelTable(r.table)
		c.AddTable(r.table)
		for ipt, spec := range nftChains {
			ch := *spec
			ch.Table = r.table
			chains[ipt] = c.AddChain(&ch)
		}
	}
	for _, ru := range add {
		c.AddRule(&nftables.Rule{
			Table:    r.table,
			Chain:    chains[ru.chain],
			Exprs:    nftExprs(ru),
			UserData: userdata.AppendString(nil, userdata.TypeComment, ru.comment),
		})
	}
	if err := c.Flush(); err != nil {
		return 0, fmt.Errorf("writing table inet %s: %w", nftTableName, err)
	}
	return len(missing), nil
}

// nftExprs is the rule as nftables expressions, what `nft` would make of
// `ip daddr 169.254.20.10 udp dport 53 counter notrack`.
func nftExprs(ru rule) []expr.Any {
	nfproto, addrOff := byte(unix.NFPROTO_IPV4), uint32(12) // IPv4 source at 12, destination at 16
	if ru.addr.Is6() {
		nfproto, addrOff = unix.NFPROTO_IPV6, 8 // IPv6 source at 8, destination at 24
	}
	addrLen := uint32(ru.addr.BitLen() / 8)
	if ru.dst {
		addrOff += addrLen
	}
	portOff := uint32(0) // source port
	if ru.dst {
		portOff = 2
	}
	l4 := byte(unix.IPPROTO_UDP)
	if ru.proto == "tcp" {
		l4 = unix.IPPROTO_TCP
	}
	out := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: addrOff, Len: addrLen},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ru.addr.AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{l4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: portOff, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(ru.port)},
		&expr.Counter{},
	}
	if ru.verdict == "NOTRACK" {
		out = append(out, &expr.Notrack{})
	}
	return out
}

// remove deletes the table, if it is there.
func (r *nftRules) remove() error {
	c, err := r.conn()
	if err != nil {
		return err
	}
	c.AddTable(r.table)
	c.DelTable(r.table)
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("deleting table inet %s: %w", nftTableName, err)
	}
	return nil
}
