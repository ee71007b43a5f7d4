package upstream

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// gate is a loopback server that holds every non-probe query until released,
// announcing each arrival on got. It records the highest member_inflight
// gauge value it saw, read at each arrival (when the gauge is highest).
type gate struct {
	*testServer
	got     chan struct{}
	release chan struct{}
	maxSeen atomic.Int64
	once    sync.Once
}

// open releases every held query, now and later. Idempotent.
func (gt *gate) open() { gt.once.Do(func() { close(gt.release) }) }

// m may be nil (no gauge tracking).
func startGate(t *testing.T, m *Metrics) *gate {
	gt := &gate{got: make(chan struct{}, 100), release: make(chan struct{})}
	gt.testServer = startServer(t, true, false, func(s *testServer, w dns.ResponseWriter, r *dns.Msg) {
		if isProbe(r) {
			answer(s, w, r)
			return
		}
		if m != nil {
			v := int64(testutil.ToFloat64(m.memberInflight.WithLabelValues(s.addr)))
			for cur := gt.maxSeen.Load(); v > cur && !gt.maxSeen.CompareAndSwap(cur, v); cur = gt.maxSeen.Load() {
			}
		}
		gt.got <- struct{}{}
		<-gt.release
		answer(s, w, r)
	})
	// Runs before the server's Shutdown (which waits for handlers).
	t.Cleanup(gt.open)
	return gt
}

func (gt *gate) waitArrivals(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(testWait)
	for range n {
		select {
		case <-gt.got:
		case <-timeout:
			t.Fatalf("upstream did not receive %d queries", n)
		}
	}
}

type result struct {
	resp *dns.Msg
	err  error
}

func goExchange(g *Group, timeout time.Duration) <-chan result {
	return goExchangeTo(g, timeout, make(chan result, 1))
}

// goExchangeTo runs one Exchange in a goroutine and sends its result on ch.
func goExchangeTo(g *Group, timeout time.Duration, ch chan result) <-chan result {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		resp, err := g.Exchange(ctx, query("example.org.", dns.TypeA))
		ch <- result{resp, err}
	}()
	return ch
}

