package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newRemote(t *testing.T, cfg RemoteConfig, m *Metrics) *Remote {
	t.Helper()
	r, err := NewRemote(cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func TestRemoteAnswersOwnRequest(t *testing.T) {
	srv := startServer(t, true, false, answer)
	m, _ := newTestMetrics(t)
	r := newRemote(t, RemoteConfig{Addr: srv.addr}, m)

	tests := []struct {
		name   string
		edns   bool
		do     bool
		wantDO bool
	}{
		{name: "no EDNS in request", edns: false},
		{name: "EDNS without DO", edns: true},
		{name: "EDNS with DO", edns: true, do: true, wantDO: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := query("WwW.Example.ORG.", dns.TypeA)
			req.Id = 4242
			if tt.edns {
				req.SetEdns0(4096, tt.do)
			}
			before := req.String()

			var upstreamIDs []uint16
			for range 3 {
				resp, err := r.Exchange(ctxWithTimeout(t, 2*time.Second), req)
				if err != nil {
					t.Fatal(err)
				}
				if resp.Id != 4242 {
					t.Errorf("response ID = %d, want the request's 4242", resp.Id)
				}
				if got := resp.Question[0].Name; got != "WwW.Example.ORG." {
					t.Errorf("question name = %q, want case as asked", got)
				}
				if len(resp.Answer) != 1 || resp.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
					t.Errorf("answer = %v", resp.Answer)
				}
				seen := srv.last()
				opt := seen.IsEdns0()
				if opt == nil || opt.UDPSize() != EDNSUDPSize {
					t.Fatalf("upstream saw OPT %v, want UDP size %d", opt, EDNSUDPSize)
				}
				if opt.Do() != tt.wantDO {
					t.Errorf("upstream saw DO=%v, want %v", opt.Do(), tt.wantDO)
				}
				upstreamIDs = append(upstreamIDs, seen.Id)
			}
			if req.String() != before || req.Id != 4242 {
				t.Errorf("request was modified:\n%s\nwant\n%s", req.String(), before)
			}
			if upstreamIDs[0] == 4242 && upstreamIDs[1] == 4242 && upstreamIDs[2] == 4242 {
				t.Error("upstream always saw the client's ID; want a fresh random ID per query")
			}
		})
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues(r.Address(), "NOERROR")); got != 9 {
		t.Errorf("requests_total{rcode=NOERROR} = %v, want 9", got)
	}
	if got := testutil.CollectAndCount(m.duration); got != 1 {
		t.Errorf("duration series = %d, want 1", got)
	}
}

// spoofer answers first with replies that must be dropped, then correctly.
func spoofer(_ *testServer, w dns.ResponseWriter, r *dns.Msg) {
	wrongID := new(dns.Msg)
	wrongID.SetReply(r)
	wrongID.Id = r.Id + 1
	_ = w.WriteMsg(wrongID)

	wrongQ := new(dns.Msg)
	wrongQ.SetReply(r)
	wrongQ.Question[0].Name = "evil.example."
	_ = w.WriteMsg(wrongQ)

	reflected := r.Copy() // QR bit not set
	_ = w.WriteMsg(reflected)

	_, _ = w.Write([]byte{1, 2, 3})                                                                    // shorter than a header
	_, _ = w.Write(append([]byte{byte(r.Id >> 8), byte(r.Id), 0x80, 0, 0, 1}, 0, 0, 0, 0, 0, 0, 0xff)) // right ID, garbage body

	answer(nil, w, r)
}

func TestRemoteDropsMismatchedAndMalformedReplies(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			srv := startServer(t, network == "udp", network == "tcp", spoofer)
			m, _ := newTestMetrics(t)
			r := newRemote(t, RemoteConfig{Addr: srv.addr, ForceTCP: network == "tcp"}, m)

			resp, err := r.Exchange(ctxWithTimeout(t, 2*time.Second), query("example.org.", dns.TypeA))
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Answer) != 1 {
				t.Fatalf("want the genuine answer, got %v", resp)
			}
			if got := testutil.ToFloat64(m.mismatched.WithLabelValues(r.Address())); got != 3 {
				t.Errorf("mismatched_responses_total = %v, want 3 (wrong ID, wrong question, not a response)", got)
			}
			if got := testutil.ToFloat64(m.errors.WithLabelValues(r.Address(), ReasonMalformed)); got != 2 {
				t.Errorf("errors_total{reason=malformed} = %v, want 2", got)
			}
		})
	}
}

