package upstream

import (
	"context"
	"net/netip"
	"sync/atomic"

	"github.com/miekg/dns"
)

// Forwarder is what the resolver forwards through: it sends each query to
// the group of the router in use, whichever that is when the query leaves
// (a reload swaps it), and answers the resolver's checks before a query is
// admitted (resolver.Forwarder and resolver.ForwardChecker).
type Forwarder struct {
	router    *atomic.Pointer[Router]
	loopToken string
}

// NewForwarder returns a Forwarder over the router current holds;
// loopToken is the token of the groups' loop probes (NewLoopToken).
func NewForwarder(current *atomic.Pointer[Router], loopToken string) *Forwarder {
	return &Forwarder{router: current, loopToken: loopToken}
}

// Forward sends req to the group serving its name ([Group.Exchange]).
func (f *Forwarder) Forward(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
	return f.router.Load().Route(req.Question[0].Name).Exchange(ctx, req)
}

// Check returns an error when forwarding qname would fail at once
// ([Router.Check]): one wrapping ErrLoop when its group loops.
func (f *Forwarder) Check(qname string) error { return f.router.Load().Check(qname) }

// IsLoopProbe reports whether qname, asked by src, is one of this
// process's loop probes coming back, and records the loop
// ([Router.IsLoopProbe]).
func (f *Forwarder) IsLoopProbe(qname string, src netip.Addr) bool {
	return f.router.Load().IsLoopProbe(qname, f.loopToken, src)
}
