package conformance

import (
	"fmt"
	"sort"
	"strings"

	"github.com/miekg/dns"
)

// The normaliser. Two replies to the same query are the same for a client
// when, ignoring the message ID:
//
//   - both came back, or neither did (category no-answer), and both
//     unpacked (malformed);
//   - RCODE, extended by the OPT record's upper bits, is the same (rcode),
//     and so is the opcode (opcode);
//   - each of the flags QR, AA, TC, RD, RA, AD, CD and Z is the same
//     (flag:AA, ...);
//   - the question sections are byte-for-byte the same, case included
//     (question);
//   - both have an OPT record or neither (opt:presence); when both do, the
//     UDP size (opt:size), DO bit (opt:do), version (opt:version) and the
//     set of option codes (opt:options) are the same;
//   - the answer, authority and additional sections (OPT left out) hold the
//     same RRsets (answer, authority, additional): an RRset is the owner
//     name (without case), class, type (RRSIGs by the type they cover) and
//     the set of its RDATAs (without case, any order); RRsets in any order.
//     TTLs are not compared with each other;
//   - except when both replies are SERVFAIL: then the sections are not
//     compared. A SERVFAIL says the resolution failed; RFC 1035 gives its
//     sections no meaning and stub resolvers ignore them. Unbound fills
//     them with whatever it had resolved before giving up (the CNAME of a
//     chain whose target fails, when another query cached it first), which
//     depends on the order in which concurrent questions reached it, so
//     that two Unbounds, or one Unbound in two runs, differ there;
//   - when the sections are the same, the owner names are the same with case
//     (case);
//   - TTLs are checked against the zone on their own, per reply (see
//     Bounds): every TTL is at most the authoritative TTL of its RRset (for
//     an SOA in the authority section, at most min(SOA TTL, MINIMUM), RFC
//     2308 5) and is 0 only where the zone says 0. The category ttl means
//     the server breaks a bound for an RRset where the reference does not;
//     ref-ttl the other way round;
//   - over UDP, a reply larger than the query allows (512 without EDNS, else
//     its UDP size and at least 512) is a violation of its own; size means
//     one reply breaks it and the other does not;
//   - a reply must copy RD (RFC 1035 4.1.1) and CD (RFC 4035 3.2.2) from the
//     query; header means one reply fails to and the other does not (the
//     flag:RD or flag:CD category says which flag).
//
// Violations of the per-reply checks (TTL bounds, size, header, a question
// that does not echo the query) are also counted per server, whether or not
// the other server breaks them too.

// Categories, in report order.
var Categories = []string{
	"no-answer", "malformed", "rcode", "opcode",
	"flag:QR", "flag:AA", "flag:TC", "flag:RD", "flag:RA", "flag:AD", "flag:CD", "flag:Z",
	"question", "opt:presence", "opt:size", "opt:do", "opt:version", "opt:options",
	"answer", "authority", "additional", "case", "ttl", "ref-ttl", "size", "header",
}

// Bounds gives the authoritative TTL of an RRset.
type Bounds interface {
	// TTL is the largest TTL the zone gives the RRset of rr (by owner
	// name, type and, for RRSIGs, covered type), and whether it is known.
	TTL(rr dns.RR) (uint32, bool)
}

// Checks returns the per-reply violations of r to q: TTLs out of the
// zone's bounds, a UDP reply larger than q allows, a question that does
// not echo q. Each is "kind: detail"; kinds are ttl, size and question.
func Checks(q Query, r Reply, b Bounds) []string {
	var v []string
	if r.Msg == nil {
		return nil
	}
	if lim := q.Mode.UDPLimit(); lim > 0 && r.Size > lim {
		v = append(v, fmt.Sprintf("size: %d bytes over UDP, the query allows %d", r.Size, lim))
	}
	if r.Msg.Response {
		if r.Msg.RecursionDesired != !q.Mode.NoRD {
			v = append(v, fmt.Sprintf("header: RD %v, the query's %v", r.Msg.RecursionDesired, !q.Mode.NoRD))
		}
		if r.Msg.CheckingDisabled != q.Mode.CD {
			v = append(v, fmt.Sprintf("header: CD %v, the query's %v", r.Msg.CheckingDisabled, q.Mode.CD))
		}
	}
	if len(r.Msg.Question) > 0 {
		if got := r.Msg.Question[0]; got.Name != q.Name || got.Qtype != q.Type || got.Qclass != q.Class {
			v = append(v, "question: "+strings.TrimPrefix(got.String(), ";")+" for "+q.Key())
		}
	}
	for _, s := range sections(r.Msg) {
		for _, rr := range s.rrs {
			h := rr.Header()
			bound, known := uint32(0), false
			if b != nil {
				bound, known = b.TTL(rr)
			}
			if !known {
				continue
			}
			if soa, ok := rr.(*dns.SOA); ok && s.name == "authority" && soa.Minttl < bound {
				bound = soa.Minttl
			}
			switch {
			case h.Ttl > bound:
				v = append(v, fmt.Sprintf("ttl: %s %s %s TTL %d > %d", s.name, strings.ToLower(h.Name), rrType(rr), h.Ttl, bound))
			case h.Ttl == 0 && bound > 0:
				v = append(v, fmt.Sprintf("ttl: %s %s %s TTL 0, zone %d", s.name, strings.ToLower(h.Name), rrType(rr), bound))
			}
		}
	}
	return v
}

