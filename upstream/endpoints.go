package upstream

import (
	"fmt"
	"slices"

	"go.uber.org/zap"
)

// A group's servers come from two places. The configured ones (GroupConfig
// Addrs: for the cluster zone, normally the kube-dns Service IP) are there
// for the group's life. Discovered endpoints (SetEndpoints: the ready
// addresses of the cluster DNS pods, from the Kubernetes view) replace them
// in rotation while there are any: each pod is then health-checked on its
// own, so that one sick pod is taken out instead of being hidden behind a
// Service IP that spreads queries over healthy and sick alike. The
// configured servers stay as the fallback: used when no endpoint is up.

// roster is the set of members in rotation; immutable once stored.
type roster struct {
	// primary are tried first: the endpoints, or the configured servers
	// when there are none.
	primary []*member
	// fallback are the configured servers while endpoints are known; used
	// only when no primary member is up.
	fallback []*member
}

// all returns every member, primary first.
func (ro *roster) all() []*member {
	return append(slices.Clip(ro.primary), ro.fallback...)
}

// inRotation appends to buf the members an exchange may use: the primary
// members that are up, or, when none is, the fallback members that are.
func (ro *roster) inRotation(buf []*member) []*member {
	for _, mb := range ro.primary {
		if mb.up() {
			buf = append(buf, mb)
		}
	}
	if len(buf) > 0 {
		return buf
	}
	for _, mb := range ro.fallback {
		if mb.up() {
			buf = append(buf, mb)
		}
	}
	return buf
}

func anyUp(ms []*member) bool {
	for _, mb := range ms {
		if mb.up() {
			return true
		}
	}
	return false
}

// SetEndpoints replaces the group's discovered servers with addrs ("IP",
// "IP:port", "[v6]:port"; default port 53). A server already known keeps
// its health state and connections; a new one starts in rotation and is
// probed from now on; one no longer listed stops being used and probed.
// With no addresses, the configured servers are in rotation again. On an
// invalid address nothing changes.
func (g *Group) SetEndpoints(addrs []string) error {
	norm := make([]string, 0, len(addrs))
	for i, a := range addrs {
		na, err := ParseAddr(a)
		if err != nil {
			return fmt.Errorf("upstream group %q: endpoints[%d] %q: %w", g.cfg.Name, i, a, err)
		}
		if !slices.Contains(norm, na) {
			norm = append(norm, na)
		}
	}
	g.setMu.Lock()
	defer g.setMu.Unlock()
	if g.closed.Load() {
		return fmt.Errorf("upstream group %q: %w", g.cfg.Name, ErrClosed)
	}
	old := g.roster.Load()
	known := make(map[string]*member, len(old.primary)+len(old.fallback))
	for _, mb := range old.all() {
		known[mb.r.addr] = mb
	}
	next := &roster{primary: g.configured}
	var added []*member
	if len(norm) > 0 {
		next = &roster{fallback: g.configured}
		for _, a := range norm {
			mb := known[a]
			if mb == nil {
				var err error
				if mb, err = g.newMember(a); err != nil {
					return fmt.Errorf("upstream group %q: endpoint %q: %w", g.cfg.Name, a, err)
				}
				added = append(added, mb)
			}
			next.primary = append(next.primary, mb)
		}
	}
	g.roster.Store(next)

	in := make(map[*member]bool, len(next.primary)+len(next.fallback))
	for _, mb := range next.all() {
		in[mb] = true
	}
	var removed []*member
	for _, mb := range old.all() {
		if !in[mb] {
			removed = append(removed, mb)
		}
	}
	g.swapProbes(added, removed)
	for _, mb := range removed {
		// Exchanges in flight finish; pooled connections close as they
		// come back.
		_ = mb.r.Close()
		g.m.forget(mb.r.addr)
	}
	if len(added) > 0 || len(removed) > 0 {
		g.log.Info("upstream servers changed", zap.Strings("in_rotation", addrsOf(next.primary)),
			zap.Strings("fallback", addrsOf(next.fallback)))
	}
	return nil
}

func addrsOf(ms []*member) []string {
	out := make([]string, len(ms))
	for i, mb := range ms {
		out[i] = mb.r.addr
	}
	return out
}

// MemberStatus describes one server of a group, for readiness details.
type MemberStatus struct {
	Addr string `json:"addr"`
	// Source is "endpoint" for a discovered server, "configured" for one
	// of the group's configuration.
	Source string `json:"source"`
	// Up is false while probes say the server does not answer.
	Up bool `json:"up"`
	// Fallback is true for a configured server kept aside while endpoints
	// are known: used only when none of them is up.
	Fallback bool `json:"fallback,omitempty"`
}

// Members returns the state of the group's servers, in rotation order.
func (g *Group) Members() []MemberStatus {
	ro := g.roster.Load()
	var out []MemberStatus
	add := func(ms []*member, fallback bool) {
		for _, mb := range ms {
			src := "endpoint"
			if slices.Contains(g.configured, mb) {
				src = "configured"
			}
			out = append(out, MemberStatus{Addr: mb.r.addr, Source: src, Up: mb.up(), Fallback: fallback})
		}
	}
	add(ro.primary, false)
	add(ro.fallback, true)
	return out
}

// swapProbes starts the probes of added members (once the group is
// started) and stops those of removed ones.
func (g *Group) swapProbes(added, removed []*member) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.started && !g.closed.Load() {
		for _, mb := range added {
			g.startProbes(mb)
		}
	}
	for _, mb := range removed {
		if mb.stop != nil {
			mb.stop()
		}
	}
}
