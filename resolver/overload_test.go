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
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The innocent side of every bound: each test here shows that a defence
// does not hurt a well-behaved client (a burst, a quiet neighbour, a client
// sharing a name with a noisy one), over real sockets.

// udpClients are several UDP sockets on one source address: one client, as
// far as nodedns's fairness goes. Replies are read as they come, so that
// no socket buffer overflows.
type udpClients struct {
	conns []*net.UDPConn
	dst   *net.UDPAddr
	mu    sync.Mutex
	got   map[uint16]*dns.Msg
	n     atomic.Int64
}

func newUDPClients(t *testing.T, src, dst string, sockets int) *udpClients {
	t.Helper()
	c := &udpClients{dst: net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst)), got: map[uint16]*dns.Msg{}}
	for range sockets {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)})
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadBuffer(1 << 20)
		t.Cleanup(func() { _ = conn.Close() })
		c.conns = append(c.conns, conn)
		go func() {
			buf := make([]byte, 65535)
			for { // ends when the socket is closed
				n, err := conn.Read(buf)
				if err != nil {
					return
				}
				m := new(dns.Msg)
				if m.Unpack(buf[:n]) != nil {
					continue
				}
				c.mu.Lock()
				c.got[m.Id] = m
				c.mu.Unlock()
				c.n.Add(1)
			}
		}()
	}
	return c
}

// send sends m with the given ID from socket id % sockets.
func (c *udpClients) send(t *testing.T, id uint16, m *dns.Msg) {
	t.Helper()
	m.Id = id
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.conns[int(id)%len(c.conns)].WriteToUDP(b, c.dst); err != nil {
		t.Fatal(err)
	}
}

// wait waits for n replies and returns them by ID.
func (c *udpClients) wait(t *testing.T, n int) map[uint16]*dns.Msg {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d replies", n), func() bool { return c.n.Load() >= int64(n) })
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[uint16]*dns.Msg, len(c.got))
	for k, v := range c.got {
		out[k] = v
	}
	return out
}

func rcodes(replies map[uint16]*dns.Msg) map[string]int {
	out := map[string]int{}
	for _, r := range replies {
		out[dns.RcodeToString[r.Rcode]]++
	}
	return out
}

// anyName answers an A record for any name, after wait(name) returns.
func anyName(wait func(name string)) func(w dns.ResponseWriter, r *dns.Msg) {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		wait(strings.ToLower(r.Question[0].Name))
		m := new(dns.Msg)
		m.SetReply(r)
		rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN A 192.0.2.1")
		m.Answer = append(m.Answer, rr)
		_ = w.WriteMsg(m)
	}
}

// exchangeFrom asks addr from the source address src.
func exchangeFrom(t *testing.T, src, addr string, m *dns.Msg) (*dns.Msg, time.Duration) {
	t.Helper()
	c := &dns.Client{Timeout: 5 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}}}
	r, d, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s from %s: %v", m.Question[0].Name, src, err)
	}
	return r, d
}

// A pod that looks up 1,000 distinct names at once, against an upstream
// that has room (it only needs them one slot at a time), gets 1,000
// answers: nothing is shed while the scarce resource has room.
func TestBurstOfDistinctNamesIsNotShed(t *testing.T) {
	gate := make(chan struct{})
	up := startUpstream(t, anyName(func(string) { <-gate }))
	s := startServer(t, Config{MaxInflight: 10, MaxQueueWait: 30 * time.Second}, forwardTo(up.Addr))
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(gate) }) })

	const n = 1000
	c := newUDPClients(t, "127.0.0.1", s.addr, 10)
	for i := range n {
		c.send(t, uint16(i+1), query(fmt.Sprintf("n%d.burst.test.", i), dns.TypeA))
	}
	// Nine take the unreserved slots, the rest wait for them: none is
	// turned away.
	waitFor(t, "the burst to queue", func() bool { return testutil.ToFloat64(s.metrics.queued) == n-9 })
	once.Do(func() { close(gate) })
	replies := c.wait(t, n)
	if got := rcodes(replies); got["NOERROR"] != n {
		t.Errorf("answers %v, want %d NOERROR", got, n)
	}
	for reason, m := range s.metrics.shed {
		if v := testutil.ToFloat64(m); v != 0 {
			t.Errorf("shed{%s} = %v", shedReasonNames[reason], v)
		}
	}
	if q := up.Queries.Load(); q != n {
		t.Errorf("upstream got %d queries, want %d", q, n)
	}
}

