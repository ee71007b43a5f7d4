// Package search knows which names can exist under a Kubernetes cluster
// domain, and which search-list expansion a query name looks like. It is
// pure name analysis: no I/O, and no allocation but for pod names.
//
// A pod's resolv.conf has ndots:5 and the search list
// "<ns>.svc.<cd> svc.<cd> <cd>" (then the node's own domains), so a lookup
// of an external name with fewer than five dots asks every expansion first:
// api.example.com.default.svc.cluster.local, api.example.com.svc.cluster.local,
// api.example.com.cluster.local, and only then api.example.com, each for A
// and AAAA. The cluster DNS answers the expansions NXDOMAIN. Most of them
// cannot exist by the shape of the Kubernetes DNS specification
// (kubernetes/dns docs/specification.md), so nodedns answers them itself.
//
// The shapes under a cluster domain <cd> (labels counted from the left),
// as the CoreDNS kubernetes plugin (v1.15) reads them:
//
//	<cd>                                     the apex: exists
//	dns-version.<cd>                         exists (TXT, the schema version)
//	ns.dns.<cd>                              exists: the target of the apex's NS
//	                                         record, CoreDNS's own address
//	svc.<cd>, pod.<cd>                       exist, empty (NODATA)
//	<ns>.svc.<cd>, <ns>.pod.<cd>             exist, empty, if namespace <ns> exists
//	<svc>.<ns>.svc.<cd>                      may exist: a Service (<svc> a DNS-1123 label)
//	<x>.<svc>.<ns>.svc.<cd>                  may exist: an endpoint's hostname or
//	                                         dashed IPv4 or IPv6 address, or "_<proto>"
//	                                         under an SRV
//	_<port>._<proto>.<svc>.<ns>.svc.<cd>     may exist: SRV (the underscores are
//	                                         optional to CoreDNS; <proto> is tcp,
//	                                         udp or sctp)
//	<zone>.pin._zone.<svc>.<ns>.svc.<cd>     may exist: a headless Service's
//	<zone>.prefer._zone.<svc>.<ns>.svc.<cd>  endpoints in one topology zone (CoreDNS's
//	                                         zonal option; <zone> may span labels)
//	<a-b-c-d>.<ns>.pod.<cd>                  may exist: a pod by its dashed IPv4 or
//	                                         IPv6 address, after up to two labels
//	                                         of any kind, which CoreDNS ignores
//
// Any other name under <cd> does not exist: NXDOMAIN. Names under a zone
// listed in Rules.Extra (a stub domain under the cluster domain, names a
// CoreDNS rewrite serves) are left alone. "May exist" means forward: only
// the cluster's DNS knows, or a View of the cluster (CheckView).
//
// e2e/kubernetes_test.go checks these rules against CoreDNS's kubernetes
// plugin serving a real API server. What the rules cannot see, by name:
//
//   - names other plugins of the cluster DNS serve under <cd> (after the
//     kubernetes plugin's fallthrough, or from rewrite, template, hosts,
//     file): list their zones in Rules.Extra (search.extra_zones);
//   - a multicluster zone (the plugin's multicluster option, for the
//     Multi-Cluster Services API), whose <endpoint>.<cluster>.<svc>.<ns>
//     names read as SRV names here: keep it out of the cluster domains;
//   - CoreDNS answers an SOA query at any name under <cd> NOERROR without
//     looking the name up, while it answers the same name NXDOMAIN in every
//     other type; the rules follow the other types (a name exists for all
//     types or for none, RFC 8020).
package search

import (
	"net/netip"
	"strings"
)

// Verdict is what the shape rules say about a name.
type Verdict uint8

// Verdicts.
const (
	// Forward: the name is outside every cluster domain, under an extra
	// zone, or may exist; only the cluster's DNS can say.
	Forward Verdict = iota
	// NXDomain: no name of this shape exists under the cluster domain.
	NXDomain
	// NoData: the name exists, as an empty non-terminal (svc.<cd>,
	// <ns>.svc.<cd>...): it has no records of any type.
	NoData
)

func (v Verdict) String() string {
	switch v {
	case NXDomain:
		return "nxdomain"
	case NoData:
		return "nodata"
	}
	return "forward"
}

// Rule names why a verdict was reached, for metrics and logs. The set is
// closed so that a metric labelled by it has bounded series.
type Rule uint8

