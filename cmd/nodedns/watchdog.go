package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nodedns/nodedns/resolver"
)

// The watchdog proves several times a second that nodedns answers: it
// probes every listen address through the real sockets (resolver.Probe)
// and looks for readers stuck on one batch or query (resolver.Stalled).
// Only on that proof does it renew the node's fail-open mark (package
// nodenet), so the kernel sends the pods' queries to the cluster DNS
// within setup.fail_open_after of nodedns no longer answering, whatever
// the reason: stuck readers, a hung or stopped process, a dead one. And
// /health fails on the same evidence, so that kubelet restarts a process
// that runs but does not answer.

// stallAfter is how long a reader may work on one batch or query before
// it counts as stuck: a batch of cache hits takes microseconds, and a miss
// never waits on the reader.
const stallAfter = 2 * time.Second

// queryPath is what the watchdog asks of the resolver.
type queryPath interface {
	Probe(ctx context.Context, mark int) error
	Stalled(d time.Duration) []resolver.Stall
}

type watchdog struct {
	srv    queryPath
	alive  func() error // renews the fail-open mark
	mark   int          // the probes' packet mark (fail-open), 0 for none
	period time.Duration
	// unhealthyAfter is how long without proof /health waits before it
	// fails: a few failed rounds, not one.
	unhealthyAfter time.Duration
	log            *zap.Logger
	stuck          map[string]bool // readers seen stuck in the last round (round's only)

	probeFailures prometheus.Counter
	stalled       prometheus.Gauge
	engaged       prometheus.Gauge
	switches      *prometheus.CounterVec

	mu       sync.Mutex
	lastOK   time.Time // the last proof; the start until the first
	err      error     // why the last round failed; nil after a proof
	renewErr error     // why the last renewal of the mark failed
	live     bool      // the last round renewed the mark
	// downSince is when the node last failed open as this process saw it:
	// the start, until the first renewal.
	downSince time.Time
}

func newWatchdog(srv queryPath, nn *nodeNet, reg prometheus.Registerer, log *zap.Logger) *watchdog {
	now := time.Now()
	w := &watchdog{
		srv: srv, alive: nn.alive, log: log.Named("watchdog"),
		period: 250 * time.Millisecond, unhealthyAfter: 3 * time.Second,
		lastOK: now, downSince: processStart,
		probeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodedns_liveness_probe_failures_total",
			Help: "Rounds of the liveness probe (the liveness question to every listen address over UDP and TCP, and no reader stuck) that failed.",
		}),
		stalled: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodedns_stalled_readers",
			Help: "Readers (UDP sockets, TCP connections) busy with one batch or query for over 2 s, as of the last round.",
		}),
		engaged: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodedns_failopen_engaged",
			Help: "1 while nodedns does not renew its liveness mark, so the node's queries go to the cluster DNS (fail-open); 0 while nodedns serves them.",
		}),
		switches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodedns_failopen_switches_total",
			Help: "Switches of the node's queries, by where they went: cluster_dns (fail-open engaged) or nodedns (released).",
		}, []string{"to"}),
	}
	if on, after := nn.failOpen(); on {
		w.mark = nodenetBypassMark
		w.period = max(after/4, 50*time.Millisecond)
		w.unhealthyAfter = max(3*after, 3*time.Second)
	}
	w.engaged.Set(1)
	w.switches.WithLabelValues("cluster_dns")
	w.switches.WithLabelValues("nodedns")
	reg.MustRegister(w.probeFailures, w.stalled, w.engaged, w.switches)
	return w
}

// run probes until ctx is done.
func (w *watchdog) run(ctx context.Context) {
	t := time.NewTicker(w.period)
	defer t.Stop()
	for {
		w.round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// round is one probe and, on success, one renewal.
func (w *watchdog) round(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, min(resolver.ProbeTimeout, 2*w.period))
	err := w.srv.Probe(pctx, w.mark)
	cancel()
	if ctx.Err() != nil {
		return
	}
	stalls := w.srv.Stalled(stallAfter)
	w.stalled.Set(float64(len(stalls)))
	stuck := make(map[string]bool, len(stalls))
	for _, s := range stalls {
		stuck[s.Reader] = true
		if !w.stuck[s.Reader] { // logged once per stall, with the stack
			w.log.Error("a reader is stuck: nodedns does not answer every query", zap.String("reader", s.Reader),
				zap.Duration("busy_for", s.For), zap.String("stack", s.Stack))
		}
	}
	w.stuck = stuck
	if len(stalls) > 0 {
		err = errors.Join(err, fmt.Errorf("%d readers stuck, the longest for %v", len(stalls), stalls[0].For.Round(time.Millisecond)))
	}
	var renewErr error
	if err == nil {
		renewErr = w.alive()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	if err != nil {
		w.probeFailures.Inc()
		if w.err == nil {
			w.log.Warn("liveness probe failed: not renewing the liveness mark", zap.Error(err))
		}
	} else {
		w.lastOK = now
	}
	w.err = err
	switch {
	case renewErr != nil && w.renewErr == nil:
		w.log.Error("the liveness mark could not be renewed; the re-check restores the rules", zap.Error(renewErr))
	case renewErr == nil && w.renewErr != nil && err == nil:
		w.log.Info("the liveness mark is renewed again")
	}
	w.renewErr = renewErr
	live := err == nil && renewErr == nil
	switch {
	case w.live && !live:
		w.live, w.downSince = false, now
		w.engaged.Set(1)
		w.switches.WithLabelValues("cluster_dns").Inc()
		if w.mark != 0 {
			w.log.Warn("fail-open engaged: the node's queries go to the cluster DNS until nodedns answers again")
		}
	case !w.live && live:
		w.live = true
		w.engaged.Set(0)
		w.switches.WithLabelValues("nodedns").Inc()
		if w.mark != 0 {
			w.log.Info("fail-open released: nodedns serves the node's queries",
				zap.Duration("failed_open_for", now.Sub(w.downSince)),
				zap.Bool("since_process_start", w.downSince.Equal(processStart)))
		}
	}
}

// health is /health's verdict: nil unless the query path has failed its
// probe for unhealthyAfter. A mark that cannot be renewed (the rules
// removed, say) is the re-check's to mend, not a reason to restart.
func (w *watchdog) health() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil && time.Since(w.lastOK) > w.unhealthyAfter {
		return fmt.Errorf("not answering for %v: %w", time.Since(w.lastOK).Round(time.Millisecond), w.err)
	}
	return nil
}

// answersNow probes the query path once more, for a decision that must
// not rest on a round up to a period old (teardown at stop).
func (w *watchdog) answersNow(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, resolver.ProbeTimeout)
	defer cancel()
	return w.srv.Probe(ctx, w.mark) == nil && len(w.srv.Stalled(stallAfter)) == 0
}

// healthy reports whether the last round proved that nodedns answers.
func (w *watchdog) healthy() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err == nil
}