// A noisy client holds every slot against a slow upstream and has hundreds
// of misses queued; a quiet client's misses wait for one slot to free, not
// for the noisy client's queue.
func TestQuietClientGetsItsTurn(t *testing.T) {
	up := startUpstream(t, anyName(func(name string) {
		if strings.HasSuffix(name, ".noisy.test.") {
			time.Sleep(100 * time.Millisecond)
		}
	}))
	s := startServer(t, Config{MaxInflight: 4, MaxQueueWait: 3 * time.Second}, forwardTo(up.Addr))
	noisy := newUDPClients(t, "127.0.0.2", s.addr, 4)
	const storm = 100
	for i := range storm {
		noisy.send(t, uint16(i+1), query(fmt.Sprintf("n%d.noisy.test.", i), dns.TypeA))
	}
	waitFor(t, "the noisy client's queue", func() bool { return testutil.ToFloat64(s.metrics.queued) >= storm/2 })
	// Behind the noisy queue the quiet client would wait up to 100 x 100ms
	// / 4 = 2.5 s; in its own turn, about one slot's 100 ms.
	for i := range 5 {
		r, d := exchangeFrom(t, "127.0.0.3", s.addr, query(fmt.Sprintf("q%d.quiet.test.", i), dns.TypeA))
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("quiet query %d: %s, want the answer", i, dns.RcodeToString[r.Rcode])
		}
		if d > time.Second {
			t.Errorf("quiet query %d took %v: it waited behind the noisy client's queue", i, d)
		}
	}
	if got := rcodes(noisy.wait(t, storm)); got["NOERROR"] != storm {
		t.Errorf("noisy client's answers %v: its queue must drain too, nothing was short", got)
	}
}

// One client asking one slow name over and over fills the room to wait;
// another client asking the same name still gets its answer: waiting
// queries are charged to their client, and the one holding the most gives
// way.
func TestCoalescedWaitersAreChargedToTheirClient(t *testing.T) {
	gate := make(chan struct{})
	up := startUpstream(t, anyName(func(string) { <-gate }))
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(gate) }) })
	s := startServer(t, Config{MaxWaiters: 20}, forwardTo(up.Addr))

	noisy := newUDPClients(t, "127.0.0.2", s.addr, 2)
	for i := range 50 {
		noisy.send(t, uint16(i+1), query("slow.test.", dns.TypeA))
	}
	// 20 wait (the leader and 19 coalesced); 30 are answered at once.
	waitFor(t, "the room to fill", func() bool { return testutil.ToFloat64(s.metrics.shed[shedWaiters]) == 30 })

	quiet := newUDPClients(t, "127.0.0.3", s.addr, 1)
	quiet.send(t, 7, query("slow.test.", dns.TypeA))
	waitFor(t, "the quiet query to take a noisy one's room", func() bool {
		return testutil.ToFloat64(s.metrics.shed[shedPushedOut]) == 1
	})
	once.Do(func() { close(gate) })
	if r := quiet.wait(t, 1)[7]; r == nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("quiet client: %v, want the answer", r)
	}
	if got := rcodes(noisy.wait(t, 50)); got["NOERROR"] != 19 || got["SERVFAIL"] != 31 {
		t.Errorf("noisy client's answers %v, want 19 NOERROR and 31 SERVFAIL", got)
	}
	if q := up.Queries.Load(); q != 1 {
		t.Errorf("upstream got %d queries for one name, want 1", q)
	}
}