// Rules.
const (
	RuleNone             Rule = iota // Forward: may exist, or not a cluster name
	RuleUnknownBranch                // <x>.<cd> with x not svc, pod or dns-version
	RuleTooDeep                      // more labels than any shape has
	RuleBadNamespace                 // <ns> is not a DNS-1123 label
	RuleBadService                   // <svc> is not a DNS-1123 label
	RuleBadEndpoint                  // <x> of <x>.<svc>.<ns>.svc is not a label a hostname or address makes
	RuleBadSRV                       // four labels above the namespace that are not [_]<port>.[_]<proto>
	RuleBadPodAddress                // <a-b-c-d> is not a dashed IPv4 or IPv6 address
	RuleEmptyNonTerminal             // NoData: svc.<cd>, pod.<cd>, and <ns>.svc.<cd>, <ns>.pod.<cd> of a namespace the view has
	RuleNoNamespace                  // the view has no such namespace
	RuleNoService                    // the view has no such Service
	numRules
)

var ruleNames = [numRules]string{"", "unknown_branch", "too_deep", "bad_namespace", "bad_service",
	"bad_endpoint", "bad_srv", "bad_pod_address", "empty_non_terminal", "no_namespace", "no_service"}

func (r Rule) String() string { return ruleNames[r] }

// AllRules returns the rules that give a verdict other than
// Forward, for metrics.
func AllRules() []Rule {
	var out []Rule
	for r := RuleUnknownBranch; r < numRules; r++ {
		out = append(out, r)
	}
	return out
}

// Rules are the shape rules of some cluster domains.
type Rules struct {
	domains []string // canonical: lower case, fully qualified, with a leading dot
	extra   []string // the same
}

// New returns the rules for the cluster domains (e.g. "cluster.local"),
// leaving names at or under the extra zones alone.
func New(domains, extra []string) *Rules {
	r := &Rules{}
	for _, d := range domains {
		r.domains = append(r.domains, canonical(d))
	}
	for _, z := range extra {
		r.extra = append(r.extra, canonical(z))
	}
	return r
}

// canonical returns "." + the lower-cased fully qualified name, so that
// suffix tests stay on label boundaries; the root gives ".".
func canonical(name string) string {
	name = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(name, "."), "."))
	if name == "" {
		return "."
	}
	return "." + name + "."
}

// Domain returns the cluster domain qname is at or under (fully qualified,
// lower case, no leading dot), and the part of qname before it (without
// its trailing dot; "" at the apex). ok is false for a name outside every
// cluster domain. qname must be fully qualified; case does not matter.
func (r *Rules) Domain(qname string) (domain, prefix string, ok bool) {
	for _, d := range r.domains {
		if len(qname)+1 == len(d) && strings.EqualFold(qname, d[1:]) {
			return d[1:], "", true
		}
		if len(qname) > len(d) && hasSuffixFold(qname, d) {
			return d[1:], qname[:len(qname)-len(d)], true
		}
	}
	return "", "", false
}

// View is what a view of the cluster knows (package kubeview keeps one
// from the Kubernetes API). Names are lower case.
type View interface {
	// Synced reports whether the view holds every Namespace and Service:
	// until it has listed them once, it denies nothing.
	Synced() bool
	HasNamespace(name string) bool
	HasService(namespace, name string) bool
}

// Check gives the verdict of the shape rules for qname (fully qualified,
// any case) and the rule behind it.
func (r *Rules) Check(qname string) (Verdict, Rule) {
	return r.CheckView(qname, nil)
}

