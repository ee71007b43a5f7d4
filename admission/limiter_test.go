package admission

import (
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeClock is an injectable clock that only moves when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// nthAddr returns a distinct IPv4 address for every i < 2^32.
func nthAddr(i uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
}

// allowN calls Allow n times and returns how many were allowed.
func allowN(l *ClientLimiter, a netip.Addr, n int) int {
	ok := 0
	for range n {
		if l.Allow(a) {
			ok++
		}
	}
	return ok
}

var (
	clientA = netip.MustParseAddr("10.1.2.3")
	clientB = netip.MustParseAddr("10.1.2.4")
)

func TestAllowBurstDenyRefill(t *testing.T) {
	clk := newFakeClock()
	reg := prometheus.NewRegistry()
	l := NewClientLimiter(ClientLimitConfig{Rate: 10, Burst: 3, Now: clk.Now}, reg)

	if got := allowN(l, clientA, 5); got != 3 {
		t.Fatalf("A: %d of 5 allowed at once, want the burst of 3", got)
	}
	if got := allowN(l, clientB, 3); got != 3 {
		t.Errorf("B: %d of 3 allowed, want 3: A's storm must not limit B", got)
	}
	clk.Advance(100 * time.Millisecond) // 10/s: one token
	if got := allowN(l, clientA, 3); got != 1 {
		t.Errorf("A after 100ms: %d allowed, want 1", got)
	}
	clk.Advance(time.Hour) // refill is capped at the burst
	if got := allowN(l, clientA, 10); got != 3 {
		t.Errorf("A after an hour: %d allowed, want the burst of 3", got)
	}
	clk.Advance(-time.Minute) // a clock going backwards must not mint tokens
	if l.Allow(clientA) {
		t.Error("clock going backwards refilled the bucket")
	}
	// Denials: 2 + 2 + 7 + 1 = 12, all by A.
	if got := testutil.ToFloat64(l.limited); got != 12 {
		t.Errorf("nodedns_client_limited_total = %v, want 12", got)
	}
}

func TestDefaultBurstAndDisabled(t *testing.T) {
	clk := newFakeClock()
	l := NewClientLimiter(ClientLimitConfig{Rate: 2.5, Now: clk.Now}, nil)
	if got := allowN(l, clientA, 10); got != 3 {
		t.Errorf("default burst for rate 2.5: %d allowed, want 3", got)
	}
	for _, rate := range []float64{0, -1} {
		off := NewClientLimiter(ClientLimitConfig{Rate: rate, Now: clk.Now}, prometheus.NewRegistry())
		if got := allowN(off, clientA, 1000); got != 1000 {
			t.Errorf("rate %v: %d of 1000 allowed, want all", rate, got)
		}
		if off.Tracked() != 0 || off.Top() != nil {
			t.Errorf("rate %v: disabled limiter tracks clients", rate)
		}
	}
}

func TestIPv4MappedAndZonesAreOneClient(t *testing.T) {
	clk := newFakeClock()
	l := NewClientLimiter(ClientLimitConfig{Rate: 1, Burst: 2, Now: clk.Now}, nil)
	mapped := netip.MustParseAddr("::ffff:10.1.2.3")
	if !l.Allow(mapped) || !l.Allow(clientA) {
		t.Fatal("first two queries denied")
	}
	if l.Allow(clientA) || l.Allow(mapped) {
		t.Error("IPv4-mapped and plain IPv4 have separate buckets")
	}
	top := l.Top()
	if len(top) != 1 || top[0].Client != clientA || top[0].Denied != 2 {
		t.Errorf("Top = %v, want [{10.1.2.3 2}]", top)
	}

	ll := netip.MustParseAddr("fe80::1")
	if !l.Allow(ll.WithZone("eth0")) || !l.Allow(ll) || l.Allow(ll.WithZone("eth1")) {
		t.Error("zones split a client's bucket")
	}
	if got := l.Tracked(); got != 2 {
		t.Errorf("tracked %d clients, want 2", got)
	}
}

func TestTrackedBoundedUnderFlood(t *testing.T) {
	clk := newFakeClock()
	l := NewClientLimiter(ClientLimitConfig{Rate: 1, Burst: 1, Now: clk.Now}, nil)
	const maxClients = DefaultMaxClients

	// A real client over its budget before the flood...
	heavy := netip.MustParseAddr("10.9.9.9")
	allowN(l, heavy, 5)
	allowN(l, heavy, 5) // second visit: promoted out of probation

	var ms runtime.MemStats
	heap := func() uint64 {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	flood := func(from, to uint32) {
		for i := from; i < to; i++ {
			if !l.Allow(nthAddr(0x0a800000 + i)) { // 10.128.0.0/9: never heavy's address
				t.Fatalf("one-off client %d denied", i)
			}
		}
	}
	flood(0, 100_000)
	if got := l.Tracked(); got > maxClients || got < maxClients*9/10 {
		t.Fatalf("tracked %d after 100k distinct clients, want <= %d and near it", got, maxClients)
	}
	before := heap()
	flood(100_000, 300_000)
	after := heap()
	if got := l.Tracked(); got > maxClients {
		t.Errorf("tracked %d after 300k distinct clients, want <= %d", got, maxClients)
	}
	// 200k more clients must not grow the heap: the slab and maps are full
	// and are recycled. 1 MiB of slack for the test's own garbage.
	if after > before+1<<20 {
		t.Errorf("heap grew from %d to %d bytes during the second flood", before, after)
	}

	// ...is still tracked: the flood did not hand it a fresh bucket.
	if l.Allow(heavy) {
		t.Error("flood of one-off sources evicted the heavy client and reset its bucket")
	}
	if top := l.Top(); len(top) != 1 || top[0].Client != heavy || top[0].Denied != 10 {
		t.Errorf("Top = %v, want only 10.9.9.9 with 10 denials (9 before the flood, 1 after)", top)
	}
}

func TestTopNCorrectAndBounded(t *testing.T) {
	clk := newFakeClock()
	reg := prometheus.NewRegistry()
	l := NewClientLimiter(ClientLimitConfig{Rate: 1, Burst: 1, TopN: 3, Window: time.Minute, Now: clk.Now}, reg)

	// Client i is denied i times, for 200 clients: the top 3 are 200..198.
	total := 0
	for i := 1; i <= 200; i++ {
		a := nthAddr(0x0a000000 + uint32(i))
		allowN(l, a, i+1)
		total += i
	}
	// Two clients tied with the leader: ties go by address.
	tieLo, tieHi := netip.MustParseAddr("10.0.0.0"), netip.MustParseAddr("192.168.0.1")
	allowN(l, tieHi, 201)
	allowN(l, tieLo, 201)
	total += 400

	want := []ClientCount{{tieLo, 200}, {nthAddr(0x0a000000 + 200), 200}, {tieHi, 200}}
	got := l.Top()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Top = %v, want %v", got, want)
	}

	exp := `
# HELP nodedns_client_limited_top Denials in the current window of the most rate-limited clients (top N only, so series stay bounded).
# TYPE nodedns_client_limited_top gauge
nodedns_client_limited_top{client="10.0.0.0"} 200
nodedns_client_limited_top{client="10.0.0.200"} 200
nodedns_client_limited_top{client="192.168.0.1"} 200
# HELP nodedns_client_limited_total Upstream-bound queries denied by the per-client rate limit.
# TYPE nodedns_client_limited_total counter
nodedns_client_limited_total ` + fmt.Sprint(total) + `
# HELP nodedns_client_limiter_tracked_clients Client addresses tracked by the per-client rate limiter (bounded by max_clients).
# TYPE nodedns_client_limiter_tracked_clients gauge
nodedns_client_limiter_tracked_clients 202
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp)); err != nil {
		t.Error(err)
	}

	// A new window starts empty; denials in it are ranked on their own.
	clk.Advance(time.Minute)
	if top := l.Top(); len(top) != 0 {
		t.Errorf("Top in a fresh window = %v, want empty", top)
	}
	allowN(l, clientB, 3)
	if top := l.Top(); len(top) != 1 || top[0] != (ClientCount{clientB, 2}) {
		t.Errorf("Top = %v, want [{10.1.2.4 2}]", top)
	}
	if n := testutil.CollectAndCount(reg, "nodedns_client_limited_top"); n != 1 {
		t.Errorf("%d top series, want 1", n)
	}
}

// TestConcurrentAllow hammers one client from many goroutines with a frozen
// clock: exactly Burst queries may pass, whatever the interleaving. Other
// clients, Top and scrapes run alongside for the race detector.
func TestConcurrentAllow(t *testing.T) {
	clk := newFakeClock()
	reg := prometheus.NewRegistry()
	l := NewClientLimiter(ClientLimitConfig{Rate: 5, Burst: 50, MaxClients: 512, TopN: 5, Now: clk.Now}, reg)
	var (
		wg      sync.WaitGroup
		allowed atomic.Int64
	)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				if l.Allow(clientA) {
					allowed.Add(1)
				}
				l.Allow(nthAddr(uint32(g*2000 + i))) // churns the LRU
				if i%500 == 0 {
					l.Top()
					if _, err := reg.Gather(); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if got := allowed.Load(); got != 50 {
		t.Errorf("%d queries of one client allowed concurrently, want exactly the burst of 50", got)
	}
	if got := l.Tracked(); got > 512 {
		t.Errorf("tracked %d, want <= 512", got)
	}
	if top := l.Top(); len(top) == 0 || top[0].Client != clientA || top[0].Denied != 8*2000-50 {
		t.Errorf("Top = %v, want 10.1.2.3 first with %d denials", top, 8*2000-50)
	}
}

func TestSmallMaxClients(t *testing.T) {
	clk := newFakeClock()
	for _, n := range []int{1, 2, 3, 33, 100} {
		l := NewClientLimiter(ClientLimitConfig{Rate: 1, MaxClients: n, Now: clk.Now}, nil)
		for i := range uint32(1000) {
			l.Allow(nthAddr(i))
			l.Allow(nthAddr(i / 2))
		}
		if got := l.Tracked(); got > n || got == 0 {
			t.Errorf("MaxClients %d: tracked %d", n, got)
		}
	}
}

func TestReRegisterReplacesCollector(t *testing.T) {
	clk := newFakeClock()
	reg := prometheus.NewRegistry()
	old := NewClientLimiter(ClientLimitConfig{Rate: 1, Burst: 1, Now: clk.Now}, reg)
	allowN(old, clientA, 3)
	l := NewClientLimiter(ClientLimitConfig{Rate: 1, Burst: 1, Now: clk.Now}, reg) // must not panic
	allowN(l, clientB, 2)
	exp := `
# HELP nodedns_client_limited_top Denials in the current window of the most rate-limited clients (top N only, so series stay bounded).
# TYPE nodedns_client_limited_top gauge
nodedns_client_limited_top{client="10.1.2.4"} 1
# HELP nodedns_client_limited_total Upstream-bound queries denied by the per-client rate limit.
# TYPE nodedns_client_limited_total counter
nodedns_client_limited_total 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "nodedns_client_limited_top", "nodedns_client_limited_total"); err != nil {
		t.Error(err)
	}
}

