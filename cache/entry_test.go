package cache

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/dnswire"
)

const soa3600min60 = "example.org. 3600 IN SOA ns1.example.org. hostmaster.example.org. 1 7200 900 1209600 60"

func TestTTLCountdown(t *testing.T) {
	c := newCache(t, Config{})
	q := newQuery("example.org.", dns.TypeA, withEDNS(1232, false))
	p := parse(t, q)
	resp := upstreamReply(t, q, dns.RcodeSuccess,
		[]string{"example.org. 300 IN A 192.0.2.1", "example.org. 300 IN A 192.0.2.2"},
		[]string{"example.org. 300 IN NS ns1.example.org."},
		[]string{"ns1.example.org. 300 IN A 192.0.2.53"})
	e, err := c.Store(p.key, resp, t0)
	if err != nil || e == nil {
		t.Fatalf("Store = %v, %v", e, err)
	}
	if e.Kind() != KindPositive {
		t.Errorf("kind %v", e.Kind())
	}

	for _, tc := range []struct {
		after time.Duration
		ttl   uint32
	}{
		{0, 300},
		{999 * time.Millisecond, 300},
		{time.Second, 299},
		{100 * time.Second, 200},
		{299*time.Second + 999*time.Millisecond, 1},
		{-10 * time.Second, 300}, // a clock stepped back does not raise TTLs
	} {
		t.Run(fmt.Sprint(tc.after), func(t *testing.T) {
			m := hit(t, c, q, at(tc.after), tcpOpts)
			if m == nil {
				t.Fatal("miss")
			}
			got := ttls(m)
			if len(got) != 4 {
				t.Fatalf("%d records, want 4", len(got))
			}
			for i, v := range got {
				if v != tc.ttl {
					t.Errorf("record %d TTL %d, want %d", i, v, tc.ttl)
				}
			}
		})
	}
	if got := e.TTL(at(100 * time.Second)); got != 200*time.Second {
		t.Errorf("TTL at +100s = %v", got)
	}
	if !e.Fresh(at(300*time.Second - 1)) {
		t.Error("not fresh 1ns before expiry")
	}
	if e.Fresh(at(300 * time.Second)) {
		t.Error("fresh at t0+300s")
	}
	if hit(t, c, q, at(300*time.Second), tcpOpts) != nil {
		t.Error("Lookup hit at t0+300s")
	}
	if _, ok := c.Get(p.key); !ok {
		t.Error("Get must still return the expired entry")
	}
}

func TestClamp(t *testing.T) {
	tests := []struct {
		name       string
		min, max   time.Duration
		answerTTLs []uint32
		entryTTL   time.Duration
		served     []uint32
	}{
		{"no bounds", 0, 0, []uint32{300, 600}, 300 * time.Second, []uint32{300, 600}},
		{"raised to min", time.Minute, time.Hour, []uint32{10}, time.Minute, []uint32{60}},
		{"lowered to max", time.Minute, time.Hour, []uint32{86400, 7200}, time.Hour, []uint32{3600, 3600}},
		{"each record clamped", time.Minute, time.Hour, []uint32{86400, 100}, 100 * time.Second, []uint32{3600, 100}},
		{"max only", 0, 30 * time.Second, []uint32{300}, 30 * time.Second, []uint32{30}},
		{"fractional bounds truncated to seconds", 1500 * time.Millisecond, 0, []uint32{1}, time.Second, []uint32{1}},
		{"TTL 0 raised by a min", 5 * time.Second, 0, []uint32{0}, 5 * time.Second, []uint32{5}},
		// RFC 2181 allows 68 years; an entry holds 49 days (most resolvers
		// cap at a day or a week).
		{"huge TTL without max", 0, 0, []uint32{1<<32 - 1}, 4294967 * time.Second, []uint32{4294967}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCache(t, Config{Policy: Policy{MinTTL: tt.min, MaxTTL: tt.max}})
			q := newQuery("example.org.", dns.TypeA)
			var answer []string
			for i, v := range tt.answerTTLs {
				answer = append(answer, fmt.Sprintf("example.org. %d IN A 192.0.2.%d", v, i+1))
			}
			e, err := c.Store(parse(t, q).key, upstreamReply(t, q, dns.RcodeSuccess, answer, nil, nil), t0)
			if err != nil || e == nil {
				t.Fatalf("Store = %v, %v", e, err)
			}
			if got := e.TTL(at(0)); got != tt.entryTTL {
				t.Errorf("entry TTL %v, want %v", got, tt.entryTTL)
			}
			m := hit(t, c, q, at(0), tcpOpts)
			if m == nil {
				t.Fatal("miss")
			}
			if got := ttls(m); !slices.Equal(got, tt.served) {
				t.Errorf("served TTLs %v, want %v", got, tt.served)
			}
			if hit(t, c, q, at(tt.entryTTL), tcpOpts) != nil {
				t.Errorf("hit at expiry")
			}
		})
	}
}

