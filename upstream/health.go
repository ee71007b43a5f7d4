package upstream

import (
	"context"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// Health is decided on evidence about the server, never about a name.
//
// The cluster DNS is a recursive resolver: a name whose authoritative
// servers are dead times out there, every time, while every other name
// resolves. Counting those timeouts against the server would take the
// node's only cluster DNS out of rotation because of one dead domain (glibc
// asks A and AAAA at once: two timeouts), and every miss on the node would
// then fail fast. So:
//
//   - A failed try (timeout, network error, bogus replies) is a suspicion,
//     recorded with the name it was for. Failures of the same name count
//     once; a success of any query clears the suspicion.
//   - When MaxFails distinct names have failed in a row, the member is
//     probed at once (besides the periodic probe). The probe asks the
//     server something it answers itself (the SOA of the group's zone, or
//     ". NS" for the root) and accepts any reply, even SERVFAIL.
//   - A member is marked down only by a failed probe: one failed probe
//     confirms a suspicion; without one, MaxFails probes must fail in a row
//     (a server that dies while nobody asks it anything). A probe that gets
//     a reply clears everything and puts the member back.
//
// So the last member of a group never leaves rotation without a failed
// probe, and a group whose members merely time out on some names never
// fails fast.

// recentNames is how many recently failed names a member remembers to tell
// a new name from a repeat.
const recentNames = 8

// minKickInterval bounds the probes that suspicions trigger, so that a
// stream of distinct dead names against a live server costs at most a few
// probes a second.
const minKickInterval = 500 * time.Millisecond

var nameSeed = maphash.MakeSeed()

// health is the evidence a group holds about one member.
type health struct {
	maxFails int
	down     atomic.Bool
	// suspect mirrors distinct != 0, so that a success costs one atomic
	// load when there is nothing to clear.
	suspect atomic.Bool
	// kick asks the probe loop for a probe now; buffered, so requests made
	// while one is pending merge.
	kick chan struct{}

	mu         sync.Mutex
	recent     [recentNames]uint64 // hashes of names that failed, a ring
	nrecent    int                 // valid entries of recent
	next       int                 // next slot of recent
	distinct   int                 // distinct names failed since the last success
	probeFails int                 // probes failed in a row
	lastKick   time.Time
	gaugeMu    sync.Mutex // serialises healthy-gauge updates on transitions
}

func newHealth(maxFails int) health {
	return health{maxFails: maxFails, kick: make(chan struct{}, 1)}
}

func (h *health) up() bool { return !h.down.Load() }

// nameHash hashes a question's name case-insensitively.
func nameHash(q []dns.Question) uint64 {
	if len(q) == 0 {
		return 0
	}
	return maphash.String(nameSeed, strings.ToLower(q[0].Name))
}

// failure records a failed try of mb for question q. When it makes the
// member suspect, a probe is asked for; the member stays in rotation.
func (g *Group) failure(mb *member, q []dns.Question, err error) {
	kick, n := mb.recordFailure(nameHash(q))
	if kick {
		select {
		case mb.kick <- struct{}{}:
			g.log.Info("upstream suspect: probing it now", zap.String("upstream", mb.r.addr),
				zap.Int("distinct_failed_names", n), zap.Error(err))
		default:
		}
	}
}

// recordFailure counts a failed name (by hash) once among the recent
// ones, and says whether a probe is due now, with the distinct names that
// failed.
func (h *health) recordFailure(name uint64) (kick bool, distinct int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !slices.Contains(h.recent[:h.nrecent], name) {
		h.recent[h.next] = name
		h.next = (h.next + 1) % recentNames
		h.nrecent = min(h.nrecent+1, recentNames)
		h.distinct++
		h.suspect.Store(true)
	}
	kick = h.distinct >= h.maxFails && time.Since(h.lastKick) >= minKickInterval
	if kick {
		h.lastKick = time.Now()
	}
	return kick, h.distinct
}

// success clears the suspicion against mb: it answered a query.
func (g *Group) success(mb *member) {
	if !mb.suspect.Load() {
		return // no write on the hot path of a healthy member
	}
	mb.mu.Lock()
	defer mb.mu.Unlock()
	mb.clearSuspicion()
}

// clearSuspicion forgets the failed names; mu is held.
func (h *health) clearSuspicion() {
	h.distinct, h.nrecent, h.next = 0, 0, 0
	h.suspect.Store(false)
}

// recordProbe counts a probe's result: a success clears everything, a
// failure says whether the evidence now confirms the server down.
func (h *health) recordProbe(ok bool) (confirmed bool, distinct, probes int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ok {
		h.probeFails = 0
		h.clearSuspicion()
		return false, 0, 0
	}
	h.probeFails++
	return h.distinct >= h.maxFails || h.probeFails >= h.maxFails, h.distinct, h.probeFails
}

// probed records the result of a probe of mb and makes the transitions.
func (g *Group) probed(mb *member, err error) {
	confirmed, distinct, probes := mb.recordProbe(err == nil)
	if err == nil {
		if mb.down.CompareAndSwap(true, false) {
			g.transition(mb)
			g.log.Info("upstream back up", zap.String("upstream", mb.r.addr))
			if g.upCount() == 1 {
				g.log.Info("group has a healthy upstream again")
			}
		}
		return
	}
	if !confirmed || !mb.down.CompareAndSwap(false, true) {
		return
	}
	g.transition(mb)
	g.log.Warn("upstream marked down", zap.String("upstream", mb.r.addr),
		zap.Int("failed_probes", probes), zap.Int("distinct_failed_names", distinct), zap.Error(err))
	if !g.Healthy() {
		g.log.Error("all upstreams of group are down; answering SERVFAIL until one recovers")
	}
}

// upCount is the number of the group's servers that are up.
func (g *Group) upCount() int {
	n := 0
	for _, mb := range g.roster.Load().all() {
		if mb.up() {
			n++
		}
	}
	return n
}

// transition sets the healthy gauge from the current state under the
// member's lock, so that racing transitions leave the gauge correct.
func (g *Group) transition(mb *member) {
	mb.gaugeMu.Lock()
	defer mb.gaugeMu.Unlock()
	v := 0.0
	if mb.up() {
		v = 1
	}
	g.m.healthy.WithLabelValues(mb.r.addr).Set(v)
}

// Start launches one health-probe goroutine per member. Each probes its
// member every HealthInterval, and at once when queries make the member
// suspect (at most one probe in flight per member, each bounded by twice
// the per-try timeout). Probes keep running while members are down, so
// recovery is noticed within one interval even when the group gets no
// traffic. They stop when ctx is done or the group is closed. Calling Start
// more than once has no effect. Without Start, members never leave
// rotation.
func (g *Group) Start(ctx context.Context) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.started || g.closed.Load() {
		return
	}
	g.started = true
	g.ctx, g.cancel = context.WithCancel(ctx)
	ctx = g.ctx
	for _, mb := range g.roster.Load().all() {
		g.startProbes(mb)
	}
	if g.cfg.LoopToken != "" {
		g.wg.Add(1)
		go g.loopLoop(ctx)
	}
}