// CheckView is Check refined by a view of the cluster (nil for none): a
// name under <ns>.svc.<cd> or <ns>.pod.<cd> of a namespace the synced view
// does not have is NXDOMAIN, and so is a name under <svc>.<ns>.svc.<cd> of
// a Service it does not have; <ns>.svc.<cd> and <ns>.pod.<cd> of a
// namespace it has are NODATA. Without a synced view those are forwarded:
// the cluster DNS says NXDOMAIN for a namespace that does not exist, and
// a NODATA given in its place would end a musl client's search walk.
func (r *Rules) CheckView(qname string, v View) (Verdict, Rule) {
	_, prefix, ok := r.Domain(qname)
	if !ok {
		return Forward, RuleNone
	}
	for _, z := range r.extra {
		if hasSuffixFold(qname, z) || len(qname)+1 == len(z) && strings.EqualFold(qname, z[1:]) {
			return Forward, RuleNone
		}
	}
	if prefix == "" {
		return Forward, RuleNone // the apex
	}
	// Labels from the right: l[0] is the one just above the cluster domain.
	var l [6]string
	n := 0
	for rest := prefix; rest != ""; n++ {
		if n == len(l) {
			// Deeper than every shape but a zonal name, whose topology
			// zone may span labels.
			if strings.EqualFold(l[0], "svc") && isZonal(l[1:]) {
				break
			}
			return NXDomain, RuleTooDeep
		}
		i := strings.LastIndexByte(rest, '.')
		l[n], rest = rest[i+1:], rest[:max(i, 0)]
	}
	var verdict Verdict
	var rule Rule
	switch {
	case strings.EqualFold(l[0], "svc"):
		verdict, rule = checkSvc(l[1:n])
	case strings.EqualFold(l[0], "pod"):
		verdict, rule = checkPod(l[1:n])
	case strings.EqualFold(l[0], "dns-version") && n == 1:
		return Forward, RuleNone
	case strings.EqualFold(l[0], "dns") && n == 2 && strings.EqualFold(l[1], "ns"):
		// The target of the apex's NS record (and the MNAME of its SOA):
		// CoreDNS answers its A and AAAA with its own addresses. dns.<cd>
		// itself is NXDOMAIN there, as here.
		return Forward, RuleNone
	default:
		return NXDomain, RuleUnknownBranch
	}
	if verdict != Forward || n < 2 || v == nil || !v.Synced() {
		return verdict, rule
	}
	ns := strings.ToLower(l[1])
	if !v.HasNamespace(ns) {
		return NXDomain, RuleNoNamespace
	}
	if n == 2 {
		return NoData, RuleEmptyNonTerminal
	}
	if strings.EqualFold(l[0], "svc") && !v.HasService(ns, strings.ToLower(l[2])) {
		return NXDomain, RuleNoService
	}
	return Forward, RuleNone
}

// checkSvc judges <...>.svc.<cd>; l holds the labels above svc, nearest
// first.
func checkSvc(l []string) (Verdict, Rule) {
	switch {
	case len(l) == 0:
		return NoData, RuleEmptyNonTerminal
	case !isDNS1123Label(l[0]):
		return NXDomain, RuleBadNamespace
	case len(l) == 1:
		// Empty if the namespace exists, NXDOMAIN if not: only a view
		// knows.
		return Forward, RuleNone
	case !isDNS1123Label(l[1]):
		// A DNS-1123 label, not only DNS-1035: since Kubernetes 1.34
		// (RelaxedServiceNameValidation, on by default from 1.36, GA and
		// locked on in 1.37) a Service name may start with a digit, and
		// CoreDNS answers "1st.<ns>.svc.<cd>".
		return NXDomain, RuleBadService
	case len(l) == 2:
		return Forward, RuleNone
	case len(l) == 3:
		// An endpoint's hostname (DNS-1123), its dashed address (CoreDNS's
		// endpointHostname: an IPv6 address starting with "::", as the
		// API accepts, makes a label starting with "--"), or _<proto>,
		// the empty non-terminal above an SRV record.
		if isDNS1123Label(l[2]) || isUnderscored(l[2]) || isDashedIP(l[2]) {
			return Forward, RuleNone
		}
		return NXDomain, RuleBadEndpoint
	case len(l) == 4:
		// CoreDNS reads <port>.<proto> with or without the underscores, and
		// matches them against the Service's port names and protocols.
		if isPortName(l[3]) && isProtocol(l[2]) {
			return Forward, RuleNone
		}
		return NXDomain, RuleBadSRV
	case isZonal(l):
		return Forward, RuleNone
	}
	return NXDomain, RuleTooDeep
}