// ttlKeys strips the numbers from the ttl violations so that two replies
// breaking the bound of the same RRset count as the same.
func ttlKeys(v []string) map[string]bool {
	k := map[string]bool{}
	for _, s := range v {
		if !strings.HasPrefix(s, "ttl: ") {
			continue
		}
		f := strings.Fields(s)
		// ttl: SECTION NAME TYPE TTL n (> m | 0, zone m)
		if len(f) >= 6 {
			kind := "over"
			if strings.Contains(s, ", zone") {
				kind = "zero"
			}
			k[f[1]+" "+f[2]+" "+f[3]+" "+kind] = true
		}
	}
	return k
}

type section struct {
	name string
	rrs  []dns.RR
}

func sections(m *dns.Msg) []section {
	var extra []dns.RR
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	return []section{{"answer", m.Answer}, {"authority", m.Ns}, {"additional", extra}}
}

func rrType(rr dns.RR) string {
	if sig, ok := rr.(*dns.RRSIG); ok {
		return "RRSIG(" + typeString(sig.TypeCovered) + ")"
	}
	return typeString(rr.Header().Rrtype)
}

// rdata is the presentation form of rr without its header.
func rdata(rr dns.RR) string {
	return strings.TrimSpace(strings.TrimPrefix(rr.String(), rr.Header().String()))
}

