package upstream

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/miekg/dns"
)

// Router maps a query name to the group serving it, so that e.g.
// cluster.local. goes to the cluster DNS while everything else goes to the
// node's resolvers. Matching is by longest zone suffix on label boundaries,
// case-insensitive; the group serving "." is the default. A Router is
// immutable and safe for concurrent use; build a new one on reload.
type Router struct {
	zones  map[string]*Group // canonical zone -> group
	def    *Group
	groups []*Group
}

// NewRouter builds a Router. It fails if a group is nil, if two groups (or
// one group twice) claim the same zone, or if no group serves ".", because a
// name that matches nothing would otherwise have nowhere to go.
func NewRouter(groups []*Group) (*Router, error) {
	if len(groups) == 0 {
		return nil, errors.New("upstream router: no groups")
	}
	r := &Router{zones: make(map[string]*Group), groups: append([]*Group(nil), groups...)}
	for i, g := range groups {
		if g == nil {
			return nil, fmt.Errorf("upstream router: groups[%d] is nil", i)
		}
		for _, z := range g.cfg.Zones {
			if other, ok := r.zones[z]; ok {
				return nil, fmt.Errorf("upstream router: zone %q is claimed by both group %q and group %q", z, other.cfg.Name, g.cfg.Name)
			}
			r.zones[z] = g
		}
	}
	r.def = r.zones["."]
	if r.def == nil {
		return nil, errors.New(`upstream router: no group serves the root zone "." (a default group is required)`)
	}
	return r, nil
}

// Route returns the group for qname (never nil). qname may be in any case
// and need not be fully qualified.
func (r *Router) Route(qname string) *Group {
	name := dns.CanonicalName(qname)
	// Try each suffix that starts at a label boundary, longest first; the
	// loop ends after the last label since NextLabel always advances.
	for off, end := 0, false; !end; off, end = dns.NextLabel(name, off) {
		if g, ok := r.zones[name[off:]]; ok {
			return g
		}
	}
	return r.def
}

// Groups returns the groups in the order given to NewRouter (a copy), so the
// caller can start, health-check and close them.
func (r *Router) Groups() []*Group { return append([]*Group(nil), r.groups...) }

// Check returns an error when forwarding qname would fail at once (see
// [Group.Check]).
func (r *Router) Check(qname string) error { return r.Route(qname).Check() }

// IsLoopProbe reports whether qname, asked by src, is one of the current
// loop probes of token coming back from the servers of the group that sent
// it, and if so records the loop on that group.
func (r *Router) IsLoopProbe(qname, token string, src netip.Addr) bool {
	if !IsLoopProbe(qname, token) {
		return false
	}
	g := r.Route(qname)
	if !g.isOwnProbe(qname, src) {
		return false
	}
	g.SawLoopProbe()
	return true
}
