package nodenet

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

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
// The filter ACCEPT rules of the set are not installed in this table: in
// nftables an accept ends the packet's walk through one base chain only,
// and every other base chain on the hook (the node firewall's, in its own
// table) still sees it and may drop it; only a rule inside that
// firewall's chain lets it through. For a firewall made with iptables-nft
// they go into its chains, as iptables-nft writes them (iptnft.go); a
// firewall written in nftables itself must allow the addresses. kube-proxy's
// nftables mode drops nothing that is untracked.
//
// With fail-open (failopen.go), the table also holds the sets live4 and
// live6 of live listen addresses, each element with a timeout, and nat
// chains failopen_prerouting and failopen_output at priority dstnat+10,
// after kube-proxy's (dstnat), with the DNAT to the cluster DNS.
type nftRules struct {
	ns    netns.NsHandle
	set   []rule // the NOTRACK rules only
	acc   *accepts
	fo    *failOpen
	table *nftables.Table
}

// nftChains are the base chains, by the iptables chain name the rule set
// uses; the nat chains of fail-open by their own names.
var nftChains = map[string]*nftables.Chain{
	"PREROUTING": {Name: "prerouting", Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw},
	"OUTPUT":     {Name: "output", Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRaw},
}

var nftFailOpenChains = map[string]*nftables.Chain{
	"failopen_prerouting": {Name: "failopen_prerouting", Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-90)},
	"failopen_output":     {Name: "failopen_output", Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRef(-90)},
}

// The sets of live listen addresses, and the maps of fail-open targets by
// their index (a random number modulo their count picks one).
const (
	nftLive4     = "live4"
	nftLive6     = "live6"
	nftFallback4 = "fallback4"
	nftFallback6 = "fallback6"
)

func newNFTRules(set []rule, fo *failOpen, ns netns.NsHandle) (*nftRules, error) {
	r := &nftRules{ns: ns, fo: fo, acc: acceptsOf(set), table: &nftables.Table{Name: nftTableName, Family: nftables.TableFamilyINet}}
	for _, ru := range set {
		if ru.table == "raw" {
			r.set = append(r.set, ru)
		}
	}
	return r, nil
}

// chains are the base chains the table must have.
func (r *nftRules) chains() map[string]*nftables.Chain {
	if r.fo == nil {
		return nftChains
	}
	all := maps.Clone(nftChains)
	maps.Copy(all, nftFailOpenChains)
	return all
}

// liveSets are the sets of live addresses (none without fail-open).
func (r *nftRules) liveSets() []*nftables.Set {
	if r.fo == nil {
		return nil
	}
	return []*nftables.Set{
		{Table: r.table, Name: nftLive4, KeyType: nftables.TypeIPAddr, HasTimeout: true},
		{Table: r.table, Name: nftLive6, KeyType: nftables.TypeIP6Addr, HasTimeout: true},
	}
}

// fallbackMaps are the maps of fail-open targets, IPv4 and IPv6: from an
// index (host byte order, as numgen writes it) to address . port.
func (r *nftRules) fallbackMaps() []*nftables.Set {
	if r.fo == nil {
		return nil
	}
	out := make([]*nftables.Set, 0, 2)
	for _, m := range []struct {
		name string
		addr nftables.SetDatatype
	}{{nftFallback4, nftables.TypeIPAddr}, {nftFallback6, nftables.TypeIP6Addr}} {
		data, err := nftables.ConcatSetType(m.addr, nftables.TypeInetService)
		if err != nil {
			panic(err) // two known types
		}
		out = append(out, &nftables.Set{Table: r.table, Name: m.name, IsMap: true,
			KeyType: nftables.TypeInteger, KeyByteOrder: binaryutil.NativeEndian, DataType: data})
	}
	return out
}

// fallbackElements are the targets of one family as map elements.
func (r *nftRules) fallbackElements(v4 bool) []nftables.SetElement {
	var out []nftables.SetElement
	for _, t := range r.fo.targets {
		if t.Addr().Is4() != v4 {
			continue
		}
		// The port is padded to a register's 4 bytes, as in every
		// concatenation.
		val := append(t.Addr().AsSlice(), byte(t.Port()>>8), byte(t.Port()), 0, 0)
		out = append(out, nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(len(out))), Val: val})
	}
	return out
}

func (r *nftRules) name() string { return BackendNFTables }
func (r *nftRules) count() int   { return len(r.set) + len(r.wantedDNAT()) }

func (r *nftRules) conn() (*nftables.Conn, error) {
	return nftConn(r.ns)
}

// wantedDNAT are the fail-open DNAT rules, by chain and comment.
func (r *nftRules) wantedDNAT() map[string]dnat {
	out := map[string]dnat{}
	if r.fo == nil {
		return out
	}
	for _, d := range r.fo.dnats() {
		for name := range nftFailOpenChains {
			out[name+" "+d.comment] = d
		}
	}
	return out
}

