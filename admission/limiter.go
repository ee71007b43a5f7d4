package admission

import (
	"cmp"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for the zero values of [ClientLimitConfig].
const (
	// DefaultMaxClients bounds the tracked clients. A node runs at most a
	// few hundred pods, so 10000 leaves ample room for host-network
	// clients and address churn while costing about 1 MiB.
	DefaultMaxClients = 10000
	// DefaultTopN is how many clients the top-denials metric exports: enough
	// to name the culprits of a storm, few enough to keep series bounded.
	DefaultTopN = 10
	// DefaultWindow is the period over which denials are ranked; a minute
	// matches common scrape intervals and alert windows.
	DefaultWindow = time.Minute
)

// maxShards bounds the shard count: 32 shards make lock contention
// negligible on node-sized machines while keeping Top's sweep cheap.
const maxShards = 32

// ClientLimitConfig configures a [ClientLimiter]. Zero values mean defaults.
type ClientLimitConfig struct {
	// Rate is the sustained number of upstream-bound queries (cache misses)
	// per second allowed per client address. Rate <= 0 disables limiting:
	// Allow always returns true and nothing is tracked.
	Rate float64
	// Burst is the bucket size, i.e. how many misses a quiet client may send
	// at once. Default: Rate rounded up, at least 1.
	Burst int
	// MaxClients bounds the number of tracked client addresses (and so the
	// limiter's memory). Default DefaultMaxClients.
	MaxClients int
	// TopN is the number of clients exported by nodedns_client_limited_top.
	// Default DefaultTopN.
	TopN int
	// Window is the tumbling window, counted from NewClientLimiter, over
	// which denials are counted for Top and the top metric. Default
	// DefaultWindow.
	Window time.Duration
	// Now is the clock; default time.Now. Tests inject a fake one.
	Now func() time.Time
}

// ClientCount is one client's number of denials in the current window.
type ClientCount struct {
	Client netip.Addr
	Denied uint64
}

// ClientLimiter is a per-client-address token bucket with bounded memory.
// It is safe for concurrent use. Allow takes one shard lock (shards are
// chosen by a seeded hash of the address, so remote clients cannot aim at one
// shard) and does not allocate for a known client.
type ClientLimiter struct {
	disabled bool
	rate     float64 // tokens per second
	burst    float64
	window   time.Duration
	topN     int
	now      func() time.Time
	epoch    time.Time
	seed     uint64
	mask     uint64
	shards   []shard

	limited prometheus.Counter
	topDesc *prometheus.Desc
	trkDesc *prometheus.Desc
}

// NewClientLimiter returns a limiter for cfg and registers its metrics on
// reg (nil: not registered):
//
//   - nodedns_client_limited_total: every denial.
//   - nodedns_client_limited_top{client}: denials in the current window of
//     the TopN most denied clients (at most TopN series per scrape).
//   - nodedns_client_limiter_tracked_clients: addresses currently tracked
//     (at most MaxClients).
//
// If a previous limiter registered on reg (a config reload), its counter is
// reused and its per-client collector is replaced by this one's, so that the
// series describe the limiter in use instead of the call panicking.
func NewClientLimiter(cfg ClientLimitConfig, reg prometheus.Registerer) *ClientLimiter {
	l := &ClientLimiter{
		disabled: cfg.Rate <= 0 || math.IsNaN(cfg.Rate),
		rate:     cfg.Rate,
		burst:    float64(cfg.Burst),
		window:   cfg.Window,
		topN:     cfg.TopN,
		now:      cfg.Now,
		seed:     rand.Uint64(),
		limited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodedns_client_limited_total",
			Help: "Upstream-bound queries denied by the per-client rate limit.",
		}),
		topDesc: prometheus.NewDesc("nodedns_client_limited_top",
			"Denials in the current window of the most rate-limited clients (top N only, so series stay bounded).",
			[]string{"client"}, nil),
		trkDesc: prometheus.NewDesc("nodedns_client_limiter_tracked_clients",
			"Client addresses tracked by the per-client rate limiter (bounded by max_clients).", nil, nil),
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.window <= 0 {
		l.window = DefaultWindow
	}
	if l.topN <= 0 {
		l.topN = DefaultTopN
	}
	if cfg.Burst <= 0 {
		l.burst = max(1, math.Ceil(cfg.Rate))
	}
	maxClients := cfg.MaxClients
	if maxClients <= 0 {
		maxClients = DefaultMaxClients
	}
	// A power of two no larger than maxClients, so that every shard has
	// room for at least one client and the total stays <= maxClients.
	n := 1
	for n*2 <= min(maxShards, maxClients) {
		n *= 2
	}
	l.mask = uint64(n - 1)
	l.shards = make([]shard, n)
	for i := range l.shards {
		l.shards[i].init(maxClients / n)
	}
	l.epoch = l.now()
	if reg != nil {
		l.register(reg)
	}
	return l
}

