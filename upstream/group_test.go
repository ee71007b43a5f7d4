package upstream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestGroupFailover(t *testing.T) {
	healthy := startServer(t, true, false, answer)
	hole, _ := blackhole(t)
	tests := []struct {
		name string
		bad  func(t *testing.T) string
	}{
		{"dead (no reply)", func(*testing.T) string { return hole }},
		{"dead (port closed)", closedPort},
		{"slow", func(t *testing.T) string { return startSlow(t, 2*time.Second).addr }},
		{"SERVFAIL", func(t *testing.T) string {
			return startServer(t, true, false, rcodeHandler(dns.RcodeServerFailure)).addr
		}},
		{"REFUSED", func(t *testing.T) string { return startServer(t, true, false, rcodeHandler(dns.RcodeRefused)).addr }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// MaxFails is high so the bad member stays in rotation and,
			// with round-robin, is tried first on every other query.
			g := mustGroup(t, GroupConfig{
				Addrs:    []string{tt.bad(t), healthy.addr},
				Timeout:  150 * time.Millisecond,
				MaxFails: 100,
			}, nil, nil)
			for i := range 4 {
				start := time.Now()
				resp, err := g.Exchange(ctxWithTimeout(t, time.Second), query("example.org.", dns.TypeA))
				if err != nil {
					t.Fatalf("query %d: %v", i, err)
				}
				if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 {
					t.Fatalf("query %d: got %v", i, resp)
				}
				if d := time.Since(start); d > 900*time.Millisecond {
					t.Errorf("query %d took %v, want well within the 1s deadline", i, d)
				}
			}
		})
	}
}

func TestGroupAllServfailReturnsLastResponse(t *testing.T) {
	sf := startServer(t, true, false, rcodeHandler(dns.RcodeServerFailure))
	ref := startServer(t, true, false, rcodeHandler(dns.RcodeRefused))
	g := mustGroup(t, GroupConfig{Addrs: []string{sf.addr, ref.addr}}, nil, nil)
	seen := map[int]bool{}
	for range 2 {
		req := query("example.org.", dns.TypeA)
		resp, err := g.Exchange(ctxWithTimeout(t, 2*time.Second), req)
		if err != nil {
			t.Fatalf("want the last SERVFAIL/REFUSED response, got error %v", err)
		}
		if resp.Id != req.Id {
			t.Errorf("ID %d, want %d", resp.Id, req.Id)
		}
		seen[resp.Rcode] = true
	}
	// Round-robin alternates the order, so each rcode is "last" once.
	if !seen[dns.RcodeServerFailure] || !seen[dns.RcodeRefused] {
		t.Errorf("rcodes returned %v, want both SERVFAIL and REFUSED", seen)
	}
	if sf.udpQs.Load() != 2 || ref.udpQs.Load() != 2 {
		t.Errorf("queries per member: %d, %d; want every member tried on every query", sf.udpQs.Load(), ref.udpQs.Load())
	}
	if !g.Healthy() {
		t.Error("SERVFAIL answers marked the group unhealthy")
	}
}

func TestGroupRoundRobin(t *testing.T) {
	a := startServer(t, true, false, answer)
	b := startServer(t, true, false, answer)
	g := mustGroup(t, GroupConfig{Addrs: []string{a.addr, b.addr}}, nil, nil)
	for range 10 {
		if _, err := g.Exchange(ctxWithTimeout(t, 2*time.Second), query("example.org.", dns.TypeA)); err != nil {
			t.Fatal(err)
		}
	}
	if a.udpQs.Load() != 5 || b.udpQs.Load() != 5 {
		t.Errorf("queries: %d and %d, want 5 and 5", a.udpQs.Load(), b.udpQs.Load())
	}
}

// toggle is a server that drops queries until alive is set.
func toggle(t *testing.T, alive *atomic.Bool) *testServer {
	return startServer(t, true, false, func(s *testServer, w dns.ResponseWriter, r *dns.Msg) {
		if alive.Load() {
			answer(s, w, r)
		}
	})
}

