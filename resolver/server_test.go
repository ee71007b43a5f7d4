package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/nodedns/nodedns/cache"
	"github.com/nodedns/nodedns/internal/testutil"
)

// startUpstream and zone are testutil's, under the names the tests use.
func startUpstream(t testing.TB, h dns.HandlerFunc) *testutil.Upstream {
	return testutil.StartUpstream(t, h)
}
func zone(t testing.TB, records ...string) dns.HandlerFunc { return testutil.Zone(t, records...) }

type testServer struct {
	*Server
	addr string
	reg  *prometheus.Registry
}

func startServer(t testing.TB, cfg Config, fwd Forwarder, opts ...func(*Server)) *testServer {
	t.Helper()
	if cfg.Listen == nil {
		cfg.Listen = []string{"127.0.0.1:0"}
	}
	if cfg.UDPSockets == 0 {
		cfg.UDPSockets = 2
	}
	reg := prometheus.NewRegistry()
	c, err := cache.New(cache.Config{MaxBytes: 1 << 20, Policy: cache.Policy{MaxTTL: time.Hour, NegativeTTL: time.Minute, ServFailTTL: 2 * time.Second}}, reg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, c, fwd, zap.NewNop(), reg)
	if err != nil {
		t.Fatal(err)
	}
	// Port 0 picks a UDP port; the TCP port of the same number may be taken
	// by another process, so try a few times.
	for i := 0; ; i++ {
		for _, o := range opts {
			o(s)
		}
		if err = s.Start(); err == nil || i == 20 {
			break
		}
		s, _ = New(cfg, c, fwd, zap.NewNop(), prometheus.NewRegistry())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return &testServer{Server: s, addr: s.Addrs()[0].String(), reg: reg}
}

// forwardTo returns a Forwarder that sends every query to addr with a
// miekg client, as a minimal stand-in for package upstream.
func forwardTo(addr string) Forwarder { return ForwarderFunc(testutil.Forward(addr)) }

func query(name string, qtype uint16) *dns.Msg { return testutil.Query(name, qtype) }

func exchange(t *testing.T, net, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	return testutil.Exchange(t, net, addr, m)
}

func TestCacheHitEchoesIDAndCase(t *testing.T) {
	up := startUpstream(t, zone(t, "www.example.test. 300 IN A 192.0.2.1"))
	s := startServer(t, Config{}, forwardTo(up.Addr))

	first := exchange(t, "udp", s.addr, query("www.example.test.", dns.TypeA))
	if first.Rcode != dns.RcodeSuccess || len(first.Answer) != 1 {
		t.Fatalf("first answer: %v", first)
	}
	for _, name := range []string{"WWW.Example.TEST.", "www.EXAMPLE.test."} {
		q := query(name, dns.TypeA)
		r := exchange(t, "udp", s.addr, q)
		if r.Id != q.Id {
			t.Errorf("ID %d, want %d", r.Id, q.Id)
		}
		if r.Question[0].Name != name {
			t.Errorf("question %q, want %q as asked", r.Question[0].Name, name)
		}
		if !r.RecursionAvailable || r.Authoritative || !r.Response {
			t.Errorf("flags RA=%v AA=%v QR=%v", r.RecursionAvailable, r.Authoritative, r.Response)
		}
		if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
			t.Errorf("answer %v", r.Answer)
		}
	}
	if n := up.Queries.Load(); n != 1 {
		t.Errorf("upstream got %d queries, want 1 (the rest from cache)", n)
	}
	if hits := testutil.Metric(t, s.reg, "nodedns_cache_hits_total"); hits != 2 {
		t.Errorf("cache hits %v, want 2", hits)
	}
}

func TestTTLCountsDown(t *testing.T) {
	up := startUpstream(t, zone(t, "ttl.test. 300 IN A 192.0.2.1"))
	base := time.Now()
	var offset atomic.Int64
	s := startServer(t, Config{}, forwardTo(up.Addr), func(s *Server) {
		s.now = func() time.Time { return base.Add(time.Duration(offset.Load())) }
		s.setForwarder(forwardTo(up.Addr))
	})

	exchange(t, "udp", s.addr, query("ttl.test.", dns.TypeA))
	offset.Store(int64(100 * time.Second))
	r := exchange(t, "udp", s.addr, query("ttl.test.", dns.TypeA))
	if got := r.Answer[0].Header().Ttl; got != 200 {
		t.Errorf("TTL after 100s = %d, want 200", got)
	}
	offset.Store(int64(301 * time.Second))
	exchange(t, "udp", s.addr, query("ttl.test.", dns.TypeA))
	if n := up.Queries.Load(); n != 2 {
		t.Errorf("upstream queries %d, want 2 (expired entry refetched)", n)
	}
}

