package upstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// Forwarding loops.
//
// A loop forms when an upstream sends nodedns's queries back to it: the
// node's resolv.conf points at the node-local address and a CoreDNS forwards
// there, or two caches forward to each other. Every miss then circles until
// it times out, holding a slot all the while. nodedns finds loops the way
// CoreDNS's loop plugin does: each group sends a query for a name nobody
// else asks, "<token>-<nonce>.nodedns-loop.<zone>" (under invalid. for the
// root group, a name no resolver has data for), to each member, at start
// and every LoopCheckInterval; if that query reaches nodedns's own
// listener, the group loops. While it does, its queries fail at once
// (ErrLoop) instead of circling, it is re-checked every HealthInterval, and
// its members stay in rotation: a loop says nothing about their health.

// LoopCheckInterval is how often each group checks for a loop once none was
// found. Each check is one query per member: cheap, but it reaches the
// upstream's own upstreams, so not often.
const LoopCheckInterval = 5 * time.Minute

// loopLabel is the fixed label of loop probe names.
const loopLabel = "nodedns-loop"

// ErrLoop is returned by [Group.Exchange] while the group forwards in a
// loop.
var ErrLoop = errors.New("forwarding loop: queries to this group come back to nodedns")

// NewLoopToken returns a random token for the loop probes of one process;
// give the same one to every group and to the listener's check.
func NewLoopToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "nl" + hex.EncodeToString(b[:])
}

// loopState is a group's loop detection.
type loopState struct {
	looping atomic.Bool
	seen    atomic.Bool // a probe of the current round came back
	// round holds the probe names of the current round, lower-cased: only
	// those count when they come back.
	round atomic.Pointer[map[string]bool]
}

// Looping reports whether the group's queries come back to nodedns.
func (g *Group) Looping() bool { return g.loop.looping.Load() }

// probeName is the loop probe name of one round.
func (g *Group) loopProbeName() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	zone := "invalid."
	for _, z := range g.cfg.Zones {
		if z != "." {
			zone = z
			break
		}
	}
	return fmt.Sprintf("%s-%s.%s.%s", g.cfg.LoopToken, hex.EncodeToString(b[:]), loopLabel, zone)
}

// IsLoopProbe reports whether qname has the shape of a loop probe of
// token (any round, any group).
func IsLoopProbe(qname, token string) bool {
	return token != "" && len(qname) > len(token) && strings.EqualFold(qname[:len(token)], token) &&
		strings.Contains(strings.ToLower(qname), "."+loopLabel+".")
}

// isOwnProbe reports whether qname, asked by src, is one of the group's
// probes of the current round coming back: the name sent this round, from
// the address of one of the group's servers (the upstream that forwarded
// it back). Anything else proves nothing: a client asking such a name
// must not be able to mark the group as looping.
func (g *Group) isOwnProbe(qname string, src netip.Addr) bool {
	round := g.loop.round.Load()
	if round == nil || !(*round)[strings.ToLower(qname)] {
		return false
	}
	for _, mb := range g.roster.Load().all() {
		if ap, err := netip.ParseAddrPort(mb.r.addr); err == nil && ap.Addr().Unmap() == src.Unmap() {
			return true
		}
	}
	return false
}

// SawLoopProbe records that one of the group's loop probes reached
// nodedns: the group loops, from now on.
func (g *Group) SawLoopProbe() {
	g.loop.seen.Store(true)
	g.m.loopProbesBack.WithLabelValues(g.cfg.Name).Inc()
	if !g.loop.looping.Swap(true) {
		g.m.looping.WithLabelValues(g.cfg.Name).Set(1)
		g.log.Error("forwarding loop: a loop probe sent upstream came back to nodedns; answering SERVFAIL for this group's names until it is gone",
			zap.Strings("servers", g.cfg.Addrs))
	}
}

// checkLoop sends one loop probe to each member and decides, from whether
// one came back, whether the group loops.
func (g *Group) checkLoop(ctx context.Context) {
	if g.cfg.LoopToken == "" {
		return
	}
	g.loop.seen.Store(false)
	members := g.roster.Load().all()
	names := make([]string, len(members))
	round := make(map[string]bool, len(members))
	for i := range members {
		names[i] = g.loopProbeName()
		round[strings.ToLower(names[i])] = true
	}
	g.loop.round.Store(&round)
	answered := false
	for i, mb := range members {
		pctx, cancel := context.WithTimeout(ctx, 2*g.cfg.Timeout)
		m := new(dns.Msg)
		m.SetQuestion(names[i], dns.TypeHINFO)
		_, err := mb.r.exchange(pctx, m, 2*g.cfg.Timeout, true)
		cancel()
		if ctx.Err() != nil {
			return
		}
		answered = answered || err == nil
	}
	if g.loop.seen.Load() {
		return // SawLoopProbe made the transition
	}
	if answered && g.loop.looping.Swap(false) {
		g.m.looping.WithLabelValues(g.cfg.Name).Set(0)
		g.log.Info("forwarding loop gone: the loop probe was answered without coming back")
	}
}

// loopLoop checks for a loop at start and then periodically, more often
// while one is there.
func (g *Group) loopLoop(ctx context.Context) {
	defer g.wg.Done()
	for { // runs until ctx is done
		g.checkLoop(ctx)
		next := g.cfg.LoopCheckInterval
		if g.Looping() {
			next = g.cfg.HealthInterval
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
