package dnswire

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func TestParseQuery(t *testing.T) {
	ecsV4 := &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.ParseIP("192.0.2.0").To4()}
	withEDNS := func(size uint16, do bool, opts ...dns.EDNS0) func(*dns.Msg) {
		return func(m *dns.Msg) {
			m.SetEdns0(size, do)
			m.IsEdns0().Option = append(m.IsEdns0().Option, opts...)
		}
	}
	msg := func(name string, qtype uint16, edit ...func(*dns.Msg)) func(testing.TB) []byte {
		return func(t testing.TB) []byte {
			m := newQuery(name, qtype)
			for _, f := range edit {
				f(m)
			}
			return mustPack(t, m)
		}
	}
	bytesOf := func(b []byte) func(testing.TB) []byte { return func(testing.TB) []byte { return b } }
	plainQ := question(labels(7, 3), dns.TypeA, dns.ClassINET)
	ecsData := func(family uint16, src, scope byte, addr ...byte) []byte {
		return append([]byte{byte(family >> 8), byte(family), src, scope}, addr...)
	}

	tests := []struct {
		name  string
		pkt   func(testing.TB) []byte
		err   error
		check func(t *testing.T, pkt []byte, q *Query)
	}{
		{name: "plain", pkt: msg("Example.ORG.", dns.TypeAAAA), check: func(t *testing.T, pkt []byte, q *Query) {
			if q.ID != 0xBEEF || !q.RD() || q.CD() || q.Opcode() != 0 {
				t.Errorf("ID %#x RD %v CD %v opcode %d", q.ID, q.RD(), q.CD(), q.Opcode())
			}
			if !bytes.Equal(q.Name, wireName(t, "Example.ORG.")) {
				t.Errorf("Name %q: case must be kept", q.Name)
			}
			if q.QType != dns.TypeAAAA || q.QClass != dns.ClassINET || q.QEnd != len(pkt) {
				t.Errorf("QType %d QClass %d QEnd %d of %d", q.QType, q.QClass, q.QEnd, len(pkt))
			}
			if q.EDNS || q.UDPSize != 0 || q.DO || q.ECS {
				t.Errorf("EDNS fields set without OPT: %+v", q)
			}
		}},
		{name: "root name", pkt: msg(".", dns.TypeNS), check: func(t *testing.T, pkt []byte, q *Query) {
			if !bytes.Equal(q.Name, []byte{0}) || q.QEnd != HeaderLen+5 {
				t.Errorf("Name %q QEnd %d", q.Name, q.QEnd)
			}
		}},
		{name: "CD set", pkt: msg("example.org.", dns.TypeA, func(m *dns.Msg) { m.CheckingDisabled = true; m.RecursionDesired = false }),
			check: func(t *testing.T, _ []byte, q *Query) {
				if !q.CD() || q.RD() {
					t.Errorf("CD %v RD %v", q.CD(), q.RD())
				}
			}},
		{name: "EDNS with DO", pkt: msg("example.org.", dns.TypeA, withEDNS(1232, true)), check: func(t *testing.T, pkt []byte, q *Query) {
			if !q.EDNS || q.UDPSize != 1232 || !q.DO || q.EDNSVersion != 0 || q.ECS {
				t.Errorf("EDNS %v size %d DO %v version %d ECS %v", q.EDNS, q.UDPSize, q.DO, q.EDNSVersion, q.ECS)
			}
			if q.QEnd != len(pkt)-OPTLen {
				t.Errorf("QEnd %d, want %d", q.QEnd, len(pkt)-OPTLen)
			}
		}},
		{name: "EDNS without DO", pkt: msg("example.org.", dns.TypeA, withEDNS(4096, false)), check: func(t *testing.T, _ []byte, q *Query) {
			if !q.EDNS || q.UDPSize != 4096 || q.DO {
				t.Errorf("EDNS %v size %d DO %v", q.EDNS, q.UDPSize, q.DO)
			}
		}},
		{name: "EDNS with ECS", pkt: msg("example.org.", dns.TypeA, withEDNS(1232, false, ecsV4)), check: func(t *testing.T, _ []byte, q *Query) {
			if !q.EDNS || !q.ECS {
				t.Errorf("EDNS %v ECS %v", q.EDNS, q.ECS)
			}
		}},
		{name: "EDNS with cookie and padding", pkt: msg("example.org.", dns.TypeA, withEDNS(1232, true,
			&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0123456789abcdef"},
			&dns.EDNS0_PADDING{Padding: make([]byte, 20)})),
			check: func(t *testing.T, _ []byte, q *Query) {
				if !q.EDNS || q.ECS || !q.DO {
					t.Errorf("EDNS %v ECS %v DO %v", q.EDNS, q.ECS, q.DO)
				}
			}},
		{name: "EDNS version 1", err: ErrSlowPath, pkt: msg("example.org.", dns.TypeA, withEDNS(1232, false), func(m *dns.Msg) { m.IsEdns0().SetVersion(1) })},
		{name: "malformed ECS family", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ, optRR(1232, 0, option(optionECS, ecsData(3, 0, 0)))))},
		{name: "ECS prefix longer than address", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ, optRR(1232, 0, option(optionECS, ecsData(1, 33, 0, 1, 2, 3, 4, 5)))))},
		{name: "ECS address bytes do not match prefix", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ, optRR(1232, 0, option(optionECS, ecsData(1, 24, 0, 1, 2, 3, 4)))))},
		{name: "ECS short", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ, optRR(1232, 0, option(optionECS, []byte{0, 1, 0}))))},
		{name: "option the full parser checks", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ, optRR(1232, 0, option(dns.EDNS0TCPKEEPALIVE, []byte{1}))))},
		{name: "keepalive with a timeout", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ, optRR(1232, 0, option(dns.EDNS0TCPKEEPALIVE, []byte{0, 1}))))},
		{name: "empty keepalive", pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ, optRR(1232, 0, option(dns.EDNS0TCPKEEPALIVE, nil))))},
		{name: "unknown option", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ, optRR(1232, 0, option(65001, []byte{1, 2}))))},
		{name: "NSID", pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ, optRR(1232, 0x8000, option(dns.EDNS0NSID, nil)))), check: func(t *testing.T, _ []byte, q *Query) {
			if !q.DO || q.ECS {
				t.Errorf("DO %v ECS %v", q.DO, q.ECS)
			}
		}},
		{name: "ECS IPv6 /56", pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ, optRR(1232, 0, option(optionECS, ecsData(2, 56, 0, 0x20, 1, 0xd, 0xb8, 0, 0, 0))))), check: func(t *testing.T, _ []byte, q *Query) {
			if !q.ECS {
				t.Error("ECS not seen")
			}
		}},
		{name: "ECS with scope set", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ, optRR(1232, 0, option(optionECS, ecsData(1, 24, 24, 1, 2, 3)))))},
		{name: "ECS family 0 (dig +subnet=0)", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ, optRR(1232, 0, option(optionECS, ecsData(0, 0, 0)))))},
		{name: "option overruns OPT data", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ, optRR(1232, 0, []byte{0, 10, 0, 9, 1, 2})))},
		{name: "partial option header", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ, optRR(1232, 0, []byte{0, 10})))},
		{name: "QR set", err: ErrSlowPath, pkt: msg("example.org.", dns.TypeA, func(m *dns.Msg) { m.Response = true })},
		{name: "opcode NOTIFY", err: ErrSlowPath, pkt: msg("example.org.", dns.TypeSOA, func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify })},
		{name: "qdcount 0", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 0, 0, 0, 0))},
		{name: "qdcount 2", err: ErrSlowPath, pkt: msg("example.org.", dns.TypeA, func(m *dns.Msg) {
			m.Question = append(m.Question, dns.Question{Name: "example.com.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
		})},
		{name: "ancount 1", err: ErrSlowPath, pkt: msg("example.org.", dns.TypeA, func(m *dns.Msg) { m.Answer = []dns.RR{mustRR(t, "example.org. 60 IN A 192.0.2.1")} })},
		{name: "nscount 1", err: ErrSlowPath, pkt: msg("example.org.", dns.TypeA, func(m *dns.Msg) {
			m.Ns = []dns.RR{mustRR(t, "example.org. 60 IN NS ns.example.org.")}
		})},
		{name: "arcount 2", err: ErrSlowPath, pkt: msg("example.org.", dns.TypeA, withEDNS(1232, false), func(m *dns.Msg) {
			m.Extra = append(m.Extra, mustRR(t, "example.org. 60 IN A 192.0.2.1"))
		})},
		{name: "additional record not OPT", err: ErrSlowPath, pkt: msg("example.org.", dns.TypeA, func(m *dns.Msg) {
			m.Extra = []dns.RR{mustRR(t, "example.org. 60 IN A 192.0.2.1")}
		})},
		{name: "OPT not owned by root", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ, []byte{1, 'a'}, optRR(1232, 0, nil)[1:]))},
		{name: "OPT missing", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ))},
		{name: "OPT cut short", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ, optRR(1232, 0, nil)[:7]))},
		{name: "compression pointer in question", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 0, []byte{3, 'w', 'w', 'w', 0xC0, 12}, question(nil, 1, 1)))},
		{name: "shorter than header", err: ErrShort, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 0)[:11])},
		{name: "empty", err: ErrShort, pkt: bytesOf(nil)},
		{name: "header only", err: ErrFormat, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 0))},
		{name: "name cut in a label", err: ErrFormat, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 0, []byte{7, 'e', 'x', 'a'}))},
		{name: "name without root label", err: ErrFormat, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 0, labels(7, 3)[:12]))},
		{name: "qclass missing", err: ErrFormat, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 0, plainQ[:len(plainQ)-2]))},
		{name: "qtype cut", err: ErrFormat, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 0, plainQ[:len(plainQ)-3]))},
		{name: "label of 64", err: ErrFormat, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 0, question(labels(64), 1, 1)))},
		{name: "reserved label type 0x80", err: ErrFormat, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 0, question(append([]byte{0x81, 'a'}, 0), 1, 1)))},
		{name: "label of 63", pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 0, question(labels(63, 63), 1, 1)))},
		{name: "name of 255", pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 0, question(labels(63, 63, 63, 61), 1, 1))), check: func(t *testing.T, _ []byte, q *Query) {
			if len(q.Name) != 255 {
				t.Errorf("name length %d", len(q.Name))
			}
		}},
		{name: "name of 256", err: ErrFormat, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 0, question(labels(63, 63, 63, 62), 1, 1)))},
		{name: "name of 320", err: ErrFormat, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 0, question(labels(63, 63, 63, 63, 63), 1, 1)))},
		{name: "trailing garbage", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 0, plainQ, []byte{0xde, 0xad}))},
		{name: "trailing garbage after OPT", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ, optRR(1232, 0, nil), []byte{0}))},
		{name: "OPT rdata longer than packet", err: ErrSlowPath, pkt: bytesOf(rawMsg(FlagRD, 1, 0, 0, 1, plainQ, optRR(1232, 0, option(optionCookie, make([]byte, 8)))[:20]))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkt := tt.pkt(t)
			var q Query
			err := ParseQuery(pkt, &q)
			if !errors.Is(err, tt.err) {
				t.Fatalf("ParseQuery = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if agreeErr := agreeWithMiekg(pkt, &q); agreeErr != nil {
				t.Error(agreeErr)
			}
			if tt.check != nil {
				tt.check(t, pkt, &q)
			}
		})
	}
}