// startProbes starts mb's probe loop; g.mu is held and the group started.
func (g *Group) startProbes(mb *member) {
	var ctx context.Context
	ctx, mb.stop = context.WithCancel(g.ctx)
	g.wg.Add(1)
	go g.probeLoop(ctx, mb)
}

func (g *Group) probeLoop(ctx context.Context, mb *member) {
	defer g.wg.Done()
	t := time.NewTicker(g.cfg.HealthInterval)
	defer t.Stop()
	for { // runs until ctx is done
		select {
		case <-ctx.Done():
			return
		case <-mb.kick:
			g.probe(ctx, mb)
			t.Reset(g.cfg.HealthInterval)
		case <-t.C:
			g.probe(ctx, mb)
			mb.r.pool.sweep()
		}
	}
}

// probe runs one health check of mb.
func (g *Group) probe(ctx context.Context, mb *member) {
	// A probe may take twice the per-try timeout: it decides whether a
	// member is used at all, and a slow answer is still an answer.
	pctx, cancel := context.WithTimeout(ctx, 2*g.cfg.Timeout)
	defer cancel()
	err := mb.r.probe(pctx, g.probeQ)
	if ctx.Err() != nil {
		return // shutting down: says nothing about the upstream
	}
	if err != nil {
		g.m.probes.WithLabelValues(mb.r.addr, probeFailed).Inc()
	} else {
		g.m.probes.WithLabelValues(mb.r.addr, probeAlive).Inc()
	}
	g.probed(mb, err)
}

// probeQuestion is what a group's members are probed with: a question the
// server answers from its own data, so that a probe tests the server and not
// the names behind it. The SOA of the group's first zone (a cluster DNS
// serves cluster.local itself), or ". NS" for the default group (the root
// NS set is in every resolver's cache).
func probeQuestion(zones []string) dns.Question {
	for _, z := range zones {
		if z != "." {
			return dns.Question{Name: z, Qtype: dns.TypeSOA, Qclass: dns.ClassINET}
		}
	}
	return dns.Question{Name: ".", Qtype: dns.TypeNS, Qclass: dns.ClassINET}
}