// Answers nodedns gives without the upstream (errors it detects, cached
// entries) are never shed, however busy the forward stage is.
func TestLocalAnswersAreNotShedWhenTheForwardStageIsFull(t *testing.T) {
	b := &blockingUpstream{release: make(chan struct{}), entered: make(chan struct{}, 10)}
	var once sync.Once
	release := func() { once.Do(func() { close(b.release) }) }
	s := startServer(t, Config{MaxInflight: 1, MaxWaiters: 1}, b)
	t.Cleanup(release) // before the server's shutdown, which waits for the blocked miss
	go func() {
		c := &dns.Client{Timeout: 5 * time.Second}
		_, _, _ = c.Exchange(query("slow.test.", dns.TypeA), s.addr)
	}()
	<-b.entered // the only slot and the only room to wait are taken

	notify := query("local.test.", dns.TypeSOA)
	notify.Opcode = dns.OpcodeNotify
	badVers := query("local.test.", dns.TypeA)
	badVers.SetEdns0(1232, false)
	badVers.IsEdns0().SetVersion(1)
	for _, tc := range []struct {
		name  string
		m     *dns.Msg
		rcode int
	}{
		{"NOTIFY", notify, dns.RcodeNotImplemented},
		{"EDNS version 1", badVers, dns.RcodeBadVers},
		{"AXFR", query("local.test.", dns.TypeAXFR), dns.RcodeRefused},
	} {
		r := exchange(t, "tcp", s.addr, tc.m) // AXFR and friends: TCP is fine for all
		if r.Rcode != tc.rcode {
			t.Errorf("%s: %s, want %s", tc.name, dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
		}
	}
	for reason, m := range s.metrics.shed {
		if v := testutil.ToFloat64(m); v != 0 {
			t.Errorf("shed{%s} = %v: a local answer was shed", shedReasonNames[reason], v)
		}
	}
}

// checkingForwarder is a Forwarder that implements ForwardChecker.
type checkingForwarder struct {
	Forwarder
	check func(qname string) error
	loop  func(qname string) bool
}

func (c checkingForwarder) Check(qname string) error { return c.check(qname) }
func (c checkingForwarder) IsLoopProbe(qname string, _ netip.Addr) bool {
	return c.loop != nil && c.loop(qname)
}

// When the name's upstreams are all known to be down, the answer comes at
// once from the reader, without a slot and without a try upstream.
func TestKnownDownUpstreamIsAnsweredOnTheReader(t *testing.T) {
	var calls atomic.Int64
	var down atomic.Bool
	fwd := checkingForwarder{
		Forwarder: answerWith("192.0.2.1", &calls),
		check: func(string) error {
			if down.Load() {
				return errors.New("no healthy upstream")
			}
			return nil
		},
	}
	clock := newFakeClock()
	s := startServer(t, Config{}, fwd, withClock(clock, fwd))
	s.cache.SetPolicy(withServeStale(s.cache.Policy(), time.Hour))
	warm(t, s, "stale.test.")
	down.Store(true)
	clock.advance(2 * time.Minute)
	before := calls.Load()
	if r := exchange(t, "udp", s.addr, query("new.test.", dns.TypeA)); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("down upstream, no stale entry: %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if r := exchange(t, "udp", s.addr, query("stale.test.", dns.TypeA)); len(r.Answer) != 1 || r.Answer[0].Header().Ttl != staleTTL {
		t.Errorf("down upstream, stale entry: %v, want the stale answer", r)
	}
	if n := calls.Load() - before; n != 0 {
		t.Errorf("the forwarder was called %d times for a group known to be down", n)
	}
	if n := testutil.ToFloat64(s.metrics.shed[shedUpstreamDown]); n != 2 {
		t.Errorf("shed{upstream_down} = %v, want 2", n)
	}
	// The warm-up's flight gives its slot back after its answer is
	// written; no other flight takes one.
	waitFor(t, "no resolution in flight", func() bool { return testutil.ToFloat64(s.metrics.inflight) == 0 })
}

// An upstream that answers REFUSED (CoreDNS's max_concurrent does, under
// overload) is failing: the client gets the stale answer or SERVFAIL, never
// REFUSED (musl treats it like a timeout).
func TestUpstreamRefusedIsAFailure(t *testing.T) {
	var refuse atomic.Bool
	var calls atomic.Int64
	ok := answerWith("192.0.2.1", &calls)
	fwd := ForwarderFunc(func(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
		if refuse.Load() {
			m := new(dns.Msg)
			m.SetRcode(req, dns.RcodeRefused)
			return m, nil
		}
		return ok(ctx, req)
	})
	clock := newFakeClock()
	s := startServer(t, Config{}, fwd, withClock(clock, fwd))
	s.cache.SetPolicy(withServeStale(s.cache.Policy(), time.Hour))
	warm(t, s, "stale.test.")
	refuse.Store(true)
	clock.advance(2 * time.Minute)
	if r := exchange(t, "udp", s.addr, query("stale.test.", dns.TypeA)); len(r.Answer) != 1 || r.Answer[0].Header().Ttl != staleTTL {
		t.Errorf("REFUSED with a stale entry: %v, want the stale answer", r)
	}
	if r := exchange(t, "udp", s.addr, query("new.test.", dns.TypeA)); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("REFUSED without a stale entry: %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

// A failed prefetch is not retried on every hit: upstream load must not
// follow client load while the upstream is failing.
func TestFailedPrefetchBacksOff(t *testing.T) {
	clock := newFakeClock()
	var calls atomic.Int64
	fwd := &switchable{}
	fwd.set(answerWith("192.0.2.1", &calls)) // 60 s TTL
	s := startServer(t, Config{PrefetchMinHits: 1}, fwd, withClock(clock, fwd))
	warm(t, s, "hot.test.")
	fwd.set(func(_ context.Context, req *dns.Msg) (*dns.Msg, error) {
		calls.Add(1)
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeServerFailure)
		return m, nil
	})
	clock.advance(55 * time.Second) // in the last tenth of the TTL
	before := calls.Load()
	for i := range 20 {
		r := exchange(t, "udp", s.addr, query("hot.test.", dns.TypeA))
		if len(r.Answer) != 1 {
			t.Fatalf("hit %d: %v", i, r)
		}
		waitFor(t, "the prefetch to end", func() bool { return s.inflight() == 0 })
	}
	if n := calls.Load() - before; n != 1 {
		t.Errorf("20 hits after a failed prefetch sent %d upstream queries, want 1", n)
	}
}

// A panic while a reader handles a packet answers that packet SERVFAIL and
// leaves the reader serving: one bad packet must not take the node's DNS
// down.
func TestPanicOnTheReaderIsContained(t *testing.T) {
	var calls atomic.Int64
	fwd := checkingForwarder{
		Forwarder: answerWith("192.0.2.1", &calls),
		check: func(qname string) error {
			if strings.HasPrefix(qname, "boom.") {
				panic("injected")
			}
			return nil
		},
	}
	s := startServer(t, Config{UDPSockets: 1}, fwd)
	for _, proto := range []string{"udp", "tcp"} {
		if r := exchange(t, proto, s.addr, query("boom.test.", dns.TypeA)); r.Rcode != dns.RcodeServerFailure {
			t.Errorf("%s: the panicking query got %s, want SERVFAIL", proto, dns.RcodeToString[r.Rcode])
		}
		if r := exchange(t, proto, s.addr, query(proto+".fine.test.", dns.TypeA)); len(r.Answer) != 1 {
			t.Errorf("%s: after the panic: %v", proto, r)
		}
	}
	if n := testutil.ToFloat64(s.metrics.panics); n != 2 {
		t.Errorf("panics_total = %v, want 2", n)
	}
}

// A query that is one of our own loop probes coming back is answered
// SERVFAIL at once, and reported to the forwarder.
func TestReturningLoopProbeIsAnsweredAtOnce(t *testing.T) {
	var calls atomic.Int64
	var seen atomic.Int64
	fwd := checkingForwarder{
		Forwarder: answerWith("192.0.2.1", &calls),
		check:     func(string) error { return nil },
		loop: func(qname string) bool {
			if strings.HasPrefix(qname, "probe-") {
				seen.Add(1)
				return true
			}
			return false
		},
	}
	s := startServer(t, Config{}, fwd)
	if r := exchange(t, "udp", s.addr, query("probe-1.nodedns-loop.invalid.", dns.TypeHINFO)); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("loop probe: %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if seen.Load() != 1 || calls.Load() != 0 {
		t.Errorf("loop probe seen %d times, forwarded %d times; want 1 and 0", seen.Load(), calls.Load())
	}
	if n := testutil.ToFloat64(s.metrics.shed[shedLoop]); n != 1 {
		t.Errorf("shed{loop} = %v, want 1", n)
	}
}