func TestNegativeAnswersAreCachedWithSOA(t *testing.T) {
	up := startUpstream(t, zone(t, "exists.test. 300 IN A 192.0.2.1"))
	s := startServer(t, Config{}, forwardTo(up.Addr))
	for _, tc := range []struct {
		name  string
		qtype uint16
		rcode int
	}{
		{"missing.test.", dns.TypeA, dns.RcodeNameError},
		{"exists.test.", dns.TypeAAAA, dns.RcodeSuccess}, // NODATA
	} {
		for i := 0; i < 3; i++ {
			r := exchange(t, "udp", s.addr, query(tc.name, tc.qtype))
			if r.Rcode != tc.rcode || len(r.Answer) != 0 {
				t.Fatalf("%s: rcode %s answers %d", tc.name, dns.RcodeToString[r.Rcode], len(r.Answer))
			}
			if len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA {
				t.Fatalf("%s: authority %v, want the SOA", tc.name, r.Ns)
			}
			// min(SOA TTL 3600, MINIMUM 30) = 30 (RFC 2308 section 5)
			if ttl := r.Ns[0].Header().Ttl; ttl > 30 || ttl < 29 {
				t.Errorf("%s: SOA TTL %d, want 30", tc.name, ttl)
			}
		}
	}
	if n := up.Queries.Load(); n != 2 {
		t.Errorf("upstream queries %d, want 2", n)
	}
}

func TestEDNSAndTruncation(t *testing.T) {
	var txt []string
	for i := 0; i < 30; i++ {
		txt = append(txt, `big.test. 300 IN TXT "`+strings.Repeat("x", 60)+`"`)
	}
	up := startUpstream(t, zone(t, append(txt, "small.test. 300 IN A 192.0.2.1")...))
	s := startServer(t, Config{}, forwardTo(up.Addr))

	withEDNS := func(name string, qtype uint16, size uint16, do bool) *dns.Msg {
		m := query(name, qtype)
		m.SetEdns0(size, do)
		return m
	}
	tests := []struct {
		name    string
		net     string
		msg     *dns.Msg
		wantTC  bool
		wantOPT bool
		wantDO  bool
	}{
		{"small with EDNS", "udp", withEDNS("small.test.", dns.TypeA, 4096, false), false, true, false},
		{"small with DO", "udp", withEDNS("small.test.", dns.TypeA, 4096, true), false, true, true},
		{"small without EDNS", "udp", query("small.test.", dns.TypeA), false, false, false},
		{"big over UDP, EDNS 4096 capped to 1232", "udp", withEDNS("big.test.", dns.TypeTXT, 4096, false), true, true, false},
		{"big over UDP without EDNS", "udp", query("big.test.", dns.TypeTXT), true, false, false},
		{"big over TCP", "tcp", withEDNS("big.test.", dns.TypeTXT, 4096, false), false, true, false},
		{"big over UDP again, from cache", "udp", withEDNS("big.test.", dns.TypeTXT, 1232, false), true, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := exchange(t, tc.net, s.addr, tc.msg)
			if r.Truncated != tc.wantTC {
				t.Errorf("TC = %v, want %v", r.Truncated, tc.wantTC)
			}
			if tc.wantTC && (len(r.Answer) != 0 || len(r.Question) != 1) {
				t.Errorf("truncated reply has %d answers, %d questions; want 0 and 1", len(r.Answer), len(r.Question))
			}
			if !tc.wantTC && len(r.Answer) == 0 {
				t.Errorf("no answers")
			}
			opt := r.IsEdns0()
			if (opt != nil) != tc.wantOPT {
				t.Fatalf("OPT present = %v, want %v", opt != nil, tc.wantOPT)
			}
			if opt != nil {
				if opt.UDPSize() != 1232 {
					t.Errorf("advertised UDP size %d, want 1232", opt.UDPSize())
				}
				if opt.Do() != tc.wantDO {
					t.Errorf("DO = %v, want %v", opt.Do(), tc.wantDO)
				}
			}
		})
	}
}