func (l *ClientLimiter) register(reg prometheus.Registerer) {
	if err := reg.Register(l.limited); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			panic(err)
		}
		c, ok := are.ExistingCollector.(prometheus.Counter)
		if !ok {
			panic(err)
		}
		l.limited = c
	}
	tc := topCollector{l}
	if err := reg.Register(tc); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			panic(err)
		}
		reg.Unregister(are.ExistingCollector)
		if err := reg.Register(tc); err != nil {
			panic(err)
		}
	}
}

// Allow reports whether client may send one more query upstream, and takes a
// token if so. IPv4-mapped IPv6 addresses count as their IPv4 address (a
// dual-stack socket reports IPv4 clients that way) and zones are ignored.
func (l *ClientLimiter) Allow(client netip.Addr) bool {
	if l.disabled {
		return true
	}
	client = client.Unmap().WithZone("")
	now := l.now().Sub(l.epoch)
	s := &l.shards[l.hash(client)&l.mask]

	s.mu.Lock()
	nd := &s.nodes[s.get(client, now, l.burst)]
	if d := now - nd.last; d > 0 { // a clock going backwards adds nothing
		nd.tokens = min(l.burst, nd.tokens+d.Seconds()*l.rate)
		nd.last = now
	}
	if nd.tokens >= 1 {
		nd.tokens--
		s.mu.Unlock()
		return true
	}
	if w := int64(now / l.window); nd.window != w {
		nd.window, nd.denied = w, 0
	}
	nd.denied++
	s.mu.Unlock()
	l.limited.Inc()
	return false
}

// hash mixes the address with a per-limiter random seed (splitmix64-style
// finaliser), so shard choice is not predictable from outside.
func (l *ClientLimiter) hash(a netip.Addr) uint64 {
	b := a.As16()
	h := binary.LittleEndian.Uint64(b[:8]) ^ l.seed
	h *= 0x9e3779b97f4a7c15
	h ^= binary.LittleEndian.Uint64(b[8:])
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

// Top returns the clients with the most denials in the current window, most
// denied first (ties by address), at most TopN of them. It sweeps every
// tracked client, O(MaxClients), which is fine for scrapes and logs but not
// for the query path.
func (l *ClientLimiter) Top() []ClientCount {
	if l.disabled {
		return nil
	}
	w := int64(l.now().Sub(l.epoch) / l.window)
	top := make([]ClientCount, 0, l.topN+1)
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for j := range s.nodes {
			nd := &s.nodes[j]
			if nd.window != w || nd.denied == 0 {
				continue
			}
			c := ClientCount{nd.addr, nd.denied}
			if len(top) == l.topN && compareCount(c, top[len(top)-1]) >= 0 {
				continue // not better than the current last
			}
			// Insertion into a short sorted slice: TopN is small.
			k, _ := slices.BinarySearchFunc(top, c, compareCount)
			top = slices.Insert(top, k, c)
			if len(top) > l.topN {
				top = top[:l.topN]
			}
		}
		s.mu.Unlock()
	}
	return top
}

// compareCount orders by denials descending, then address ascending.
func compareCount(a, b ClientCount) int {
	if c := cmp.Compare(b.Denied, a.Denied); c != 0 {
		return c
	}
	return a.Client.Compare(b.Client)
}

// Tracked returns the number of client addresses currently tracked; it never
// exceeds MaxClients.
func (l *ClientLimiter) Tracked() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.nodes)
		s.mu.Unlock()
	}
	return n
}

// topCollector exports the top-N and tracked-clients metrics, computed at
// scrape time so that no per-client series ever exists outside the top N.
type topCollector struct{ l *ClientLimiter }

func (c topCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.l.topDesc
	ch <- c.l.trkDesc
}

func (c topCollector) Collect(ch chan<- prometheus.Metric) {
	for _, t := range c.l.Top() {
		ch <- prometheus.MustNewConstMetric(c.l.topDesc, prometheus.GaugeValue, float64(t.Denied), t.Client.String())
	}
	ch <- prometheus.MustNewConstMetric(c.l.trkDesc, prometheus.GaugeValue, float64(c.l.Tracked()))
}
