package dnswire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/miekg/dns"
)

// reply builds a reply to a query for name and qtype with the given
// sections in zone-file syntax.
func reply(t testing.TB, name string, qtype uint16, rcode int, answer, ns, extra []string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetRcode(newQuery(name, qtype), rcode)
	for _, s := range answer {
		m.Answer = append(m.Answer, mustRR(t, s))
	}
	for _, s := range ns {
		m.Ns = append(m.Ns, mustRR(t, s))
	}
	for _, s := range extra {
		m.Extra = append(m.Extra, mustRR(t, s))
	}
	return m
}

func replyCases(t testing.TB) map[string]*dns.Msg {
	positive := reply(t, "www.example.org.", dns.TypeA, dns.RcodeSuccess,
		[]string{
			"www.example.org. 300 IN CNAME web.example.org.",
			"web.example.org. 60 IN A 192.0.2.1",
			"web.example.org. 61 IN A 192.0.2.2",
		},
		[]string{
			"example.org. 3600 IN NS ns1.example.org.",
			"example.org. 3601 IN NS ns2.example.net.",
		},
		[]string{
			"ns1.example.org. 120 IN A 192.0.2.53",
			"ns1.example.org. 121 IN AAAA 2001:db8::53",
		})
	positive.SetEdns0(1232, true)

	optFirst := reply(t, "example.org.", dns.TypeMX, dns.RcodeSuccess,
		[]string{
			"example.org. 300 IN MX 10 mx1.example.org.",
			"example.org. 301 IN MX 20 mx2.Example.org.",
		}, nil, []string{"mx1.example.org. 30 IN A 192.0.2.25"})
	optFirst.SetEdns0(4096, false)
	optFirst.Extra = append([]dns.RR{optFirst.Extra[1]}, optFirst.Extra[0]) // OPT, then A

	return map[string]*dns.Msg{
		"positive with OPT": positive,
		"MX with OPT first": optFirst,
		"SRV and TXT": reply(t, "_sip._udp.example.org.", dns.TypeSRV, dns.RcodeSuccess,
			[]string{
				"_sip._udp.example.org. 86400 IN SRV 0 5 5060 sip.example.org.",
				`_sip._udp.example.org. 7 IN TXT "hello" "world"`,
			}, nil, []string{"sip.example.org. 42 IN AAAA 2001:db8::5"}),
		"NXDOMAIN": reply(t, "nope.example.org.", dns.TypeA, dns.RcodeNameError, nil,
			[]string{"example.org. 3600 IN SOA ns1.example.org. hostmaster.example.org. 1 7200 900 1209600 60"}, nil),
		"empty": reply(t, "example.org.", dns.TypeA, dns.RcodeServerFailure, nil, nil, nil),
		"root": reply(t, ".", dns.TypeNS, dns.RcodeSuccess,
			[]string{". 518400 IN NS a.root-servers.net.", ". 518401 IN NS b.root-servers.net."}, nil, nil),
	}
}

// TestTTLOffsets checks that TTLOffsets finds exactly the TTL fields: one
// per record other than OPT, in order, compressed or not. It writes a
// distinct value at every offset and reads the records back with miekg.
func TestTTLOffsets(t *testing.T) {
	for name, m := range replyCases(t) {
		for _, compress := range []bool{true, false} {
			m := m.Copy()
			m.Compress = compress
			t.Run(name+map[bool]string{true: "/compressed", false: "/uncompressed"}[compress], func(t *testing.T) {
				pkt := mustPack(t, m)
				offs, err := TTLOffsets(pkt, nil)
				if err != nil {
					t.Fatalf("TTLOffsets: %v", err)
				}
				if err := checkTTLOffsets(pkt, offs); err != nil {
					t.Fatal(err)
				}
				for i, off := range offs {
					binary.BigEndian.PutUint32(pkt[off:], uint32(100000+i))
				}
				var got dns.Msg
				if err := got.Unpack(pkt); err != nil {
					t.Fatalf("unpacking after writing TTLs: %v", err)
				}
				i := 0
				for _, sec := range [][]dns.RR{got.Answer, got.Ns, got.Extra} {
					for _, rr := range sec {
						if rr.Header().Rrtype == dns.TypeOPT {
							if o := m.IsEdns0(); o == nil || rr.Header().Ttl != o.Hdr.Ttl {
								t.Errorf("OPT TTL word changed: %#x", rr.Header().Ttl)
							}
							continue
						}
						if rr.Header().Ttl != uint32(100000+i) {
							t.Errorf("record %d %s: TTL %d, want %d", i, rr, rr.Header().Ttl, 100000+i)
						}
						i++
					}
				}
				if i != len(offs) {
					t.Errorf("%d records, %d offsets", i, len(offs))
				}
			})
		}
	}
}