// rawExchange sends bytes over UDP and returns the reply, or nil after a
// short wait when none comes.
func rawExchange(t *testing.T, addr string, pkt []byte, wait time.Duration) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func TestBadInput(t *testing.T) {
	up := startUpstream(t, zone(t, "ok.test. 300 IN A 192.0.2.1"))
	s := startServer(t, Config{}, forwardTo(up.Addr))

	packed := func(m *dns.Msg) []byte {
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	notify := query("ok.test.", dns.TypeSOA)
	notify.Opcode = dns.OpcodeNotify
	ednsV1 := query("ok.test.", dns.TypeA)
	ednsV1.SetEdns0(1232, false)
	ednsV1.IsEdns0().SetVersion(1)
	noQuestion := query("ok.test.", dns.TypeA)
	noQuestion.Question = nil
	twoQuestions := query("ok.test.", dns.TypeA)
	twoQuestions.Question = append(twoQuestions.Question, twoQuestions.Question[0])
	response := query("ok.test.", dns.TypeA)
	response.Response = true
	header := packed(query("ok.test.", dns.TypeA))[:12]
	badLabel := append(append([]byte(nil), header...), 0x50, 'a', 'b') // label length 80

	tests := []struct {
		name      string
		pkt       []byte
		wantReply bool
		rcode     int
	}{
		{"shorter than a header", []byte{1, 2, 3, 4, 5}, false, 0},
		{"empty", []byte{}, false, 0},
		{"label too long", badLabel, true, dns.RcodeFormatError},
		{"header only", header, true, dns.RcodeFormatError},
		{"no question", packed(noQuestion), true, dns.RcodeFormatError},
		{"two questions", packed(twoQuestions), true, dns.RcodeFormatError},
		{"NOTIFY opcode", packed(notify), true, dns.RcodeNotImplemented},
		{"EDNS version 1", packed(ednsV1), true, dns.RcodeBadVers},
		{"AXFR", packed(query("ok.test.", dns.TypeAXFR)), true, dns.RcodeRefused},
		{"a response", packed(response), false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := rawExchange(t, s.addr, tc.pkt, 300*time.Millisecond)
			if !tc.wantReply {
				if b != nil {
					t.Fatalf("got a %d-byte reply, want none", len(b))
				}
				return
			}
			if b == nil {
				t.Fatal("no reply")
			}
			r := new(dns.Msg)
			if err := r.Unpack(b); err != nil {
				t.Fatalf("reply does not unpack: %v", err)
			}
			if r.Rcode != tc.rcode || !r.Response {
				t.Errorf("rcode %s QR=%v, want %s", dns.RcodeToString[r.Rcode], r.Response, dns.RcodeToString[tc.rcode])
			}
			if id := uint16(tc.pkt[0])<<8 | uint16(tc.pkt[1]); r.Id != id {
				t.Errorf("ID %d, want %d", r.Id, id)
			}
		})
	}
	// The server is still answering after all that.
	if r := exchange(t, "udp", s.addr, query("ok.test.", dns.TypeA)); len(r.Answer) != 1 {
		t.Fatalf("after bad input: %v", r)
	}
}