// inspect reads the table: whether it, its base chains and its sets are
// there as they should be (ok), and which rules each chain has, by
// comment. Rules it does not know (another nodedns's with other
// addresses, an operator's) are left alone.
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
	for _, spec := range r.chains() {
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
	if sets := append(r.liveSets(), r.fallbackMaps()...); len(sets) > 0 {
		got, err := c.GetSets(r.table)
		if err != nil {
			return false, nil, fmt.Errorf("listing sets: %w", err)
		}
		for _, want := range sets {
			i := slices.IndexFunc(got, func(s *nftables.Set) bool { return s.Name == want.Name })
			if i < 0 || got[i].HasTimeout != want.HasTimeout || got[i].IsMap != want.IsMap || got[i].KeyType.Name != want.KeyType.Name {
				ok = false
			}
		}
	}
	return ok, present, nil
}

// ensure adds the missing rules to the chains in one transaction, and
// replaces the fail-open DNAT when its targets changed. When the table, a
// chain or a set is missing or altered, it rebuilds the table instead,
// also in one transaction: the kernel swaps the old table for the new one
// atomically, so a packet sees one or the other, never half. A rebuild
// keeps the addresses live for what is left of the last alive.
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
	wanted := r.wantedDNAT()
	dnatStale := false
	for k := range wanted {
		dnatStale = dnatStale || !present[k]
	}
	for k := range present {
		chain, _, _ := strings.Cut(k, " ")
		if _, fo := nftFailOpenChains[chain]; fo && wanted[k].comment == "" {
			dnatStale = true // a DNAT to targets no longer wanted
		}
	}
	// The ACCEPTs in an iptables-nft firewall's chains (iptnft.go), in
	// the same transaction.
	accepted, err := r.acc.ensure(c)
	if err != nil {
		return 0, err
	}
	if ok && len(missing) == 0 && !dnatStale {
		if accepted > 0 {
			if err := c.Flush(); err != nil {
				return 0, fmt.Errorf("inserting the ACCEPT rules into iptables-nft's filter table: %w", err)
			}
		}
		return accepted, nil
	}
	chains := map[string]*nftables.Chain{}
	add := r.set
	if ok {
		for name, spec := range r.chains() {
			chains[name] = &nftables.Chain{Name: spec.Name, Table: r.table}
		}
		add = missing
		if dnatStale {
			for name := range nftFailOpenChains {
				c.FlushChain(chains[name])
			}
			for _, m := range r.fallbackMaps() {
				c.FlushSet(m)
			}
		}
	} else {
		c.AddTable(r.table) // so that the delete below finds a table
		c.DelTable(r.table)
		c.AddTable(r.table)
		for name, spec := range r.chains() {
			ch := *spec
			ch.Table = r.table
			chains[name] = c.AddChain(&ch)
		}
		left := time.Until(r.liveUntilOrZero())
		for _, set := range r.liveSets() {
			if err := c.AddSet(set, nil); err != nil {
				return 0, fmt.Errorf("set %s: %w", set.Name, err)
			}
			if left >= time.Millisecond {
				if err := c.SetAddElements(set, r.liveElements(set, left)); err != nil {
					return 0, fmt.Errorf("set %s: %w", set.Name, err)
				}
			}
		}
		for _, m := range r.fallbackMaps() {
			if err := c.AddSet(m, nil); err != nil {
				return 0, fmt.Errorf("map %s: %w", m.Name, err)
			}
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
	if !ok || dnatStale {
		for _, m := range r.fallbackMaps() {
			if elems := r.fallbackElements(m.Name == nftFallback4); len(elems) > 0 {
				if err := c.SetAddElements(m, elems); err != nil {
					return 0, fmt.Errorf("map %s: %w", m.Name, err)
				}
			}
		}
		for k, d := range wanted {
			chain, _, _ := strings.Cut(k, " ")
			r.addDNAT(c, chains[chain], d)
		}
	}
	if err := c.Flush(); err != nil {
		return 0, fmt.Errorf("writing table inet %s: %w", nftTableName, err)
	}
	n := len(missing) + accepted
	if ok {
		for k := range wanted {
			if !present[k] {
				n++
			}
		}
	} else {
		n += len(wanted)
	}
	return n, nil
}

func (r *nftRules) liveUntilOrZero() time.Time {
	if r.fo == nil {
		return time.Time{}
	}
	return r.fo.liveUntil
}

// liveElements are the listen IPs of set's family, live for d.
func (r *nftRules) liveElements(set *nftables.Set, d time.Duration) []nftables.SetElement {
	var out []nftables.SetElement
	for _, a := range r.fo.ips() {
		if a.Is4() == (set.Name == nftLive4) {
			out = append(out, nftables.SetElement{Key: a.AsSlice(), Timeout: d})
		}
	}
	return out
}

// alive renews the listen addresses' elements in live4 and live6 for d,
// in one transaction per call: an element re-added keeps its old expiry,
// so each is added (a no-op when it is there), deleted and added again
// with the new timeout; a packet sees the element throughout.
func (r *nftRules) alive(d time.Duration) error {
	if r.fo == nil {
		return nil
	}
	c, err := r.conn()
	if err != nil {
		return err
	}
	for _, set := range r.liveSets() {
		fresh := r.liveElements(set, d)
		if len(fresh) == 0 {
			continue
		}
		plain := make([]nftables.SetElement, len(fresh))
		for i, e := range fresh {
			plain[i] = nftables.SetElement{Key: e.Key}
		}
		if err := c.SetAddElements(set, plain); err != nil {
			return err
		}
		if err := c.SetDeleteElements(set, plain); err != nil {
			return err
		}
		if err := c.SetAddElements(set, fresh); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("renewing the live addresses in table inet %s: %w", nftTableName, err)
	}
	return nil
}

func (r *nftRules) setTargets(ts []netip.AddrPort) {
	if r.fo != nil {
		r.fo.targets = ts
	}
}

// addDNAT adds the fail-open DNAT of d to chain: what nft makes of `ip
// daddr 169.254.20.10 udp dport 53 counter dnat ip to numgen random mod N
// map @fallback4`.
func (r *nftRules) addDNAT(c *nftables.Conn, chain *nftables.Chain, d dnat) {
	v4 := d.to.Addr().Is4()
	m, family, portReg := nftFallback4, uint32(unix.NFPROTO_IPV4), uint32(9) // the 32-bit register after an IPv4 address in register 1
	if !v4 {
		m, family, portReg = nftFallback6, unix.NFPROTO_IPV6, 2 // the 128-bit register after an IPv6 address in register 1
	}
	exprs := nftMatch(d.to.Addr(), d.to.Port(), d.proto, true)
	exprs = append(exprs,
		&expr.Counter{},
		&expr.Numgen{Register: 1, Modulus: uint32(len(d.targets)), Type: unix.NFT_NG_RANDOM},
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: m},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: family, RegAddrMin: 1, RegProtoMin: portReg, Specified: true},
	)
	c.AddRule(&nftables.Rule{
		Table:    r.table,
		Chain:    chain,
		Exprs:    exprs,
		UserData: userdata.AppendString(nil, userdata.TypeComment, d.comment),
	})
}

