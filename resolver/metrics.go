package resolver

import (
	"sync/atomic"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Protocol indexes.
const (
	protoUDP = iota
	protoTCP
	numProtos
)

var protoNames = [numProtos]string{"udp", "tcp"}

// Reasons a query was shed (answered at once, stale or SERVFAIL); indexes
// into the metrics.
const (
	shedWaiters      = iota // no room to wait and the client holds the most
	shedPushedOut           // displaced by a client holding fewer waiting queries
	shedQueueTimeout        // waited max_queue_wait for a slot
	shedShutdown            // the server is stopping
	shedUpstreamDown        // every upstream of the name's group is down
	shedLoop                // a forwarding loop: the query would come back
	numShedReasons
)

var shedReasonNames = [numShedReasons]string{"waiters", "pushed_out", "queue_timeout", "shutdown", "upstream_down", "loop"}

// Reasons a stale answer was served, beyond the shed reasons.
const (
	staleUpstreamFailed = numShedReasons + iota // upstream failed or SERVFAILed
	staleSlowUpstream                           // no answer within StaleAnswerTimeout
	staleRecheckReason                          // upstream failed recently: not asked again yet
	staleBusy                                   // every slot taken: stale now rather than wait
	numStaleReasons
)

var staleReasonNames = [numStaleReasons]string{"waiters", "pushed_out", "queue_timeout", "shutdown", "upstream_down", "loop",
	"upstream_failed", "slow_upstream", "recheck", "busy"}

// Results of a walk, for nodedns_autopath_total.
const (
	walkFound   = iota // a later name exists: a CNAME to it
	walkNone           // nothing exists: the plain NXDOMAIN
	walkExists         // the first name itself exists: its plain answer
	walkAborted        // a failure or the deadline: the plain answer
	numWalkResults
)

var walkResultNames = [numWalkResults]string{"found", "none", "exists", "aborted"}

func newAutopathMetrics(reg prometheus.Registerer) [numWalkResults]prometheus.Counter {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodedns_autopath_total",
		Help: "Search walks nodedns finished for a client's first query, by result (found: answered with a CNAME to the name that exists; none; exists: the first name itself; aborted: a failure or the deadline, answered plainly).",
	}, []string{"result"})
	var out [numWalkResults]prometheus.Counter
	for i, r := range walkResultNames {
		out[i] = v.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(v)
	}
	return out
}

// qtypeLabels are the query types that get their own label value; every
// other type is counted as "other", so a client cannot create series at will.
var qtypeLabels = []uint16{
	dns.TypeA, dns.TypeAAAA, dns.TypePTR, dns.TypeSRV, dns.TypeCNAME, dns.TypeMX,
	dns.TypeTXT, dns.TypeNS, dns.TypeSOA, dns.TypeHTTPS, dns.TypeSVCB, dns.TypeANY,
}

const (
	numQtypeLabels = 13 // len(qtypeLabels) + "other"
	numRcodeLabels = 16 // header RCODEs; extended ones count as 15
)

func qtypeIndex(t uint16) int {
	for i, q := range qtypeLabels {
		if q == t {
			return i
		}
	}
	return numQtypeLabels - 1
}

func qtypeName(i int) string {
	if i < len(qtypeLabels) {
		return dns.TypeToString[qtypeLabels[i]]
	}
	return "other"
}

func rcodeName(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return "other"
}