// isZonal reports whether l, the labels above svc nearest first, is
// <ns>.<svc>._zone.pin|prefer followed by at least one label: a
// zone-scoped name of CoreDNS's kubernetes plugin (its zonal option, off
// by default; "Zonal Names" in its README), which selects a headless
// Service's endpoints in one topology zone. The zone's value is every
// label in front, joined: it may contain dots. Pods look such names up
// relative to their namespace ("us-west-2a.pin._zone.db"), so the stage
// must not answer them from the search list's first expansion.
func isZonal(l []string) bool {
	return len(l) >= 5 && strings.EqualFold(l[2], "_zone") &&
		(strings.EqualFold(l[3], "pin") || strings.EqualFold(l[3], "prefer"))
}

// checkPod judges <...>.pod.<cd>.
func checkPod(l []string) (Verdict, Rule) {
	switch {
	case len(l) == 0:
		return NoData, RuleEmptyNonTerminal
	case !isDNS1123Label(l[0]):
		return NXDomain, RuleBadNamespace
	case len(l) == 1:
		return Forward, RuleNone // as <ns>.svc.<cd>
	case len(l) <= 4:
		// CoreDNS parses pod names as it does Service names, reading the
		// labels in front of the address as an endpoint or as
		// <port>.<proto>, and then ignores them: it answers
		// "x.10-244-1-7.<ns>.pod.<cd>" as "10-244-1-7.<ns>.pod.<cd>". With
		// three or more labels in front it says NXDOMAIN.
		if isDashedIP(l[1]) {
			return Forward, RuleNone
		}
		return NXDomain, RuleBadPodAddress
	}
	return NXDomain, RuleTooDeep
}

// isPortName reports whether s, without one leading underscore, is a port
// name (a DNS-1123 label) or empty (the port of a one-port Service may be
// unnamed).
func isPortName(s string) bool {
	s = strings.TrimPrefix(s, "_")
	return s == "" || isDNS1123Label(s)
}

// isProtocol reports whether s, without one leading underscore, is a
// Service port's protocol, or empty (any protocol).
func isProtocol(s string) bool {
	s = strings.TrimPrefix(s, "_")
	return s == "" || strings.EqualFold(s, "tcp") || strings.EqualFold(s, "udp") || strings.EqualFold(s, "sctp")
}