func TestTTLOffsetsAppends(t *testing.T) {
	pkt := mustPack(t, replyCases(t)["NXDOMAIN"])
	dst := []uint16{7}
	dst, err := TTLOffsets(pkt, dst)
	if err != nil || len(dst) != 2 || dst[0] != 7 {
		t.Errorf("TTLOffsets = %v, %v", dst, err)
	}
}

func TestTTLOffsetsErrors(t *testing.T) {
	t.Run("every strict prefix", func(t *testing.T) {
		for name, m := range replyCases(t) {
			pkt := mustPack(t, m)
			for n := range len(pkt) {
				_, err := TTLOffsets(pkt[:n], nil)
				if err == nil {
					t.Errorf("%s: prefix %d of %d accepted", name, n, len(pkt))
				}
				if n < HeaderLen && !errors.Is(err, ErrShort) {
					t.Errorf("%s: prefix %d: %v, want ErrShort", name, n, err)
				}
			}
		}
	})
	t.Run("too long", func(t *testing.T) {
		pkt := make([]byte, 0x10000)
		if _, err := TTLOffsets(pkt, nil); !errors.Is(err, ErrFormat) {
			t.Errorf("65536-byte message: %v", err)
		}
	})
	t.Run("bad label", func(t *testing.T) {
		pkt := rawMsg(FlagQR, 0, 1, 0, 0, []byte{0x41, 0})
		if _, err := TTLOffsets(pkt, nil); !errors.Is(err, ErrFormat) {
			t.Errorf("label type 0x40: %v", err)
		}
	})
	t.Run("name without end", func(t *testing.T) {
		// 300 one-byte labels and no root label: the walk stops.
		body := bytes.Repeat([]byte{1, 'a'}, 300)
		pkt := rawMsg(FlagQR, 0, 1, 0, 0, body, make([]byte, 10))
		if _, err := TTLOffsets(pkt, nil); !errors.Is(err, ErrFormat) {
			t.Errorf("unterminated name: %v", err)
		}
	})
	t.Run("pointer cut", func(t *testing.T) {
		pkt := rawMsg(FlagQR, 0, 1, 0, 0, []byte{0xC0})
		if _, err := TTLOffsets(pkt, nil); !errors.Is(err, ErrFormat) {
			t.Errorf("half a pointer: %v", err)
		}
	})
	t.Run("rdlength past the end", func(t *testing.T) {
		pkt := mustPack(t, replyCases(t)["NXDOMAIN"])
		offs, err := TTLOffsets(pkt, nil)
		if err != nil {
			t.Fatal(err)
		}
		binary.BigEndian.PutUint16(pkt[offs[0]+4:], 0xFFF0) // the SOA's RDLENGTH follows its TTL
		if _, err := TTLOffsets(pkt, nil); !errors.Is(err, ErrFormat) {
			t.Errorf("overlong rdlength: %v", err)
		}
	})
}