func TestRemoteTruncatedRetriesOverTCP(t *testing.T) {
	srv := startServer(t, true, true, func(s *testServer, w dns.ResponseWriter, r *dns.Msg) {
		if _, ok := w.RemoteAddr().(*net.UDPAddr); ok {
			m := new(dns.Msg)
			m.SetReply(r)
			m.Truncated = true
			_ = w.WriteMsg(m)
			return
		}
		answer(s, w, r)
	})
	r := newRemote(t, RemoteConfig{Addr: srv.addr}, nil)
	resp, err := r.Exchange(ctxWithTimeout(t, 2*time.Second), query("big.example.", dns.TypeA))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Truncated || len(resp.Answer) != 1 {
		t.Fatalf("want the full TCP answer, got %v", resp)
	}
	if u, c := srv.udpQs.Load(), srv.tcpQs.Load(); u != 1 || c != 1 {
		t.Errorf("queries: udp=%d tcp=%d, want 1 and 1", u, c)
	}
}

// A server that ignores the advertised EDNS size and sends a UDP reply
// larger than the read buffer: the reply is not misread as malformed, the
// query goes again over TCP.
func TestRemoteOversizedUDPReplyRetriesOverTCP(t *testing.T) {
	big := func(r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		for i := range 40 {
			m.Answer = append(m.Answer, &dns.TXT{
				Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
				Txt: []string{fmt.Sprintf("%03d%s", i, strings.Repeat("x", 200))},
			})
		}
		return m
	}
	srv := startServer(t, true, true, func(_ *testServer, w dns.ResponseWriter, r *dns.Msg) {
		m := big(r)
		if _, ok := w.RemoteAddr().(*net.UDPAddr); ok {
			b, _ := m.Pack()
			if len(b) <= udpReadSize {
				t.Errorf("reply of %d bytes fits the read buffer; the test needs more", len(b))
			}
			_, _ = w.Write(b)
			return
		}
		_ = w.WriteMsg(m)
	})
	r := newRemote(t, RemoteConfig{Addr: srv.addr}, nil)
	resp, err := r.Exchange(ctxWithTimeout(t, 2*time.Second), query("big.example.", dns.TypeTXT))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Truncated || len(resp.Answer) != 40 {
		t.Fatalf("want the full TCP answer of 40 records, got %d (TC=%v)", len(resp.Answer), resp.Truncated)
	}
	if u, c := srv.udpQs.Load(), srv.tcpQs.Load(); u != 1 || c != 1 {
		t.Errorf("queries: udp=%d tcp=%d, want 1 and 1", u, c)
	}
}

func TestRemoteForceTCPReusesConnections(t *testing.T) {
	srv := startServer(t, false, true, answer)
	r := newRemote(t, RemoteConfig{Addr: srv.addr, ForceTCP: true}, nil)
	ctx := ctxWithTimeout(t, 5*time.Second)
	for i := range 5 {
		if _, err := r.Exchange(ctx, query("example.org.", dns.TypeA)); err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
	}
	if got := srv.tcpConns.Load(); got != 1 {
		t.Errorf("server accepted %d TCP connections for 5 sequential queries, want 1", got)
	}
	if got := srv.tcpQs.Load(); got != 5 {
		t.Errorf("server saw %d queries, want 5", got)
	}

	// The server drops its side of the idle connection: the next query
	// fails on the pooled connection and is retried once on a fresh one.
	srv.closeAccepted()
	if _, err := r.Exchange(ctx, query("example.org.", dns.TypeA)); err != nil {
		t.Fatalf("query after server closed pooled connection: %v", err)
	}
	if got := srv.tcpConns.Load(); got != 2 {
		t.Errorf("accepted connections = %d, want 2 (one redial)", got)
	}
	if got := r.pool.len(); got != 1 {
		t.Errorf("idle pool has %d connections, want 1", got)
	}
}

