package upstream

import (
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

// The forwarder sends each query through the router in use when the query
// leaves: a router swapped in by a reload takes the next query.
func TestForwarderFollowsTheRouterInUse(t *testing.T) {
	first := startServer(t, true, false, answer)
	second := startServer(t, true, false, answer)
	router := func(addr string) *Router {
		r, err := NewRouter([]*Group{mustGroup(t, GroupConfig{Addrs: []string{addr}}, nil, nil)})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	var current atomic.Pointer[Router]
	current.Store(router(first.addr))
	f := NewForwarder(&current, NewLoopToken())
	ask := func() {
		t.Helper()
		r, err := f.Forward(ctxWithTimeout(t, testWait), query("example.test.", dns.TypeA))
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("Forward: %v %v", r, err)
		}
	}
	ask()
	current.Store(router(second.addr))
	ask()
	if a, b := first.udpQs.Load(), second.udpQs.Load(); a != 1 || b != 1 {
		t.Errorf("queries: %d to the first router's server, %d to the second's; want 1 and 1", a, b)
	}
	if err := f.Check("example.test."); err != nil {
		t.Errorf("Check with a healthy group: %v", err)
	}
	if f.IsLoopProbe("example.test.", netip.MustParseAddr("127.0.0.1")) {
		t.Error("an ordinary name taken for a loop probe")
	}
}