// TestParseQueryResetsEDNS checks that a Query reused for a packet without
// OPT does not keep the EDNS fields of the previous one.
func TestParseQueryResetsEDNS(t *testing.T) {
	m := newQuery("example.org.", dns.TypeA)
	m.SetEdns0(1232, true)
	var q Query
	if err := ParseQuery(mustPack(t, m), &q); err != nil || !q.EDNS {
		t.Fatalf("ParseQuery = %v, EDNS %v", err, q.EDNS)
	}
	if err := ParseQuery(mustPack(t, newQuery("example.org.", dns.TypeA)), &q); err != nil {
		t.Fatal(err)
	}
	if q.EDNS || q.DO || q.UDPSize != 0 || q.ECS {
		t.Errorf("stale EDNS fields: %+v", q)
	}
}

// TestParseQueryPrefixes checks every strict prefix of valid queries: none
// is accepted, and the error says what is wrong.
func TestParseQueryPrefixes(t *testing.T) {
	plain := mustPack(t, newQuery("www.Example.org.", dns.TypeA))
	edns := newQuery("www.Example.org.", dns.TypeA)
	edns.SetEdns0(1232, true)
	ednsPkt := mustPack(t, edns)
	for _, pkt := range [][]byte{plain, ednsPkt} {
		qEnd := len(plain)
		for n := 0; n < len(pkt); n++ {
			var q Query
			err := ParseQuery(pkt[:n], &q)
			var want error
			switch {
			case n < HeaderLen:
				want = ErrShort
			case n < qEnd:
				want = ErrFormat
			default:
				want = ErrSlowPath // the OPT record is cut
			}
			if !errors.Is(err, want) {
				t.Errorf("prefix %d of %d: %v, want %v", n, len(pkt), err, want)
			}
		}
	}
}