func TestRemoteConcurrentForceTCP(t *testing.T) {
	srv := startServer(t, false, true, answer)
	r := newRemote(t, RemoteConfig{Addr: srv.addr, ForceTCP: true}, nil)
	ctx := ctxWithTimeout(t, 5*time.Second)
	errs := make(chan error, 20)
	for range 20 {
		go func() {
			_, err := r.Exchange(ctx, query("example.org.", dns.TypeA))
			errs <- err
		}()
	}
	for range 20 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := srv.tcpConns.Load(); got > 20 {
		t.Errorf("accepted %d connections for 20 queries", got)
	}
	if got := r.pool.len(); got < 1 || got > maxIdleConns {
		t.Errorf("idle pool size %d", got)
	}
}

func TestPoolExpiry(t *testing.T) {
	p := newTCPPool(time.Hour)
	a, b := net.Pipe()
	defer b.Close()
	p.put(a)
	p.idle[0].since = time.Now().Add(-2 * time.Hour) // pretend it has idled out
	if c := p.get(); c != nil {
		t.Fatal("expired connection handed out")
	}
	if _, err := a.Write([]byte{1}); err == nil {
		t.Error("expired connection was not closed")
	}
	c, d := net.Pipe()
	defer d.Close()
	p.put(c)
	p.idle[0].since = time.Now().Add(-2 * time.Hour)
	p.sweep()
	if p.len() != 0 {
		t.Error("sweep kept an expired connection")
	}
	p.close()
	e, f := net.Pipe()
	defer f.Close()
	p.put(e)
	if p.len() != 0 {
		t.Error("put after close kept the connection")
	}
}

func TestRemoteFailures(t *testing.T) {
	hole, got := blackhole(t)
	tests := []struct {
		name       string
		addr       string
		ctx        func() context.Context
		wantReason string
		wantIs     error
	}{
		{
			name: "timeout", addr: hole, wantReason: ReasonTimeout,
			ctx: func() context.Context { return context.Background() },
		},
		{
			name: "caller deadline", addr: hole, wantReason: ReasonTimeout, wantIs: context.DeadlineExceeded,
			ctx: func() context.Context { return ctxWithTimeout(t, 50*time.Millisecond) },
		},
		{
			name: "connection refused", addr: closedPort(t), wantReason: ReasonNetwork,
			ctx: func() context.Context { return context.Background() },
		},
		{
			name: "canceled while waiting", addr: hole, wantReason: ReasonCanceled, wantIs: context.Canceled,
			ctx: func() context.Context {
				ctx, cancel := context.WithCancel(context.Background())
				go func() { <-got; cancel() }() // cancel once the query is on the wire
				return ctx
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := newTestMetrics(t)
			r := newRemote(t, RemoteConfig{Addr: tt.addr, Timeout: 300 * time.Millisecond}, m)
			start := time.Now()
			_, err := r.Exchange(tt.ctx(), query("example.org.", dns.TypeA))
			if time.Since(start) > 2*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
			var ee *ExchangeError
			if !errors.As(err, &ee) {
				t.Fatalf("err = %v, want *ExchangeError", err)
			}
			if ee.Reason != tt.wantReason || ee.Upstream != r.Address() || ee.Network != "udp" {
				t.Errorf("got %+v, want reason %s", ee, tt.wantReason)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.wantIs)
			}
			if want := "exchanging with " + r.Address() + " over udp: "; len(err.Error()) < len(want) || err.Error()[:len(want)] != want {
				t.Errorf("error text %q, want prefix %q", err, want)
			}
			if got := testutil.ToFloat64(m.errors.WithLabelValues(r.Address(), tt.wantReason)); got != 1 {
				t.Errorf("errors_total{reason=%s} = %v, want 1", tt.wantReason, got)
			}
		})
	}
}

func TestNewRemoteValidation(t *testing.T) {
	if _, err := NewRemote(RemoteConfig{Addr: "dns.example"}, nil); err == nil {
		t.Error("hostname accepted")
	}
	if _, err := NewRemote(RemoteConfig{Addr: "127.0.0.1", Timeout: -1}, nil); err == nil {
		t.Error("negative timeout accepted")
	}
	r, err := NewRemote(RemoteConfig{Addr: "::1"}, nil)
	if err != nil || r.Address() != "[::1]:53" || r.timeout != DefaultTimeout {
		t.Errorf("NewRemote(::1) = %v, %v", r, err)
	}
	if _, err := r.Exchange(context.Background(), nil); err == nil {
		t.Error("nil request accepted")
	}
}