// nftExprs is the rule as nftables expressions, what `nft` would make of
// `ip daddr 169.254.20.10 udp dport 53 counter notrack`, with `ip daddr
// @live4` for a live rule, `socket transparent 0` for a socket rule and
// `meta mark & 0x100000 == 0x100000` for a bypass rule before the counter.
func nftExprs(ru rule) []expr.Any {
	out := nftMatch(ru.addr, ru.port, ru.proto, ru.dst)
	if ru.live {
		set := nftLive4
		if ru.addr.Is6() {
			set = nftLive6
		}
		out = append(out,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: addrOffset(ru.addr, ru.dst), Len: uint32(ru.addr.BitLen() / 8)},
			&expr.Lookup{SourceRegister: 1, SetName: set})
	}
	if ru.socket {
		// `socket transparent 0`: a (non-transparent) socket is bound to
		// the destination; no socket, no match.
		out = append(out,
			&expr.Socket{Key: expr.SocketKeyTransparent, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}})
	}
	if ru.bypass {
		mark := binaryutil.NativeEndian.PutUint32(BypassMark)
		out = append(out,
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mark, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: mark})
	}
	out = append(out, &expr.Counter{})
	if ru.verdict == "NOTRACK" {
		out = append(out, &expr.Notrack{})
	}
	return out
}

// addrOffset is where the destination (dst) or source address is in the
// network header.
func addrOffset(a netip.Addr, dst bool) uint32 {
	off, n := uint32(12), uint32(4) // IPv4 source at 12, destination at 16
	if a.Is6() {
		off, n = 8, 16 // IPv6 source at 8, destination at 24
	}
	if dst {
		off += n
	}
	return off
}

// nftMatch matches packets of proto to (dst) or from addr:port.
func nftMatch(addr netip.Addr, port uint16, proto string, dst bool) []expr.Any {
	nfproto := byte(unix.NFPROTO_IPV4)
	if addr.Is6() {
		nfproto = unix.NFPROTO_IPV6
	}
	portOff := uint32(0) // source port
	if dst {
		portOff = 2
	}
	l4 := byte(unix.IPPROTO_UDP)
	if proto == "tcp" {
		l4 = unix.IPPROTO_TCP
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: addrOffset(addr, dst), Len: uint32(addr.BitLen() / 8)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr.AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{l4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: portOff, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

// remove deletes the table, if it is there, and the ACCEPT rules in
// iptables-nft's chains.
func (r *nftRules) remove() error {
	c, err := r.conn()
	if err != nil {
		return err
	}
	if err := r.acc.remove(c); err != nil {
		return fmt.Errorf("removing the ACCEPT rules from iptables-nft's filter table: %w", err)
	}
	c.AddTable(r.table)
	c.DelTable(r.table)
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("deleting table inet %s: %w", nftTableName, err)
	}
	return nil
}
