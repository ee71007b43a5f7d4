package resolver

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// shedTally counts the queries shed per client address over one-minute
// windows, so that nodedns_client_shed_top can name the clients that were
// turned away without a series per address. It tracks at most
// tallyMaxClients addresses per window; the rest count as one.
type shedTally struct {
	now func() time.Time
	top *prometheus.Desc

	mu     sync.Mutex
	window int64                 // index of the current window
	counts map[netip.Addr]uint64 // sheds in the current window
	last   []clientCount         // top clients of the last complete window
}

const (
	tallyWindow     = time.Minute
	tallyMaxClients = 4096
	tallyTopN       = 10
)

type clientCount struct {
	client netip.Addr
	n      uint64
}

func newShedTally(now func() time.Time) *shedTally {
	return &shedTally{
		now:    now,
		counts: make(map[netip.Addr]uint64),
		top: prometheus.NewDesc("nodedns_client_shed_top",
			"Queries shed in the last complete minute for the clients with the most (top 10 only, so series stay bounded).",
			[]string{"client"}, nil),
	}
}

func (t *shedTally) add(c netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.roll()
	if _, ok := t.counts[c]; ok || len(t.counts) < tallyMaxClients {
		t.counts[c]++
	}
}

// roll starts a new window when the current one is over; mu is held.
func (t *shedTally) roll() {
	w := t.now().UnixNano() / int64(tallyWindow)
	if w == t.window {
		return
	}
	t.last = t.last[:0]
	if w == t.window+1 {
		for c, n := range t.counts {
			t.last = append(t.last, clientCount{c, n})
		}
		slices.SortFunc(t.last, func(a, b clientCount) int {
			if c := cmp.Compare(b.n, a.n); c != 0 {
				return c
			}
			return a.client.Compare(b.client)
		})
		t.last = t.last[:min(len(t.last), tallyTopN)]
	}
	t.window = w
	clear(t.counts)
}

// Top returns the clients most shed in the last complete window.
func (t *shedTally) Top() []clientCount {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.roll()
	return slices.Clone(t.last)
}

// Describe implements prometheus.Collector.
func (t *shedTally) Describe(ch chan<- *prometheus.Desc) { ch <- t.top }

// Collect implements prometheus.Collector.
func (t *shedTally) Collect(ch chan<- prometheus.Metric) {
	for _, c := range t.Top() {
		ch <- prometheus.MustNewConstMetric(t.top, prometheus.GaugeValue, float64(c.n), c.client.String())
	}
}