func TestNegative(t *testing.T) {
	tests := []struct {
		name     string
		policy   Policy
		qname    string
		rcode    int
		answer   []string
		ns       []string
		kind     Kind
		entryTTL time.Duration // 0: not cached
	}{
		{name: "NXDOMAIN", qname: "nope.example.org.", rcode: dns.RcodeNameError, ns: []string{soa3600min60},
			kind: KindNXDomain, entryTTL: time.Minute},
		{name: "NODATA", qname: "example.org.", rcode: dns.RcodeSuccess, ns: []string{soa3600min60},
			kind: KindNoData, entryTTL: time.Minute},
		{name: "NXDOMAIN capped by NegativeTTL", policy: Policy{NegativeTTL: 30 * time.Second},
			qname: "nope.example.org.", rcode: dns.RcodeNameError, ns: []string{soa3600min60},
			kind: KindNXDomain, entryTTL: 30 * time.Second},
		{name: "NODATA capped by NegativeTTL", policy: Policy{NegativeTTL: 30 * time.Second},
			qname: "example.org.", rcode: dns.RcodeSuccess, ns: []string{soa3600min60},
			kind: KindNoData, entryTTL: 30 * time.Second},
		{name: "SOA TTL below MINIMUM", qname: "nope.example.org.", rcode: dns.RcodeNameError,
			ns:   []string{"example.org. 30 IN SOA ns1.example.org. hostmaster.example.org. 1 7200 900 1209600 60"},
			kind: KindNXDomain, entryTTL: 30 * time.Second},
		{name: "NegativeTTL larger than SOA", policy: Policy{NegativeTTL: time.Hour},
			qname: "nope.example.org.", rcode: dns.RcodeNameError, ns: []string{soa3600min60},
			kind: KindNXDomain, entryTTL: time.Minute},
		{name: "MinTTL does not raise a negative TTL", policy: Policy{MinTTL: 5 * time.Minute},
			qname: "nope.example.org.", rcode: dns.RcodeNameError, ns: []string{soa3600min60},
			kind: KindNXDomain, entryTTL: time.Minute},
		{name: "NXDOMAIN after a CNAME", qname: "alias.example.org.", rcode: dns.RcodeNameError,
			answer: []string{"alias.example.org. 300 IN CNAME nope.example.org."}, ns: []string{soa3600min60},
			kind: KindNXDomain, entryTTL: time.Minute},
		// RFC 2308 section 5: a chain that ends in no data is a denial for
		// the chain's end, timed by its SOA, not a positive answer for the
		// CNAME's hour (the usual AAAA answer for an IPv4-only CDN name).
		{name: "NODATA after a CNAME", qname: "alias.example.org.", rcode: dns.RcodeSuccess,
			answer: []string{"alias.example.org. 3600 IN CNAME v4only.cdn.example.net."},
			ns:     []string{"cdn.example.net. 3600 IN SOA ns1.cdn.example.net. h.cdn.example.net. 1 7200 900 1209600 60"},
			kind:   KindNoData, entryTTL: time.Minute},
		{name: "NODATA after a CNAME chain", qname: "alias.example.org.", rcode: dns.RcodeSuccess,
			answer: []string{"alias.example.org. 3600 IN CNAME hop.example.net.", "hop.example.net. 3600 IN CNAME v4only.cdn.example.net."},
			ns:     []string{"cdn.example.net. 3600 IN SOA ns1.cdn.example.net. h.cdn.example.net. 1 7200 900 1209600 60"},
			kind:   KindNoData, entryTTL: time.Minute},
		{name: "NODATA after a CNAME without SOA", qname: "alias.example.org.", rcode: dns.RcodeSuccess,
			answer: []string{"alias.example.org. 3600 IN CNAME v4only.cdn.example.net."}},
		{name: "NXDOMAIN without SOA", qname: "nope.example.org.", rcode: dns.RcodeNameError},
		{name: "NODATA without SOA (referral)", qname: "sub.example.org.", rcode: dns.RcodeSuccess,
			ns: []string{"sub.example.org. 3600 IN NS ns.sub.example.org."}},
		{name: "SOA MINIMUM 0", qname: "nope.example.org.", rcode: dns.RcodeNameError,
			ns: []string{"example.org. 3600 IN SOA ns1.example.org. hostmaster.example.org. 1 7200 900 1209600 0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCache(t, Config{Policy: tt.policy})
			q := newQuery(tt.qname, dns.TypeAAAA)
			resp := upstreamReply(t, q, tt.rcode, tt.answer, tt.ns, nil)
			e, err := c.Store(parse(t, q).key, resp, t0)
			if err != nil {
				t.Fatal(err)
			}
			if tt.entryTTL == 0 {
				if e != nil || c.Len() != 0 || hit(t, c, q, at(0), tcpOpts) != nil {
					t.Fatalf("cached: %v, Len %d", e, c.Len())
				}
				return
			}
			if e == nil {
				t.Fatal("not cached")
			}
			if e.Kind() != tt.kind || e.Rcode() != tt.rcode {
				t.Errorf("kind %v rcode %d, want %v %d", e.Kind(), e.Rcode(), tt.kind, tt.rcode)
			}
			if got := e.TTL(at(0)); got != tt.entryTTL {
				t.Errorf("entry TTL %v, want %v", got, tt.entryTTL)
			}
			m := hit(t, c, q, at(20*time.Second), tcpOpts)
			if m == nil {
				t.Fatal("miss at +20s")
			}
			want := uint32(tt.entryTTL/time.Second) - 20
			if m.Rcode != tt.rcode || len(m.Ns) != 1 {
				t.Fatalf("reply %v", m)
			}
			soa, ok := m.Ns[0].(*dns.SOA)
			if !ok || soa.Hdr.Ttl != want {
				t.Errorf("authority %v, want the SOA with TTL %d", m.Ns[0], want)
			}
			for _, rr := range m.Answer {
				if rr.Header().Ttl > want {
					t.Errorf("%v outlives the denial (%d)", rr, want)
				}
			}
			if hit(t, c, q, at(tt.entryTTL-time.Nanosecond), tcpOpts) == nil {
				t.Error("miss just before expiry")
			}
			if hit(t, c, q, at(tt.entryTTL), tcpOpts) != nil {
				t.Error("hit at expiry")
			}
		})
	}
}