// rrsets is the normalised form of a section: one line per RRset, sorted.
// fold lower-cases owner names and RDATA.
func rrsets(rrs []dns.RR, fold bool) string {
	sets := map[string][]string{}
	for _, rr := range rrs {
		h := rr.Header()
		name, rd := h.Name, rdata(rr)
		if fold {
			name, rd = strings.ToLower(name), strings.ToLower(rd)
		}
		k := name + " " + classString(h.Class) + " " + rrType(rr)
		sets[k] = append(sets[k], rd)
	}
	lines := make([]string, 0, len(sets))
	for k, rds := range sets {
		sort.Strings(rds)
		lines = append(lines, k+" ["+strings.Join(rds, " | ")+"]")
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// Compare returns the categories in which a differs from b, as a client
// of each would see it (see the normaliser above); none when they are the
// same. va and vb are the per-reply violations from Checks.
func Compare(a, b Reply, va, vb []string) []string {
	var cats []string
	add := func(c string) { cats = append(cats, c) }
	if a.NoReply() != b.NoReply() {
		return []string{"no-answer"}
	}
	if a.NoReply() {
		return nil
	}
	if (a.Msg == nil) != (b.Msg == nil) {
		return []string{"malformed"}
	}
	if a.Msg == nil {
		return nil
	}
	ma, mb := a.Msg, b.Msg
	if ma.Rcode != mb.Rcode {
		add("rcode")
	}
	if ma.Opcode != mb.Opcode {
		add("opcode")
	}
	for _, f := range []struct {
		name string
		x, y bool
	}{
		{"flag:QR", ma.Response, mb.Response},
		{"flag:AA", ma.Authoritative, mb.Authoritative},
		{"flag:TC", ma.Truncated, mb.Truncated},
		{"flag:RD", ma.RecursionDesired, mb.RecursionDesired},
		{"flag:RA", ma.RecursionAvailable, mb.RecursionAvailable},
		{"flag:AD", ma.AuthenticatedData, mb.AuthenticatedData},
		{"flag:CD", ma.CheckingDisabled, mb.CheckingDisabled},
		{"flag:Z", ma.Zero, mb.Zero},
	} {
		if f.x != f.y {
			add(f.name)
		}
	}
	if questionString(ma) != questionString(mb) {
		add("question")
	}
	oa, ob := ma.IsEdns0(), mb.IsEdns0()
	switch {
	case (oa == nil) != (ob == nil):
		add("opt:presence")
	case oa != nil:
		if oa.UDPSize() != ob.UDPSize() {
			add("opt:size")
		}
		if oa.Do() != ob.Do() {
			add("opt:do")
		}
		if oa.Version() != ob.Version() {
			add("opt:version")
		}
		if optionCodes(oa) != optionCodes(ob) {
			add("opt:options")
		}
	}
	sa, sb := sections(ma), sections(mb)
	sameSets, sameCase := true, true
	if ma.Rcode == dns.RcodeServerFailure && mb.Rcode == dns.RcodeServerFailure {
		sa, sb = nil, nil // a failure's sections carry no answer (see above)
	}
	for i := range sa {
		if rrsets(sa[i].rrs, true) != rrsets(sb[i].rrs, true) {
			add(sa[i].name)
			sameSets = false
		} else if rrsets(sa[i].rrs, false) != rrsets(sb[i].rrs, false) {
			sameCase = false
		}
	}
	if sameSets && !sameCase {
		add("case")
	}
	ka, kb := ttlKeys(va), ttlKeys(vb)
	if !subset(ka, kb) {
		add("ttl")
	}
	if !subset(kb, ka) {
		add("ref-ttl")
	}
	if hasKind(va, "size") != hasKind(vb, "size") {
		add("size")
	}
	if hasKind(va, "header") != hasKind(vb, "header") {
		add("header")
	}
	return cats
}

// subset reports whether every key of a is in b.
func subset(a, b map[string]bool) bool {
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func hasKind(v []string, kind string) bool {
	for _, s := range v {
		if strings.HasPrefix(s, kind+": ") {
			return true
		}
	}
	return false
}

func questionString(m *dns.Msg) string {
	var b strings.Builder
	for _, q := range m.Question {
		fmt.Fprintf(&b, "%s %s %s;", q.Name, classString(q.Qclass), typeString(q.Qtype))
	}
	return b.String()
}

func optionCodes(o *dns.OPT) string {
	var c []string
	for _, e := range o.Option {
		c = append(c, fmt.Sprint(e.Option()))
	}
	sort.Strings(c)
	return strings.Join(c, ",")
}

// Short is a one-line summary of a reply for reports: rcode, flags,
// question, each section (the first RRs of it), OPT and size.
func Short(r Reply) string {
	if r.Msg == nil {
		if r.Size > 0 {
			return fmt.Sprintf("%s (%d bytes)", r.Err, r.Size)
		}
		return "no reply (" + r.Err + ")"
	}
	m := r.Msg
	var b strings.Builder
	if m.Rcode == dns.RcodeBadVers && m.IsEdns0() != nil {
		b.WriteString("BADVERS") // 16 is BADSIG in TSIG, BADVERS with an OPT
	} else if s, ok := dns.RcodeToString[m.Rcode]; ok {
		b.WriteString(s)
	} else {
		fmt.Fprintf(&b, "RCODE%d", m.Rcode)
	}
	if m.Opcode != 0 {
		fmt.Fprintf(&b, " opcode=%s", dns.OpcodeToString[m.Opcode])
	}
	for _, f := range []struct {
		on   bool
		name string
	}{{m.Response, "qr"}, {m.Authoritative, "aa"}, {m.Truncated, "tc"}, {m.RecursionDesired, "rd"},
		{m.RecursionAvailable, "ra"}, {m.Zero, "z"}, {m.AuthenticatedData, "ad"}, {m.CheckingDisabled, "cd"}} {
		if f.on {
			b.WriteString(" " + f.name)
		}
	}
	b.WriteString(" | q: " + strings.TrimSuffix(questionString(m), ";"))
	for _, s := range sections(m) {
		fmt.Fprintf(&b, " | %s(%d):", s.name[:2], len(s.rrs))
		for i, rr := range s.rrs {
			if i == 3 {
				fmt.Fprintf(&b, " …")
				break
			}
			h := rr.Header()
			rd := rdata(rr)
			if len(rd) > 40 {
				rd = rd[:40] + "…"
			}
			fmt.Fprintf(&b, " %s %d %s %s;", h.Name, h.Ttl, rrType(rr), rd)
		}
	}
	if o := m.IsEdns0(); o != nil {
		fmt.Fprintf(&b, " | opt: %d", o.UDPSize())
		if o.Do() {
			b.WriteString(" do")
		}
		if o.Version() != 0 {
			fmt.Fprintf(&b, " v%d", o.Version())
		}
		if oc := optionCodes(o); oc != "" {
			b.WriteString(" options=" + oc)
		}
	} else {
		b.WriteString(" | no opt")
	}
	fmt.Fprintf(&b, " | %d B", r.Size)
	return b.String()
}
