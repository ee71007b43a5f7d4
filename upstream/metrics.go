package upstream

import (
	"errors"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

const metricsNamespace, metricsSubsystem = "nodedns", "upstream"

// rcodeNone is the rcode label of a try that produced no response at all.
const rcodeNone = "NONE"

// rcodeOther is the rcode label for rcodes outside the known table.
const rcodeOther = "OTHER"

// probeAlive and probeFailed are the result label values of probes_total.
const (
	probeAlive  = "alive"
	probeFailed = "failed"
)

// Metrics holds the Prometheus instruments of this package. It is an explicit
// value registered on a caller-provided registry (no promauto globals) so that
// tests and multiple resolvers in one process do not collide, and so that one
// instance can be shared by every group and upstream. Series are labelled by
// upstream address; if two groups share an address they share its series.
type Metrics struct {
	requests   *prometheus.CounterVec
	errors     *prometheus.CounterVec
	mismatched *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	healthy    *prometheus.GaugeVec
	inflight   prometheus.Gauge
	probes     *prometheus.CounterVec

	memberInflight *prometheus.GaugeVec
	overloaded     *prometheus.CounterVec
	looping        *prometheus.GaugeVec
	loopProbesBack *prometheus.CounterVec
}

// NewMetrics creates the instruments and registers them on reg. A nil reg
// yields working but unregistered instruments (handy for tests and tools).
// Registering twice on the same registry reuses the existing collectors
// instead of panicking, so re-creating groups on a config reload is safe.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: name, Help: help}
	}
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts(opts("requests_total",
			"Exchanges with an upstream, by response rcode (NONE when no response was obtained).")),
			[]string{"upstream", "rcode"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts(opts("errors_total",
			"Failed exchanges and dropped replies, by reason (timeout, network, mismatch, malformed, canceled, bad_request).")),
			[]string{"upstream", "reason"}),
		mismatched: prometheus.NewCounterVec(prometheus.CounterOpts(opts("mismatched_responses_total",
			"Replies dropped because their ID or question did not match the query (possible spoofing or stale replies).")),
			[]string{"upstream"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "request_duration_seconds",
			Help:    "Duration of exchanges with an upstream, including failed ones.",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
		}, []string{"upstream"}),
		healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("healthy",
			"1 if the upstream is in rotation, 0 if it is marked down.")),
			[]string{"upstream"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts(opts("inflight_requests",
			"Queries currently being forwarded by all upstream groups."))),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts(opts("probes_total",
			"Health probes sent, by result (alive, failed).")),
			[]string{"upstream", "result"}),
		memberInflight: prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("member_inflight",
			"Exchanges currently in flight to the upstream (bounded by the group's max_inflight; summed if several groups share the address).")),
			[]string{"upstream"}),
		overloaded: prometheus.NewCounterVec(prometheus.CounterOpts(opts("overloaded_total",
			"Times the upstream was skipped because it had max_inflight exchanges in flight.")),
			[]string{"upstream"}),
		looping: prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("loop_detected",
			"1 while the group forwards in a loop (its loop probe came back to nodedns); its names are answered SERVFAIL at once.")),
			[]string{"group"}),
		loopProbesBack: prometheus.NewCounterVec(prometheus.CounterOpts(opts("loop_probes_returned_total",
			"Loop probes of the group that came back to nodedns.")),
			[]string{"group"}),
	}
	if reg != nil {
		m.requests = register(reg, m.requests)
		m.errors = register(reg, m.errors)
		m.mismatched = register(reg, m.mismatched)
		m.duration = register(reg, m.duration)
		m.healthy = register(reg, m.healthy)
		m.inflight = register(reg, m.inflight)
		m.probes = register(reg, m.probes)
		m.memberInflight = register(reg, m.memberInflight)
		m.overloaded = register(reg, m.overloaded)
		m.looping = register(reg, m.looping)
		m.loopProbesBack = register(reg, m.loopProbesBack)
	}
	return m
}

// register registers c, or returns the already registered equivalent.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}

// initUpstream creates the series of one upstream so that dashboards and
// rate() see zeros instead of missing series before the first event.
func (m *Metrics) initUpstream(addr string) {
	for _, rc := range []string{"NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", rcodeNone} {
		m.requests.WithLabelValues(addr, rc)
	}
	for _, r := range allReasons {
		m.errors.WithLabelValues(addr, r)
	}
	m.mismatched.WithLabelValues(addr)
	m.duration.WithLabelValues(addr)
	m.probes.WithLabelValues(addr, probeAlive)
	m.probes.WithLabelValues(addr, probeFailed)
	m.memberInflight.WithLabelValues(addr)
	m.overloaded.WithLabelValues(addr)
}

// rcodeLabel maps an rcode to a bounded label value.
func rcodeLabel(rcode int) string {
	if s, ok := dns.RcodeToString[rcode]; ok {
		return s
	}
	return rcodeOther
}

// forget deletes the series of an upstream that left the group (a cluster
// DNS pod that went away), so that pod churn does not grow the series
// without bound.
func (m *Metrics) forget(addr string) {
	l := prometheus.Labels{"upstream": addr}
	m.requests.DeletePartialMatch(l)
	m.errors.DeletePartialMatch(l)
	m.mismatched.DeletePartialMatch(l)
	m.duration.DeletePartialMatch(l)
	m.healthy.DeletePartialMatch(l)
	m.probes.DeletePartialMatch(l)
	m.memberInflight.DeletePartialMatch(l)
	m.overloaded.DeletePartialMatch(l)
}