type metrics struct {
	requests *prometheus.CounterVec
	// reqCounters caches the children of requests so the hot path does not
	// hash label values; a nil slot is filled on first use.
	reqCounters                                       [numProtos][numQtypeLabels][numRcodeLabels]atomic.Pointer[prometheus.Counter]
	duration                                          [numProtos]prometheus.Observer
	dropped                                           *prometheus.CounterVec
	droppedMalformed, droppedResponse, droppedRefused prometheus.Counter
	shed                                              [numShedReasons]prometheus.Counter
	staleServed                                       [numStaleReasons]prometheus.Counter
	coalesced, queued                                 prometheus.Counter
	prefetches, prefetchSkipped                       prometheus.Counter
	tcpConns                                          prometheus.Gauge
	tcpRejected, tcpIdleClosed, tcpEvicted            prometheus.Counter
	inflight                                          prometheus.Gauge
	panics                                            prometheus.Counter
	autopath                                          [numWalkResults]prometheus.Counter
	handOvers                                         prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodedns_requests_total",
			Help: "Queries answered, by transport, query type and response code.",
		}, []string{"proto", "qtype", "rcode"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodedns_dropped_total",
			Help: "Packets dropped without an answer, by reason.",
		}, []string{"reason"}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodedns_coalesced_total",
			Help: "Misses that waited for an identical resolution already in flight instead of starting one.",
		}),
		queued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodedns_queued_total",
			Help: "Misses that found every resolution slot taken and waited in their client's queue for one.",
		}),
		prefetches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodedns_prefetch_total",
			Help: "Background refreshes of entries in use shortly before they expire.",
		}),
		prefetchSkipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodedns_prefetch_skipped_total",
			Help: "Prefetches not started because the forward stage was busy (over half its slots taken, or misses waiting).",
		}),
		tcpConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodedns_tcp_connections", Help: "Open client TCP connections.",
		}),
		tcpRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodedns_tcp_rejected_total", Help: "Client TCP connections closed at once because the cap was reached and no connection was idle.",
		}),
		tcpIdleClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodedns_tcp_idle_closed_total", Help: "Idle client TCP connections closed to make room for a new one (pool nearly full, or the client at its own cap).",
		}),
		tcpEvicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodedns_tcp_evicted_total",
			Help: "Busy TCP connections of the client holding the most closed to make room for another client's, the pool being full.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodedns_inflight_misses", Help: "Resolutions in flight to the upstreams (slots in use).",
		}),
		handOvers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodedns_handovers_total", Help: "Stops that handed the listen addresses over to a new process serving them, after answering every query queued here.",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodedns_panics_total", Help: "Queries whose handling panicked; each was answered SERVFAIL.",
		}),
	}
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "nodedns_request_duration_seconds",
		Help:    "Time from reading a query to writing its answer.",
		Buckets: []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
	}, []string{"proto"})
	for i, p := range protoNames {
		m.duration[i] = dur.WithLabelValues(p)
	}
	m.droppedMalformed = m.dropped.WithLabelValues("malformed")
	m.droppedResponse = m.dropped.WithLabelValues("response")
	m.droppedRefused = m.dropped.WithLabelValues("refused_unparsable")
	shed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodedns_shed_total",
		Help: "Queries answered stale or SERVFAIL without an upstream answer because they could not be kept or forwarded, by reason.",
	}, []string{"reason"})
	for i, r := range shedReasonNames {
		m.shed[i] = shed.WithLabelValues(r)
	}
	stale := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodedns_stale_served_total",
		Help: "Stale answers served (RFC 8767), by reason.",
	}, []string{"reason"})
	for i, r := range staleReasonNames {
		m.staleServed[i] = stale.WithLabelValues(r)
	}
	m.autopath = newAutopathMetrics(reg)
	if reg != nil {
		reg.MustRegister(m.requests, dur, m.dropped, shed, stale, m.coalesced, m.queued, m.prefetches, m.prefetchSkipped,
			m.tcpConns, m.tcpRejected, m.tcpIdleClosed, m.tcpEvicted, m.inflight, m.panics, m.handOvers)
	}
	return m
}

// countRequest counts one answered query.
func (m *metrics) countRequest(proto int, qtype uint16, rcode int) {
	qi := qtypeIndex(qtype)
	if rcode < 0 || rcode >= numRcodeLabels {
		rcode = numRcodeLabels - 1
	}
	slot := &m.reqCounters[proto][qi][rcode]
	c := slot.Load()
	if c == nil {
		cc := m.requests.WithLabelValues(protoNames[proto], qtypeName(qi), rcodeName(rcode))
		slot.Store(&cc)
		c = &cc
	}
	(*c).Inc()
}