func TestAppendOPT(t *testing.T) {
	for _, c := range []struct {
		size uint16
		do   bool
	}{{1232, true}, {4096, false}, {512, false}} {
		prefix := []byte("xyz")
		m := reply(t, "example.org.", dns.TypeA, dns.RcodeSuccess, []string{"example.org. 60 IN A 192.0.2.1"}, nil, nil)
		dst := append(prefix, mustPack(t, m)...)
		dst = AppendOPT(dst, len(prefix), c.size, 0, c.do)
		if !bytes.Equal(dst[:3], []byte("xyz")) {
			t.Fatalf("prefix overwritten")
		}
		var got dns.Msg
		if err := got.Unpack(dst[3:]); err != nil {
			t.Fatalf("Unpack: %v", err)
		}
		opt := got.IsEdns0()
		if opt == nil || opt.UDPSize() != c.size || opt.Do() != c.do || opt.Version() != 0 || len(opt.Option) != 0 || opt.ExtendedRcode() != 0 {
			t.Errorf("OPT %v, want size %d DO %v", opt, c.size, c.do)
		}
		if len(got.Extra) != 1 || len(got.Answer) != 1 {
			t.Errorf("sections %d/%d", len(got.Answer), len(got.Extra))
		}
	}
}

func TestTruncateRRsets(t *testing.T) {
	var as, glue []string
	for i := range 20 {
		as = append(as, fmt.Sprintf("edge.example.net. 60 IN A 192.0.2.%d", i+1))
		glue = append(glue, fmt.Sprintf("ns%d.example.net. 60 IN A 198.51.100.%d", i, i+1))
	}
	cname := "www.example.org. 60 IN CNAME edge.example.net."
	soa := "example.org. 60 IN SOA ns1.example.org. h.example.org. 1 7200 900 1209600 60"
	for _, tc := range []struct {
		name                   string
		answer, ns, extra      []string
		max                    int
		wantAN, wantNS, wantAR int
		wantTC                 bool
	}{
		{"fits: untouched", []string{cname}, nil, nil, 512, 1, 0, 0, false},
		{"second answer RRset does not fit", append([]string{cname}, as...), nil, nil, 200, 1, 0, 0, true},
		{"first answer RRset does not fit", as, nil, nil, 100, 0, 0, 0, true},
		{"authority does not fit", []string{cname}, []string{soa}, nil, 90, 1, 0, 0, true},
		{"additional partly fits: no TC", []string{cname}, nil, glue, 200, 1, 0, 6, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := reply(t, "www.example.org.", dns.TypeA, dns.RcodeSuccess, tc.answer, tc.ns, tc.extra)
			m.Compress = true
			pkt := mustPack(t, m)
			qEnd := HeaderLen + len(wireName(t, "www.example.org.")) + 4
			out := TruncateRRsets(pkt, qEnd, tc.max)
			if len(out) > tc.max && len(out) != len(pkt) {
				t.Fatalf("%d bytes, above %d", len(out), tc.max)
			}
			var got dns.Msg
			if err := got.Unpack(out); err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			if len(got.Answer) != tc.wantAN || len(got.Ns) != tc.wantNS || len(got.Extra) != tc.wantAR || got.Truncated != tc.wantTC {
				t.Errorf("%d/%d/%d records, TC %v; want %d/%d/%d, TC %v", len(got.Answer), len(got.Ns), len(got.Extra),
					got.Truncated, tc.wantAN, tc.wantNS, tc.wantAR, tc.wantTC)
			}
		})
	}
}