func TestServFail(t *testing.T) {
	for _, ttl := range []time.Duration{5 * time.Second, 0} {
		t.Run(fmt.Sprint(ttl), func(t *testing.T) {
			c := newCache(t, Config{Policy: Policy{ServFailTTL: ttl}})
			q := newQuery("broken.example.org.", dns.TypeA)
			e, err := c.Store(parse(t, q).key, upstreamReply(t, q, dns.RcodeServerFailure, nil, nil, nil), t0)
			if err != nil {
				t.Fatal(err)
			}
			if ttl == 0 {
				if e != nil || c.Len() != 0 {
					t.Fatalf("SERVFAIL cached with ServFailTTL 0")
				}
				return
			}
			if e == nil || e.Kind() != KindServFail || e.Kind().String() != "servfail" {
				t.Fatalf("entry %v", e)
			}
			m := hit(t, c, q, at(ttl-time.Millisecond), tcpOpts)
			if m == nil || m.Rcode != dns.RcodeServerFailure {
				t.Fatalf("reply %v", m)
			}
			if hit(t, c, q, at(ttl), tcpOpts) != nil {
				t.Error("hit at expiry")
			}
		})
	}
}

func TestUncacheable(t *testing.T) {
	policy := Policy{ServFailTTL: 5 * time.Second, NegativeTTL: time.Hour}
	answer := []string{"example.org. 300 IN A 192.0.2.1"}
	tests := []struct {
		name string
		edit func(m *dns.Msg)
	}{
		{"truncated", func(m *dns.Msg) { m.Truncated = true }},
		{"truncated NXDOMAIN", func(m *dns.Msg) {
			m.Truncated = true
			m.Rcode = dns.RcodeNameError
			m.Ns = mustRRs(t, []string{soa3600min60})
		}},
		{"REFUSED", func(m *dns.Msg) { m.Rcode = dns.RcodeRefused }},
		{"FORMERR", func(m *dns.Msg) { m.Rcode = dns.RcodeFormatError }},
		{"NOTIMP", func(m *dns.Msg) { m.Rcode = dns.RcodeNotImplemented }},
		{"BADVERS", func(m *dns.Msg) { m.Rcode = dns.RcodeBadVers }},
		{"TTL 0", func(m *dns.Msg) { m.Answer[0].Header().Ttl = 0 }},
		{"one TTL 0", func(m *dns.Msg) { m.Answer = append(m.Answer, mustRR(t, "example.org. 0 IN A 192.0.2.2")) }},
		{"no question", func(m *dns.Msg) { m.Question = nil }},
		{"two questions", func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }},
		{"opcode NOTIFY", func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCache(t, Config{Policy: policy})
			q := newQuery("example.org.", dns.TypeA)
			resp := upstreamReply(t, q, dns.RcodeSuccess, answer, nil, nil)
			tt.edit(resp)
			e, err := c.Store(parse(t, q).key, resp, t0)
			if err != nil || e != nil {
				t.Fatalf("Store = %v, %v; want nothing stored", e, err)
			}
			if c.Len() != 0 || c.Bytes() != 0 {
				t.Errorf("Len %d Bytes %d", c.Len(), c.Bytes())
			}
		})
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{KindPositive: "positive", KindNXDomain: "nxdomain", KindNoData: "nodata",
		KindServFail: "servfail", KindUncacheable: "uncacheable"} {
		if k.String() != want {
			t.Errorf("%d: %q", k, k.String())
		}
	}
}

