package upstream

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Endpoints replace the configured server in rotation, each is health-checked
// on its own, a dead one is taken out while the others answer, and the
// configured server is the fallback only when no endpoint is up.
func TestSetEndpointsRotationAndFallback(t *testing.T) {
	service := startServer(t, true, false, answer) // the kube-dns Service IP
	var aliveA, aliveB atomic.Bool
	aliveA.Store(true)
	aliveB.Store(true)
	podA, podB := toggle(t, &aliveA), toggle(t, &aliveB)
	m, _ := newTestMetrics(t)
	lw := newLogWatcher(t)
	g := mustGroup(t, GroupConfig{
		Name: "cluster",
		// "." so that the test servers tell probes (". NS") from queries.
		Zones:          []string{"."},
		Addrs:          []string{service.addr},
		Timeout:        100 * time.Millisecond,
		MaxFails:       2,
		HealthInterval: 50 * time.Millisecond,
	}, m, lw.log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g.Start(ctx)

	ask := func(n int) {
		t.Helper()
		for range n {
			if _, err := g.Exchange(ctxWithTimeout(t, 2*time.Second), query("web.default.svc.cluster.local.", dns.TypeA)); err != nil {
				t.Fatal(err)
			}
		}
	}
	counts := func() (svc, a, b int32) { return service.udpQs.Load(), podA.udpQs.Load(), podB.udpQs.Load() }

	if err := g.SetEndpoints([]string{podA.addr, podB.addr}); err != nil {
		t.Fatal(err)
	}
	s0, a0, b0 := counts()
	ask(10)
	s1, a1, b1 := counts()
	if s1 != s0 {
		t.Errorf("the configured server got %d queries while endpoints are up, want 0", s1-s0)
	}
	if a1-a0 != 5 || b1-b0 != 5 {
		t.Errorf("endpoints got %d and %d of 10 queries, want 5 and 5 (round-robin)", a1-a0, b1-b0)
	}
	if got := len(g.Members()); got != 3 {
		t.Errorf("Members() lists %d servers, want 3 (two endpoints, the configured fallback)", got)
	}

	// One pod dies: its probes take it out; every query still succeeds.
	aliveA.Store(false)
	lw.waitFor(t, "upstream marked down")
	_, a2, _ := counts()
	ask(10)
	if _, a3, _ := counts(); a3 != a2 {
		t.Errorf("the dead endpoint got %d queries after it was marked down", a3-a2)
	}

	// Both die: the configured server is the fallback.
	aliveB.Store(false)
	waitUntil(t, "both endpoints down", func() bool {
		ms := g.Members()
		return !ms[0].Up && !ms[1].Up
	})
	s4, _, _ := counts()
	ask(4)
	if s5, _, _ := counts(); s5-s4 != 4 {
		t.Errorf("the configured fallback got %d of 4 queries with every endpoint down", s5-s4)
	}

	// One comes back: it is used again, and the fallback no longer.
	aliveA.Store(true)
	waitUntil(t, "endpoint back up", func() bool { return g.Members()[0].Up })
	s6, a6, _ := counts()
	ask(4)
	if s7, a7, _ := counts(); s7 != s6 || a7-a6 != 4 {
		t.Errorf("after recovery: fallback got %d, the endpoint %d of 4 queries; want 0 and 4", s7-s6, a7-a6)
	}

	// The endpoints go away: the configured server is in rotation again,
	// and the removed servers' series are gone.
	if err := g.SetEndpoints(nil); err != nil {
		t.Fatal(err)
	}
	s8, _, _ := counts()
	ask(3)
	if s9, _, _ := counts(); s9-s8 != 3 {
		t.Errorf("with no endpoints the configured server got %d of 3 queries", s9-s8)
	}
	if n := testutil.CollectAndCount(m.healthy); n != 1 {
		t.Errorf("nodedns_upstream_healthy has %d series after the endpoints left, want 1", n)
	}
}

// A server that stays an endpoint across updates keeps its health state;
// a bad address changes nothing.
func TestSetEndpointsKeepsStateAndRejectsBadAddresses(t *testing.T) {
	service := startServer(t, true, false, answer)
	pod := startServer(t, true, false, answer)
	other := startServer(t, true, false, answer)
	g := mustGroup(t, GroupConfig{Name: "cluster", Zones: []string{"cluster.local."}, Addrs: []string{service.addr}}, nil, nil)
	if err := g.SetEndpoints([]string{pod.addr}); err != nil {
		t.Fatal(err)
	}
	first := g.roster.Load().primary[0]
	if err := g.SetEndpoints([]string{other.addr, pod.addr}); err != nil {
		t.Fatal(err)
	}
	if ro := g.roster.Load(); ro.primary[1] != first {
		t.Error("an endpoint listed again got a new member (its health state is lost)")
	}
	before := g.Members()
	if err := g.SetEndpoints([]string{pod.addr, "not an address"}); err == nil {
		t.Fatal("a bad endpoint address was accepted")
	}
	if after := g.Members(); len(after) != len(before) {
		t.Errorf("a rejected update changed the servers: %v -> %v", before, after)
	}
	_ = g.Close()
	if err := g.SetEndpoints([]string{pod.addr}); err == nil {
		t.Error("SetEndpoints on a closed group succeeded")
	}
}