// isDNS1123Label reports whether s, lower-cased, is a DNS-1123 label:
// 1 to 63 letters, digits and hyphens, starting and ending with a letter
// or digit (what Kubernetes takes for a namespace or a hostname).
func isDNS1123Label(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

// isUnderscored reports whether s is "_" and a DNS-1123 label: a port name
// or protocol of an SRV name.
func isUnderscored(s string) bool { return len(s) > 1 && s[0] == '_' && isDNS1123Label(s[1:]) }

// isDashedIP reports whether s is an IPv4 address with dashes for dots
// (10-244-1-7) or an IPv6 address with dashes for colons (fd00--1), the
// names of pod records.
func isDashedIP(s string) bool {
	if len(s) < 2 || len(s) > 39 {
		return false
	}
	var buf [39]byte
	n := copy(buf[:], s)
	sep := byte('.')
	if strings.Count(s, "-") != 3 || strings.Contains(s, "--") {
		sep = ':'
	}
	for i := range n {
		if buf[i] == '-' {
			buf[i] = sep
		}
	}
	a, err := netip.ParseAddr(string(buf[:n]))
	return err == nil && a.Zone() == "" && (sep == '.') == a.Is4()
}

func isAlnum(c byte) bool  { return isLetter(c) || c >= '0' && c <= '9' }
func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

// hasSuffixFold is strings.HasSuffix, ignoring ASCII case.
func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

// Form is a search domain a pod's resolv.conf appends to a name.
type Form uint8

// Forms, in the order of a pod's search list.
const (
	// FormNamespaceSvc: <name>.<ns>.svc.<cd>, the pod's own namespace.
	FormNamespaceSvc Form = iota + 1
	// FormSvc: <name>.svc.<cd>.
	FormSvc
	// FormDomain: <name>.<cd>.
	FormDomain
	// FormNode: <name>.<one of the node's search domains>, which kubelet
	// appends after the cluster's.
	FormNode
)

func (f Form) String() string {
	switch f {
	case FormNamespaceSvc:
		return "<name>.<ns>.svc.<cd>"
	case FormSvc:
		return "<name>.svc.<cd>"
	case FormDomain:
		return "<name>.<cd>"
	case FormNode:
		return "<name>.<node domain>"
	}
	return "none"
}

// Expansion is one reading of a query name as a search-list expansion:
// the name a client looked up, and the search domain it appended.
type Expansion struct {
	Form      Form
	Name      string // the name looked up, without a trailing dot
	Namespace string // FormNamespaceSvc: the namespace in the search domain
	Domain    string // the search domain, fully qualified
}

// Expansions are the readings of one query name, most specific first.
type Expansions struct {
	list [4]Expansion
	n    int
}

// Len returns the number of readings.
func (e *Expansions) Len() int { return e.n }

// At returns reading i.
func (e *Expansions) At(i int) Expansion { return e.list[i] }

// Of returns the reading of the given form, if qname has one.
func (e *Expansions) Of(f Form) (Expansion, bool) {
	for i := range e.n {
		if e.list[i].Form == f {
			return e.list[i], true
		}
	}
	return Expansion{}, false
}

func (e *Expansions) add(x Expansion) {
	if e.n < len(e.list) && x.Name != "" {
		e.list[e.n] = x
		e.n++
	}
}

// Classify reads qname (fully qualified, any case) as the expansions a
// pod's search list could have made of a shorter name: under a cluster
// domain <cd>, as <name>.<ns>.svc.<cd> (when <ns> is a namespace's label),
// <name>.svc.<cd> and <name>.<cd>; under one of nodeDomains (fully
// qualified), as <name>.<node domain>. A name has several readings:
// a.b.svc.cluster.local is "a" searched in b.svc.cluster.local, "a.b" in
// svc.cluster.local and "a.b.svc" in cluster.local. The strings point into
// qname: Classify does not allocate.
func (r *Rules) Classify(qname string, nodeDomains []string) Expansions {
	var e Expansions
	if cd, prefix, ok := r.Domain(qname); ok && prefix != "" {
		svcDomain := len(qname) - len(cd) - len("svc.")
		if i := strings.LastIndexByte(prefix, '.'); i > 0 && strings.EqualFold(prefix[i+1:], "svc") {
			above := prefix[:i] // <name>.<ns>, or <name>
			if j := strings.LastIndexByte(above, '.'); j > 0 && isDNS1123Label(above[j+1:]) {
				e.add(Expansion{Form: FormNamespaceSvc, Name: above[:j], Namespace: above[j+1:], Domain: qname[j+1:]})
			}
			e.add(Expansion{Form: FormSvc, Name: above, Domain: qname[svcDomain:]})
		}
		e.add(Expansion{Form: FormDomain, Name: prefix, Domain: qname[len(prefix)+1:]})
	}
	for _, nd := range nodeDomains {
		if len(qname) > len(nd)+1 && qname[len(qname)-len(nd)-1] == '.' && hasSuffixFold(qname, nd) {
			e.add(Expansion{Form: FormNode, Name: qname[:len(qname)-len(nd)-1], Domain: qname[len(qname)-len(nd):]})
		}
	}
	return e
}

// PodDNS is the DNS set-up kubelet writes into a pod's resolv.conf, when
// nodedns knows it (the Kubernetes view of this node's pods).
type PodDNS struct {
	Namespace string
	// Search is the search list, fully qualified, lower case:
	// <ns>.svc.<cd>, svc.<cd>, <cd>, then the node's own domains.
	Search []string
	Ndots  int
}

// Walk reads qname as the first query of the pod's search walk: <name>
// followed by the first search domain, for a <name> with fewer dots than
// ndots (so the client tries its search list before the name itself). It
// returns the names the client would ask next if this one did not exist:
// <name> followed by each other search domain, then <name> itself, fully
// qualified, in order. ok is false for any other name.
func (p *PodDNS) Walk(qname string) (name string, rest []string, ok bool) {
	if len(p.Search) == 0 {
		return "", nil, false
	}
	first := p.Search[0]
	if len(qname) <= len(first)+1 || qname[len(qname)-len(first)-1] != '.' || !hasSuffixFold(qname, first) {
		return "", nil, false
	}
	name = qname[:len(qname)-len(first)-1]
	if strings.Count(name, ".") >= p.Ndots {
		return "", nil, false
	}
	for _, d := range p.Search[1:] {
		if n := len(name) + 1 + len(d); n <= 254 { // 253 characters and the root's dot
			rest = append(rest, name+"."+d)
		}
	}
	return name, append(rest, name+"."), true
}
