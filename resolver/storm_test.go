package resolver

import (
	"context"
	"errors"
	"github.com/nodedns/nodedns/cache"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodedns/nodedns/internal/testutil"
)

// fakeClock is a settable clock for the server and its pipeline.
type fakeClock struct{ t atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.t.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.t.Add(int64(d)) }

func withClock(c *fakeClock, fwd Forwarder) func(*Server) {
	return func(s *Server) {
		s.now = c.now
		s.setForwarder(fwd)
	}
}

// switchable forwards to the current function, so a test can make the
// upstream fail or block after the cache is warm.
type switchable struct{ f atomic.Pointer[ForwarderFunc] }

func (s *switchable) set(f ForwarderFunc) { s.f.Store(&f) }
func (s *switchable) Forward(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
	return (*s.f.Load())(ctx, req)
}

// waitFor polls cond until it holds or 10 s pass; for conditions that only
// a metric or a count can show.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, what, cond)
}

func TestIdenticalMissesShareOneUpstreamQuery(t *testing.T) {
	release := make(chan struct{})
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		<-release
		zone(t, "hot.test. 60 IN A 192.0.2.7")(w, r)
	})
	s := startServer(t, Config{}, forwardTo(up.Addr))
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // runs before the server's shutdown, even on failure

	// Ten client sockets of a hundred queries each: every socket buffer
	// takes its hundred replies whole.
	const n, perConn = 1000, 100
	var conns []net.PacketConn
	for i := 0; i < n/perConn; i++ {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s.addr))
	ids := map[uint16]bool{}
	// Send in bursts the socket buffers take whole, waiting for each burst
	// to be registered, so no datagram is lost before it reaches nodedns.
	for i := 0; i < n; i++ {
		q := query("HOT.test.", dns.TypeA)
		q.Id = uint16(i + 1)
		ids[q.Id] = true
		b, _ := q.Pack()
		if _, err := conns[i/perConn].WriteTo(b, dst); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			waitFor(t, "the leader", func() bool { return up.Queries.Load() == 1 })
		} else if i%100 == 0 || i == n-1 {
			want := float64(i)
			waitFor(t, "coalesced waiters", func() bool { return promtest.ToFloat64(s.metrics.coalesced) == want })
		}
	}
	unblock()

	buf := make([]byte, 1500)
	for i := 0; i < n; i++ {
		conn := conns[i/perConn]
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		k, _, err := conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after %d replies: %v", i, err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:k]); err != nil {
			t.Fatal(err)
		}
		if !ids[r.Id] || r.Question[0].Name != "HOT.test." || len(r.Answer) != 1 {
			t.Fatalf("reply %v", r)
		}
		delete(ids, r.Id)
	}
	if got := up.Queries.Load(); got != 1 {
		t.Errorf("upstream got %d queries for %d identical misses, want 1", got, n)
	}
}

func TestWaiterCapAnswersAtOnce(t *testing.T) {
	release := make(chan struct{})
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		<-release
		zone(t, "hot.test. 60 IN A 192.0.2.7")(w, r)
	})
	s := startServer(t, Config{MaxWaiters: 2}, forwardTo(up.Addr))
	t.Cleanup(func() { close(release) })
	for i := 0; i < 2; i++ { // the leader and one waiter
		go func() {
			c := &dns.Client{Timeout: 5 * time.Second}
			_, _, _ = c.Exchange(query("hot.test.", dns.TypeA), s.addr)
		}()
	}
	waitFor(t, "one coalesced waiter", func() bool { return promtest.ToFloat64(s.metrics.coalesced) == 1 })
	start := time.Now()
	r := exchange(t, "udp", s.addr, query("hot.test.", dns.TypeA))
	if r.Rcode != dns.RcodeServerFailure || time.Since(start) > time.Second {
		t.Errorf("over the waiter cap: %s after %v, want SERVFAIL at once", dns.RcodeToString[r.Rcode], time.Since(start))
	}
	if n := promtest.ToFloat64(s.metrics.shed[shedWaiters]); n != 1 {
		t.Errorf("shed{waiters} = %v", n)
	}
}