func TestCaseInsensitiveKey(t *testing.T) {
	c := newCache(t, Config{})
	q := newQuery("Example.ORG.", dns.TypeA)
	resp := upstreamReply(t, q, dns.RcodeSuccess, []string{"Example.ORG. 300 IN A 192.0.2.1"}, nil, nil)
	if e, err := c.Store(parse(t, q).key, resp, t0); err != nil || e == nil {
		t.Fatalf("Store = %v, %v", e, err)
	}
	for _, name := range []string{"example.org.", "EXAMPLE.org.", "Example.ORG.", "eXaMpLe.oRg."} {
		t.Run(name, func(t *testing.T) {
			m := hit(t, c, newQuery(name, dns.TypeA, withID(7)), at(time.Second), tcpOpts)
			if m == nil {
				t.Fatal("miss")
			}
			if m.Question[0].Name != name || m.Id != 7 {
				t.Errorf("question %q ID %d, want the client's %q", m.Question[0].Name, m.Id, name)
			}
			if len(m.Answer) != 1 || !strings.EqualFold(m.Answer[0].Header().Name, name) {
				t.Errorf("answer %v", m.Answer)
			}
		})
	}
	if hit(t, c, newQuery("example.org.", dns.TypeAAAA), at(0), tcpOpts) != nil {
		t.Error("AAAA hit an A entry")
	}
	if hit(t, c, newQuery("example.com.", dns.TypeA), at(0), tcpOpts) != nil {
		t.Error("example.com hit example.org")
	}
}

func TestDOAndCDSeparateEntries(t *testing.T) {
	c := newCache(t, Config{})
	variants := []struct {
		name  string
		edits []func(*dns.Msg)
	}{
		{"plain", nil},
		{"DO", []func(*dns.Msg){withEDNS(1232, true)}},
		{"CD", []func(*dns.Msg){withCD}},
		{"DO+CD", []func(*dns.Msg){withEDNS(1232, true), withCD}},
	}
	for i, v := range variants {
		q := newQuery("example.org.", dns.TypeA, v.edits...)
		for _, w := range variants[:i] {
			if hit(t, c, newQuery("example.org.", dns.TypeA, w.edits...), at(0), tcpOpts) == nil {
				t.Fatalf("%s: lost", w.name)
			}
		}
		if hit(t, c, q, at(0), tcpOpts) != nil {
			t.Fatalf("%s: hit an entry stored for another variant", v.name)
		}
		resp := upstreamReply(t, q, dns.RcodeSuccess, []string{fmt.Sprintf("example.org. 300 IN A 192.0.2.%d", i+1)}, nil, nil)
		if _, err := c.Store(parse(t, q).key, resp, t0); err != nil {
			t.Fatal(err)
		}
	}
	if c.Len() != len(variants) {
		t.Errorf("Len %d", c.Len())
	}
	for i, v := range variants {
		m := hit(t, c, newQuery("example.org.", dns.TypeA, v.edits...), at(0), tcpOpts)
		if m == nil || len(m.Answer) != 1 || m.Answer[0].(*dns.A).A[3] != byte(i+1) {
			t.Errorf("%s: reply %v", v.name, m)
		}
	}
}

// storedEntry stores a reply to name/A with n address records (AA, RA and
// AD set upstream) and returns its entry.
func storedEntry(t *testing.T, name string, n int) *Entry {
	t.Helper()
	q := newQuery(name, dns.TypeA, withEDNS(1232, true))
	var answer []string
	for i := range n {
		answer = append(answer, fmt.Sprintf("%s 300 IN A 192.0.%d.%d", name, i/250, i%250+1))
	}
	resp := upstreamReply(t, q, dns.RcodeSuccess, answer, nil, nil)
	resp.AuthenticatedData = true
	e, err := Policy{}.NewEntry(parse(t, q).key, resp, t0)
	if err != nil || e == nil {
		t.Fatalf("NewEntry = %v, %v", e, err)
	}
	return e
}

