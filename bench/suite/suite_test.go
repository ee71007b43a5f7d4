package suite

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodedns/nodedns/bench"
	"github.com/nodedns/nodedns/bench/fakeup"
)

func TestParseStatus(t *testing.T) {
	text := "Name:\tnodedns\nUmask:\t0022\nVmPeak:\t 1262188 kB\nVmHWM:\t   48976 kB\nVmRSS:\t   45100 kB\nThreads:\t7\n"
	m, err := ParseStatus(text)
	if err != nil {
		t.Fatal(err)
	}
	if m.HWM != 48976*1024 || m.RSS != 45100*1024 {
		t.Errorf("got %+v", m)
	}
	if _, err := ParseStatus("Name:\tkthreadd\nThreads:\t1\n"); err == nil {
		t.Error("no error without VmRSS/VmHWM")
	}
	if _, err := ParseStatus("VmHWM:\t12 MB\nVmRSS:\t1 kB\n"); err == nil {
		t.Error("no error for a unit other than kB")
	}
}

func TestParseStatCPU(t *testing.T) {
	// The command name may hold spaces and parentheses.
	text := "4242 (core dns) (x)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 731 269 0 0 20 0 7 0 100 1000 200 18446744073709551615\n"
	ticks, err := ParseStatCPU(text)
	if err != nil {
		t.Fatal(err)
	}
	if ticks != 731+269 {
		t.Errorf("ticks %d, want 1000", ticks)
	}
	for _, bad := range []string{"", "1 (x S 1 2", "1 (x) S 1 2 3", "1 (x) S 1 2 3 4 5 6 7 8 9 10 u s"} {
		if _, err := ParseStatCPU(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseLoadavg(t *testing.T) {
	la, err := ParseLoadavg("0.42 0.70 1.77 2/345 6789\n")
	if err != nil || la != [3]float64{0.42, 0.70, 1.77} {
		t.Errorf("got %v, %v", la, err)
	}
	if _, err := ParseLoadavg("0.4"); err == nil {
		t.Error("no error for a short line")
	}
}

const sampleMetrics = `# HELP nodedns_shed_total Queries shed.
# TYPE nodedns_shed_total counter
nodedns_shed_total{reason="pushed_out"} 46337
nodedns_shed_total{reason="queue_timeout"} 12
nodedns_shed_total{reason="waiters"} 0
go_goroutines 515
weird_total{a="x}y",b="say \"hi\""} 3 1700000000000
nodedns_request_duration_seconds_bucket{le="+Inf"} 1e+06
nan_gauge NaN
`

func TestParseMetrics(t *testing.T) {
	m, err := ParseMetrics(sampleMetrics)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Sum("nodedns_shed_total"); got != 46349 {
		t.Errorf("shed sum %v", got)
	}
	by := m.By("nodedns_shed_total", "reason")
	if by["pushed_out"] != 46337 || by["queue_timeout"] != 12 || len(by) != 3 {
		t.Errorf("by reason %v", by)
	}
	if m.Sum("go_goroutines") != 515 || !m.Has("go_goroutines") || m.Has("go_threads") {
		t.Errorf("go_goroutines: %v", m)
	}
	w := `weird_total{a="x}y",b="say \"hi\""}`
	if m[w] != 3 {
		t.Errorf("series with a brace and quotes in label values: %v", m)
	}
	if Label(w, "a") != "x}y" || Label(w, "b") != `say "hi"` || Label(w, "c") != "" {
		t.Errorf("labels: a=%q b=%q", Label(w, "a"), Label(w, "b"))
	}
	if m[`nodedns_request_duration_seconds_bucket{le="+Inf"}`] != 1e6 || !math.IsNaN(m["nan_gauge"]) {
		t.Errorf("values: %v", m)
	}
	before := Metrics{`nodedns_shed_total{reason="pushed_out"}`: 337, "go_goroutines": 10}
	d := m.Delta(before, "nodedns_shed_total")
	if d[`nodedns_shed_total{reason="pushed_out"}`] != 46000 || d[`nodedns_shed_total{reason="queue_timeout"}`] != 12 || len(d) != 3 {
		t.Errorf("delta %v", d)
	}
	if _, err := ParseMetrics("foo{a=\"b\" 1\n"); err == nil {
		t.Error("no error for unterminated labels")
	}
	if _, err := ParseMetrics("foo\n"); err == nil {
		t.Error("no error for a line without a value")
	}
}

func report(sent, answered uint64, rcodes map[string]uint64, p50, p99 float64) *bench.Report {
	return &bench.Report{
		Sent: sent, Answered: answered, Lost: sent - answered, Rcodes: rcodes,
		QPS: float64(answered) / 10, Duration: 10,
		Latency: bench.Latency{P50: p50, P90: p99, P99: p99, P999: p99 * 2, Max: p99 * 3},
		Curve:   []bench.CurvePoint{{Percentile: 0, Ms: p50 / 2}, {Percentile: 50, Ms: p50}, {Percentile: 99, Ms: p99}, {Percentile: 100, Ms: p99 * 3}},
	}
}

func ok(n uint64) map[string]uint64 { return map[string]uint64{"NOERROR": n} }

// sampleResults is a complete run where nodedns passes some targets and
// misses others.
func sampleResults() *Results {
	res := &Results{Date: "2026-11-24T17:00:00Z", Finished: "2026-11-24T17:10:00Z", Params: DefaultOptions().Params}
	res.Host.CPUs = 2
	res.Servers = []ServerBin{{Name: NodeDNS, Path: "bin/nodedns", Version: "dev", Args: []string{"--listen", "127.0.0.1:1"}}}
	res.Scenarios = []*Scenario{
		{ID: ScHit, Title: titles[ScHit], Runs: []*ServerRun{
			{Server: NodeDNS, Load: report(2_000_000, 2_000_000, ok(2_000_000), 0.5, 1.5), Cores: 0.8, GoroutinesMax: 12,
				Metrics: Metrics{"nodedns_cache_misses_total": 0}, Upstream: fakeup.Stats{Received: 5, Probes: 5},
				Warmup: "5000 names from one client address (127.0.1.1), up to 500 outstanding at once on 16 sockets; one pass: 4990/5000 NOERROR (SERVFAIL 10), p50 1.000 ms, p99 2.000 ms."},
			{Server: CoreDNS, Load: report(400_000, 400_000, ok(400_000), 4, 7), Cores: 1.0, GoroutinesMax: 25,
				Metrics:  Metrics{`coredns_cache_misses_total{server="dns://127.0.0.1:1",type="success"}`: 2, `coredns_cache_misses_total{server="dns://127.0.0.1:1",type="denial"}`: 1},
				Upstream: fakeup.Stats{Received: 3}},
		}},
		{ID: ScLatency, Title: titles[ScLatency], Runs: []*ServerRun{
			{Server: NodeDNS, Load: report(200_000, 200_000, ok(200_000), 0.1, 0.42)},
			{Server: CoreDNS, Load: report(200_000, 200_000, ok(200_000), 0.15, 2.3)},
			{Server: Echo, Load: report(200_000, 200_000, ok(200_000), 0.05, 0.2)},
		}},
		{ID: ScStorm, Title: titles[ScStorm], Runs: []*ServerRun{
			{Server: NodeDNS, Load: report(400_000, 399_000, map[string]uint64{"SERVFAIL": 399_000}, 0.15, 30),
				Bystanders: report(40_000, 40_000, ok(40_000), 0.14, 1.1),
				RSSPeak:    45e6, Upstream: fakeup.Stats{Received: 500},
				Metrics: Metrics{`nodedns_shed_total{reason="pushed_out"}`: 300_000, `nodedns_shed_total{reason="waiters"}`: 0}},
			{Server: CoreDNS, Load: report(400_000, 100_000, map[string]uint64{"SERVFAIL": 90_000, "NOERROR": 10_000}, 4000, 4200),
				Bystanders: report(40_000, 14_000, ok(14_000), 45, 190),
				RSSPeak:    430e6, Upstream: fakeup.Stats{Received: 250_000}},
		}},
		{ID: ScStormShared, Title: titles[ScStormShared], Runs: []*ServerRun{
			{Server: NodeDNS, Load: report(400_000, 400_000, map[string]uint64{"SERVFAIL": 400_000}, 0.15, 30),
				Bystanders: report(40_000, 40_000, ok(40_000), 0.15, 1.2),
				RSSPeak:    47e6, Upstream: fakeup.Stats{Received: 600}},
			{Server: CoreDNS, Load: report(400_000, 100_000, map[string]uint64{"SERVFAIL": 100_000}, 4000, 4200),
				Bystanders: report(40_000, 10_000, ok(10_000), 50, 200),
				RSSPeak:    440e6, Upstream: fakeup.Stats{Received: 250_000}},
		}},
		{ID: ScFair, Title: titles[ScFair], Runs: []*ServerRun{
			{Server: NodeDNS, Load: report(100_000, 100_000, map[string]uint64{"SERVFAIL": 95_000, "NOERROR": 5_000}, 1000, 2100),
				Quiet:    report(380, 380, ok(380), 2001, 2010),
				Upstream: fakeup.Stats{Received: 5_400}, Metrics: Metrics{`nodedns_shed_total{reason="queue_timeout"}`: 90_000, "nodedns_queued_total": 95_000}},
			{Server: CoreDNS, Load: report(100_000, 60_000, map[string]uint64{"SERVFAIL": 30_000, "NOERROR": 30_000}, 4000, 4900),
				Quiet:    report(380, 150, map[string]uint64{"NOERROR": 100, "SERVFAIL": 50}, 3500, 4800),
				Upstream: fakeup.Stats{Received: 100_000}},
		}},
		{ID: ScNX, Title: titles[ScNX], Runs: []*ServerRun{
			{Server: NodeDNS, Load: report(100_000, 100_000, map[string]uint64{"NXDOMAIN": 100_000}, 0.1, 0.5), Upstream: fakeup.Stats{Received: 200}},
			{Server: CoreDNS, Load: report(100_000, 100_000, map[string]uint64{"NXDOMAIN": 100_000}, 0.1, 0.5), Upstream: fakeup.Stats{Received: 2000}},
		}},
		{ID: ScNXBurst, Title: titles[ScNXBurst], Runs: []*ServerRun{
			{Server: NodeDNS, Bursts: bursts(500, 1, 1, 2), Upstream: fakeup.Stats{Received: 4}},
			{Server: CoreDNS, Bursts: bursts(500, 500, 500, 498), Upstream: fakeup.Stats{Received: 1498}},
		}},
		{ID: ScNdots, Title: titles[ScNdots], Runs: []*ServerRun{
			{Server: NodeDNS, Error: "nodedns exited during the scenario"},
			{Server: CoreDNS, Load: &bench.Report{Sent: 8, Lookups: &bench.LookupReport{Lookups: 1}}, Upstream: fakeup.Stats{Received: 8}},
		}},
	}
	res.Scenarios = append(res.Scenarios, &Scenario{ID: ScBurst, Title: titles[ScBurst], Runs: []*ServerRun{
		{Server: NodeDNS, Bursts: []Burst{
			BurstOf("b0", report(1000, 1000, ok(1000), 5, 12), 1000),
			BurstOf("b1", report(1000, 1000, ok(1000), 6, 14), 1000)},
			Upstream: fakeup.Stats{Received: 2000}, Metrics: Metrics{"nodedns_queued_total": 1000}},
		{Server: CoreDNS, Bursts: []Burst{
			BurstOf("b0", report(1000, 700, ok(700), 20, 40), 700),
			BurstOf("b1", report(1000, 720, ok(720), 20, 41), 720)},
			Upstream: fakeup.Stats{Received: 1420}, ServerDrops: 580},
	}})
	res.Scenarios = append(res.Scenarios, &Scenario{ID: ScDeadName, Title: titles[ScDeadName], Runs: []*ServerRun{
		{Server: NodeDNS, Load: report(1000, 1000, map[string]uint64{"SERVFAIL": 1000}, 1500, 1600),
			Bystanders: report(40_000, 40_000, ok(40_000), 0.1, 0.9), Misses: report(4000, 4000, ok(4000), 10.5, 12),
			Health:   &Health{Gauge: "nodedns_upstream_healthy", Samples: 80},
			Upstream: fakeup.Stats{Received: 4320, Dead: 300, Probes: 20},
			Metrics:  Metrics{`nodedns_upstream_probes_total{result="alive",upstream="127.0.0.1:1"}`: 20, `nodedns_upstream_probes_total{result="failed",upstream="127.0.0.1:1"}`: 0}},
		{Server: CoreDNS, Load: report(1000, 0, nil, 0, 0),
			Bystanders: report(40_000, 40_000, ok(40_000), 0.3, 2), Misses: report(4000, 3988, ok(3988), 11, 15),
			Upstream: fakeup.Stats{Received: 5000, Dead: 1000},
			Metrics:  Metrics{`coredns_proxy_healthcheck_failures_total{proxy_name="forward",to="127.0.0.1:1"}`: 0}},
	}})
	res.Scenarios = append(res.Scenarios, &Scenario{ID: ScScan, Title: titles[ScScan], Runs: []*ServerRun{
		{Server: NodeDNS, Load: report(50_000, 50_000, ok(50_000), 11, 13), Phases: []Phase{
			{Name: "before the scan", Load: report(10_000, 10_000, ok(10_000), 0.1, 0.3), Upstream: 0},
			{Name: "during the scan", Load: report(20_000, 20_000, ok(20_000), 0.1, 0.5), Upstream: 40},
			{Name: "after the scan, each name once", Load: report(2000, 2000, ok(2000), 0.1, 0.4), Upstream: 20}}},
		{Server: CoreDNS, Load: report(50_000, 50_000, ok(50_000), 11, 14), Phases: []Phase{
			{Name: "before the scan", Load: report(10_000, 10_000, ok(10_000), 0.1, 0.3), Upstream: 0},
			{Name: "during the scan", Load: report(20_000, 20_000, ok(20_000), 0.1, 11), Upstream: 5000},
			{Name: "after the scan, each name once", Load: report(2000, 2000, ok(2000), 11, 13), Upstream: 1800}}},
	}})
	res.Scenarios = append(res.Scenarios, &Scenario{ID: ScHostileIdle, Title: titles[ScHostileIdle], Runs: []*ServerRun{
		{Server: NodeDNS, Load: report(20_000, 20_000, ok(20_000), 0.1, 0.4), RSSBefore: 20e6, RSSMaxSampled: 28e6,
			Probe: &Probe{Sent: 100, Answered: 100, MaxMs: 3}, Attack: &AttackCount{Opened: 18_000, Ended: 17_900}},
		{Server: CoreDNS, Load: report(20_000, 19_000, ok(19_000), 0.2, 900), RSSBefore: 30e6, RSSMaxSampled: 330e6,
			Probe: &Probe{Sent: 100, Answered: 40, MaxMs: 1900}, Attack: &AttackCount{Opened: 15_000, Failed: 20}},
	}})
	res.Scenarios = append(res.Scenarios, &Scenario{ID: ScMiss, Title: titles[ScMiss], Runs: []*ServerRun{
		{Server: NodeDNS, Load: &bench.Report{Sent: 300_000, Answered: 300_000, QPS: 30_000, Rcodes: ok(300_000)}, Cores: 1.0},
		{Server: CoreDNS, Load: &bench.Report{Sent: 130_000, Answered: 130_000, QPS: 13_000, Rcodes: ok(130_000)}, Cores: 1.0},
		{Server: Unbound, Load: &bench.Report{Sent: 100_000, Answered: 100_000, QPS: 20_000, Rcodes: ok(100_000)}, Cores: 1.0},
	}})
	for _, id := range []string{ScNXBurst, ScBurst} {
		for _, r := range res.Scenario(id).Runs {
			r.Load = AggregateBursts(r.Bursts)
		}
	}
	finish(res)
	res.Targets = Evaluate(res)
	return res
}

// bursts makes one burst of size NXDOMAIN answers per upstream count.
func bursts(size uint64, upstream ...uint64) []Burst {
	var bs []Burst
	for i, u := range upstream {
		rep := report(size, size, map[string]uint64{"NXDOMAIN": size}, 50+float64(i), 52+float64(i))
		bs = append(bs, BurstOf("burst", rep, u))
	}
	return bs
}

func targetByID(ts []Target, id string) Target {
	for _, t := range ts {
		if t.ID == id {
			return t
		}
	}
	return Target{ID: "missing " + id}
}

func TestEvaluate(t *testing.T) {
	res := sampleResults()
	want := map[string]string{
		"hit-ratio":                    Pass, // 250k vs 40k qps/core = 6.25x
		"hit-qps":                      Pass,
		"hit-misses":                   Pass, // 0 misses
		"latency-p99":                  Miss, // 0.42 > 0.3
		"nx-upstream":                  Pass, // bursts: 4/3 vs 1498/3
		"ndots-upstream":               NA,   // nodedns failed
		"storm-delay-rss":              Pass,
		"storm-delay-bystander-loss":   Pass,
		"storm-delay-bystander-p99":    Pass,
		"storm-delay-upstream":         Pass, // 500/400k
		"storm-shared-rss":             Pass,
		"storm-shared-bystander-loss":  Pass,
		"storm-shared-bystander-p99":   Pass,
		"storm-shared-upstream":        Pass, // 600/400k
		"fair-quiet":                   Pass, // 380/380
		"burst-servfail":               Pass, // 2000/2000 NOERROR
		"dead-name-others":             Pass,
		"dead-name-flaps":              Pass,
		"scan-kept":                    Pass, // 99%
		"hostile-idle-rss":             Pass, // +8 MB
		"hostile-idle-bystanders":      Pass,
		"hostile-idle-probe":           Pass,
		"hostile-headers-rss":          NA,   // did not run
		"miss-vs-unbound":              Miss, // 30k vs 20k: 1.5x
		"storm-drop-rss":               "missing storm-drop-rss",
		"storm-drop-bystander-loss":    "missing storm-drop-bystander-loss",
		"storm-drop-upstream (absent)": "",
	}
	for id, status := range want {
		if status == "" {
			continue
		}
		got := targetByID(res.Targets, id)
		if strings.HasPrefix(status, "missing") {
			if got.ID != status {
				t.Errorf("%s: present (%+v) although the drop variant did not run", id, got)
			}
			continue
		}
		if got.Status != status {
			t.Errorf("%s: %s (value %v), want %s", id, got.Status, got.Value, status)
		}
	}
	if v := targetByID(res.Targets, "hit-ratio").Value; math.Abs(v-6.25) > 1e-9 {
		t.Errorf("hit ratio %v, want 6.25", v)
	}
	if v := targetByID(res.Targets, "storm-delay-upstream").Value; math.Abs(v-500.0/400_000) > 1e-12 {
		t.Errorf("storm upstream ratio %v", v)
	}

	if d := targetByID(res.Targets, "hit-misses").Detail; d != "0 of 2000000 queries; the upstream received 0 queries besides health probes; CoreDNS: 3 misses of 400000 queries" {
		t.Errorf("hit-misses detail: %s", d)
	}
	// A miss after the warm-up: MISS, and the warm-up is quoted.
	hn := res.Scenario(ScHit).Run(NodeDNS)
	hn.Metrics = Metrics{"nodedns_cache_misses_total": 10}
	if got := targetByID(Evaluate(res), "hit-misses"); got.Status != Miss || got.Value != 10 || !strings.Contains(got.Detail, "warm-up: 5000 names from one client address") {
		t.Errorf("hit misses: %+v", got)
	}
	// No counter: not measured.
	hn.Metrics = Metrics{"nodedns_cache_hits_total": 10}
	if got := targetByID(Evaluate(res), "hit-misses"); got.Status != NA || !strings.Contains(got.Detail, "no nodedns_cache_misses_total") {
		t.Errorf("hit misses without the counter: %+v", got)
	}
	hn.Metrics = Metrics{"nodedns_cache_misses_total": 0}

	// Bystanders with losses over 0.1%: MISS; p99 over 2 ms: MISS.
	st := res.Scenario(ScStorm).Run(NodeDNS)
	st.Bystanders = report(10_000, 9_980, ok(9_980), 0.2, 2.5)
	ts := Evaluate(res)
	if got := targetByID(ts, "storm-delay-bystander-loss"); got.Status != Miss || math.Abs(got.Value-0.2) > 1e-9 {
		t.Errorf("bystander loss: %+v", got)
	}
	if got := targetByID(ts, "storm-delay-bystander-p99"); got.Status != Miss {
		t.Errorf("bystander p99: %+v", got)
	}
	// The same targets hold when the bystanders share the storm's address.
	sh := res.Scenario(ScStormShared).Run(NodeDNS)
	sh.Bystanders = report(10_000, 9_980, ok(9_980), 0.2, 2.5)
	sh.RSSPeak = 120e6
	ts = Evaluate(res)
	for _, id := range []string{"storm-shared-bystander-loss", "storm-shared-bystander-p99", "storm-shared-rss"} {
		if got := targetByID(ts, id); got.Status != Miss || !strings.HasPrefix(got.Desc, "3c ") {
			t.Errorf("%s: %+v", id, got)
		}
	}
	sh.Bystanders, sh.RSSPeak = report(40_000, 40_000, ok(40_000), 0.15, 1.2), 47e6
	// fair: the quiet client's share answered NOERROR, at least 99%.
	if got := targetByID(ts, "fair-quiet"); got.Value != 100 ||
		got.Detail != "380/380 NOERROR; p50 2,001, p99 2,010 ms against the upstream's 2s; CoreDNS 26.3%" {
		t.Errorf("fair: %+v", got)
	}
	fq := res.Scenario(ScFair).Run(NodeDNS)
	fq.Quiet = report(380, 377, map[string]uint64{"NOERROR": 375, "SERVFAIL": 2}, 2001, 2010)
	if got := targetByID(Evaluate(res), "fair-quiet"); got.Status != Miss || math.Abs(got.Value-100*375.0/380) > 1e-9 ||
		!strings.HasPrefix(got.Detail, "375/380 NOERROR (SERVFAIL 2, lost 3)") {
		t.Errorf("fair with failures: %+v", got)
	}
	fq.Quiet = nil
	if got := targetByID(Evaluate(res), "fair-quiet"); got.Status != NA {
		t.Errorf("fair without a quiet client: %+v", got)
	}
	fq.Quiet = report(380, 380, ok(380), 2001, 2010)
	// burst: any query without NOERROR (SERVFAIL or lost) misses.
	if got := targetByID(ts, "burst-servfail"); got.Value != 0 || got.Detail != "2000/2000 NOERROR in 2 bursts; CoreDNS 580" ||
		!strings.Contains(got.Desc, "bursts of 1000 distinct misses") {
		t.Errorf("burst: %+v", got)
	}
	bn := res.Scenario(ScBurst).Run(NodeDNS)
	bn.Load = AggregateBursts([]Burst{BurstOf("b0", report(1000, 999, map[string]uint64{"NOERROR": 990, "SERVFAIL": 9}, 5, 12), 1000)})
	bn.ServerDrops = 1
	if got := targetByID(Evaluate(res), "burst-servfail"); got.Status != Miss || got.Value != 10 ||
		!strings.HasPrefix(got.Detail, "990/1000 NOERROR (SERVFAIL 9, lost 1) in 2 bursts; 1 queries dropped by the kernel") {
		t.Errorf("burst with failures: %+v", got)
	}
	bn.Load, bn.ServerDrops = AggregateBursts(bn.Bursts), 0
	// dead-name: every other client's failure counts, and every flap.
	if got := targetByID(ts, "dead-name-others"); got.Value != 0 ||
		got.Detail != "cached names 40000/40000 NOERROR, p99 0.900 ms; misses 4000/4000 NOERROR, p99 12.0 ms; CoreDNS 12" {
		t.Errorf("dead-name others: %+v", got)
	}
	if got := targetByID(ts, "dead-name-flaps"); got.Value != 0 ||
		got.Detail != "80 scrapes of nodedns_upstream_healthy, 0 with an upstream down; health probes 20 alive, 0 failed" {
		t.Errorf("dead-name flaps: %+v", got)
	}
	dn := res.Scenario(ScDeadName).Run(NodeDNS)
	dn.Misses = report(4000, 3990, map[string]uint64{"NOERROR": 3000, "SERVFAIL": 990}, 10.5, 1500)
	dn.Health = &Health{Gauge: "nodedns_upstream_healthy", Samples: 80, Unhealthy: 30, Flaps: 3}
	ts = Evaluate(res)
	if got := targetByID(ts, "dead-name-others"); got.Status != Miss || got.Value != 1000 {
		t.Errorf("dead-name others failing: %+v", got)
	}
	if got := targetByID(ts, "dead-name-flaps"); got.Status != Miss || got.Value != 3 {
		t.Errorf("dead-name flapping: %+v", got)
	}
	dn.Health = nil
	if got := targetByID(Evaluate(res), "dead-name-flaps"); got.Status != NA || !strings.Contains(got.Detail, "not scraped") {
		t.Errorf("dead-name without the gauge: %+v", got)
	}
	dn.Misses, dn.Health = report(4000, 4000, ok(4000), 10.5, 12), &Health{Gauge: "nodedns_upstream_healthy", Samples: 80}
	// SERVFAIL answers count as failures, like losses.
	st.Bystanders = report(10_000, 10_000, map[string]uint64{"NOERROR": 9_000, "SERVFAIL": 1_000}, 0.2, 1)
	if got := targetByID(Evaluate(res), "storm-delay-bystander-loss"); got.Status != Miss || got.Value != 10 {
		t.Errorf("SERVFAIL bystanders: %+v", got)
	}
	if v := targetByID(res.Targets, "nx-upstream").Value; math.Abs(v-4.0/1498) > 1e-12 {
		t.Errorf("nx burst ratio %v, want 4/1498", v)
	}
	if d := targetByID(res.Targets, "nx-upstream").Detail; !strings.Contains(d, "steady state (4a, not judged): 0.0020 vs 0.0200 per client query (0.10×), ~equal because both cache the NXDOMAIN and so ask upstream about once per name (200 and 2000 upstream queries for 200 names)") {
		t.Errorf("nx detail lacks the steady state: %s", d)
	}
	// Without the burst scenario, scenario 4's target is not judged on the
	// steady state.
	saved := res.Scenarios
	res.Scenarios = slices.DeleteFunc(slices.Clone(saved), func(s *Scenario) bool { return s.ID == ScNXBurst })
	if got := targetByID(Evaluate(res), "nx-upstream"); got.Status != NA || !strings.Contains(got.Detail, "did not run") {
		t.Errorf("nx without bursts: %+v", got)
	}
	res.Scenarios = saved
	// A generator floor above the target: not verifiable (N/A), with the
	// p99s above the floor for both servers.
	lat0 := res.Scenario(ScLatency)
	echo := lat0.Run(Echo)
	echo.Load = report(200_000, 200_000, ok(200_000), 0.07, 0.376)
	if got := targetByID(Evaluate(res), "latency-p99"); got.Status != NA || !strings.Contains(got.Why, "cannot be verified on this VM") ||
		!strings.Contains(got.Detail, "nodedns +0.044 ms, CoreDNS +1.924 ms") {
		t.Errorf("floor above target: %+v", got)
	}
	echo.Load = report(200_000, 200_000, ok(200_000), 0.05, 0.2)
	// ndots: a MISS says why.
	nd := res.Scenario(ScNdots)
	nd.Runs[0] = &ServerRun{Server: NodeDNS, Load: &bench.Report{Sent: 8, Lookups: &bench.LookupReport{Lookups: 1}}, Upstream: fakeup.Stats{Received: 8}}
	finish(res)
	if got := targetByID(Evaluate(res), "ndots-upstream"); got.Status != Miss || !strings.Contains(got.Why, "planned `search` stage") ||
		!strings.Contains(got.Why, "5 s") || !strings.Contains(got.Detail, "predicts 5,200") && !strings.Contains(got.Detail, "predicts 5200") {
		t.Errorf("ndots miss: %+v", got)
	}
	nd.Runs[0] = &ServerRun{Server: NodeDNS, Error: "nodedns exited during the scenario"}
	// The fixed-load p99 of answered queries does not count when many are lost.
	lat := res.Scenario(ScLatency).Run(NodeDNS)
	lat.Load = report(100_000, 90_000, ok(90_000), 0.1, 0.2)
	if got := targetByID(Evaluate(res), "latency-p99"); got.Status != Miss || !strings.Contains(got.Detail, "lost") {
		t.Errorf("p99 with 10%% lost: %+v", got)
	}
}

func TestEvaluateNothing(t *testing.T) {
	ts := Evaluate(&Results{})
	if len(ts) == 0 {
		t.Fatal("no targets")
	}
	for _, tg := range ts {
		if tg.Status != NA {
			t.Errorf("%s: %s without results", tg.ID, tg.Status)
		}
		if !strings.Contains(tg.Detail, "did not run") {
			t.Errorf("%s: detail %q does not say the scenario did not run", tg.ID, tg.Detail)
		}
	}
}

// Without parameters (results of an older suite), the burst target does not
// claim bursts of 0 names.
func TestEvaluateOldResults(t *testing.T) {
	if got := targetByID(Evaluate(&Results{}), "burst-servfail"); !strings.Contains(got.Desc, "bursts of N distinct") {
		t.Errorf("burst desc: %q", got.Desc)
	}
}

func TestTargetJSON(t *testing.T) {
	in := []Target{{ID: "a", Value: math.NaN(), Status: NA}, {ID: "b", Value: 1.5, Status: Pass}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"value":null`) || !strings.Contains(string(b), `"value":1.5`) {
		t.Errorf("json %s", b)
	}
	var out []Target
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(out[0].Value) || out[1].Value != 1.5 || out[1].ID != "b" || out[1].Status != Pass {
		t.Errorf("round trip %+v", out)
	}
	// The whole results document encodes (NaN anywhere would fail).
	if _, err := json.Marshal(sampleResults()); err != nil {
		t.Errorf("results: %v", err)
	}
}

func TestWriteMarkdown(t *testing.T) {
	res := sampleResults()
	var b bytes.Buffer
	if err := WriteMarkdown(&b, res, "2026-11-24.svg"); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"# nodedns vs CoreDNS",
		"## Targets",
		"| p99 at the fixed load, nodedns | 0.420 ms | <= 0.300 ms | **MISS** |",
		"**nodedns missed 2 of",
		"![latency distributions](2026-11-24.svg)",
		"| **qps per core** | 250,000 | 40,000 | 6.25× |",
		"| cache misses during the run (server's counter) | 0 | 3 |  |",
		"| upstream queries received (health probes excluded) | 0 | 3 |  |",
		"| cache misses after the warm-up (server's counter), nodedns | 0 | <= 0 | PASS |",
		"nodedns warm-up: 5000 names from one client address (127.0.1.1)",
		"| upstream queries per storm query | 0.0013 | 0.6250 |",
		"| storm answers | SERVFAIL 99.8%, lost 0.2% |",
		"`nodedns_shed_total{reason=\"pushed_out\"}` 300,000",
		"Generator floor (the same load against a trivial echo responder",
		"**nodedns failed:** nodedns exited during the scenario",
		"| upstream queries per lookup | - | 8.0000 | - |",
		"## 4b. Negative caching, N identical misses → upstream",
		"| **upstream queries per burst** (mean) | 1.33 | 499.33 | 2.7e-03× |",
		"| upstream queries per burst, fewest | 1 | 498 |  |",
		"| upstream queries per burst, most | 2 | 500 |  |",
		"| answers | NXDOMAIN 100.0% | NXDOMAIN 100.0% |  |",
		"| worst burst's latency p99 (ms) | 54.0 | 54.0 | 1.00× |",
		"**Not the target's measurement.** This steady-state figure is ~equal",
		"received here: nodedns 200, CoreDNS 2,000",
		"Negative caching alone predicts 5,200 upstream queries here",
		"| p99 above the generator floor's p99 (0.200 ms) | 0.220 | 2.10 | 0.10× |",
		"| 3a peak RSS (VmHWM) during the storm, nodedns |",
		"## 3c. Retry storm, bystanders on the storm's own client address",
		"## 3d. Fair share: one address storms a slow upstream, a quiet one does misses",
		"## 6. Burst: distinct misses at once from one client address",
		"## 7. One dead domain: a client loops on it while others resolve",
		"| **other clients' queries without a NOERROR answer** | 0 | 12 |  |",
		"| **upstream taken out of rotation** (health flaps) | 0 | - |  |",
		"| dead-domain queries that reached the upstream | 300 | 1,000 | 0.30× |",
		"| other clients, misses: answers | NOERROR 100.0% | NOERROR 99.7%, lost 0.3% |  |",
		"| other clients, cached names: p99 (ms) | 0.900 | 2.00 | 0.45× |",
		"`nodedns_upstream_probes_total{result=\"alive\",upstream=\"127.0.0.1:1\"}` 20",
		"| 7 dead name: times the upstream was taken out of rotation (health flaps), nodedns | 0 | <= 0 | PASS |",
		"| 6 burst: queries without a NOERROR answer (SERVFAIL, lost), bursts of 1000 distinct misses from one address, idle upstream, nodedns | 0 | <= 0 | PASS |",
		"| **queries without a NOERROR answer** | 0 | 580 |  |",
		"| upstream queries per burst (mean) | 1,000.00 | 710.00 | 1.41× |",
		"| worst burst's latency p99 (ms) | 14.0 | 41.0 | 0.34× |",
		"| queries dropped by the kernel, server's socket buffer full | 0 | 580 |  |",
		"`nodedns_queued_total` 1,000",
		"| **quiet client answered NOERROR** | 100.000% | 26.316% | 3.80× |",
		"| quiet client's answers | NOERROR 100.0% | lost 60.5%, NOERROR 26.3%, SERVFAIL 13.2% |  |",
		"| quiet client p50 (ms) | 2,001 | 3,500 | 0.57× |",
		"| 3d fair: quiet client's misses answered NOERROR while another address storms a slow upstream, nodedns | 100.000% | >= 99.000% | PASS |",
		"| 3c bystander queries without a NOERROR answer, nodedns | 0.000% | <= 0.100% | PASS |",
		"## 8. Scan: one pod's one-off names against the others' working set",
		"| working set, during the scan: hit ratio | 99.800% | 75.000% |  |",
		"| **working set still cached after the scan** | 99.000% | 10.000% |  |",
		"| 8 scan: working set still cached after one pod's scan of one-off names, nodedns | 99.000% | >= 95.000% | PASS |",
		"## 9a. Hostile pod: idle HTTP connections on the probe port",
		"| **RSS growth during the attack (MB)** | 8.0 | 300.0 | 0.03× |",
		"| **liveness endpoint: requests answered** | 100.000% | 40.000% |  |",
		"| attack: connections opened | 18,000 | 15,000 |  |",
		"| 9a hostile pod, idle HTTP connections: RSS growth during the attack, nodedns | 8.0 MB | <= 20.0 MB | PASS |",
		"## 10. Miss throughput: unique names at full rate, a fast upstream",
		"| **misses forwarded per core** | 30,000 | 13,000 | 2.31× |",
		"Unbound, the same load: 20,000 misses forwarded per core",
		"nodedns / Unbound 1.50×",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(md, "NaN") {
		t.Error("report shows NaN")
	}
	if strings.Contains(md, "the kernel dropped") {
		t.Error("burst drop note without drops")
	}
	// Burst queries the kernel dropped at a server's full socket buffer
	// are explained.
	cb := res.Scenario(ScNXBurst).Run(CoreDNS)
	cb.ServerDrops = 1400
	cb.Load.Answered, cb.Load.Lost = 1400, 100
	b.Reset()
	if err := WriteMarkdown(&b, res, ""); err != nil {
		t.Fatal(err)
	}
	if md := b.String(); !strings.Contains(md, "CoreDNS: the kernel dropped 1,400 datagrams at its full UDP receive buffer during the bursts (6.667% of the burst queries") ||
		!strings.Contains(md, "| upstream queries per answered client query | 0.0027 | 1.0700 |") {
		t.Errorf("burst drops not explained:\n%s", md[strings.Index(md, "## 4b"):strings.Index(md, "## 5")])
	}
	if strings.Contains(md, `reason=\"waiters\"`) || strings.Contains(md, `reason="waiters"`) {
		t.Error("report lists a zero counter")
	}
}

func TestWriteSVG(t *testing.T) {
	res := sampleResults()
	panels := Panels(res)
	// hit, latency, storm bystanders, storm queries, shared-address storm
	// bystanders and queries, fair's quiet client, nx, (ndots: only
	// CoreDNS's lookups have no curve; burst: none), dead-name's cached
	// names and misses = 10
	if len(panels) != 10 {
		t.Fatalf("%d panels, want 10", len(panels))
	}
	if got := panels[9].Title; got != "dead domain, other clients: misses" {
		t.Errorf("panel 9: %q", got)
	}
	if got := panels[6].Title; got != "fair share (upstream delays 2s): quiet client's misses" {
		t.Errorf("panel 6: %q", got)
	}
	if got := panels[4].Title; got != "storm (upstream delays 2s, shared address): bystanders" {
		t.Errorf("panel 4: %q", got)
	}
	if n := len(panels[1].Series); n != 3 {
		t.Errorf("latency panel has %d series, want 3 (with the floor)", n)
	}
	var b bytes.Buffer
	if err := WriteSVG(&b, "test <chart>", panels); err != nil {
		t.Fatal(err)
	}
	svg := b.String()
	if got := strings.Count(svg, "<polyline"); got != 21 {
		t.Errorf("%d polylines, want 21", got)
	}
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
	}
	if strings.Contains(svg, "NaN") || strings.Contains(svg, "Inf") {
		t.Error("SVG has NaN/Inf coordinates")
	}
	// Empty input still draws a valid image.
	b.Reset()
	if err := WriteSVG(&b, "empty", nil); err != nil || !strings.HasSuffix(b.String(), "</svg>\n") {
		t.Errorf("empty chart: %v", err)
	}
}

func TestFormatting(t *testing.T) {
	for _, c := range []struct {
		v    float64
		prec int
		want string
	}{{0, 0, "0"}, {999, 0, "999"}, {1000, 0, "1,000"}, {1234567.891, 2, "1,234,567.89"}, {-45000, 0, "-45,000"}, {math.NaN(), 1, "-"}} {
		if got := fmtNum(c.v, c.prec); got != c.want {
			t.Errorf("fmtNum(%v, %d) = %q, want %q", c.v, c.prec, got, c.want)
		}
	}
	for _, c := range []struct {
		a, b float64
		want string
	}{{6, 2, "3.00×"}, {1, 0, "-"}, {500, 2, "250×"}, {1, 1e5, "1.0e-05×"}, {math.NaN(), 1, "-"}} {
		if got := ratio(c.a, c.b); got != c.want {
			t.Errorf("ratio(%v, %v) = %q, want %q", c.a, c.b, got, c.want)
		}
	}
	if got := fmtMs(0.4167); got != "0.417" {
		t.Errorf("fmtMs = %q", got)
	}
	if got := nines(99); math.Abs(got-2) > 1e-9 {
		t.Errorf("nines(99) = %v", got)
	}
}

func TestOptionsFill(t *testing.T) {
	var o Options
	if err := o.fill(); err != nil {
		t.Fatal(err)
	}
	d := DefaultOptions()
	if o.StormQPS != d.StormQPS || o.LoadCPU != 1 || len(o.Scenarios) != len(AllScenarios) || o.Now == nil {
		t.Errorf("defaults not filled: %+v", o.Params)
	}
	for _, bad := range []Options{
		{Scenarios: []string{"nope"}},
		{Servers: []string{"bind"}},
		{Params: Params{ServerCPU: 1, LoadCPU: 1}},
		{Params: Params{HitConcurrency: 4, HitSockets: 8}},
		{Params: Params{NXBurstClients: 255}},
		{Params: Params{NXBurstSize: 10, NXBurstClients: 20}},
		{Params: Params{NXBursts: -1}},
		{Params: Params{FairDuration: time.Second}},
		{Params: Params{BurstNames: 30000}},
	} {
		if err := bad.fill(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestPickMedian(t *testing.T) {
	mk := func(p99 float64) *ServerRun {
		return &ServerRun{Server: NodeDNS, Load: report(1000, 1000, ok(1000), 0.1, p99)}
	}
	a, b, c := mk(0.5), mk(0.2), mk(0.3)
	failed := &ServerRun{Server: NodeDNS, Error: "boom"}
	m := PickMedian(ScLatency, []*ServerRun{a, failed, b, c})
	if m != c {
		t.Errorf("median p99 %v, want 0.3", m.Load.Latency.P99)
	}
	if len(m.Repeats) != 3 || m.Repeats[0] != 0.5 || m.Repeats[1] != 0.2 || m.Repeats[2] != 0.3 {
		t.Errorf("repeats %v", m.Repeats)
	}
	if m := PickMedian(ScLatency, []*ServerRun{a, b}); m != b {
		t.Error("even count: want the lower middle")
	}
	if m := PickMedian(ScLatency, []*ServerRun{failed}); m != failed {
		t.Error("all failed: want the failed run")
	}
	if m := PickMedian(ScLatency, []*ServerRun{mk(1)}); m.Repeats != nil {
		t.Error("a single run has no repeats")
	}
	h1, h2, h3 := mk(1), mk(1), mk(1)
	h1.Cores, h2.Cores, h3.Cores = 0.5, 1, 0.25 // qps/core 200, 100, 400
	if m := PickMedian(ScHit, []*ServerRun{h1, h2, h3}); m != h1 {
		t.Errorf("hit median: %v", m.Repeats)
	}
}

func TestUDPDrops(t *testing.T) {
	// Port 0x1F90 = 8080: two server sockets (SO_REUSEPORT), one client
	// socket connected to it, one unrelated socket.
	text := `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1001 2 0000000000000000 17
  101: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1002 2 0000000000000000 3
  102: 0300007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1003 2 0000000000000000 5
  103: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1004 2 0000000000000000 99
`
	s, c, err := UDPDrops(text, 8080)
	if err != nil || s != 20 || c != 5 {
		t.Errorf("server %d clients %d err %v, want 20 and 5", s, c, err)
	}
	if _, _, err := UDPDrops("header\n 1: 0100007F:ZZZZ 00000000:0000 07 0:0 0:0 0 0 0 1 2 0 x\n", 1); err == nil {
		t.Error("no error for a bad line")
	}
}

func TestAggregateBursts(t *testing.T) {
	if AggregateBursts(nil) != nil {
		t.Error("no bursts: want nil")
	}
	a := BurstOf("a", &bench.Report{Sent: 500, Answered: 500, Rcodes: map[string]uint64{"NXDOMAIN": 500},
		Latency: bench.Latency{P50: 51, P99: 53, P999: 54, Max: 55, Mean: 51}}, 1)
	b := BurstOf("b", &bench.Report{Sent: 500, Answered: 499, Lost: 1, Rcodes: map[string]uint64{"NXDOMAIN": 498, "SERVFAIL": 1},
		Latency: bench.Latency{P50: 50, P99: 60, P999: 61, Max: 62, Mean: 52}}, 3)
	empty := BurstOf("c", nil, 0)
	r := AggregateBursts([]Burst{a, b, empty})
	if r.Sent != 1000 || r.Answered != 999 || r.Lost != 1 || r.Rcodes["NXDOMAIN"] != 998 || r.Rcodes["SERVFAIL"] != 1 {
		t.Errorf("counts %+v", r)
	}
	if l := r.Latency; l.P50 != 51 || l.P99 != 60 || l.P999 != 61 || l.Max != 62 || math.Abs(l.Mean-(51*500+52*499)/999.0) > 1e-9 {
		t.Errorf("latency %+v", l)
	}
	// BurstOf copies the RCODE map.
	src := &bench.Report{Rcodes: map[string]uint64{"NXDOMAIN": 1}}
	c := BurstOf("x", src, 0)
	src.Rcodes["NXDOMAIN"] = 9
	if c.Rcodes["NXDOMAIN"] != 1 {
		t.Error("BurstOf shares the RCODE map")
	}
	mean, lo, hi := BurstUpstream([]Burst{a, b, empty})
	if mean != 4.0/3 || lo != 0 || hi != 3 {
		t.Errorf("upstream per burst %v %v %v", mean, lo, hi)
	}
	if m, _, _ := BurstUpstream(nil); !math.IsNaN(m) {
		t.Error("no bursts: want NaN")
	}
}

func TestHealthWatch(t *testing.T) {
	up := func(a, b float64) Metrics {
		return Metrics{`nodedns_upstream_healthy{upstream="a"}`: a, `nodedns_upstream_healthy{upstream="b"}`: b, "go_goroutines": 9}
	}
	w := newHealthWatch("nodedns_upstream_healthy")
	if w.result() != nil {
		t.Error("a result before any scrape")
	}
	for _, m := range []Metrics{up(1, 1), nil, {"go_goroutines": 9}, up(0, 1), up(0, 1), up(1, 1), up(1, 0), up(0, 0), up(1, 1)} {
		w.observe(m)
	}
	// a goes down twice (the second scrape at 0 is the same outage), b once.
	if got := *w.result(); got != (Health{Gauge: "nodedns_upstream_healthy", Samples: 7, Unhealthy: 4, Flaps: 3}) {
		t.Errorf("got %+v", got)
	}
	// A series seen at 0 the first time counts as a flap.
	w = newHealthWatch("nodedns_upstream_healthy")
	w.observe(up(0, 1))
	if got := w.result(); got.Flaps != 1 || got.Unhealthy != 1 {
		t.Errorf("first seen down: %+v", got)
	}
	// A server without the gauge (CoreDNS): no result.
	w = newHealthWatch("nodedns_upstream_healthy")
	w.observe(Metrics{"coredns_forward_healthcheck_broken_total": 0})
	if w.result() != nil {
		t.Error("a result without the gauge")
	}
	var nilWatch *healthWatch
	nilWatch.observe(up(0, 0))
	if nilWatch.result() != nil {
		t.Error("nil watch")
	}
}

func TestOutcome(t *testing.T) {
	for _, c := range []struct {
		r    *bench.Report
		want string
	}{
		{nil, "-"},
		{report(100, 100, ok(100), 1, 2), "100/100 NOERROR"},
		{report(100, 97, map[string]uint64{"NOERROR": 90, "SERVFAIL": 5, "REFUSED": 2}, 1, 2), "90/100 NOERROR (REFUSED 2, SERVFAIL 5, lost 3)"},
	} {
		if got := outcome(c.r); got != c.want {
			t.Errorf("outcome = %q, want %q", got, c.want)
		}
	}
}

func TestNdotsCachePrediction(t *testing.T) {
	// The first suite run: 200 names, A+AAAA, 3 NXDOMAIN candidates, 20 s,
	// denial cached 5 s; CoreDNS received exactly 5,200.
	if got := NdotsCachePrediction(200, 3, 2, 20, 5); got != 5200 {
		t.Errorf("got %v, want 5200", got)
	}
	if got := NdotsCachePrediction(10, 3, 1, 12, 5); got != 10*(3*3+1) {
		t.Errorf("partial period: got %v", got)
	}
	if !math.IsNaN(NdotsCachePrediction(1, 1, 1, 10, 0)) {
		t.Error("no negative TTL: want NaN")
	}
}

func TestRerender(t *testing.T) {
	dir := t.TempDir()
	res := sampleResults()
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	path := dir + "/2026-11-24.json"
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := Rerender(path)
	if err != nil || len(files) != 2 {
		t.Fatalf("files %v, err %v", files, err)
	}
	md, err := os.ReadFile(dir + "/2026-11-24.md")
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := WriteMarkdown(&want, res, "2026-11-24.svg"); err != nil {
		t.Fatal(err)
	}
	if string(md) != want.String() {
		t.Error("re-rendered report differs from the original")
	}
	if _, err := os.Stat(dir + "/2026-11-24.svg"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{dir + "/x.md", dir + "/missing.json"} {
		if _, err := Rerender(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