func TestAllowDoesNotAllocate(t *testing.T) {
	clk := newFakeClock()
	l := NewClientLimiter(ClientLimitConfig{Rate: 1, Burst: 1, Now: clk.Now}, prometheus.NewRegistry())
	l.Allow(clientA)
	l.Allow(clientA)
	// Denial path (the hot one in a storm) and allow path.
	if n := testing.AllocsPerRun(1000, func() { l.Allow(clientA) }); n != 0 {
		t.Errorf("Allow (deny) of a known client: %v allocs, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() { clk.Advance(time.Second); l.Allow(clientA) }); n != 0 {
		t.Errorf("Allow (allow) of a known client: %v allocs, want 0", n)
	}
}

func BenchmarkAllowKnownClient(b *testing.B) {
	l := NewClientLimiter(ClientLimitConfig{Rate: 1e9, Burst: 1e6}, nil)
	l.Allow(clientA)
	b.ReportAllocs()
	for b.Loop() {
		l.Allow(clientA)
	}
}

func BenchmarkAllowKnownClientDenied(b *testing.B) {
	l := NewClientLimiter(ClientLimitConfig{Rate: 1e-9, Burst: 1}, nil)
	l.Allow(clientA)
	b.ReportAllocs()
	for b.Loop() {
		l.Allow(clientA)
	}
}

func BenchmarkAllowParallel(b *testing.B) {
	l := NewClientLimiter(ClientLimitConfig{Rate: 1e9, Burst: 1e6}, nil)
	var next atomic.Uint32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		a := nthAddr(next.Add(1))
		for pb.Next() {
			l.Allow(a)
		}
	})
}

// BenchmarkAllowFlood: every query from a new address (a spoofed flood)
// once the table is full.
func BenchmarkAllowFlood(b *testing.B) {
	l := NewClientLimiter(ClientLimitConfig{Rate: 1, Burst: 1}, nil)
	for i := range uint32(2 * DefaultMaxClients) {
		l.Allow(nthAddr(i))
	}
	i := uint32(1 << 24)
	b.ReportAllocs()
	for b.Loop() {
		i++
		l.Allow(nthAddr(i))
	}
}
