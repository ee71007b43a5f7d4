package upstream

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

const (
	// DefaultMaxFails is how many distinct names must fail in a row on a
	// member (no answer, a network error) before it is probed at once, and
	// how many probes in a row must fail to take it out of rotation when no
	// query suspects it. Low, because a suspicion costs only one probe.
	DefaultMaxFails = 2
	// DefaultHealthInterval is the probe period; it bounds how long a
	// recovered upstream stays out of rotation.
	DefaultHealthInterval = 2 * time.Second
	// DefaultMaxInflight caps the exchanges in flight to one member. Each
	// one holds a socket and a goroutine for up to Timeout, so when an
	// upstream slows down during a retry storm the in-flight count is what
	// grows without bound (and what piles more load on the struggling
	// server). 500 is far above what a healthy upstream needs (at 1 ms
	// latency it allows ~500k queries/s) yet bounds a node's sockets and
	// goroutines per member when the upstream stalls.
	DefaultMaxInflight = 500
	// minCountableBudget: a timeout counts against an upstream when the try
	// had its full Timeout, or when the caller's deadline cut it short but it
	// still had at least this long. Otherwise a failover chain that reaches a
	// healthy member with 1 ms left would blame that member.
	minCountableBudget = 100 * time.Millisecond
)

// GroupConfig describes a set of equivalent upstream servers and the zones
// they serve. Zero values of the optional fields mean the defaults.
type GroupConfig struct {
	Name           string        // e.g. "default", "cluster"; used in logs and errors
	Zones          []string      // zones this group serves, e.g. ".", "cluster.local." (used by Router)
	Addrs          []string      // "IP", "IP:port", "[v6]:port"; default port 53
	ForceTCP       bool          // use TCP with pooled connections instead of UDP
	Timeout        time.Duration // per try; default DefaultTimeout
	MaxFails       int           // consecutive failures before a member is marked down; default DefaultMaxFails
	HealthInterval time.Duration // probe period; default DefaultHealthInterval
	// MaxInflight caps concurrent exchanges per member; default
	// DefaultMaxInflight. A member at its cap is skipped like a down member
	// (without being marked down: being busy is not a failure), and when
	// every healthy member is at its cap Exchange fails at once with
	// ErrOverloaded instead of queueing. Health probes are not counted.
	MaxInflight int
	// LoopToken, when set, makes the group check for forwarding loops with
	// probes carrying it (loop.go); NewLoopToken makes one per process.
	LoopToken string
	// LoopCheckInterval is the period of loop checks; default
	// LoopCheckInterval.
	LoopCheckInterval time.Duration
}

// Group forwards queries to a set of equivalent upstreams: it spreads load
// round-robin over healthy members, fails over on timeouts, network errors,
// SERVFAIL and REFUSED, and keeps a member out of rotation once a probe has
// confirmed that it stopped answering, until a probe sees it answer again
// (health.go says what counts as evidence). It exists so that one dead
// upstream costs clients nothing but, at worst, one timeout.
type Group struct {
	cfg GroupConfig // normalised
	// configured are the members of cfg.Addrs, for the group's life;
	// roster says which members are in rotation (endpoints.go).
	configured []*member
	roster     atomic.Pointer[roster]
	m          *Metrics
	log        *zap.Logger
	probeQ     dns.Question // what members are probed with
	loop       loopState
	next       atomic.Uint32
	closed     atomic.Bool

	mu      sync.Mutex // guards started, ctx, cancel and the members' stop
	started bool
	ctx     context.Context // the probes' context, once started
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	// setMu serialises SetEndpoints.
	setMu sync.Mutex
}

// member is one upstream in a group with its health state (health.go).
type member struct {
	r *Remote
	health

	// inflight counts this member's exchanges in flight; it never exceeds
	// maxInflight because slots are taken with a compare-and-swap.
	inflight    atomic.Int32
	maxInflight int32
	extra       atomic.Int32 // extra tries in flight (acquireExtra)
	// Cached metric children: Exchange must not hash label values.
	inflightGauge prometheus.Gauge
	overloaded    prometheus.Counter
	// stop ends the member's probe loop (guarded by Group.mu); nil until
	// it runs.
	stop context.CancelFunc
}

// acquire takes an in-flight slot, or reports false if the member is at its
// cap. A CAS loop rather than Add-then-undo, so that the count (and thus the
// gauge) never exceeds the cap even transiently.
func (mb *member) acquire() bool {
	for { // retries only while other goroutines race on the same counter
		n := mb.inflight.Load()
		if n >= mb.maxInflight {
			mb.overloaded.Inc()
			return false
		}
		if mb.inflight.CompareAndSwap(n, n+1) {
			mb.inflightGauge.Inc()
			return true
		}
	}
}