// warm puts name in the cache through fwd at the clock's time.
func warm(t *testing.T, s *testServer, name string) {
	t.Helper()
	if r := exchange(t, "udp", s.addr, query(name, dns.TypeA)); len(r.Answer) != 1 {
		t.Fatalf("warming %s: %v", name, r)
	}
}

func answerWith(ip string, calls *atomic.Int64) ForwarderFunc {
	return func(_ context.Context, req *dns.Msg) (*dns.Msg, error) {
		calls.Add(1)
		m := new(dns.Msg)
		m.SetReply(req)
		rr, _ := dns.NewRR(req.Question[0].Name + " 60 IN A " + ip)
		m.Answer = append(m.Answer, rr)
		return m, nil
	}
}

func TestDeadUpstreamServesStaleWithTTL30(t *testing.T) {
	clock := newFakeClock()
	var calls atomic.Int64
	fwd := &switchable{}
	fwd.set(answerWith("192.0.2.1", &calls))
	s := startServer(t, Config{}, fwd, withClock(clock, fwd))
	s.cache.SetPolicy(withServeStale(s.cache.Policy(), time.Hour))
	warm(t, s, "stale.test.")

	fwd.set(func(context.Context, *dns.Msg) (*dns.Msg, error) {
		calls.Add(1)
		return nil, errors.New("all upstreams down")
	})
	clock.advance(2 * time.Minute) // the 60 s TTL ran out a minute ago
	before := calls.Load()
	for i := 0; i < 3; i++ {
		r := exchange(t, "udp", s.addr, query("stale.test.", dns.TypeA))
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
			t.Fatalf("query %d: want the stale answer, got %v", i, r)
		}
		if ttl := r.Answer[0].Header().Ttl; ttl != staleTTL {
			t.Errorf("stale TTL %d, want %d", ttl, staleTTL)
		}
	}
	// The first query tried the upstream; the next ones were answered stale
	// at once, without a new attempt, within the failure recheck time.
	if n := calls.Load() - before; n != 1 {
		t.Errorf("upstream tried %d times, want 1", n)
	}
	if n := promtest.ToFloat64(s.metrics.staleServed[staleUpstreamFailed]); n != 1 {
		t.Errorf("stale_served{upstream_failed} = %v, want 1", n)
	}
	if n := promtest.ToFloat64(s.metrics.staleServed[staleRecheckReason]); n != 2 {
		t.Errorf("stale_served{recheck} = %v, want 2", n)
	}
	// Past the stale window the failure shows.
	clock.advance(2 * time.Hour)
	if r := exchange(t, "udp", s.addr, query("stale.test.", dns.TypeA)); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("beyond serve-stale: %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

func TestSlowUpstreamServesStaleThenRefreshes(t *testing.T) {
	clock := newFakeClock()
	var calls atomic.Int64
	fwd := &switchable{}
	fwd.set(answerWith("192.0.2.1", &calls))
	s := startServer(t, Config{StaleAnswerTimeout: 50 * time.Millisecond}, fwd, withClock(clock, fwd))
	s.cache.SetPolicy(withServeStale(s.cache.Policy(), time.Hour))
	warm(t, s, "slow.test.")

	release := make(chan struct{})
	fwd.set(func(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return answerWith("192.0.2.2", &calls)(ctx, req)
	})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	clock.advance(2 * time.Minute)
	r := exchange(t, "udp", s.addr, query("slow.test.", dns.TypeA))
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.1" || r.Answer[0].Header().Ttl != staleTTL {
		t.Fatalf("want the stale answer while the upstream is slow, got %v", r)
	}
	unblock() // the resolution in the background completes and refreshes the entry
	waitFor(t, "no resolution in flight", func() bool { return s.inflight() == 0 })
	r = exchange(t, "udp", s.addr, query("slow.test.", dns.TypeA))
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.2" || r.Answer[0].Header().Ttl != 60 {
		t.Errorf("after the refresh: %v", r)
	}
}