func TestAppendKey(t *testing.T) {
	name := wireName(t, "WwW.Example.ORG.")
	orig := append([]byte(nil), name...)
	lower := wireName(t, "www.example.org.")

	t.Run("lower-cases and appends", func(t *testing.T) {
		prefix := []byte("prefix")
		k := AppendKey(prefix, name, dns.TypeAAAA, dns.ClassINET, false, false)
		want := append([]byte("prefix"), lower...)
		want = append(want, 0, 28, 0, 1, 0)
		if !bytes.Equal(k, want) {
			t.Errorf("key %q, want %q", k, want)
		}
		if !bytes.Equal(name, orig) {
			t.Errorf("AppendKey changed its input: %q", name)
		}
		if len(k)-len(prefix) > MaxKeyLen {
			t.Errorf("key longer than MaxKeyLen")
		}
	})
	t.Run("case-insensitive", func(t *testing.T) {
		a := AppendKey(nil, name, dns.TypeA, dns.ClassINET, false, false)
		b := AppendKey(nil, lower, dns.TypeA, dns.ClassINET, false, false)
		if !bytes.Equal(a, b) {
			t.Errorf("%q != %q", a, b)
		}
	})
	t.Run("bytes outside A-Z kept", func(t *testing.T) {
		odd := []byte{5, '@', '[', '`', '{', 0xC1, 0}
		k := AppendKey(nil, odd, 1, 1, false, false)
		if !bytes.Equal(k[:len(odd)], odd) {
			t.Errorf("key %q changed bytes that are not upper-case letters", k)
		}
	})
	t.Run("DO, CD, type and class separate keys", func(t *testing.T) {
		seen := map[string]string{}
		for _, c := range []struct {
			qtype, qclass uint16
			do, cd        bool
		}{
			{1, 1, false, false}, {1, 1, true, false}, {1, 1, false, true}, {1, 1, true, true},
			{28, 1, false, false}, {1, 3, false, false}, {256, 1, false, false},
		} {
			k := string(AppendKey(nil, name, c.qtype, c.qclass, c.do, c.cd))
			desc := fmt.Sprintf("%+v", c)
			if prev, dup := seen[k]; dup {
				t.Errorf("%s and %s share a key", prev, desc)
			}
			seen[k] = desc
		}
	})
	t.Run("max length", func(t *testing.T) {
		long := labels(63, 63, 63, 61)
		if k := AppendKey(nil, long, 1, 1, true, true); len(k) != MaxKeyLen {
			t.Errorf("key of a 255-byte name is %d bytes, want %d", len(k), MaxKeyLen)
		}
	})
}