func TestQueriesFromOutsideAllowedNetworksAreRefused(t *testing.T) {
	up := startUpstream(t, zone(t, "ok.test. 300 IN A 192.0.2.1"))
	s := startServer(t, Config{Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, forwardTo(up.Addr))
	r := exchange(t, "udp", s.addr, query("ok.test.", dns.TypeA))
	if r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
		t.Errorf("rcode %s with %d answers, want REFUSED", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	// Over TCP the connection is closed at accept (it could hold a slot).
	if _, err := exchangeErr("tcp", s.addr, query("ok.test.", dns.TypeA)); err == nil {
		t.Error("tcp: answered a client outside the allow list")
	}
	if n := up.Queries.Load(); n != 0 {
		t.Errorf("upstream got %d queries from a refused client", n)
	}
}

func TestTCPPipelinesSeveralQueriesPerConnection(t *testing.T) {
	up := startUpstream(t, zone(t, "a.test. 300 IN A 192.0.2.1", "b.test. 300 IN A 192.0.2.2", "c.test. 300 IN A 192.0.2.3"))
	s := startServer(t, Config{}, forwardTo(up.Addr))
	conn, err := dns.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	want := map[uint16]string{}
	for i := 0; i < 3; i++ { // twice over: misses, then hits
		for _, n := range []string{"a.test.", "b.test.", "c.test."} {
			q := query(n, dns.TypeA)
			want[q.Id] = n
			if err := conn.WriteMsg(q); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	for n := len(want); n > 0; n-- {
		r, err := conn.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		if name, ok := want[r.Id]; !ok || r.Question[0].Name != name || len(r.Answer) != 1 {
			t.Errorf("unexpected reply %v", r)
		}
		delete(want, r.Id)
	}
	if len(want) != 0 {
		t.Errorf("%d queries unanswered", len(want))
	}
}

func TestTCPConnectionCapAndIdleTimeout(t *testing.T) {
	b := &blockingUpstream{release: make(chan struct{}), entered: make(chan struct{}, 10)}
	s := startServer(t, Config{TCPMaxConns: 1, TCPIdleTimeout: 200 * time.Millisecond}, b)
	var once sync.Once
	release := func() { once.Do(func() { close(b.release) }) }
	t.Cleanup(release)

	first, err := dns.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if err := first.WriteMsg(query("a.test.", dns.TypeA)); err != nil {
		t.Fatal(err)
	}
	<-b.entered // the first connection has a miss outstanding: it is not idle
	// The second connection is over the cap and nothing is idle: closed at
	// once, no answer.
	second, err := dns.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	_ = second.WriteMsg(query("a.test.", dns.TypeA))
	_ = second.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := second.ReadMsg(); err == nil {
		t.Error("connection over the cap was answered")
	}
	if n := promtest.ToFloat64(s.metrics.tcpRejected); n != 1 {
		t.Errorf("tcp rejected %v, want 1", n)
	}
	release()
	if _, err := first.ReadMsg(); err != nil {
		t.Fatal(err)
	}
	// The first connection is closed by the server once idle.
	_ = first.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := first.ReadMsg(); err == nil {
		t.Error("idle connection still open")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("idle connection not closed by the server within 3s")
	}
}

// dialFrom opens a TCP connection to addr from the source address src and
// asks one query on it.
func dialFrom(t *testing.T, src, addr, name string) (*dns.Conn, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &dns.Conn{Conn: nc}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if err := c.WriteMsg(query(name, dns.TypeA)); err != nil {
		return c, err
	}
	r, err := c.ReadMsg()
	if err == nil && len(r.Answer) != 1 {
		err = fmt.Errorf("reply %v", r)
	}
	return c, err
}

// One client holding connections open cannot take the pool: it is capped
// per address, and its own idle connections make room for its new ones.
func TestTCPOneClientCannotHoldEveryConnection(t *testing.T) {
	up := startUpstream(t, zone(t, "a.test. 300 IN A 192.0.2.1"))
	s := startServer(t, Config{TCPMaxConns: 10, TCPMaxConnsPerClient: 3, TCPIdleTimeout: time.Minute}, forwardTo(up.Addr))
	var hog []*dns.Conn
	for i := range 10 {
		c, err := dialFrom(t, "127.0.0.2", s.addr, "a.test.")
		if err != nil {
			t.Fatalf("hog connection %d: %v", i, err)
		}
		hog = append(hog, c)
	}
	waitFor(t, "the hog's extra connections to close", func() bool { return promtest.ToFloat64(s.metrics.tcpConns) == 3 })
	// Its oldest ones were closed; its newest three are open.
	for i, c := range hog {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		err := c.WriteMsg(query("a.test.", dns.TypeA))
		if err == nil {
			_, err = c.ReadMsg()
		}
		if open := i >= 7; open != (err == nil) {
			t.Errorf("hog connection %d: err %v, want open=%v", i, err, open)
		}
	}
	for i := range 5 { // others are served
		if _, err := dialFrom(t, fmt.Sprintf("127.0.0.%d", 10+i), s.addr, "a.test."); err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	if n := promtest.ToFloat64(s.metrics.tcpRejected); n != 0 {
		t.Errorf("tcp rejected %v, want 0", n)
	}
}

// A client at its cap whose connections have not sent their first query
// yet keeps them: closing one would lose the query waiting in its socket.
// The new connection is the one refused.
func TestTCPClientAtItsCapKeepsConnectionsNotYetAsked(t *testing.T) {
	up := startUpstream(t, zone(t, "a.test. 300 IN A 192.0.2.1"))
	s := startServer(t, Config{TCPMaxConns: 10, TCPMaxConnsPerClient: 2, TCPIdleTimeout: time.Minute}, forwardTo(up.Addr))
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}}
	var quiet []*dns.Conn
	for range 2 {
		c, err := d.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		quiet = append(quiet, &dns.Conn{Conn: c})
	}
	waitFor(t, "both connections to be accepted", func() bool { return promtest.ToFloat64(s.metrics.tcpConns) == 2 })
	if _, err := dialFrom(t, "127.0.0.3", s.addr, "a.test."); err == nil {
		t.Error("a third connection at a cap of two was served")
	}
	for i, c := range quiet {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		err := c.WriteMsg(query("a.test.", dns.TypeA))
		if err == nil {
			_, err = c.ReadMsg()
		}
		if err != nil {
			t.Errorf("connection %d, opened before the third: %v", i, err)
		}
	}
}

// The innocent side of the per-client cap: a client behind one address
// (hostNetwork pods, a stub that opens a connection per query) that
// closes each connection after its answer is never refused, however many
// it opens one after the other.
func TestTCPClientOpeningOneConnectionAtATimeIsNeverRefused(t *testing.T) {
	up := startUpstream(t, zone(t, "a.test. 300 IN A 192.0.2.1"))
	s := startServer(t, Config{TCPMaxConns: 10, TCPMaxConnsPerClient: 2, TCPIdleTimeout: time.Minute}, forwardTo(up.Addr))
	for i := range 50 {
		c, err := dialFrom(t, "127.0.0.4", s.addr, "a.test.")
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		_ = c.Close()
	}
	if n := promtest.ToFloat64(s.metrics.tcpRejected); n != 0 {
		t.Errorf("tcp rejected %v, want 0", n)
	}
}

// A pool nearly full of idle connections makes room for a new client by
// closing the one idle longest (RFC 7766 section 6.2.3).
func TestTCPNearlyFullPoolClosesTheIdlestConnection(t *testing.T) {
	up := startUpstream(t, zone(t, "a.test. 300 IN A 192.0.2.1"))
	s := startServer(t, Config{TCPMaxConns: 4, TCPIdleTimeout: time.Second}, forwardTo(up.Addr))
	var conns []*dns.Conn
	for i := range 4 {
		c, err := dialFrom(t, fmt.Sprintf("127.0.0.%d", 20+i), s.addr, "a.test.")
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// Idle means idle for a tenth of the idle timeout: a connection just
	// opened is not. Time passing is what is tested here.
	time.Sleep(150 * time.Millisecond)
	// The pool is full of idle connections; a new client gets in, the
	// oldest idle connection goes.
	if _, err := dialFrom(t, "127.0.0.30", s.addr, "a.test."); err != nil {
		t.Fatalf("new client in a pool of idle connections: %v", err)
	}
	_ = conns[0].SetDeadline(time.Now().Add(2 * time.Second))
	_ = conns[0].WriteMsg(query("a.test.", dns.TypeA))
	if _, err := conns[0].ReadMsg(); err == nil {
		t.Error("the idlest connection was kept")
	}
	if n := promtest.ToFloat64(s.metrics.tcpIdleClosed); n < 1 {
		t.Errorf("tcp_idle_closed = %v", n)
	}
}

// blockingUpstream forwards nothing until released.
type blockingUpstream struct {
	release chan struct{}
	calls   atomic.Int64
	entered chan struct{}
}

func (b *blockingUpstream) Forward(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
	b.calls.Add(1)
	b.entered <- struct{}{}
	select {
	case <-b.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	m := new(dns.Msg)
	m.SetReply(req)
	rr, _ := dns.NewRR(req.Question[0].Name + " 60 IN A 192.0.2.9")
	m.Answer = append(m.Answer, rr)
	return m, nil
}

func TestFullInflightQueuesForASlot(t *testing.T) {
	b := &blockingUpstream{release: make(chan struct{}), entered: make(chan struct{}, 10)}
	s := startServer(t, Config{MaxInflight: 1}, b)

	done := make(chan *dns.Msg, 2)
	ask := func(name string) {
		c := &dns.Client{Timeout: 5 * time.Second}
		r, _, _ := c.Exchange(query(name, dns.TypeA), s.addr)
		done <- r
	}
	go ask("slow.test.")
	<-b.entered // the only slot is taken
	go ask("other.test.")
	waitFor(t, "the second miss to queue", func() bool { return promtest.ToFloat64(s.metrics.queued) == 1 })
	if n := b.calls.Load(); n != 1 {
		t.Fatalf("upstream calls %d with one slot, want 1", n)
	}
	close(b.release) // the first resolution ends; its slot goes to the queued miss
	for range 2 {
		if r := <-done; r == nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Errorf("want both answered from upstream, got %v", r)
		}
	}
	if n := promtest.ToFloat64(s.metrics.shed[shedQueueTimeout]) + promtest.ToFloat64(s.metrics.shed[shedWaiters]); n != 0 {
		t.Errorf("%v queries shed while a slot was coming", n)
	}
}

func TestQueuedMissIsAnsweredAfterMaxQueueWait(t *testing.T) {
	b := &blockingUpstream{release: make(chan struct{}), entered: make(chan struct{}, 10)}
	s := startServer(t, Config{MaxInflight: 1, MaxQueueWait: 100 * time.Millisecond}, b)
	t.Cleanup(func() { close(b.release) }) // runs before the server's shutdown
	go func() {
		c := &dns.Client{Timeout: 5 * time.Second}
		_, _, _ = c.Exchange(query("slow.test.", dns.TypeA), s.addr)
	}()
	<-b.entered
	start := time.Now()
	r := exchange(t, "udp", s.addr, query("other.test.", dns.TypeA))
	if r.Rcode != dns.RcodeServerFailure {
		t.Errorf("after the queue wait: %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
		t.Errorf("answered after %v, want about max_queue_wait (100ms)", d)
	}
	if n := promtest.ToFloat64(s.metrics.shed[shedQueueTimeout]); n != 1 {
		t.Errorf("shed{queue_timeout} = %v, want 1", n)
	}
	if n := b.calls.Load(); n != 1 {
		t.Errorf("the expired miss reached the upstream (%d calls)", n)
	}
}

func TestUpstreamFailureIsSERVFAIL(t *testing.T) {
	fail := ForwarderFunc(func(context.Context, *dns.Msg) (*dns.Msg, error) {
		return nil, errors.New("every upstream is down")
	})
	s := startServer(t, Config{}, fail)
	start := time.Now()
	r := exchange(t, "udp", s.addr, query("down.test.", dns.TypeA))
	if r.Rcode != dns.RcodeServerFailure || r.Question[0].Name != "down.test." {
		t.Errorf("got %v, want SERVFAIL echoing the question", r)
	}
	if time.Since(start) > time.Second {
		t.Errorf("SERVFAIL took %v", time.Since(start))
	}
}

// aaWriter sets AA on every reply, as an authoritative upstream would.
type aaWriter struct{ dns.ResponseWriter }

func (w aaWriter) WriteMsg(m *dns.Msg) error {
	m.Authoritative = true
	return w.ResponseWriter.WriteMsg(m)
}

func TestUncacheableQueriesAreForwardedEachTime(t *testing.T) {
	z := zone(t, "ok.test. 300 IN A 192.0.2.1")
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) { z(aaWriter{w}, r) })
	s := startServer(t, Config{}, forwardTo(up.Addr))
	noRD := query("ok.test.", dns.TypeA)
	noRD.RecursionDesired = false
	ecs := query("ok.test.", dns.TypeA)
	ecs.SetEdns0(1232, false)
	ecs.IsEdns0().Option = append(ecs.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.ParseIP("192.0.2.0").To4()})
	for _, tc := range []struct {
		name string
		m    *dns.Msg
	}{{"RD=0", noRD}, {"client subnet", ecs}} {
		t.Run(tc.name, func(t *testing.T) {
			before := up.Queries.Load()
			for i := 0; i < 2; i++ {
				m := tc.m.Copy()
				m.Id = dns.Id()
				r := exchange(t, "udp", s.addr, m)
				if r.Id != m.Id {
					t.Errorf("ID %d, want %d", r.Id, m.Id)
				}
				// A forwarder is not an authority (RFC 1035 4.1.1), cached
				// answer or not.
				if r.Authoritative || !r.RecursionAvailable || len(r.Answer) != 1 {
					t.Errorf("reply %v", r)
				}
			}
			if n := up.Queries.Load() - before; n != 2 {
				t.Errorf("upstream got %d queries, want 2 (not cached)", n)
			}
		})
	}
}

// Classes a cluster's DNS does not serve are refused on the node, at once:
// never forwarded to an upstream that might not answer (RFC 8906: always
// an answer).
func TestOtherClassesAreRefused(t *testing.T) {
	up := startUpstream(t, zone(t, "ok.test. 300 IN A 192.0.2.1"))
	s := startServer(t, Config{}, forwardTo(up.Addr))
	for _, class := range []uint16{dns.ClassCHAOS, dns.ClassHESIOD, dns.ClassNONE, dns.ClassANY, 999} {
		for _, proto := range []string{"udp", "tcp"} {
			m := query("version.bind.", dns.TypeTXT)
			m.Question[0].Qclass = class
			m.SetEdns0(1232, false)
			r := exchange(t, proto, s.addr, m)
			if r.Rcode != dns.RcodeRefused || r.IsEdns0() == nil || r.Question[0].Qclass != class {
				t.Errorf("class %d over %s: %v, want REFUSED with an OPT record and the question echoed", class, proto, r)
			}
		}
	}
	if n := up.Queries.Load(); n != 0 {
		t.Errorf("upstream got %d queries", n)
	}
}

func TestShutdownAnswersQueriesInFlight(t *testing.T) {
	b := &blockingUpstream{release: make(chan struct{}), entered: make(chan struct{}, 10)}
	s := startServer(t, Config{}, b)
	done := make(chan *dns.Msg)
	go func() {
		c := &dns.Client{Timeout: 5 * time.Second}
		r, _, _ := c.Exchange(query("inflight.test.", dns.TypeA), s.addr)
		done <- r
	}()
	<-b.entered
	stopped := make(chan error)
	go func() { stopped <- s.Shutdown(context.Background()) }()
	// Shutdown waits for the miss in flight.
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned %v before the query in flight was answered", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(b.release)
	if r := <-done; r == nil || len(r.Answer) != 1 {
		t.Errorf("query in flight got %v, want its answer", r)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if s.Ready() {
		t.Error("ready after shutdown")
	}
}

func TestShutdownGivesUpAtDeadline(t *testing.T) {
	b := &blockingUpstream{release: make(chan struct{}), entered: make(chan struct{}, 10)}
	s := startServer(t, Config{}, b)
	go func() {
		c := &dns.Client{Timeout: 2 * time.Second}
		_, _, _ = c.Exchange(query("stuck.test.", dns.TypeA), s.addr)
	}()
	<-b.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want a deadline error", err)
	}
}

func TestConcurrentClients(t *testing.T) {
	up := startUpstream(t, zone(t, "a.test. 300 IN A 192.0.2.1", "b.test. 300 IN AAAA 2001:db8::1"))
	s := startServer(t, Config{}, forwardTo(up.Addr))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Timeout: 3 * time.Second}
			for i := 0; i < 50; i++ {
				name, qt := "a.test.", dns.TypeA
				if i%2 == 1 {
					name, qt = "b.test.", dns.TypeAAAA
				}
				q := query(name, qt)
				r, _, err := c.Exchange(q, s.addr)
				if err != nil || r.Id != q.Id || len(r.Answer) != 1 {
					errs <- errors.New("bad reply under concurrency")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestServesIPv6(t *testing.T) {
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback on the host")
	} else {
		c.Close()
	}
	up := startUpstream(t, zone(t, "six.test. 300 IN AAAA 2001:db8::6"))
	s := startServer(t, Config{Listen: []string{"[::1]:0"}}, forwardTo(up.Addr))
	for i := 0; i < 2; i++ { // a miss, then a hit
		for _, proto := range []string{"udp", "tcp"} {
			r := exchange(t, proto, s.addr, query("six.test.", dns.TypeAAAA))
			if len(r.Answer) != 1 {
				t.Errorf("%s over IPv6: %v", proto, r)
			}
		}
	}
}

// ANY gets one RRset of the upstream's answer (RFC 8482); a name that does
// not exist is still NXDOMAIN.
func TestANYGetsOneRRset(t *testing.T) {
	anyUp := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Qtype != dns.TypeANY {
			return
		}
		// A server that answers ANY with every record it has.
		m := new(dns.Msg)
		m.SetReply(r)
		if strings.EqualFold(r.Question[0].Name, "ok.test.") {
			for _, s := range []string{"ok.test. 300 IN A 192.0.2.1", "ok.test. 300 IN A 192.0.2.2",
				"ok.test. 300 IN TXT \"hello\"", "ok.test. 300 IN MX 10 mail.ok.test."} {
				rr, _ := dns.NewRR(s)
				m.Answer = append(m.Answer, rr)
			}
		} else {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	s := startServer(t, Config{}, forwardTo(anyUp.Addr))
	for _, proto := range []string{"udp", "tcp"} {
		r := exchange(t, proto, s.addr, query("Ok.Test.", dns.TypeANY))
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 || r.Answer[0].Header().Rrtype != dns.TypeA || r.Answer[1].Header().Rrtype != dns.TypeA {
			t.Errorf("%s: %v, want the A RRset alone", proto, r)
		}
		if r.Question[0].Name != "Ok.Test." {
			t.Errorf("%s: question %q", proto, r.Question[0].Name)
		}
		if r := exchange(t, proto, s.addr, query("nx.test.", dns.TypeANY)); r.Rcode != dns.RcodeNameError {
			t.Errorf("%s: ANY for a name that does not exist: %s", proto, dns.RcodeToString[r.Rcode])
		}
	}
}

// Busy clients cannot keep a new one out: with the pool full of
// connections in use, a new client's connection closes the idlest one of
// the client holding the most.
func TestTCPBusyClientsCannotKeepANewOneOut(t *testing.T) {
	up := startUpstream(t, zone(t, "a.test. 300 IN A 192.0.2.1"))
	s := startServer(t, Config{TCPMaxConns: 12, TCPMaxConnsPerClient: 4, TCPIdleTimeout: time.Minute}, forwardTo(up.Addr))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 3 { // 3 clients × 4 busy connections: the pool is full
		for range 4 {
			conn, err := dialFrom(t, fmt.Sprintf("127.0.0.%d", 40+c), s.addr, "a.test.")
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() { // a query every 20 ms: never idle
				for {
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
					_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
					if conn.WriteMsg(query("a.test.", dns.TypeA)) != nil {
						return
					}
					if _, err := conn.ReadMsg(); err != nil {
						return
					}
				}
			})
		}
	}
	defer func() { close(stop); wg.Wait() }()
	waitFor(t, "the pool full", func() bool { return promtest.ToFloat64(s.metrics.tcpConns) == 12 })
	if _, err := dialFrom(t, "127.0.0.50", s.addr, "a.test."); err != nil {
		t.Fatalf("a new client with the pool full of busy connections: %v", err)
	}
	if n := promtest.ToFloat64(s.metrics.tcpEvicted); n != 1 {
		t.Errorf("tcp evicted %v, want 1", n)
	}
}

// A client outside the allow list is closed at accept: it holds no slot.
func TestTCPOutsideTheAllowListIsClosedAtAccept(t *testing.T) {
	up := startUpstream(t, zone(t, "a.test. 300 IN A 192.0.2.1"))
	s := startServer(t, Config{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}, forwardTo(up.Addr))
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}, Timeout: 2 * time.Second}
	nc, err := d.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); err == nil {
		t.Fatal("a client outside the allow list got data")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a client outside the allow list holds an open connection")
	}
	if n := promtest.ToFloat64(s.metrics.tcpRejected); n != 1 {
		t.Errorf("tcp rejected %v, want 1", n)
	}
	if _, err := dialFrom(t, "127.0.0.1", s.addr, "a.test."); err != nil {
		t.Errorf("an allowed client: %v", err)
	}
}