func TestPrefetchRefreshesHotEntryBeforeExpiry(t *testing.T) {
	clock := newFakeClock()
	var calls atomic.Int64
	fwd := answerWith("192.0.2.1", &calls) // 60 s TTL
	s := startServer(t, Config{PrefetchMinHits: 2}, fwd, withClock(clock, fwd))
	warm(t, s, "prefetch.test.")
	if calls.Load() != 1 {
		t.Fatalf("calls %d", calls.Load())
	}
	exchange(t, "udp", s.addr, query("prefetch.test.", dns.TypeA)) // hit 1, early: no prefetch
	clock.advance(55 * time.Second)                                // 5 s left: within the last tenth (6 s)
	exchange(t, "udp", s.addr, query("prefetch.test.", dns.TypeA)) // hit 2: prefetch
	waitFor(t, "no resolution in flight", func() bool { return s.inflight() == 0 })
	if n := calls.Load(); n != 2 {
		t.Fatalf("upstream calls %d, want 2 (the prefetch)", n)
	}
	clock.advance(30 * time.Second) // past the old expiry, within the new TTL
	r := exchange(t, "udp", s.addr, query("prefetch.test.", dns.TypeA))
	if len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 30 {
		t.Errorf("after prefetch: %v", r)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("upstream calls %d, want 2: the refreshed entry should answer", n)
	}
	if n := promtest.ToFloat64(s.metrics.prefetches); n != 1 {
		t.Errorf("prefetch_total = %v, want 1", n)
	}
}

func TestPrefetchFailureKeepsTheEntry(t *testing.T) {
	clock := newFakeClock()
	var calls atomic.Int64
	fwd := &switchable{}
	fwd.set(answerWith("192.0.2.1", &calls))
	s := startServer(t, Config{PrefetchMinHits: 1}, fwd, withClock(clock, fwd))
	warm(t, s, "keep.test.")
	var failed atomic.Int64
	fwd.set(func(_ context.Context, req *dns.Msg) (*dns.Msg, error) {
		failed.Add(1)
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeServerFailure)
		return m, nil
	})
	clock.advance(58 * time.Second)
	exchange(t, "udp", s.addr, query("keep.test.", dns.TypeA)) // prefetch gets SERVFAIL
	waitFor(t, "no resolution in flight", func() bool { return s.inflight() == 0 })
	if n := failed.Load(); n != 1 {
		t.Fatalf("upstream asked %d times in the prefetch window, want 1 (the prefetch)", n)
	}
	for range 3 {
		r := exchange(t, "udp", s.addr, query("keep.test.", dns.TypeA))
		if len(r.Answer) != 1 || r.Rcode != dns.RcodeSuccess {
			t.Errorf("a failed prefetch replaced a good entry: %v", r)
		}
	}
	if n := failed.Load(); n != 1 {
		t.Errorf("upstream asked %d times, want 1: a failed prefetch is not retried on every hit", n)
	}
}

func withServeStale(p cache.Policy, d time.Duration) cache.Policy {
	p.ServeStale = d
	return p
}

func TestNegativeAnswersAreNotPrefetched(t *testing.T) {
	clock := newFakeClock()
	var calls atomic.Int64
	fwd := ForwarderFunc(func(_ context.Context, req *dns.Msg) (*dns.Msg, error) {
		calls.Add(1)
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeNameError)
		soa, _ := dns.NewRR("test. 60 IN SOA ns.test. h.test. 1 7200 3600 1209600 60")
		m.Ns = append(m.Ns, soa)
		return m, nil
	})
	s := startServer(t, Config{PrefetchMinHits: 1}, fwd, withClock(clock, fwd))
	for i := 0; i < 3; i++ {
		exchange(t, "udp", s.addr, query("nx.test.", dns.TypeA))
	}
	clock.advance(58 * time.Second) // in the last tenth of the 60 s negative TTL
	for i := 0; i < 3; i++ {
		if r := exchange(t, "udp", s.addr, query("nx.test.", dns.TypeA)); r.Rcode != dns.RcodeNameError {
			t.Fatalf("rcode %s", dns.RcodeToString[r.Rcode])
		}
	}
	waitFor(t, "no resolution in flight", func() bool { return s.inflight() == 0 })
	if n := calls.Load(); n != 1 {
		t.Errorf("upstream calls %d, want 1: a denial is not prefetched", n)
	}
}