// randomName returns a random name in presentation form whose wire form
// fits in 255 bytes; its labels mix cases and, now and then, bytes that
// need escaping.
func randomName(r *rand.Rand) string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
	if r.IntN(50) == 0 {
		return "."
	}
	var sb strings.Builder
	wire := 1
	for n := 1 + r.IntN(6); n > 0; n-- {
		l := 1 + r.IntN(20)
		if r.IntN(20) == 0 {
			l = 63
		}
		if wire+1+l > MaxNameLen {
			break
		}
		wire += 1 + l
		for range l {
			var c byte
			if r.IntN(15) == 0 {
				c = byte(r.IntN(256))
			} else {
				c = letters[r.IntN(len(letters))]
			}
			switch {
			case strings.IndexByte(`.;()"\@ `, c) >= 0 || c == '\'':
				sb.WriteByte('\\')
				sb.WriteByte(c)
			case c < ' ' || c > '~':
				fmt.Fprintf(&sb, "\\%03d", c)
			default:
				sb.WriteByte(c)
			}
		}
		sb.WriteByte('.')
	}
	if sb.Len() == 0 {
		return "a."
	}
	return sb.String()
}

// randomQuery returns a query that ParseQuery must accept.
func randomQuery(r *rand.Rand) *dns.Msg {
	m := new(dns.Msg)
	m.Id = uint16(r.Uint32())
	m.Question = []dns.Question{{Name: randomName(r), Qtype: uint16(r.Uint32()), Qclass: dns.ClassINET}}
	if r.IntN(4) == 0 {
		m.Question[0].Qclass = uint16(r.Uint32())
	}
	m.RecursionDesired = r.IntN(2) == 0
	m.CheckingDisabled = r.IntN(2) == 0
	m.AuthenticatedData = r.IntN(2) == 0
	if r.IntN(2) == 0 {
		m.SetEdns0(uint16(r.Uint32()), r.IntN(2) == 0)
		opt := m.IsEdns0()
		if r.IntN(3) == 0 {
			opt.Option = append(opt.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
		}
		if r.IntN(3) == 0 {
			ip := net.IPv4(byte(r.IntN(256)), 2, 3, 4).To4()
			opt.Option = append(opt.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: uint8(r.IntN(33)), Address: ip})
		}
		if r.IntN(3) == 0 {
			opt.Option = append(opt.Option, &dns.EDNS0_PADDING{Padding: make([]byte, r.IntN(64))})
		}
	}
	return m
}