func TestAppendReply(t *testing.T) {
	small := storedEntry(t, "www.Example.org.", 2)
	big := storedEntry(t, "www.Example.org.", 40) // 12+21+40*16 = 673 bytes
	bigLen := len(big.msg())
	qEnd := dnswire.HeaderLen + 17 + 4

	type want struct {
		rd, cd, ad, tc bool
		answers        int
		opt            bool
		optDO          bool
		length         int // 0: any
	}
	tests := []struct {
		name  string
		e     *Entry
		query *dns.Msg
		opts  ReplyOptions
		want  want
	}{
		{"plain", small, newQuery("WWW.example.org.", dns.TypeA), tcpOpts, want{rd: true, answers: 2}},
		{"no RD, CD", small, newQuery("www.example.org.", dns.TypeA, func(m *dns.Msg) { m.RecursionDesired = false }, withCD),
			tcpOpts, want{cd: true, answers: 2}},
		{"AD asked", small, newQuery("www.example.org.", dns.TypeA, func(m *dns.Msg) { m.AuthenticatedData = true }),
			tcpOpts, want{rd: true, ad: true, answers: 2}},
		{"EDNS without DO", small, newQuery("www.example.org.", dns.TypeA, withEDNS(4096, false)),
			tcpOpts, want{rd: true, answers: 2, opt: true}},
		{"EDNS with DO", small, newQuery("www.example.org.", dns.TypeA, withEDNS(512, true)),
			tcpOpts, want{rd: true, ad: true, answers: 2, opt: true, optDO: true}},
		{"big over UDP without EDNS", big, newQuery("www.example.org.", dns.TypeA),
			ReplyOptions{MaxSize: 512, UDPSize: 1232}, want{rd: true, tc: true, length: qEnd}},
		{"big over UDP with EDNS", big, newQuery("www.example.org.", dns.TypeA, withEDNS(512, true)),
			ReplyOptions{MaxSize: 512, UDPSize: 1232}, want{rd: true, ad: true, tc: true, opt: true, optDO: true, length: qEnd + dnswire.OPTLen}},
		{"big fits exactly with OPT", big, newQuery("www.example.org.", dns.TypeA, withEDNS(4096, false)),
			ReplyOptions{MaxSize: bigLen + dnswire.OPTLen, UDPSize: 1232}, want{rd: true, answers: 40, opt: true, length: bigLen + dnswire.OPTLen}},
		{"big one byte too long with OPT", big, newQuery("www.example.org.", dns.TypeA, withEDNS(4096, false)),
			ReplyOptions{MaxSize: bigLen + dnswire.OPTLen - 1, UDPSize: 1232}, want{rd: true, tc: true, opt: true, length: qEnd + dnswire.OPTLen}},
		{"big fits exactly", big, newQuery("www.example.org.", dns.TypeA),
			ReplyOptions{MaxSize: bigLen}, want{rd: true, answers: 40, length: bigLen}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := parse(t, tt.query)
			req := bytes.Clone(p.pkt)
			prefix := []byte("prefix")
			out := tt.e.AppendReply(prefix, &p.q, at(10*time.Second), tt.opts)
			if !bytes.Equal(out[:len(prefix)], []byte("prefix")) || !bytes.Equal(req, p.pkt) {
				t.Fatal("prefix or request modified")
			}
			r := out[len(prefix):]
			if tt.want.length != 0 && len(r) != tt.want.length {
				t.Errorf("length %d, want %d", len(r), tt.want.length)
			}
			if len(r) > tt.opts.MaxSize {
				t.Errorf("%d bytes exceed MaxSize %d", len(r), tt.opts.MaxSize)
			}
			var m dns.Msg
			if err := m.Unpack(r); err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			w := tt.want
			if m.Id != tt.query.Id || !m.Response || m.Authoritative || !m.RecursionAvailable ||
				m.RecursionDesired != w.rd || m.CheckingDisabled != w.cd || m.AuthenticatedData != w.ad || m.Truncated != w.tc {
				t.Errorf("header %+v, want %+v", m.MsgHdr, w)
			}
			if len(m.Question) != 1 || m.Question[0] != tt.query.Question[0] {
				t.Errorf("question %v, want %v", m.Question, tt.query.Question)
			}
			if len(m.Answer) != w.answers {
				t.Errorf("%d answers, want %d", len(m.Answer), w.answers)
			}
			for _, rr := range m.Answer {
				if rr.Header().Ttl != 290 {
					t.Errorf("TTL %d, want 290", rr.Header().Ttl)
				}
			}
			opt := m.IsEdns0()
			if (opt != nil) != w.opt {
				t.Fatalf("OPT %v, want %v", opt, w.opt)
			}
			if opt != nil && (opt.UDPSize() != tt.opts.UDPSize || opt.Do() != w.optDO || len(m.Extra) != 1) {
				t.Errorf("OPT %v, want size %d DO %v", opt, tt.opts.UDPSize, w.optDO)
			}
		})
	}
}

