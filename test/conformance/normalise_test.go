package conformance

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// These tests check the harness itself (corpus, normaliser, known
// differences) and need no server.

func TestModeRoundTrip(t *testing.T) {
	for _, s := range []string{"udp", "tcp", "udp+e1232", "udp+e1232+do+cd", "tcp+e1232+do+v1", "udp+e1232+opt2",
		"udp+e1232+cookie+ecs", "udp+nord", "udp+qr", "udp+op5", "udp+e512+do+cd+ad+nord"} {
		m, err := ParseMode(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if m.String() != s {
			t.Errorf("ParseMode(%q).String() = %q", s, m.String())
		}
	}
	// Canonical order whatever the order written.
	if m, _ := ParseMode("udp+cd+do+e1232"); m.String() != "udp+e1232+do+cd" {
		t.Errorf("got %q", m.String())
	}
	for _, bad := range []string{"tls", "udp+do", "udp+e70000", "udp+op16", "udp+cd+cd", "udp+bogus"} {
		if _, err := ParseMode(bad); err == nil {
			t.Errorf("ParseMode(%q) accepted", bad)
		}
	}
}

func TestUDPLimit(t *testing.T) {
	for s, want := range map[string]int{"udp": 512, "udp+e0": 512, "udp+e1232": 1232, "udp+e4096": 4096, "tcp+e1232": 0} {
		m, _ := ParseMode(s)
		if got := m.UDPLimit(); got != want {
			t.Errorf("%s: UDPLimit %d, want %d", s, got, want)
		}
	}
}

func TestParseCorpus(t *testing.T) {
	c, err := ParseCorpus(strings.NewReader(`
# comment
set n   a.example. B.Example.
set n2  @n c.example   # c gets its dot
set t   A AAAA
cross n2 t udp,tcp+e1232 IN
cross a.example. A, udp IN      # a duplicate: kept once
cross c.example. TYPE65280,SOA udp CH,CLASS42
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Queries) != 3*2*2+2*2 {
		t.Fatalf("%d queries", len(c.Queries))
	}
	if k := c.Queries[0].Key(); k != "udp/IN/A/a.example." {
		t.Errorf("first %s", k)
	}
	if k := c.Queries[len(c.Queries)-1].Key(); k != "udp/CLASS42/SOA/c.example." {
		t.Errorf("last %s", k)
	}
	for _, bad := range []string{"cross x A udp IN", "set", "cross a. BOGUS udp IN", "frob", "set a b\nset a c"} {
		if _, err := ParseCorpus(strings.NewReader(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The corpus in the repo expands, is a few thousand queries or more and
// covers every query class the differential compares.
func TestRepoCorpus(t *testing.T) {
	f, err := os.Open("testdata/corpus.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := ParseCorpus(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Queries) < 3000 {
		t.Errorf("only %d queries", len(c.Queries))
	}
	has := func(pred func(Query) bool) bool {
		for _, q := range c.Queries {
			if pred(q) {
				return true
			}
		}
		return false
	}
	for name, pred := range map[string]func(Query) bool{
		"TCP":        func(q Query) bool { return q.Mode.TCP },
		"no EDNS":    func(q Query) bool { return !q.Mode.EDNS && !q.Mode.TCP },
		"DO":         func(q Query) bool { return q.Mode.DO },
		"CD":         func(q Query) bool { return q.Mode.CD },
		"RD=0":       func(q Query) bool { return q.Mode.NoRD },
		"EDNS v1":    func(q Query) bool { return q.Mode.Version == 1 },
		"two OPTs":   func(q Query) bool { return q.Mode.TwoOPT },
		"opcode":     func(q Query) bool { return q.Mode.Opcode != 0 },
		"class CH":   func(q Query) bool { return q.Class == dns.ClassCHAOS },
		"class HS":   func(q Query) bool { return q.Class == dns.ClassHESIOD },
		"class NONE": func(q Query) bool { return q.Class == dns.ClassNONE },
		"unassigned": func(q Query) bool { return q.Class == 42 },
		"ANY":        func(q Query) bool { return q.Type == dns.TypeANY },
		"DNAME":      func(q Query) bool { return q.Type == dns.TypeDNAME },
		"mixed case": func(q Query) bool { return q.Name != strings.ToLower(q.Name) },
	} {
		if !has(pred) {
			t.Errorf("corpus has no query with %s", name)
		}
	}
}

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		p, s string
		ok   bool
	}{
		{"abc", "abc", true}, {"abc", "abd", false}, {"*", "", true}, {"a*", "abc", true},
		{"*c", "abc", true}, {"a*c", "ac", true}, {"a*b*c", "a-b-c", true}, {"a*b*c", "a-c-b", false},
		{"udp*/IN/ANY/*@*", "udp+e1232/IN/ANY/www.example.test.@cached", true},
		{"flag:*", "flag:AA", true}, {"flag:*", "rcode", false},
	} {
		if Glob(c.p, c.s) != c.ok {
			t.Errorf("Glob(%q, %q) = %v", c.p, c.s, !c.ok)
		}
	}
}

func TestParseKnownAndMatch(t *testing.T) {
	ks, err := ParseKnown(strings.NewReader(`
# comment
flag:RD  *+nord*  Unbound copies RD from its cache
[nodedns]
answer   */cname-other*  the upstream is authoritative
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(ks) != 2 || ks[0].Server != "nodedns*" || ks[1].Server != "nodedns" {
		t.Fatalf("%+v", ks)
	}
	if Match(ks, "nodedns-via-unbound", "flag:RD", "udp+nord/IN/A/x.", "fresh") != ks[0] {
		t.Error("flag:RD not matched")
	}
	if Match(ks, "nodedns-via-unbound", "answer", "udp/IN/A/cname-other.example.test.", "fresh") != nil {
		t.Error("[nodedns] line matched another column")
	}
	if Match(ks, "nodedns", "answer", "udp/IN/A/cname-other.example.test.", "cached") != ks[1] {
		t.Error("answer not matched")
	}
	for _, bad := range []string{"rcode x", "bogus * reason", "[]\nrcode * r"} {
		if _, err := ParseKnown(strings.NewReader(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	f, err := os.Open("known-differences.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := ParseKnown(f); err != nil {
		t.Errorf("known-differences.txt: %v", err)
	}
}

type fixedBounds map[string]uint32

func (b fixedBounds) TTL(rr dns.RR) (uint32, bool) {
	v, ok := b[boundKey(rr)]
	return v, ok
}

func msg(t *testing.T, q Query, rcode int, answer, ns []string) Reply {
	t.Helper()
	m := q.Msg(1)
	m.Response, m.RecursionAvailable, m.Rcode = true, true, rcode
	for _, s := range answer {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		m.Answer = append(m.Answer, rr)
	}
	for _, s := range ns {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		m.Ns = append(m.Ns, rr)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return Reply{Msg: m, Size: len(b)}
}

func TestCompare(t *testing.T) {
	q := Query{Name: "WwW.example.test.", Type: dns.TypeA, Class: dns.ClassINET, Mode: Mode{EDNS: true, UDPSize: 1232}}
	a := msg(t, q, dns.RcodeSuccess, []string{"WwW.example.test. 300 IN A 192.0.2.1", "WwW.example.test. 300 IN A 192.0.2.2"}, nil)
	// Same RRset, other order, other TTL: identical.
	b := msg(t, q, dns.RcodeSuccess, []string{"WwW.example.test. 200 IN A 192.0.2.2", "WwW.example.test. 299 IN A 192.0.2.1"}, nil)
	bounds := fixedBounds{"www.example.test./A": 300}
	if c := Compare(a, b, Checks(q, a, bounds), Checks(q, b, bounds)); len(c) != 0 {
		t.Errorf("same answers differ in %v", c)
	}
	// Owner case only.
	c := msg(t, q, dns.RcodeSuccess, []string{"www.example.test. 300 IN A 192.0.2.2", "www.example.test. 300 IN A 192.0.2.1"}, nil)
	if got := Compare(a, c, nil, nil); !reflect.DeepEqual(got, []string{"case"}) {
		t.Errorf("case: %v", got)
	}
	// TTL over the zone's, AA set, no OPT, another RRset.
	d := msg(t, q, dns.RcodeSuccess, []string{"WwW.example.test. 301 IN A 192.0.2.1"}, nil)
	d.Msg.Authoritative = true
	d.Msg.Extra = nil
	vd := Checks(q, d, bounds)
	if len(vd) != 1 || !strings.HasPrefix(vd[0], "ttl: answer www.example.test. A TTL 301 > 300") {
		t.Errorf("checks %v", vd)
	}
	want := []string{"flag:AA", "opt:presence", "answer", "ttl"}
	if got := Compare(d, a, vd, nil); !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := Compare(a, d, nil, vd); !reflect.DeepEqual(got, []string{"flag:AA", "opt:presence", "answer", "ref-ttl"}) {
		t.Errorf("reverse: %v", got)
	}
	// Negative answer: the SOA is bounded by MINIMUM.
	nx := msg(t, q, dns.RcodeNameError, nil, []string{"example.test. 3600 IN SOA ns. h. 1 2 3 4 300"})
	v := Checks(q, nx, fixedBounds{"example.test./SOA": 3600})
	if len(v) != 1 || !strings.Contains(v[0], "TTL 3600 > 300") {
		t.Errorf("negative SOA: %v", v)
	}
	// No reply against a reply; both silent.
	if got := Compare(Reply{Err: "timeout"}, a, nil, nil); !reflect.DeepEqual(got, []string{"no-answer"}) {
		t.Errorf("no-answer: %v", got)
	}
	if got := Compare(Reply{Err: "timeout"}, Reply{Err: "closed"}, nil, nil); len(got) != 0 {
		t.Errorf("both silent: %v", got)
	}
	// Two SERVFAILs, one with the CNAME resolved before the failure: the
	// same; a SERVFAIL against an answer: not.
	cq := Query{Name: "cname-outside.example.test.", Type: dns.TypeA, Class: dns.ClassINET, Mode: Mode{}}
	bare := msg(t, cq, dns.RcodeServerFailure, nil, nil)
	partial := msg(t, cq, dns.RcodeServerFailure, []string{"cname-outside.example.test. 300 IN CNAME www.outside.invalid."}, nil)
	if got := Compare(bare, partial, nil, nil); len(got) != 0 {
		t.Errorf("two SERVFAILs differ in %v", got)
	}
	ok := msg(t, cq, dns.RcodeSuccess, []string{"cname-outside.example.test. 300 IN CNAME www.outside.invalid."}, nil)
	if got := Compare(bare, ok, nil, nil); !reflect.DeepEqual(got, []string{"rcode", "answer"}) {
		t.Errorf("SERVFAIL against NOERROR: %v", got)
	}
	// RD not copied.
	nord := q
	nord.Mode.NoRD = true
	r := msg(t, nord, dns.RcodeSuccess, nil, nil)
	r.Msg.RecursionDesired = true
	if v := Checks(nord, r, nil); len(v) != 1 || !strings.HasPrefix(v[0], "header: RD") {
		t.Errorf("RD: %v", v)
	}
}

func TestMsgTwoOPT(t *testing.T) {
	m, _ := ParseMode("udp+e1232+do+opt2+v1")
	q := Query{Name: "a.", Type: dns.TypeA, Class: dns.ClassINET, Mode: m}
	msg := q.Msg(7)
	if len(msg.Extra) != 2 {
		t.Fatalf("%d OPTs", len(msg.Extra))
	}
	if _, err := msg.Pack(); err != nil {
		t.Fatal(err)
	}
	if o := msg.Extra[0].(*dns.OPT); !o.Do() || o.Version() != 1 || o.UDPSize() != 1232 {
		t.Errorf("OPT %v", o)
	}
}

func TestReadZones(t *testing.T) {
	zs, err := ReadZones("testdata/zones")
	if err != nil {
		t.Fatal(err)
	}
	signed := 0
	for _, z := range zs {
		if z.Sign != "" {
			signed++
			if p, ok := parent(zs, z); !ok || p.Name != "example.test." {
				t.Errorf("%s: parent %v %v", z.Name, p.Name, ok)
			}
		}
		// Every zone file parses.
		f, err := os.Open(z.File)
		if err != nil {
			t.Fatal(err)
		}
		zp := dns.NewZoneParser(f, z.Name, z.File)
		n := 0
		for _, ok := zp.Next(); ok; _, ok = zp.Next() {
			n++
		}
		f.Close()
		if err := zp.Err(); err != nil || n == 0 {
			t.Errorf("%s: %d records, %v", z.File, n, err)
		}
	}
	if signed != 2 {
		t.Errorf("%d signed zones, want 2", signed)
	}
}
