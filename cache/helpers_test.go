package cache

import (
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/dnswire"
)

// t0 is the time every test stores its entries at.
var t0 = time.Unix(1_700_000_000, 0)

// at returns t0+d as UnixNano, the clock Lookup and AppendReply take.
func at(d time.Duration) int64 { return t0.Add(d).UnixNano() }

// tcpOpts shapes replies for a transport that takes any size.
var tcpOpts = ReplyOptions{MaxSize: 65535, UDPSize: 1232}

func mustRR(t testing.TB, s string) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatalf("dns.NewRR(%q): %v", s, err)
	}
	return rr
}

func mustRRs(t testing.TB, ss []string) []dns.RR {
	t.Helper()
	var rrs []dns.RR
	for _, s := range ss {
		rrs = append(rrs, mustRR(t, s))
	}
	return rrs
}

// newQuery returns a recursive query; edits set EDNS, CD and so on.
func newQuery(name string, qtype uint16, edits ...func(*dns.Msg)) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 0x1234
	for _, e := range edits {
		e(m)
	}
	return m
}

func withEDNS(size uint16, do bool) func(*dns.Msg) {
	return func(m *dns.Msg) { m.SetEdns0(size, do) }
}

func withCD(m *dns.Msg) { m.CheckingDisabled = true }

func withID(id uint16) func(*dns.Msg) { return func(m *dns.Msg) { m.Id = id } }

func mustPack(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	return b
}

// parsed is a query as the fast path sees it.
type parsed struct {
	pkt []byte
	q   dnswire.Query
	key []byte
}

func parse(t testing.TB, m *dns.Msg) *parsed {
	t.Helper()
	p := &parsed{pkt: mustPack(t, m)}
	if err := dnswire.ParseQuery(p.pkt, &p.q); err != nil {
		t.Fatalf("ParseQuery: %v", err)
	}
	p.key = dnswire.AppendKey(nil, p.q.Name, p.q.QType, p.q.QClass, p.q.DO, p.q.CD())
	return p
}

// upstreamReply is an upstream's authoritative-looking reply to q, with an
// OPT record when q had one, so that tests see AA cleared and OPT replaced.
func upstreamReply(t testing.TB, q *dns.Msg, rcode int, answer, ns, extra []string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetRcode(q, rcode)
	m.Authoritative = true
	m.RecursionAvailable = true
	m.Answer = mustRRs(t, answer)
	m.Ns = mustRRs(t, ns)
	m.Extra = mustRRs(t, extra)
	if o := q.IsEdns0(); o != nil {
		m.SetEdns0(4096, o.Do())
	}
	return m
}

// render answers p from e as the fast path does and unpacks the result.
func render(t testing.TB, e *Entry, p *parsed, now int64, opts ReplyOptions) (*dns.Msg, []byte) {
	t.Helper()
	out := e.AppendReply(nil, &p.q, now, opts)
	m := new(dns.Msg)
	if err := m.Unpack(out); err != nil {
		t.Fatalf("reply does not unpack: %v", err)
	}
	return m, out
}

// hit looks query up in c at now and renders the reply; nil on a miss.
func hit(t testing.TB, c *Cache, query *dns.Msg, now int64, opts ReplyOptions) *dns.Msg {
	t.Helper()
	p := parse(t, query)
	e, state := c.Find(p.key, now)
	ok := state == Fresh
	if !ok {
		return nil
	}
	m, _ := render(t, e, p, now, opts)
	return m
}

// records returns every record of m but OPT.
func records(m *dns.Msg) []dns.RR {
	var rrs []dns.RR
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype != dns.TypeOPT {
				rrs = append(rrs, rr)
			}
		}
	}
	return rrs
}

func ttls(m *dns.Msg) []uint32 {
	var out []uint32
	for _, rr := range records(m) {
		out = append(out, rr.Header().Ttl)
	}
	return out
}

func newCache(t testing.TB, cfg Config) *Cache {
	t.Helper()
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 1 << 20
	}
	c, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}