// TestParseQueryAgreesWithMiekg packs random queries with miekg/dns and
// checks that ParseQuery reads what miekg's Unpack reads.
func TestParseQueryAgreesWithMiekg(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		m := randomQuery(r)
		pkt, err := m.Pack()
		if err != nil {
			t.Fatalf("packing %v: %v", m.Question, err)
		}
		var q Query
		if err := ParseQuery(pkt, &q); err != nil {
			t.Fatalf("query %d %v: ParseQuery = %v", i, m.Question, err)
		}
		if err := agreeWithMiekg(pkt, &q); err != nil {
			t.Fatalf("query %d %v: %v", i, m.Question, err)
		}
		key := AppendKey(nil, q.Name, q.QType, q.QClass, q.DO, q.CD())
		if want := asciiLower(q.Name); !bytes.Equal(key[:len(want)], want) {
			t.Fatalf("query %d: key %q does not start with the lower-cased name %q", i, key, want)
		}
		if len(key) != len(q.Name)+5 {
			t.Fatalf("query %d: key length %d for a name of %d", i, len(key), len(q.Name))
		}
	}
}

func asciiLower(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		out[i] = c
	}
	return out
}

func TestReadHeaderID(t *testing.T) {
	pkt := mustPack(t, newQuery("example.org.", dns.TypeA))
	if id, ok := ReadHeaderID(pkt); !ok || id != 0xBEEF {
		t.Errorf("ReadHeaderID = %#x, %v", id, ok)
	}
	if _, ok := ReadHeaderID(pkt[:HeaderLen-1]); ok {
		t.Error("ReadHeaderID accepted a short packet")
	}
}

func TestInZone(t *testing.T) {
	w := func(s string) []byte { return wireName(t, s) }
	for _, tc := range []struct {
		name, zone string
		want       bool
	}{
		{"web.team-a.svc.cluster.local.", "team-a.svc.cluster.local.", true},
		{"team-a.svc.cluster.local.", "team-a.svc.cluster.local.", true},
		{"xteam-a.svc.cluster.local.", "team-a.svc.cluster.local.", false},
		{"svc.cluster.local.", "team-a.svc.cluster.local.", false},
		{"anything.", ".", true},
		{"a.b.c.", "b.c.", true},
	} {
		if got := InZone(w(tc.name), w(tc.zone)); got != tc.want {
			t.Errorf("InZone(%s, %s) = %v, want %v", tc.name, tc.zone, got, tc.want)
		}
	}
}
