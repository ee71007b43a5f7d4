package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/nodedns/nodedns/resolver"
)

// fakePath is a query path whose probe and stalls a test sets.
type fakePath struct {
	mu     sync.Mutex
	err    error
	stalls []resolver.Stall
}

func (f *fakePath) set(err error, stalls []resolver.Stall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.stalls = err, stalls
}

func (f *fakePath) Probe(context.Context, int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *fakePath) Stalled(time.Duration) []resolver.Stall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stalls
}

// TestWatchdog: the fail-open mark is renewed only on proof that the
// query path answers; a stuck reader stops the renewals at once, is
// logged with its stack, and fails /health once it has lasted
// unhealthyAfter; the switches are counted both ways.
func TestWatchdog(t *testing.T) {
	path := &fakePath{}
	core, logs := observer.New(zap.InfoLevel)
	reg := prometheus.NewRegistry()
	w := newWatchdog(path, nil, reg, zap.New(core))
	w.unhealthyAfter = 200 * time.Millisecond
	renewals := 0
	w.alive = func() error { renewals++; return nil }
	ctx := context.Background()

	w.round(ctx)
	if renewals != 1 || !w.healthy() || w.health() != nil {
		t.Fatalf("a serving path: %d renewals, healthy %v, health %v", renewals, w.healthy(), w.health())
	}
	if v := testutil.ToFloat64(w.engaged); v != 0 {
		t.Errorf("nodedns_failopen_engaged = %v while serving", v)
	}

	path.set(nil, []resolver.Stall{{Reader: "udp 169.254.20.10:53", For: 3 * time.Second, Stack: "goroutine 7 [sync.Mutex.Lock]:\nresolver.(*Server).admitLocked"}})
	w.round(ctx)
	if renewals != 1 {
		t.Errorf("renewed the mark with a reader stuck")
	}
	if w.healthy() {
		t.Error("healthy with a reader stuck")
	}
	if err := w.health(); err != nil {
		t.Errorf("/health failed at once (%v); it waits unhealthyAfter", err)
	}
	if n := logs.FilterMessage("a reader is stuck: nodedns does not answer every query").All(); len(n) != 1 ||
		!strings.Contains(n[0].ContextMap()["stack"].(string), "admitLocked") {
		t.Errorf("the stuck reader is not logged with its stack: %v", n)
	}
	time.Sleep(250 * time.Millisecond)
	w.round(ctx)
	if err := w.health(); err == nil || !strings.Contains(err.Error(), "stuck") {
		t.Errorf("/health with a reader stuck for over unhealthyAfter: %v", err)
	}

	path.set(errors.New("udp 169.254.20.10:53: i/o timeout"), nil)
	w.round(ctx)
	if err := w.health(); err == nil || !strings.Contains(err.Error(), "i/o timeout") {
		t.Errorf("/health with the probe failing: %v", err)
	}

	path.set(nil, nil)
	w.round(ctx)
	if renewals != 2 || w.health() != nil || !w.healthy() {
		t.Errorf("after recovery: %d renewals, health %v", renewals, w.health())
	}
	for to, want := range map[string]float64{"cluster_dns": 1, "nodedns": 2} {
		if v := testutil.ToFloat64(w.switches.WithLabelValues(to)); v != want {
			t.Errorf("nodedns_failopen_switches_total{to=%q} = %v, want %v", to, v, want)
		}
	}
	if v := testutil.ToFloat64(w.probeFailures); v != 3 {
		t.Errorf("nodedns_liveness_probe_failures_total = %v, want 3", v)
	}

	// A renewal that fails (the rules gone) leaves the node failed open,
	// but the query path healthy: the re-check mends the rules, and a
	// restart would not.
	w.alive = func() error { return errors.New("the list of live addresses is not in place") }
	w.round(ctx)
	if !w.healthy() || w.health() != nil {
		t.Error("unhealthy though only the mark could not be renewed")
	}
	if v := testutil.ToFloat64(w.engaged); v != 1 {
		t.Errorf("nodedns_failopen_engaged = %v with the mark not renewed, want 1", v)
	}
}