func TestGroupMaxInflightOverloaded(t *testing.T) {
	m, _ := newTestMetrics(t)
	gt := startGate(t, m)
	g := mustGroup(t, GroupConfig{Addrs: []string{gt.addr}, MaxInflight: 2, Timeout: 5 * time.Second}, m, nil)
	addr := g.Addrs()[0]
	gauge := m.memberInflight.WithLabelValues(addr)

	r1, r2 := goExchange(g, testWait), goExchange(g, testWait)
	gt.waitArrivals(t, 2)
	if v := testutil.ToFloat64(gauge); v != 2 {
		t.Errorf("member_inflight = %v with 2 queries held, want 2", v)
	}

	// The third query must fail at once: the 5 s timeout would show.
	start := time.Now()
	_, err := g.Exchange(ctxWithTimeout(t, testWait), query("example.org.", dns.TypeA))
	if !errors.Is(err, ErrOverloaded) {
		t.Fatalf("third query: err = %v, want ErrOverloaded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("ErrOverloaded took %v, want immediate", d)
	}
	if got := testutil.ToFloat64(m.overloaded.WithLabelValues(addr)); got != 1 {
		t.Errorf("overloaded_total = %v, want 1", got)
	}
	if !g.Healthy() || g.roster.Load().all()[0].suspect.Load() {
		t.Error("being at the cap counted as a failure")
	}

	gt.open()
	for i, ch := range []<-chan result{r1, r2} {
		if r := <-ch; r.err != nil {
			t.Errorf("held query %d: %v", i, r.err)
		}
	}
	if v := testutil.ToFloat64(gauge); v != 0 {
		t.Errorf("member_inflight = %v after all queries returned, want 0", v)
	}
	if n := gt.maxSeen.Load(); n > 2 || n < 1 {
		t.Errorf("member_inflight seen by the upstream peaked at %d, want 1..2", n)
	}
}

// TestGroupMaxInflightNeverExceeded races many queries against a cap of 2:
// exactly 2 reach the upstream, the rest fail with ErrOverloaded.
func TestGroupMaxInflightNeverExceeded(t *testing.T) {
	m, _ := newTestMetrics(t)
	gt := startGate(t, m)
	g := mustGroup(t, GroupConfig{Addrs: []string{gt.addr}, MaxInflight: 2, Timeout: 5 * time.Second}, m, nil)
	gauge := m.memberInflight.WithLabelValues(g.Addrs()[0])

	const n = 20
	results := make(chan result, n)
	for range n {
		goExchangeTo(g, testWait, results)
	}
	gt.waitArrivals(t, 2)
	// Every query but the two held ones has to fail on its own, at once.
	timeout := time.After(testWait)
	for i := range n - 2 {
		select {
		case r := <-results:
			if !errors.Is(r.err, ErrOverloaded) {
				t.Fatalf("result %d: err = %v, want ErrOverloaded", i, r.err)
			}
		case <-timeout:
			t.Fatalf("only %d of %d excess queries failed fast", i, n-2)
		}
	}
	if v := testutil.ToFloat64(gauge); v != 2 {
		t.Errorf("member_inflight = %v, want 2", v)
	}
	if got := testutil.ToFloat64(m.overloaded.WithLabelValues(g.Addrs()[0])); got != n-2 {
		t.Errorf("overloaded_total = %v, want %d", got, n-2)
	}
	gt.open()
	for range 2 {
		if r := <-results; r.err != nil {
			t.Errorf("held query: %v", r.err)
		}
	}
	if got := gt.udpQs.Load(); got != 2 {
		t.Errorf("upstream received %d queries, want 2", got)
	}
	if gt.maxSeen.Load() > 2 {
		t.Errorf("member_inflight reached %d, cap is 2", gt.maxSeen.Load())
	}
}

// TestGroupMaxInflightSpillsToOtherMember: with one member at its cap,
// queries go to the other member instead of failing.
func TestGroupMaxInflightSpillsToOtherMember(t *testing.T) {
	m, _ := newTestMetrics(t)
	busy := startGate(t, nil)
	free := startServer(t, true, false, answer)
	g := mustGroup(t, GroupConfig{Addrs: []string{busy.addr, free.addr}, MaxInflight: 2, Timeout: 5 * time.Second}, m, nil)
	busyAddr := g.Addrs()[0]

	// Fill the busy member without assuming the round-robin order: queries
	// that start at the free member are answered at once.
	var held []<-chan result
	for arrived := 0; arrived < 2; {
		if len(held) > 10 {
			t.Fatal("could not fill the busy member")
		}
		ch := goExchange(g, testWait)
		select {
		case <-busy.got:
			arrived++
			held = append(held, ch)
		case r := <-ch:
			if r.err != nil {
				t.Fatal(r.err)
			}
		case <-time.After(testWait):
			t.Fatal("query neither arrived nor returned")
		}
	}

	before := free.udpQs.Load()
	for i := range 4 {
		start := time.Now()
		resp, err := g.Exchange(ctxWithTimeout(t, testWait), query("example.org.", dns.TypeA))
		if err != nil || resp.Rcode != dns.RcodeSuccess {
			t.Fatalf("query %d: %v %v", i, resp, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("query %d took %v", i, d)
		}
	}
	if got := free.udpQs.Load() - before; got != 4 {
		t.Errorf("free member got %d queries, want all 4", got)
	}
	if got := busy.udpQs.Load(); got != 2 {
		t.Errorf("busy member got %d queries, want only the 2 held", got)
	}
	// Round-robin starts half of the 4 at the busy member.
	if got := testutil.ToFloat64(m.overloaded.WithLabelValues(busyAddr)); got < 1 {
		t.Errorf("overloaded_total{busy} = %v, want >= 1", got)
	}
	if !g.Healthy() || g.roster.Load().all()[0].suspect.Load() {
		t.Error("busy member was blamed")
	}
	busy.open()
	for _, ch := range held {
		if r := <-ch; r.err != nil {
			t.Error(r.err)
		}
	}
}

// TestGroupMaxInflightAllMembersBusy: two members at their caps → the next
// query fails at once, and neither member is blamed.
func TestGroupMaxInflightAllMembersBusy(t *testing.T) {
	a, b := startGate(t, nil), startGate(t, nil)
	g := mustGroup(t, GroupConfig{Addrs: []string{a.addr, b.addr}, MaxInflight: 1, Timeout: 5 * time.Second}, nil, nil)
	r1, r2 := goExchange(g, testWait), goExchange(g, testWait)
	// With a cap of 1 each, the two held queries must be on different
	// members whatever the rotation.
	a.waitArrivals(t, 1)
	b.waitArrivals(t, 1)
	_, err := g.Exchange(ctxWithTimeout(t, testWait), query("example.org.", dns.TypeA))
	if !errors.Is(err, ErrOverloaded) {
		t.Fatalf("err = %v, want ErrOverloaded", err)
	}
	if want := `upstream group "test"`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name the group", err)
	}
	a.open()
	b.open()
	for _, ch := range []<-chan result{r1, r2} {
		if r := <-ch; r.err != nil {
			t.Error(r.err)
		}
	}
	if !g.Healthy() {
		t.Error("group unhealthy after overload")
	}
}

func TestGroupMaxInflightConfig(t *testing.T) {
	g := mustGroup(t, GroupConfig{Addrs: []string{"127.0.0.1"}}, nil, nil)
	if got := g.Config().MaxInflight; got != DefaultMaxInflight {
		t.Errorf("default MaxInflight = %d, want %d", got, DefaultMaxInflight)
	}
	if _, err := NewGroup(GroupConfig{Name: "x", Zones: []string{"."}, Addrs: []string{"127.0.0.1"}, MaxInflight: -1}, nil, nil); err == nil {
		t.Error("negative MaxInflight accepted")
	}
}
