package upstream

import (
	"testing"

	"github.com/miekg/dns"
)

func packed(t testing.TB, m *dns.Msg) []byte {
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCheckReply(t *testing.T) {
	q := query("Example.ORG.", dns.TypeA)
	q.Id = 0x1234
	reply := func(mod func(*dns.Msg)) []byte {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Question[0].Name = "example.org." // upstream changed the case
		mod(m)
		return packed(t, m)
	}
	good := reply(func(*dns.Msg) {})
	tests := []struct {
		name       string
		buf        []byte
		headerOnly bool
		want       verdict
		wantTC     bool
	}{
		{"good", good, false, replyOK, false},
		{"wrong id", reply(func(m *dns.Msg) { m.Id++ }), false, replyMismatch, false},
		{"wrong name", reply(func(m *dns.Msg) { m.Question[0].Name = "example.com." }), false, replyMismatch, false},
		{"wrong type", reply(func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeAAAA }), false, replyMismatch, false},
		{"wrong class", reply(func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }), false, replyMismatch, false},
		{"no question", reply(func(m *dns.Msg) { m.Question = nil }), false, replyMismatch, false},
		{"not a response", reply(func(m *dns.Msg) { m.Response = false }), false, replyMismatch, false},
		{"short", good[:11], false, replyMalformed, false},
		{"cut body", good[:len(good)-1], false, replyMalformed, false},
		{"cut body, TC", func() []byte { b := reply(func(m *dns.Msg) { m.Truncated = true }); return b[:len(b)-1] }(), false, replyOK, true},
		{"probe: header only", append(good[:12:12], 0xff), true, replyOK, false},
		{"probe: wrong id", reply(func(m *dns.Msg) { m.Id++ }), true, replyMismatch, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, v := checkReply(append([]byte(nil), tt.buf...), q, tt.headerOnly)
			if v != tt.want {
				t.Fatalf("verdict = %d, want %d", v, tt.want)
			}
			if v == replyOK && (m.Id != q.Id || m.Truncated != tt.wantTC) {
				t.Errorf("msg id=%d tc=%v", m.Id, m.Truncated)
			}
		})
	}
}

// FuzzCheckReply feeds arbitrary bytes from an "upstream" to the reply
// checker: it must never panic and must never accept a reply to another
// query.
func FuzzCheckReply(f *testing.F) {
	q := query("example.org.", dns.TypeA)
	q.Id = 0xbeef
	ok := new(dns.Msg)
	ok.SetReply(q)
	f.Add(packed(f, ok))
	ok.Truncated = true
	f.Add(packed(f, ok))
	ok.Id = 1
	f.Add(packed(f, ok))
	f.Add([]byte{0xbe, 0xef, 0x80})
	f.Fuzz(func(t *testing.T, buf []byte) {
		for _, headerOnly := range []bool{false, true} {
			m, v := checkReply(append([]byte(nil), buf...), q, headerOnly)
			if v != replyOK {
				continue
			}
			if m == nil || m.Id != q.Id || !m.Response {
				t.Fatalf("accepted %v", m)
			}
			if !headerOnly && !m.Truncated && !sameQuestion(m.Question, q.Question) {
				t.Fatalf("accepted a reply to another question: %v", m.Question)
			}
		}
	})
}
