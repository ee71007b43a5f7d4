package upstream

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/nodedns/nodedns/internal/loopnet"
	"github.com/nodedns/nodedns/internal/testutil"
)

// All DNS traffic in these tests goes to servers started here on 127.0.0.1.

const testWait = 5 * time.Second // upper bound for waiting on any signal

// testServer is a miekg DNS server on 127.0.0.1 (UDP, TCP or both on one port).
type testServer struct {
	addr     string
	tcpConns atomic.Int32 // accepted TCP connections
	udpQs    atomic.Int32 // non-probe queries received over UDP
	tcpQs    atomic.Int32 // non-probe queries received over TCP

	mu       sync.Mutex
	accepted []net.Conn
	lastReq  *dns.Msg
}

// countingListener counts and remembers accepted connections.
type countingListener struct {
	net.Listener
	s *testServer
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.s.tcpConns.Add(1)
		l.s.mu.Lock()
		l.s.accepted = append(l.s.accepted, c)
		l.s.mu.Unlock()
	}
	return c, err
}

// closeAccepted closes the server side of every accepted TCP connection.
func (s *testServer) closeAccepted() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.accepted {
		_ = c.Close()
	}
	s.accepted = nil
}

func (s *testServer) last() *dns.Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastReq
}

// isProbe reports whether r is a health probe (". IN NS").
func isProbe(r *dns.Msg) bool {
	return len(r.Question) == 1 && r.Question[0].Name == "." && r.Question[0].Qtype == dns.TypeNS
}

// startServer starts h on a fresh loopback port. The handler receives the
// server so that it can tell UDP from TCP via w.RemoteAddr().
func startServer(t *testing.T, udp, tcp bool, h func(s *testServer, w dns.ResponseWriter, r *dns.Msg)) *testServer {
	t.Helper()
	s := &testServer{}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if !isProbe(r) {
			if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
				s.tcpQs.Add(1)
			} else {
				s.udpQs.Add(1)
			}
			s.mu.Lock()
			s.lastReq = r.Copy()
			s.mu.Unlock()
		}
		h(s, w, r)
	})
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	switch {
	case udp && tcp:
		pc, ln, err = loopnet.Loopback()
	case udp:
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
	case tcp:
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	if pc != nil {
		s.addr = pc.LocalAddr().String()
	} else {
		s.addr = ln.Addr().String()
	}
	var servers []*dns.Server
	if pc != nil {
		servers = append(servers, &dns.Server{PacketConn: pc, Handler: handler})
	}
	if ln != nil {
		servers = append(servers, &dns.Server{Listener: countingListener{ln, s}, Handler: handler})
	}
	testutil.Serve(t, servers...)
	return s
}

// answer replies with one A record (192.0.2.1) for an A question, with an
// OPT record if the query had one.
func answer(_ *testServer, w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeA {
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A:   net.IPv4(192, 0, 2, 1),
		})
	}
	if opt := r.IsEdns0(); opt != nil { // like a real server: echo EDNS0
		m.SetEdns0(EDNSUDPSize, opt.Do())
	}
	_ = w.WriteMsg(m)
}

// rcodeHandler replies with the given rcode.
func rcodeHandler(rcode int) func(*testServer, dns.ResponseWriter, *dns.Msg) {
	return func(_ *testServer, w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, rcode)
		_ = w.WriteMsg(m)
	}
}

// startSlow starts a server that answers after delay. The handler is
// released when the test ends (this cleanup runs before the server's
// Shutdown, which waits for handlers).
func startSlow(t *testing.T, delay time.Duration) *testServer {
	done := make(chan struct{})
	s := startServer(t, true, false, func(s *testServer, w dns.ResponseWriter, r *dns.Msg) {
		select {
		case <-time.After(delay):
		case <-done:
			return
		}
		answer(s, w, r)
	})
	t.Cleanup(func() { close(done) })
	return s
}

// blackhole returns the address of a bound UDP socket that reads queries
// (signalling each on the returned channel) but never answers.
func blackhole(t *testing.T) (string, <-chan struct{}) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{}, 100)
	go func() {
		buf := make([]byte, 2048)
		for { // ends when pc is closed
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			select {
			case got <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { _ = pc.Close() })
	return pc.LocalAddr().String(), got
}

// closedPort returns a loopback UDP address with nothing listening (queries
// get ICMP port unreachable, i.e. connection refused).
func closedPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	_ = pc.Close()
	return addr
}

func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

func ctxWithTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// logWatcher is a zap logger for tests that also delivers each log message
// on a channel, so tests can wait for health transitions without sleeping.
type logWatcher struct {
	log *zap.Logger
	ch  chan string
}

func newLogWatcher(t *testing.T) *logWatcher {
	lw := &logWatcher{ch: make(chan string, 1000)}
	lw.log = zaptest.NewLogger(t, zaptest.Level(zapcore.DebugLevel)).WithOptions(zap.Hooks(func(e zapcore.Entry) error {
		select {
		case lw.ch <- e.Message:
		default:
		}
		return nil
	}))
	return lw
}

// waitFor waits until a message containing substr is logged.
func (lw *logWatcher) waitFor(t *testing.T, substr string) {
	t.Helper()
	timeout := time.After(testWait)
	for { // bounded by timeout
		select {
		case msg := <-lw.ch:
			if strings.Contains(msg, substr) {
				return
			}
		case <-timeout:
			t.Fatalf("timed out waiting for log message %q", substr)
		}
	}
}

func newTestMetrics(t *testing.T) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	return NewMetrics(reg), reg
}

func mustGroup(t *testing.T, cfg GroupConfig, m *Metrics, log *zap.Logger) *Group {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	if len(cfg.Zones) == 0 {
		cfg.Zones = []string{"."}
	}
	g, err := NewGroup(cfg, m, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return g
}

// waitUntil polls cond until it holds or testWait passes; for states only a
// metric shows.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, testWait, what, cond)
}
