package nodenet

import "github.com/prometheus/client_golang/prometheus"

// metrics are the set-up's Prometheus series.
type metrics struct {
	interfaceInPlace prometheus.Gauge
	rulesInPlace     prometheus.Gauge
	restored         *prometheus.CounterVec
	errors           *prometheus.CounterVec
	mode             *prometheus.GaugeVec
	fallbackTargets  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, iface, rules, failOpen bool) *metrics {
	m := &metrics{
		interfaceInPlace: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodedns_setup_interface_in_place",
			Help: "1 while the interface holds every listen address (as of the last check).",
		}),
		rulesInPlace: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodedns_setup_rules_in_place",
			Help: "1 while every NOTRACK and ACCEPT rule is in place (as of the last check).",
		}),
		restored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodedns_setup_restored_total",
			Help: "Parts of the node's set-up found missing by a re-check and put back: interface (the dummy link), address, rules (one per rule).",
		}, []string{"what"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodedns_setup_errors_total",
			Help: "Set-ups, re-checks and liveness renewals that failed, by part: interface, rules, alive.",
		}, []string{"what"}),
		mode: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nodedns_setup_info",
			Help: "1 for the interface mode (dummy or lo) and the rules' backend in use.",
		}, []string{"interface", "backend"}),
		fallbackTargets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodedns_failopen_targets",
			Help: "Cluster DNS endpoints the fail-open DNAT sends queries to while nodedns does not serve.",
		}),
	}
	if iface {
		reg.MustRegister(m.interfaceInPlace)
		for _, w := range []string{"interface", "address"} {
			m.restored.WithLabelValues(w)
		}
		m.errors.WithLabelValues("interface")
	}
	if rules {
		reg.MustRegister(m.rulesInPlace)
		m.restored.WithLabelValues("rules")
		m.errors.WithLabelValues("rules")
	}
	if failOpen {
		reg.MustRegister(m.fallbackTargets)
		m.errors.WithLabelValues("alive")
	}
	if iface || rules {
		reg.MustRegister(m.restored, m.errors, m.mode)
	}
	return m
}