// TestAppendReplyNoAlloc checks the promise of the doc comment.
func TestAppendReplyNoAlloc(t *testing.T) {
	e := storedEntry(t, "www.example.org.", 3)
	p := parse(t, newQuery("www.example.org.", dns.TypeA, withEDNS(1232, true)))
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() {
		buf = e.AppendReply(buf[:0], &p.q, at(time.Second), tcpOpts)
	}); n != 0 {
		t.Errorf("%v allocations per AppendReply", n)
	}
}

// TestEscapedNames covers names whose presentation form is longer than
// their wire form: the end of the question must be found in wire form, or
// truncation cuts the reply in the wrong place.
func TestEscapedNames(t *testing.T) {
	for _, name := range []string{
		`a\.b.example.org.`,
		`\000\001\255.example.org.`,
		`\065BC.Example.org.`,
		`semi\;colon\ and\ space.example.org.`,
		".",
		strings.Repeat(`\200`, 60) + ".example.org.",
	} {
		t.Run(name, func(t *testing.T) {
			c := newCache(t, Config{})
			q := newQuery(name, dns.TypeTXT, withEDNS(1232, false))
			p := parse(t, q)
			var answer []string
			for i := range 20 {
				answer = append(answer, fmt.Sprintf(`%s 300 IN TXT "%s"`, name, strings.Repeat(fmt.Sprint(i), 40)))
			}
			e, err := c.Store(p.key, upstreamReply(t, q, dns.RcodeSuccess, answer, nil, nil), t0)
			if err != nil || e == nil {
				t.Fatalf("Store = %v, %v", e, err)
			}
			for _, opts := range []ReplyOptions{tcpOpts, {MaxSize: 512, UDPSize: 1232}} {
				m, out := render(t, e, p, at(0), opts)
				if got, want := m.Question[0], q.Question[0]; got.Qtype != want.Qtype || !bytes.Equal(wire(t, got.Name), wire(t, want.Name)) {
					t.Errorf("question %v, want %v", m.Question[0], q.Question[0])
				}
				if opts.MaxSize == 512 {
					if !m.Truncated || len(m.Answer) != 0 || len(out) != p.q.QEnd+dnswire.OPTLen {
						t.Errorf("truncated reply: TC %v, %d answers, %d bytes, want %d", m.Truncated, len(m.Answer), len(out), p.q.QEnd+dnswire.OPTLen)
					}
				} else if len(m.Answer) != 20 {
					t.Errorf("%d answers", len(m.Answer))
				}
			}
			if e.qEnd() != p.q.QEnd {
				t.Errorf("entry qEnd %d, query QEnd %d", e.qEnd(), p.q.QEnd)
			}
		})
	}
}

// TestNewEntryQuestionMismatch checks that a reply is never stored under
// the key of another question: AppendReply would patch the client's name
// over a question of another length, or answer for another name.
func TestNewEntryQuestionMismatch(t *testing.T) {
	q := newQuery("example.org.", dns.TypeA)
	for _, tc := range []struct {
		name  string
		query *dns.Msg
	}{
		{"other name, same length", newQuery("example.net.", dns.TypeA)},
		{"other name, other length", newQuery("www.example.org.", dns.TypeA)},
		{"other type", newQuery("example.org.", dns.TypeAAAA)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := upstreamReply(t, q, dns.RcodeSuccess, []string{"example.org. 300 IN A 192.0.2.1"}, nil, nil)
			e, err := Policy{}.NewEntry(parse(t, tc.query).key, resp, t0)
			if err == nil || e != nil {
				t.Errorf("NewEntry = %v, %v; want an error", e, err)
			}
		})
	}
}

func TestNewEntryDoesNotModifyResp(t *testing.T) {
	q := newQuery("Example.org.", dns.TypeA, withEDNS(1232, true))
	resp := upstreamReply(t, q, dns.RcodeSuccess, []string{"Example.org. 3 IN A 192.0.2.1"}, nil, nil)
	before := resp.String()
	if _, err := (Policy{MinTTL: time.Minute}).NewEntry(parse(t, q).key, resp, t0); err != nil {
		t.Fatal(err)
	}
	if after := resp.String(); after != before {
		t.Errorf("resp changed:\n%s\n%s", before, after)
	}
}

