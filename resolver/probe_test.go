package resolver

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/dnswire"
)

func TestIsProbe(t *testing.T) {
	s := &Server{listenIPs: []netip.Addr{netip.MustParseAddr("169.254.20.10")}}
	mk := func(name string, qtype uint16, rd bool) *dnswire.Query {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		m.RecursionDesired = rd
		b, _ := m.Pack()
		var q dnswire.Query
		if err := dnswire.ParseQuery(b, &q); err != nil {
			t.Fatal(err)
		}
		return &q
	}
	node := netip.MustParseAddrPort("169.254.20.10:40000")
	for _, tc := range []struct {
		name string
		q    *dnswire.Query
		src  netip.AddrPort
		want bool
	}{
		{"from a listen address", mk(probeName, dns.TypeTXT, false), node, true},
		{"from loopback", mk(probeName, dns.TypeTXT, false), netip.MustParseAddrPort("127.0.0.1:40000"), true},
		{"case does not matter", mk(strings.ToUpper(probeName), dns.TypeTXT, false), node, true},
		{"from a pod", mk(probeName, dns.TypeTXT, false), netip.MustParseAddrPort("10.244.1.7:40000"), false},
		{"recursion desired (cacheable)", mk(probeName, dns.TypeTXT, true), node, false},
		{"another type", mk(probeName, dns.TypeA, false), node, false},
		{"another name", mk("live.nodedns.invalie.", dns.TypeTXT, false), node, false},
	} {
		if got := s.isProbe(tc.q, tc.src); got != tc.want {
			t.Errorf("%s: isProbe = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestProbeGoesThroughEverySocket: the probe is answered on the reader,
// over UDP and TCP, even with every slot of the miss path busy; with the
// reader stuck it fails, and Stalled names the reader with its stack.
func TestProbeAndStalledReader(t *testing.T) {
	up := newBlockingUpstream()
	defer up.release()
	s := startServer(t, Config{UDPSockets: 1, MaxInflight: 1, MaxWaiters: 1}, up)
	ctx := context.Background()
	if err := s.Probe(ctx, 0); err != nil {
		t.Fatalf("Probe of a serving server: %v", err)
	}
	// Every slot and every waiting room taken: still answered.
	go func() { _, _ = exchangeErr("udp", s.addr, query("busy1.test.", dns.TypeA)) }()
	waitFor(t, "the slot taken", func() bool { return s.inflight() == 1 })
	if err := s.Probe(ctx, 0); err != nil {
		t.Fatalf("Probe with the miss path full: %v", err)
	}
	if st := s.Stalled(50 * time.Millisecond); len(st) != 0 {
		t.Fatalf("stalled readers while all answer: %+v", st)
	}

	// A reader stuck on the flight table's lock.
	s.flightMu.Lock()
	locked := true
	unlock := func() {
		if locked {
			locked = false
			s.flightMu.Unlock()
		}
	}
	defer unlock()
	go func() { _, _ = exchangeErr("udp", s.addr, query("stuck.test.", dns.TypeA)) }()
	var st []Stall
	waitFor(t, "the UDP reader seen stalled", func() bool {
		st = s.Stalled(100 * time.Millisecond)
		return len(st) == 1
	})
	if !strings.HasPrefix(st[0].Reader, "udp ") || !strings.Contains(st[0].Stack, "resolver.(*Server).joinExisting") {
		t.Errorf("stall %q, stack:\n%s", st[0].Reader, st[0].Stack)
	}
	pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := s.Probe(pctx, 0)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "udp") {
		t.Errorf("Probe with the only UDP reader stuck: %v, want a UDP failure", err)
	}
	unlock()
	waitFor(t, "the reader back", func() bool { return len(s.Stalled(100*time.Millisecond)) == 0 })
	if err := s.Probe(ctx, 0); err != nil {
		t.Errorf("Probe after the reader came back: %v", err)
	}
}

// blockingForwarder holds every query until released.
type blockingForwarder struct {
	once sync.Once
	ch   chan struct{}
}

func newBlockingUpstream() *blockingForwarder { return &blockingForwarder{ch: make(chan struct{})} }
func (b *blockingForwarder) release()         { b.once.Do(func() { close(b.ch) }) }
func (b *blockingForwarder) Forward(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
	select {
	case <-b.ch:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	m := new(dns.Msg)
	m.SetReply(req)
	return m, nil
}

func exchangeErr(network, addr string, m *dns.Msg) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	return r, err
}

// TestPanicWithTheFlightTableLockedEndsTheProcess injects a panic into
// each critical section of flightMu: the lock is released (nothing hangs
// on it), and the process is told to end (crash; a test records it and
// ends only the goroutine), since what the lock guards is half-changed.
func TestPanicWithTheFlightTableLockedEndsTheProcess(t *testing.T) {
	type env struct {
		s     *testServer
		clock *fakeClock
		fwd   *switchable
	}
	none := func(*testing.T, env) {}
	slow := func(_ *testing.T, e env) {
		e.fwd.set(func(ctx context.Context, _ *dns.Msg) (*dns.Msg, error) { <-ctx.Done(); return nil, ctx.Err() })
	}
	for _, site := range []struct {
		site    string
		prepare func(*testing.T, env) // before the panic is armed
		trigger string                // the name asked once it is; "" asks nothing
	}{
		{"join", none, "join.test."},
		{"admit", none, "admit.test."},
		{"takeWaiters", none, "take.test."},
		{"handOff", none, "handoff.test."},
		{"expireQueued", none, ""}, // the sweeper, every 10 ms
		{"serveStaleNow", func(t *testing.T, e env) {
			warm(t, e.s, "stale.test.")
			slow(t, e)
			e.clock.advance(2 * time.Minute)
		}, "stale.test."},
		{"prefetch", func(t *testing.T, e env) {
			warm(t, e.s, "hot.test.")
			e.clock.advance(58 * time.Second)
		}, "hot.test."},
	} {
		t.Run(site.site, func(t *testing.T) {
			clock := newFakeClock()
			fwd := &switchable{}
			fwd.set(answerWith("192.0.2.1", new(atomic.Int64)))
			var crashed atomic.Value
			s := startServer(t, Config{PrefetchMinHits: 1, StaleAnswerTimeout: 50 * time.Millisecond}, fwd, withClock(clock, fwd),
				func(s *Server) {
					s.cache.SetPolicy(withServeStale(s.cache.Policy(), time.Hour))
					s.crash = func(p any) {
						crashed.CompareAndSwap(nil, fmt.Sprint(p))
						runtime.Goexit() // the goroutine ends; a real crash ends them all
					}
				})
			site.prepare(t, env{s, clock, fwd})
			var armed atomic.Bool
			hook := func(at string) {
				if at == site.site && armed.CompareAndSwap(true, false) {
					panic("injected at " + at)
				}
			}
			faultHook.Store(&hook)
			defer faultHook.Store(nil)
			armed.Store(true)
			if site.trigger != "" {
				go s.ask(site.trigger)
			}
			waitFor(t, "the crash", func() bool { return crashed.Load() != nil })
			if got := crashed.Load().(string); got != "injected at "+site.site {
				t.Errorf("crash(%q), want the injected panic", got)
			}
			done := make(chan struct{})
			go func() { s.inflight(); close(done) }()
			select {
			case <-done:
			case <-time.After(2 * time.Second):
				t.Fatal("flightMu still held after the panic")
			}
			// The server still answers, over TCP (the UDP reader that
			// panicked ended with its goroutine here).
			fwd.set(answerWith("192.0.2.1", new(atomic.Int64)))
			if r, err := exchangeErr("tcp", s.addr, query("after.test.", dns.TypeA)); err != nil || r.Rcode != dns.RcodeSuccess {
				t.Errorf("after the panic: %v %v", r, err)
			}
		})
	}
}

// ask sends one query over UDP and ignores the outcome.
func (s *testServer) ask(name string) { _, _ = exchangeErr("udp", s.addr, query(name, dns.TypeA)) }