func TestGroupHealthDownAndBackUp(t *testing.T) {
	var alive atomic.Bool
	flaky := toggle(t, &alive)
	healthy := startServer(t, true, false, answer)
	m, _ := newTestMetrics(t)
	lw := newLogWatcher(t)
	g := mustGroup(t, GroupConfig{
		Addrs:          []string{flaky.addr, healthy.addr},
		Timeout:        100 * time.Millisecond,
		MaxFails:       2,
		HealthInterval: 50 * time.Millisecond,
	}, m, lw.log)
	flakyAddr := g.Addrs()[0]
	if got := testutil.ToFloat64(m.healthy.WithLabelValues(flakyAddr)); got != 1 {
		t.Fatalf("healthy gauge starts at %v, want 1", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g.Start(ctx)
	g.Start(ctx) // idempotent

	lw.waitFor(t, "upstream marked down")
	if g.roster.Load().all()[0].up() {
		t.Fatal("flaky member still up after the down transition")
	}
	if got := testutil.ToFloat64(m.healthy.WithLabelValues(flakyAddr)); got != 0 {
		t.Errorf("healthy gauge = %v, want 0", got)
	}
	if got := testutil.ToFloat64(m.probes.WithLabelValues(flakyAddr, probeFailed)); got < 2 {
		t.Errorf("failed probes = %v, want >= MaxFails", got)
	}
	if !g.Healthy() {
		t.Error("group unhealthy although one member is up")
	}
	// A down member is skipped: queries go to the healthy one only.
	before := flaky.udpQs.Load()
	for range 4 {
		if _, err := g.Exchange(ctxWithTimeout(t, 2*time.Second), query("example.org.", dns.TypeA)); err != nil {
			t.Fatal(err)
		}
	}
	if got := flaky.udpQs.Load(); got != before {
		t.Errorf("down member received %d queries", got-before)
	}

	alive.Store(true)
	lw.waitFor(t, "upstream back up")
	if !g.roster.Load().all()[0].up() {
		t.Fatal("member not up after recovery")
	}
	if got := testutil.ToFloat64(m.healthy.WithLabelValues(flakyAddr)); got != 1 {
		t.Errorf("healthy gauge = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.probes.WithLabelValues(flakyAddr, probeAlive)); got < 1 {
		t.Errorf("alive probes = %v", got)
	}
}

func TestGroupAllDown(t *testing.T) {
	var alive atomic.Bool
	srv := toggle(t, &alive)
	lw := newLogWatcher(t)
	m, _ := newTestMetrics(t)
	const timeout = 800 * time.Millisecond
	g := mustGroup(t, GroupConfig{
		Addrs:          []string{closedPort(t), srv.addr},
		Timeout:        timeout,
		MaxFails:       1,
		HealthInterval: 50 * time.Millisecond,
	}, m, lw.log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g.Start(ctx)
	lw.waitFor(t, "all upstreams of group are down")
	if g.Healthy() {
		t.Fatal("group healthy with every member down")
	}

	start := time.Now()
	_, err := g.Exchange(ctxWithTimeout(t, 5*time.Second), query("example.org.", dns.TypeA))
	elapsed := time.Since(start)
	if !errors.Is(err, ErrNoHealthyUpstream) {
		t.Fatalf("err = %v, want ErrNoHealthyUpstream", err)
	}
	if elapsed > timeout/4 {
		t.Errorf("all-down exchange took %v, want an immediate failure (timeout is %v)", elapsed, timeout)
	}
	if !strings.Contains(err.Error(), `upstream group "test"`) {
		t.Errorf("error %q does not name the group", err)
	}

	// Probes keep running while everything is down, so recovery is seen.
	alive.Store(true)
	lw.waitFor(t, "group has a healthy upstream again")
	resp, err := g.Exchange(ctxWithTimeout(t, 5*time.Second), query("example.org.", dns.TypeA))
	if err != nil || len(resp.Answer) != 1 {
		t.Fatalf("after recovery: %v, %v", resp, err)
	}
}

func TestGroupQueryFailuresAloneNeverTakeAMemberOut(t *testing.T) {
	// Not started: no probe can confirm the failures.
	g := mustGroup(t, GroupConfig{Addrs: []string{closedPort(t)}, MaxFails: 2}, nil, nil)
	for i := range 5 {
		_, err := g.Exchange(ctxWithTimeout(t, 2*time.Second), query(fmt.Sprintf("n%d.example.org.", i), dns.TypeA))
		var ee *ExchangeError
		if !errors.As(err, &ee) || ee.Reason != ReasonNetwork {
			t.Fatalf("query %d: err = %v, want a network ExchangeError (the member is tried)", i, err)
		}
	}
	if !g.Healthy() {
		t.Fatal("failed queries took the only member out of rotation without a failed probe")
	}
	if !g.roster.Load().all()[0].suspect.Load() {
		t.Error("five distinct failed names left no suspicion")
	}
}

// deadZone answers every name except those under dead.test., which it
// never answers: a recursive resolver whose one domain has dead servers.
func deadZone(s *testServer, w dns.ResponseWriter, r *dns.Msg) {
	if len(r.Question) == 1 && dns.IsSubDomain("dead.test.", dns.CanonicalName(r.Question[0].Name)) {
		return
	}
	answer(s, w, r)
}

func TestGroupDeadNameKeepsTheServerInRotation(t *testing.T) {
	srv := startServer(t, true, false, deadZone)
	m, _ := newTestMetrics(t)
	lw := newLogWatcher(t)
	g := mustGroup(t, GroupConfig{Addrs: []string{srv.addr}, Timeout: 100 * time.Millisecond,
		MaxFails: 2, HealthInterval: time.Hour}, m, lw.log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g.Start(ctx)
	addr := g.Addrs()[0]

	// glibc asks A and AAAA at once, and retries: the same dead name fails
	// over and over. That is one suspicious name, not a dead server.
	for range 5 {
		var wg sync.WaitGroup
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := g.Exchange(ctxWithTimeout(t, 300*time.Millisecond), query("www.dead.test.", qt)); err == nil {
					t.Error("the dead name got an answer")
				}
			}()
		}
		wg.Wait()
		if !g.Healthy() {
			t.Fatal("one dead name took the only member out of rotation")
		}
	}
	if got := testutil.ToFloat64(m.probes.WithLabelValues(addr, probeAlive)) + testutil.ToFloat64(m.probes.WithLabelValues(addr, probeFailed)); got != 0 {
		t.Errorf("one dead name triggered %v probes, want none", got)
	}
	// Many distinct dead names raise a suspicion; the probe refutes it.
	for i := range 4 {
		if _, err := g.Exchange(ctxWithTimeout(t, 300*time.Millisecond), query(fmt.Sprintf("n%d.dead.test.", i), dns.TypeA)); err == nil {
			t.Fatal("a dead name got an answer")
		}
	}
	lw.waitFor(t, "upstream suspect")
	waitUntil(t, "the probe to answer", func() bool { return testutil.ToFloat64(m.probes.WithLabelValues(addr, probeAlive)) >= 1 })
	if !g.Healthy() || testutil.ToFloat64(m.healthy.WithLabelValues(addr)) != 1 {
		t.Fatal("a live server whose probe answered is out of rotation")
	}
	// Live names still resolve: nothing fails fast.
	if resp, err := g.Exchange(ctxWithTimeout(t, 2*time.Second), query("live.test.", dns.TypeA)); err != nil || len(resp.Answer) != 1 {
		t.Fatalf("live name: %v, %v", resp, err)
	}
}

func TestGroupSuspectMemberIsConfirmedByAProbe(t *testing.T) {
	var alive atomic.Bool // a server that stopped answering anything
	srv := toggle(t, &alive)
	lw := newLogWatcher(t)
	m, _ := newTestMetrics(t)
	// No periodic probe within the test: only the suspicion can trigger one.
	g := mustGroup(t, GroupConfig{Addrs: []string{srv.addr}, Timeout: 100 * time.Millisecond,
		MaxFails: 2, HealthInterval: time.Hour}, m, lw.log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g.Start(ctx)
	for i := range 2 {
		if _, err := g.Exchange(ctxWithTimeout(t, time.Second), query(fmt.Sprintf("n%d.example.org.", i), dns.TypeA)); err == nil {
			t.Fatal("a silent server answered")
		}
	}
	lw.waitFor(t, "upstream marked down")
	if g.Healthy() {
		t.Fatal("group healthy after the confirming probe failed")
	}
	if got := testutil.ToFloat64(m.probes.WithLabelValues(g.Addrs()[0], probeFailed)); got != 1 {
		t.Errorf("failed probes = %v, want 1 (the suspicion's)", got)
	}
}

func TestGroupCallerCancelIsNotAFailure(t *testing.T) {
	hole, got := blackhole(t)
	g := mustGroup(t, GroupConfig{Addrs: []string{hole}, MaxFails: 1}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-got; cancel() }()
	_, err := g.Exchange(ctx, query("example.org.", dns.TypeA))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if !g.Healthy() {
		t.Error("a canceled client marked the upstream down")
	}
}

func TestGroupForceTCP(t *testing.T) {
	srv := startServer(t, false, true, answer)
	g := mustGroup(t, GroupConfig{Addrs: []string{srv.addr}, ForceTCP: true}, nil, nil)
	for range 5 {
		if _, err := g.Exchange(ctxWithTimeout(t, 2*time.Second), query("example.org.", dns.TypeA)); err != nil {
			t.Fatal(err)
		}
	}
	if got := srv.tcpConns.Load(); got != 1 {
		t.Errorf("accepted %d TCP connections for 5 queries, want 1", got)
	}
}

func TestGroupConcurrent(t *testing.T) {
	a := startServer(t, true, false, answer)
	b := startServer(t, true, false, answer)
	m, _ := newTestMetrics(t)
	g := mustGroup(t, GroupConfig{Addrs: []string{a.addr, b.addr}, HealthInterval: 10 * time.Millisecond}, m, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g.Start(ctx)
	errs := make(chan error, 50)
	for range 50 {
		go func() {
			_, err := g.Exchange(ctxWithTimeout(t, 5*time.Second), query("example.org.", dns.TypeA))
			errs <- err
		}()
	}
	for range 50 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := testutil.ToFloat64(m.inflight); got != 0 {
		t.Errorf("inflight = %v after all queries returned", got)
	}
}

func TestGroupClose(t *testing.T) {
	srv := startServer(t, true, false, answer)
	g := mustGroup(t, GroupConfig{Addrs: []string{srv.addr}, HealthInterval: 10 * time.Millisecond}, nil, nil)
	g.Start(context.Background())
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Exchange(context.Background(), query("example.org.", dns.TypeA)); !errors.Is(err, ErrClosed) {
		t.Errorf("err = %v, want ErrClosed", err)
	}
	g.Start(context.Background()) // no effect after Close
}

func TestNewGroupValidation(t *testing.T) {
	good := GroupConfig{Name: "cluster", Zones: []string{"cluster.local."}, Addrs: []string{"10.96.0.10"}}
	tests := []struct {
		name    string
		mutate  func(*GroupConfig)
		wantErr string // substring; empty means valid
	}{
		{"valid", func(*GroupConfig) {}, ""},
		{"bad addr", func(c *GroupConfig) { c.Addrs = []string{"10.0.0.1", "x:y:z"} }, `upstream group "cluster": addrs[1] "x:y:z": `},
		{"hostname", func(c *GroupConfig) { c.Addrs = []string{"dns.google"} }, `addrs[0] "dns.google"`},
		{"duplicate addr", func(c *GroupConfig) { c.Addrs = []string{"10.0.0.1", "10.0.0.1:53"} }, `addrs[1] "10.0.0.1:53": duplicate`},
		{"no addrs", func(c *GroupConfig) { c.Addrs = nil }, `upstream group "cluster": addrs: `},
		{"no zones", func(c *GroupConfig) { c.Zones = nil }, `upstream group "cluster": zones: `},
		{"bad zone", func(c *GroupConfig) { c.Zones = []string{"a..b"} }, `zones[0] "a..b"`},
		{"duplicate zone", func(c *GroupConfig) { c.Zones = []string{"Cluster.Local", "cluster.local."} }, `zones[1] "cluster.local.": listed twice`},
		{"no name", func(c *GroupConfig) { c.Name = "" }, "name must not be empty"},
		{"negative timeout", func(c *GroupConfig) { c.Timeout = -time.Second }, `upstream group "cluster": timeout`},
		{"negative max fails", func(c *GroupConfig) { c.MaxFails = -1 }, "max_fails"},
		{"negative interval", func(c *GroupConfig) { c.HealthInterval = -1 }, "health_interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			cfg.Addrs = append([]string(nil), good.Addrs...)
			tt.mutate(&cfg)
			g, err := NewGroup(cfg, nil, nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer g.Close()
				c := g.Config()
				if c.Timeout != DefaultTimeout || c.MaxFails != DefaultMaxFails || c.HealthInterval != DefaultHealthInterval {
					t.Errorf("defaults not applied: %+v", c)
				}
				if c.Addrs[0] != "10.96.0.10:53" || c.Zones[0] != "cluster.local." || g.Name() != "cluster" {
					t.Errorf("not normalised: %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestMetricsRegistration(t *testing.T) {
	m, reg := newTestMetrics(t)
	if m2 := NewMetrics(reg); m2.requests != m.requests {
		t.Error("second NewMetrics on the same registry did not reuse the collectors")
	}
	g := mustGroup(t, GroupConfig{Addrs: []string{"127.0.0.1:1", "[::1]:1"}}, m, nil)
	_ = g
	// Series exist before any traffic.
	for _, name := range []string{
		"nodedns_upstream_requests_total", "nodedns_upstream_errors_total",
		"nodedns_upstream_mismatched_responses_total", "nodedns_upstream_request_duration_seconds",
		"nodedns_upstream_healthy", "nodedns_upstream_inflight_requests", "nodedns_upstream_probes_total",
	} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n == 0 {
			t.Errorf("%s: %d series, err %v", name, n, err)
		}
	}
	if got := testutil.ToFloat64(m.healthy.WithLabelValues("[::1]:1")); got != 1 {
		t.Errorf("healthy{[::1]:1} = %v, want 1", got)
	}
}

func TestGroupShortCallerDeadlineIsNotAFailure(t *testing.T) {
	hole, _ := blackhole(t)
	g := mustGroup(t, GroupConfig{Addrs: []string{hole}, MaxFails: 1, Timeout: time.Second}, nil, nil)
	// The caller leaves far less than minCountableBudget: the upstream
	// had no real chance to answer, so it must stay in rotation.
	_, err := g.Exchange(ctxWithTimeout(t, 20*time.Millisecond), query("example.org.", dns.TypeA))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if g.roster.Load().all()[0].suspect.Load() {
		t.Error("a 20ms caller deadline counted against the upstream")
	}
	// With a budget of at least minCountableBudget, a timeout counts.
	_, err = g.Exchange(ctxWithTimeout(t, minCountableBudget+50*time.Millisecond), query("example.org.", dns.TypeA))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if !g.roster.Load().all()[0].suspect.Load() {
		t.Error("a timeout with a fair budget was not counted")
	}
}

// A slow but working upstream with nobody to fail over to answers within
// the caller's deadline, though slower than the per-try timeout: the first
// try keeps waiting while the query is sent again.
func TestSlowMemberStillAnswersAfterTheTimeout(t *testing.T) {
	slow := startSlow(t, 300*time.Millisecond)
	m, _ := newTestMetrics(t)
	g := mustGroup(t, GroupConfig{Addrs: []string{slow.addr}, Timeout: 100 * time.Millisecond, HealthInterval: time.Hour}, m, nil)
	for i := 0; i < 3; i++ { // more than MaxFails: it must not be marked down either
		resp, err := g.Exchange(ctxWithTimeout(t, 2*time.Second), query("slow.test.", dns.TypeA))
		if err != nil || len(resp.Answer) == 0 {
			t.Fatalf("query %d: %v, %v", i, resp, err)
		}
	}
	if !g.Healthy() {
		t.Error("a slow member that answered was marked down")
	}
	// With a second member, the per-try timeout still fails over.
	fast := startServer(t, true, false, answer)
	g2 := mustGroup(t, GroupConfig{Addrs: []string{slow.addr, fast.addr}, Timeout: 100 * time.Millisecond, HealthInterval: time.Hour}, m, nil)
	for i := 0; i < 4; i++ {
		start := time.Now()
		if _, err := g2.Exchange(ctxWithTimeout(t, 2*time.Second), query("x.test.", dns.TypeA)); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d >= 290*time.Millisecond {
			t.Errorf("query %d took %v: the slow member's try was not cut at the per-try timeout", i, d)
		}
	}
}

// In a group of one, the per-try timeout means what it says: a lost
// packet is sent again after it, to the same server, instead of costing
// the client the whole deadline.
func TestOneServerGroupResendsAfterTheTimeout(t *testing.T) {
	var seen sync.Map
	srv := startServer(t, true, false, func(s *testServer, w dns.ResponseWriter, r *dns.Msg) {
		if _, again := seen.LoadOrStore(r.Question[0].Name, true); !again {
			return // the first copy of each query is lost
		}
		answer(s, w, r)
	})
	g := mustGroup(t, GroupConfig{Addrs: []string{srv.addr}, Timeout: 100 * time.Millisecond, HealthInterval: time.Hour}, nil, nil)
	for i := range 3 {
		start := time.Now()
		resp, err := g.Exchange(ctxWithTimeout(t, 3*time.Second), query(fmt.Sprintf("lost%d.test.", i), dns.TypeA))
		if err != nil || len(resp.Answer) != 1 {
			t.Fatalf("query %d: %v, %v", i, resp, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("query %d took %v: the lost packet cost the whole deadline, not one timeout", i, d)
		}
	}
	if n := srv.udpQs.Load(); n != 6 {
		t.Errorf("server got %d queries for 3 lookups, want 6 (each sent twice)", n)
	}
}

// A busy server is not sent the query again: extra tries go only to a
// server with under a quarter of its cap in flight, so a slow upstream
// under load gets no more queries than it is asked (no retry
// amplification), and extra tries never take a first try's room.
func TestNoResendToABusyServer(t *testing.T) {
	release := make(chan struct{})
	srv := startServer(t, true, false, func(s *testServer, w dns.ResponseWriter, r *dns.Msg) {
		<-release
		answer(s, w, r)
	})
	g := mustGroup(t, GroupConfig{Addrs: []string{srv.addr}, Timeout: 50 * time.Millisecond, MaxInflight: 8, HealthInterval: time.Hour}, nil, nil)
	var wg sync.WaitGroup
	for i := range 4 { // 4 in flight: at least a quarter of 8
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = g.Exchange(ctxWithTimeout(t, 500*time.Millisecond), query(fmt.Sprintf("busy%d.test.", i), dns.TypeA))
		}()
	}
	waitUntil(t, "four queries at the server", func() bool { return srv.udpQs.Load() == 4 })
	// Four per-try timeouts pass: no query is sent again.
	for range 4 {
		_, err := g.Exchange(ctxWithTimeout(t, 60*time.Millisecond), query("probe-timing.test.", dns.TypeA))
		_ = err
	}
	close(release)
	wg.Wait()
	if n := srv.udpQs.Load(); n > 4+4 {
		t.Errorf("server got %d queries for 8 asked under load, want no resends", n)
	}
	if got := g.roster.Load().all()[0].extra.Load(); got != 0 {
		t.Errorf("%d extra tries still counted", got)
	}
}