// An entry is stored without AA and without the upstream's OPT, and
// renders every record with its TTL counted down.
func TestEntryRoundTrip(t *testing.T) {
	q := newQuery("WWW.example.org.", dns.TypeA)
	resp := upstreamReply(t, q, dns.RcodeSuccess,
		[]string{"WWW.example.org. 300 IN CNAME web.example.org.", "web.example.org. 60 IN A 192.0.2.1"},
		[]string{"example.org. 3600 IN NS ns1.example.org."},
		[]string{"ns1.example.org. 120 IN A 192.0.2.53"})
	resp.SetEdns0(4096, false)
	e, err := Policy{}.NewEntry(parse(t, q).key, resp, t0)
	if err != nil || e == nil {
		t.Fatalf("NewEntry = %v, %v", e, err)
	}
	m, _ := render(t, e, parse(t, q), at(30*time.Second), tcpOpts)
	if m.Id != q.Id || m.Authoritative || !m.Response || !m.RecursionAvailable || m.Rcode != dns.RcodeSuccess {
		t.Errorf("header %+v", m.MsgHdr)
	}
	if m.Question[0].Name != "WWW.example.org." || m.Question[0].Qtype != dns.TypeA {
		t.Errorf("question %v", m.Question[0])
	}
	if m.IsEdns0() != nil {
		t.Error("an OPT for a query without EDNS: the upstream's was stored")
	}
	want := records(resp)
	got := records(m)
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for i := range want {
		w := dns.Copy(want[i])
		w.Header().Ttl = max(w.Header().Ttl, 30) - 30
		if !dns.IsDuplicate(got[i], w) || got[i].Header().Ttl != w.Header().Ttl ||
			!strings.EqualFold(got[i].Header().Name, w.Header().Name) {
			t.Errorf("record %d: %v, want %v", i, got[i], w)
		}
	}
}

func TestKeyOf(t *testing.T) {
	for _, m := range []*dns.Msg{
		newQuery("example.org.", dns.TypeA),
		newQuery("WWW.Example.ORG.", dns.TypeAAAA, withEDNS(1232, true)),
		newQuery("example.org.", dns.TypeA, withEDNS(1232, false), withCD),
		newQuery(`a\.b\065.example.org.`, dns.TypeTXT, withEDNS(1232, true), withCD),
		newQuery(".", dns.TypeNS),
	} {
		t.Run(m.Question[0].Name, func(t *testing.T) {
			p := parse(t, m)
			if got := KeyOf(nil, m); !bytes.Equal(got, p.key) {
				t.Errorf("KeyOf %q, wire key %q", got, p.key)
			}
		})
	}
}

// wire returns a name in uncompressed wire form, to compare names that have
// several presentation forms ("\065" and "A").
func wire(t testing.TB, name string) []byte {
	t.Helper()
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(name, buf, 0, nil, false)
	if err != nil {
		t.Fatalf("PackDomainName(%q): %v", name, err)
	}
	return buf[:n]
}

// A record whose TTL runs out before the answer's ends the entry: no
// record is ever served with TTL 0 while the entry lives.
func TestEntryLivesAsLongAsItsShortestRecord(t *testing.T) {
	tests := []struct {
		name         string
		answer, ns   []string
		extra        []string
		wantEntryTTL time.Duration
	}{
		{"answer only", []string{"srv.example.org. 300 IN SRV 0 0 80 a.example.org."}, nil, nil, 300 * time.Second},
		{"glue shorter than the answer", []string{"srv.example.org. 300 IN SRV 0 0 80 a.example.org."}, nil,
			[]string{"a.example.org. 30 IN A 192.0.2.1"}, 30 * time.Second},
		{"authority shorter than the answer", []string{"srv.example.org. 300 IN SRV 0 0 80 a.example.org."},
			[]string{"example.org. 60 IN NS ns.example.org."}, nil, 60 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCache(t, Config{})
			q := newQuery("srv.example.org.", dns.TypeSRV)
			e, err := c.Store(parse(t, q).key, upstreamReply(t, q, dns.RcodeSuccess, tt.answer, tt.ns, tt.extra), t0)
			if err != nil || e == nil {
				t.Fatalf("Store = %v, %v", e, err)
			}
			if got := e.TTL(at(0)); got != tt.wantEntryTTL {
				t.Errorf("entry TTL %v, want %v", got, tt.wantEntryTTL)
			}
			m := hit(t, c, q, at(tt.wantEntryTTL-time.Second), tcpOpts)
			if m == nil {
				t.Fatal("miss before expiry")
			}
			for _, rr := range records(m) {
				if rr.Header().Ttl == 0 {
					t.Errorf("%v served with TTL 0", rr)
				}
			}
		})
	}
}