func TestNamesEqual(t *testing.T) {
	// "www.example.org" at 12, "WWW.Example.ORG" spelled out at 29, a
	// pointer to 12 at 46, "mail" + pointer to "example.org" at 48.
	msg := make([]byte, 12)
	msg = append(msg, 3, 'w', 'w', 'w', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'o', 'r', 'g', 0)
	msg = append(msg, 3, 'W', 'W', 'W', 7, 'E', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'O', 'R', 'G', 0)
	msg = append(msg, 0xC0, 12)
	msg = append(msg, 4, 'm', 'a', 'i', 'l', 0xC0, 16)
	loop := len(msg)
	msg = append(msg, 0xC0, byte(loop)) // points at itself
	for _, tc := range []struct {
		a, b int
		want bool
	}{
		{12, 29, true}, {12, 46, true}, {29, 46, true}, {12, 48, false}, {46, 48, false}, {12, loop, false}, {loop, loop, false},
	} {
		if got := namesEqual(msg, tc.a, tc.b); got != tc.want {
			t.Errorf("namesEqual(%d, %d) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestAppendError(t *testing.T) {
	for _, c := range []struct {
		name    string
		edit    func(*dns.Msg)
		rcode   int
		wantOPT bool
	}{
		{"refused", func(*dns.Msg) {}, dns.RcodeRefused, false},
		// RFC 6891 section 6.1.1: an EDNS query gets an OPT back, whatever
		// the RCODE.
		{"servfail with EDNS and CD", func(m *dns.Msg) { m.SetEdns0(1232, true); m.CheckingDisabled = true }, dns.RcodeServerFailure, true},
		{"no RD", func(m *dns.Msg) { m.RecursionDesired = false; m.AuthenticatedData = true }, dns.RcodeRefused, false},
		{"BADVERS needs the extended RCODE", func(m *dns.Msg) { m.SetEdns0(1232, false) }, dns.RcodeBadVers, true},
		{"NOTIMP echoes the opcode", func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }, dns.RcodeNotImplemented, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newQuery("WWW.example.Org.", dns.TypeAAAA)
			c.edit(m)
			req := mustPack(t, m)
			q := Query{ID: m.Id, Flags: Flags(req), Name: wireName(t, m.Question[0].Name), QType: dns.TypeAAAA, QClass: dns.ClassINET}
			if o := m.IsEdns0(); o != nil {
				q.EDNS, q.DO, q.UDPSize = true, o.Do(), o.UDPSize()
			}
			dst := AppendError([]byte("ab"), &q, c.rcode, 1232)
			var got dns.Msg
			if err := got.Unpack(dst[2:]); err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			wantRA := c.rcode != dns.RcodeNotImplemented && c.rcode != dns.RcodeFormatError
			if !got.Response || got.Rcode != c.rcode || got.Id != m.Id || got.RecursionAvailable != wantRA || got.Opcode != m.Opcode ||
				got.RecursionDesired != m.RecursionDesired || got.CheckingDisabled != m.CheckingDisabled ||
				got.Authoritative || got.AuthenticatedData || got.Truncated {
				t.Errorf("header %+v", got.MsgHdr)
			}
			if len(got.Question) != 1 || got.Question[0] != m.Question[0] {
				t.Errorf("question %v, want %v", got.Question, m.Question)
			}
			if len(got.Answer)+len(got.Ns) != 0 {
				t.Errorf("records in an error reply: %v", &got)
			}
			opt := got.IsEdns0()
			if (opt != nil) != c.wantOPT || len(got.Extra) > 1 {
				t.Errorf("OPT %v, want one: %v", opt, c.wantOPT)
			}
			if opt != nil && (opt.UDPSize() != 1232 || opt.Do() != m.IsEdns0().Do()) {
				t.Errorf("OPT %v: want our size and the query's DO", opt)
			}
		})
	}
	// A query whose question could not be read: header only.
	out := AppendError(nil, &Query{ID: 7, Flags: FlagRD}, dns.RcodeFormatError, 1232)
	var got dns.Msg
	if err := got.Unpack(out); err != nil || len(got.Question) != 0 || got.Rcode != dns.RcodeFormatError || got.Id != 7 {
		t.Errorf("header-only FORMERR: %v, %v", &got, err)
	}
}

func TestHeaderAccessors(t *testing.T) {
	pkt := mustPack(t, reply(t, "example.org.", dns.TypeA, dns.RcodeNameError, nil, nil, nil))
	SetID(pkt, 0x0102)
	if id, _ := ReadHeaderID(pkt); id != 0x0102 {
		t.Errorf("ID %#x", id)
	}
	if Rcode(pkt) != dns.RcodeNameError {
		t.Errorf("Rcode %d", Rcode(pkt))
	}
	SetFlags(pkt, Flags(pkt)|FlagAA)
	var m dns.Msg
	if err := m.Unpack(pkt); err != nil || !m.Authoritative || m.Rcode != dns.RcodeNameError {
		t.Errorf("after SetFlags: %v %v", err, m.MsgHdr)
	}
}
