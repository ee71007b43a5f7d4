package kubeview

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	apiErrors      *prometheus.CounterVec
	flushedZones   prometheus.Counter
	flushedEntries prometheus.Counter
	endpoints      prometheus.Gauge
}

func newMetrics(v *View, reg prometheus.Registerer) *metrics {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "nodedns", Subsystem: "kube_view", Name: name, Help: help}
	}
	m := &metrics{
		apiErrors: prometheus.NewCounterVec(prometheus.CounterOpts(opts("api_errors_total",
			"Lists and watches of the Kubernetes API that failed, by resource; the last view is kept meanwhile.")),
			[]string{"resource"}),
		flushedZones: prometheus.NewCounter(prometheus.CounterOpts(opts("invalidated_zones_total",
			"Names of Namespaces and Services created or deleted under which the cache was flushed."))),
		flushedEntries: prometheus.NewCounter(prometheus.CounterOpts(opts("invalidated_entries_total",
			"Cache entries removed because a Namespace or Service was created or deleted."))),
		endpoints: prometheus.NewGauge(prometheus.GaugeOpts(opts("dns_endpoints",
			"Ready endpoints of the cluster DNS Service in the view."))),
	}
	for _, r := range []string{"namespaces", "services", "pods", "endpointslices"} {
		m.apiErrors.WithLabelValues(r)
	}
	if reg == nil {
		return m
	}
	stores := []struct {
		name   string
		synced func() bool
		n      func() int
		lists  func() int64
	}{
		{"namespaces", v.namespaces.isSynced, v.namespaces.len, v.namespaces.replaced.Load},
		{"services", v.services.isSynced, v.services.len, v.services.replaced.Load},
		{"pods", v.pods.isSynced, v.pods.len, v.pods.replaced.Load},
		{"endpointslices", v.slices.isSynced, v.slices.len, v.slices.replaced.Load},
	}
	for _, s := range stores {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "nodedns", Subsystem: "kube_view", Name: "synced",
			Help:        "1 while the resource is listed and watched from the Kubernetes API; 0 before the first list and from a failed list or watch until one works (the view denies nothing while namespaces or services are 0).",
			ConstLabels: prometheus.Labels{"resource": s.name},
		}, func() float64 {
			if s.synced() {
				return 1
			}
			return 0
		}))
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "nodedns", Subsystem: "kube_view", Name: "objects",
			Help:        "Objects of the resource in the view (pods: of this node, with an address).",
			ConstLabels: prometheus.Labels{"resource": s.name},
		}, func() float64 { return float64(s.n()) }))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "nodedns", Subsystem: "kube_view", Name: "lists_total",
			Help:        "Full lists of the resource into the view: the first, and one whenever a watch could not be resumed (after an API server restart, every node lists again).",
			ConstLabels: prometheus.Labels{"resource": s.name},
		}, func() float64 { return float64(s.lists()) }))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("age_seconds",
		"Seconds since the Kubernetes API server last answered (a list, a watch event or a version check every 10 s); grows while it is unreachable, and the view is kept.")),
		func() float64 { return v.Age().Seconds() }))
	reg.MustRegister(m.apiErrors, m.flushedZones, m.flushedEntries, m.endpoints)
	return m
}