// Truncation keeps whole RRsets that fit, as Unbound and CoreDNS do: TC
// when answer or authority data had to go, none when only additional data
// (the glue of a headless Service's SRV answer) did.
func TestTruncationKeepsWholeRRsets(t *testing.T) {
	var srv, glue []string
	for i := range 7 {
		srv = append(srv, fmt.Sprintf("_http._tcp.web.default.svc.cluster.local. 30 IN SRV 0 8 80 pod-%02d.web.default.svc.cluster.local.", i))
		glue = append(glue, fmt.Sprintf("pod-%02d.web.default.svc.cluster.local. 30 IN A 10.244.1.%d", i, i+1))
	}
	q := newQuery("_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV)
	c := newCache(t, Config{})
	e, err := c.Store(parse(t, q).key, upstreamReply(t, q, dns.RcodeSuccess, srv, nil, glue), t0)
	if err != nil || e == nil {
		t.Fatalf("Store = %v, %v", e, err)
	}
	full, _ := render(t, e, parse(t, q), at(0), tcpOpts)
	if len(full.Answer) != 7 || len(full.Extra) != 7 || full.Truncated {
		t.Fatalf("over TCP: %d answers, %d glue, TC %v", len(full.Answer), len(full.Extra), full.Truncated)
	}
	// 512 bytes hold the SRV RRset (7 x 61 bytes: SRV targets are never
	// compressed) but not all the glue: glue RRsets (one per name) are kept
	// while they fit.
	m, out := render(t, e, parse(t, q), at(0), ReplyOptions{MaxSize: 512, UDPSize: 1232})
	if len(out) > 512 || m.Truncated || len(m.Answer) != 7 || len(m.Extra) == 0 || len(m.Extra) >= 7 {
		t.Errorf("at 512 bytes: %d bytes, TC %v, %d answers, %d glue; want the whole SRV RRset, part of the glue, no TC",
			len(out), m.Truncated, len(m.Answer), len(m.Extra))
	}
	// Below the SRV RRset's size nothing fits: TC, no partial RRset.
	m, out = render(t, e, parse(t, q), at(0), ReplyOptions{MaxSize: 300, UDPSize: 1232})
	if !m.Truncated || len(m.Answer) != 0 || len(m.Extra) != 0 || len(out) > 300 {
		t.Errorf("at 300 bytes: TC %v, %d answers, %d glue, %d bytes; want TC and no records", m.Truncated, len(m.Answer), len(m.Extra), len(out))
	}
	// A CNAME then a big RRset: the CNAME's RRset fits and is kept, TC set.
	var as []string
	for i := range 40 {
		as = append(as, fmt.Sprintf("edge.cdn.example.net. 300 IN A 192.0.2.%d", i+1))
	}
	q2 := newQuery("www.example.org.", dns.TypeA)
	e2, err := c.Store(parse(t, q2).key, upstreamReply(t, q2, dns.RcodeSuccess,
		append([]string{"www.example.org. 300 IN CNAME edge.cdn.example.net."}, as...), nil, nil), t0)
	if err != nil || e2 == nil {
		t.Fatal(err)
	}
	m, _ = render(t, e2, parse(t, q2), at(0), ReplyOptions{MaxSize: 512, UDPSize: 1232})
	if !m.Truncated || len(m.Answer) != 1 || m.Answer[0].Header().Rrtype != dns.TypeCNAME {
		t.Errorf("CNAME + 40 A at 512: TC %v, answers %v; want TC and the CNAME alone", m.Truncated, m.Answer)
	}
}

// An answer that is not cached is shaped like every other: no AA, RA set,
// our OPT, its TTLs as the upstream gave them.
func TestTransientEntry(t *testing.T) {
	q := newQuery("Nocache.Example.org.", dns.TypeA, withEDNS(1232, false))
	resp := upstreamReply(t, q, dns.RcodeSuccess, []string{"Nocache.Example.org. 0 IN A 192.0.2.1"}, nil, nil)
	e, err := NewTransient(resp, t0)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := render(t, e, parse(t, q), at(0), ReplyOptions{MaxSize: 1232, UDPSize: 1232})
	if m.Authoritative || !m.RecursionAvailable || len(m.Answer) != 1 || m.Answer[0].Header().Ttl != 0 {
		t.Errorf("reply %v: want AA clear, RA set, the record with TTL 0", m)
	}
	if m.Question[0].Name != "Nocache.Example.org." {
		t.Errorf("question %q, want the client's case", m.Question[0].Name)
	}
	if o := m.IsEdns0(); o == nil || o.UDPSize() != 1232 {
		t.Errorf("OPT %v, want ours", o)
	}
}