// release returns a slot taken by acquire. The gauge is decremented first so
// that it is never above the true count.
func (mb *member) release() {
	mb.inflightGauge.Dec()
	mb.inflight.Add(-1)
}

// acquireExtra takes a slot for an extra try (a query sent again because
// the first try has not answered within the per-try timeout). Extra tries
// go only to a lightly loaded server, with under a quarter of its cap in
// flight: they recover a lost packet, and never pile more load on a busy
// or struggling server (no retry amplification). They are counted apart
// from the cap, so that they never take a first try's room.
func (mb *member) acquireExtra() bool {
	for {
		n := mb.extra.Load()
		if mb.inflight.Load()+n >= max(mb.maxInflight/4, 1) {
			return false
		}
		if mb.extra.CompareAndSwap(n, n+1) {
			mb.inflightGauge.Inc()
			return true
		}
	}
}

// releaseExtra returns a slot taken by acquireExtra.
func (mb *member) releaseExtra() {
	mb.inflightGauge.Dec()
	mb.extra.Add(-1)
}

// NewGroup validates cfg and creates the group's upstreams. Errors name the
// group and the offending field, e.g. `upstream group "cluster": addrs[1]
// "x:y:z": ...`, because they end up in front of whoever wrote the config.
// m and log may be nil. Call [Group.Start] to begin health probing.
func NewGroup(cfg GroupConfig, m *Metrics, log *zap.Logger) (*Group, error) {
	cfg, err := normaliseGroupConfig(cfg)
	if err != nil {
		return nil, err
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	if log == nil {
		log = zap.NewNop()
	}
	g := &Group{cfg: cfg, m: m, log: log.With(zap.String("group", cfg.Name)), probeQ: probeQuestion(cfg.Zones)}
	for _, a := range cfg.Addrs {
		mb, err := g.newMember(a)
		if err != nil { // already validated; kept for safety
			return nil, fmt.Errorf("upstream group %q: %w", cfg.Name, err)
		}
		g.configured = append(g.configured, mb)
	}
	g.roster.Store(&roster{primary: g.configured})
	m.looping.WithLabelValues(cfg.Name).Set(0)
	m.loopProbesBack.WithLabelValues(cfg.Name)
	return g, nil
}

// newMember creates the member for a normalised address, in rotation.
func (g *Group) newMember(addr string) (*member, error) {
	r, err := NewRemote(RemoteConfig{Addr: addr, ForceTCP: g.cfg.ForceTCP, Timeout: g.cfg.Timeout}, g.m)
	if err != nil {
		return nil, err
	}
	g.m.healthy.WithLabelValues(r.addr).Set(1)
	return &member{
		r:             r,
		health:        newHealth(g.cfg.MaxFails),
		maxInflight:   int32(g.cfg.MaxInflight),
		inflightGauge: g.m.memberInflight.WithLabelValues(r.addr),
		overloaded:    g.m.overloaded.WithLabelValues(r.addr),
	}, nil
}

func normaliseGroupConfig(cfg GroupConfig) (GroupConfig, error) {
	if cfg.Name == "" {
		return cfg, errors.New("upstream group: name must not be empty")
	}
	fail := func(format string, args ...any) (GroupConfig, error) {
		return cfg, fmt.Errorf("upstream group %q: "+format, append([]any{cfg.Name}, args...)...)
	}
	if len(cfg.Zones) == 0 {
		return fail("zones: at least one zone is required (\".\" for the default group)")
	}
	zones := make([]string, 0, len(cfg.Zones))
	seenZone := make(map[string]bool, len(cfg.Zones))
	for i, z := range cfg.Zones {
		if _, ok := dns.IsDomainName(z); !ok || z == "" {
			return fail("zones[%d] %q: not a valid domain name", i, z)
		}
		cz := dns.CanonicalName(z)
		if seenZone[cz] {
			return fail("zones[%d] %q: listed twice", i, z)
		}
		seenZone[cz] = true
		zones = append(zones, cz)
	}
	if len(cfg.Addrs) == 0 {
		return fail("addrs: at least one upstream address is required")
	}
	addrs := make([]string, 0, len(cfg.Addrs))
	seenAddr := make(map[string]bool, len(cfg.Addrs))
	for i, a := range cfg.Addrs {
		na, err := ParseAddr(a)
		if err != nil {
			return fail("addrs[%d] %q: %w", i, a, err)
		}
		if seenAddr[na] {
			return fail("addrs[%d] %q: duplicate of %s", i, a, na)
		}
		seenAddr[na] = true
		addrs = append(addrs, na)
	}
	switch {
	case cfg.Timeout < 0:
		return fail("timeout: %v is negative", cfg.Timeout)
	case cfg.MaxFails < 0:
		return fail("max_fails: %d is negative", cfg.MaxFails)
	case cfg.MaxFails > 1000:
		return fail("max_fails: %d is too large (max 1000)", cfg.MaxFails)
	case cfg.HealthInterval < 0:
		return fail("health_interval: %v is negative", cfg.HealthInterval)
	case cfg.MaxInflight < 0:
		return fail("max_inflight: %d is negative", cfg.MaxInflight)
	case cfg.MaxInflight > math.MaxInt32:
		return fail("max_inflight: %d is too large (max %d)", cfg.MaxInflight, math.MaxInt32)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxFails == 0 {
		cfg.MaxFails = DefaultMaxFails
	}
	if cfg.HealthInterval == 0 {
		cfg.HealthInterval = DefaultHealthInterval
	}
	if cfg.MaxInflight == 0 {
		cfg.MaxInflight = DefaultMaxInflight
	}
	if cfg.LoopCheckInterval <= 0 {
		cfg.LoopCheckInterval = LoopCheckInterval
	}
	cfg.Zones, cfg.Addrs = zones, addrs
	return cfg, nil
}

// Name returns the group's configured name.
func (g *Group) Name() string { return g.cfg.Name }

// Zones returns the group's zones in canonical form (lower case, fully
// qualified). The slice is a copy.
func (g *Group) Zones() []string { return append([]string(nil), g.cfg.Zones...) }

// Addrs returns the configured members' normalised addresses. The slice is
// a copy.
func (g *Group) Addrs() []string { return append([]string(nil), g.cfg.Addrs...) }

// Config returns the normalised configuration (defaults filled in).
func (g *Group) Config() GroupConfig {
	c := g.cfg
	c.Zones, c.Addrs = g.Zones(), g.Addrs()
	return c
}

// Check returns an error when an Exchange would fail at once: the group
// loops (ErrLoop) or every member is down (ErrNoHealthyUpstream).
func (g *Group) Check() error {
	switch {
	case g.loop.looping.Load():
		return fmt.Errorf("upstream group %q: %w", g.cfg.Name, ErrLoop)
	case !g.Healthy():
		return fmt.Errorf("upstream group %q: %w", g.cfg.Name, ErrNoHealthyUpstream)
	}
	return nil
}

// Healthy reports whether at least one member is in rotation; readiness
// checks use it.
func (g *Group) Healthy() bool {
	ro := g.roster.Load()
	return anyUp(ro.primary) || anyUp(ro.fallback)
}

// Exchange forwards req to the group's members and returns the first
// acceptable answer. It starts with a healthy member (round-robin), and
// sends the query again whenever a try fails (timeout aside: a network
// error, bogus replies, SERVFAIL or REFUSED), and whenever Timeout passes
// without an answer: to the next healthy member, or, in a group of one, to
// the same server again. Earlier tries keep waiting for their answer, so a
// lost packet costs one Timeout and a slow but working server still
// answers; all tries end at ctx's deadline. A query is tried at most once
// per healthy member plus once more; a try the resend timer adds goes only
// to a lightly loaded member (acquireExtra). Members with MaxInflight
// exchanges in flight are skipped. If every try that got an answer got SERVFAIL or
// REFUSED, the last such answer is returned. If every member is down,
// ErrNoHealthyUpstream is returned at once; if none was tried because
// every healthy member was at its cap, ErrOverloaded is returned at once.
// Errors are wrapped with the group name. req is not modified.
func (g *Group) Exchange(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
	if g.closed.Load() {
		return nil, fmt.Errorf("upstream group %q: %w", g.cfg.Name, ErrClosed)
	}
	if req == nil {
		return nil, fmt.Errorf("upstream group %q: nil request", g.cfg.Name)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("upstream group %q: %w", g.cfg.Name, err)
	}
	if g.loop.looping.Load() {
		return nil, fmt.Errorf("upstream group %q: %w", g.cfg.Name, ErrLoop)
	}
	g.m.inflight.Inc()
	defer g.m.inflight.Dec()

	var buf [8]*member
	healthy := g.roster.Load().inRotation(buf[:0])
	if len(healthy) == 0 {
		return nil, fmt.Errorf("upstream group %q: %w", g.cfg.Name, ErrNoHealthyUpstream)
	}

	parent := ctx
	ctx, cancel := context.WithCancel(ctx) // ends the other tries once one answers
	defer cancel()
	// Failing over takes each healthy member once; the resend timer may add
	// one more try (the same server again, in a group of one).
	maxTries := len(healthy) + 1
	results := make(chan tryResult, maxTries) // a try never blocks on its send
	var (
		lastResp                   *dns.Msg
		lastErr                    error
		next, tried, busy, pending int
	)
	first := int(g.next.Add(1) % uint32(len(healthy)))
	// launch starts the next try that can start, among the first limit
	// candidates; false when none can. An extra try is one the resend
	// timer adds while earlier tries still wait (acquireExtra).
	launch := func(limit int, extra bool) bool {
		for next < limit && ctx.Err() == nil {
			mb := healthy[(first+next)%len(healthy)]
			next++
			if tried > 0 && !mb.up() {
				continue // went down while we were trying others
			}
			if extra {
				if !mb.acquireExtra() {
					continue
				}
			} else if !mb.acquire() {
				busy++
				continue
			}
			tried++
			pending++
			budget := g.cfg.Timeout * time.Duration(maxTries)
			if d, ok := ctx.Deadline(); ok {
				budget = time.Until(d)
			}
			go func() {
				resp, err := mb.r.exchangeWithin(ctx, req, budget)
				if extra {
					mb.releaseExtra()
				} else {
					mb.release()
				}
				results <- tryResult{mb: mb, resp: resp, err: err, budget: budget}
			}()
			return true
		}
		return false
	}
	launch(len(healthy), false)
	resend := time.NewTimer(g.cfg.Timeout)
	defer resend.Stop()
	for pending > 0 {
		select {
		case <-resend.C:
			if launch(maxTries, true) {
				resend.Reset(g.cfg.Timeout)
			}
			continue
		case r := <-results:
			pending--
			if r.err != nil {
				lastErr = r.err
				g.blame(parent, r, req.Question)
				launch(len(healthy), false) // fail over at once
				continue
			}
			g.success(r.mb)
			if r.resp.Rcode == dns.RcodeServerFailure || r.resp.Rcode == dns.RcodeRefused {
				lastResp = r.resp
				launch(len(healthy), false)
				continue
			}
			return r.resp, nil
		}
	}
	if lastResp != nil {
		return lastResp, nil
	}
	if lastErr == nil {
		if err := parent.Err(); err != nil {
			return nil, fmt.Errorf("upstream group %q: %w", g.cfg.Name, err)
		}
		if busy > 0 {
			return nil, fmt.Errorf("upstream group %q: %w", g.cfg.Name, ErrOverloaded)
		}
		return nil, fmt.Errorf("upstream group %q: %w", g.cfg.Name, ErrNoHealthyUpstream)
	}
	if err := parent.Err(); err != nil && !errors.Is(lastErr, err) {
		return nil, fmt.Errorf("upstream group %q: %d tries, then %w; last error: %v", g.cfg.Name, tried, err, lastErr)
	}
	return nil, fmt.Errorf("upstream group %q: %d tries, last error: %w", g.cfg.Name, tried, lastErr)
}

// tryResult is the outcome of one try of Exchange.
type tryResult struct {
	mb     *member
	resp   *dns.Msg
	err    error
	budget time.Duration // the time the try had when it started
}

// blame counts a failed try against its member when the failure is the
// upstream's own fault: not a canceled caller, and not a timeout the
// caller's deadline imposed before the upstream had a fair chance.
func (g *Group) blame(ctx context.Context, r tryResult, q []dns.Question) {
	var ee *ExchangeError
	if !errors.As(r.err, &ee) || !ee.upstreamFault() || errors.Is(ctx.Err(), context.Canceled) {
		return
	}
	callerDeadline := errors.Is(r.err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded)
	if callerDeadline && r.budget < minCountableBudget {
		return
	}
	g.failure(r.mb, q, r.err)
}

// Close stops the probes, waits for them to exit and closes pooled
// connections. Later Exchange calls return ErrClosed. Close is idempotent.
func (g *Group) Close() error {
	if g.closed.Swap(true) {
		return nil
	}
	g.stopProbes()
	g.wg.Wait()
	// Under setMu, so that no SetEndpoints adds a member after this.
	g.setMu.Lock()
	defer g.setMu.Unlock()
	for _, mb := range g.roster.Load().all() {
		_ = mb.r.Close()
	}
	return nil
}

// stopProbes cancels the probe and loop-check goroutines.
func (g *Group) stopProbes() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cancel != nil {
		g.cancel()
	}
}
