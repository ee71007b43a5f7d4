//go:build linux

package suite

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nodedns/nodedns/bench"
	"github.com/nodedns/nodedns/bench/fakeup"
	"github.com/nodedns/nodedns/internal/echo"
)

// Zones the scenarios use. Everything is answered by the fake upstream; no
// query leaves the machine.
const (
	hitZone   = "hit.bench.test."
	byZone    = "by.bench.test."
	stormZone = "storm.bench.test."
	quietZone = "quiet.bench.test." // fair: the quiet client's misses
	burstZone = "burst.bench.test." // burst: b<burst>-<i>.burst.bench.test
	deadZone  = "dead.bench.test."  // dead-name: never answered by the upstream
	missZone  = "miss.bench.test."  // dead-name: the other clients' misses
	nxZone    = "nx.bench.test."
	extZone   = "bench.test" // ndots: www.ext-N.bench.test (3 dots < ndots 5)
)

// Counter families kept (as deltas over the measured phase) per server.
var keptMetrics = map[string][]string{
	NodeDNS: {"nodedns_requests_total", "nodedns_shed_total", "nodedns_coalesced_total", "nodedns_stale_served_total",
		"nodedns_queued_total", "nodedns_dropped_total", "nodedns_cache_hits_total", "nodedns_cache_misses_total",
		"nodedns_upstream_requests_total", "nodedns_upstream_errors_total", "nodedns_prefetch_total", "nodedns_upstream_probes_total"},
	CoreDNS: {"coredns_dns_requests_total", "coredns_dns_responses_total", "coredns_cache_hits_total", "coredns_cache_misses_total",
		"coredns_forward_requests_total", "coredns_forward_responses_total", "coredns_forward_max_concurrent_rejects_total",
		"coredns_proxy_request_duration_seconds_count", // CoreDNS >= 1.11 counts forwards here
		"coredns_proxy_healthcheck_failures_total", "coredns_forward_healthcheck_broken_total"},
}

// healthGauges is each server's upstream-health gauge (1 in rotation, 0
// down), scraped during the runs that scrape periodically. CoreDNS has
// none (its forward plugin counts failed health checks instead).
var healthGauges = map[string]string{NodeDNS: "nodedns_upstream_healthy"}

type runner struct {
	o        Options
	res      *Results
	up       *fakeup.Server
	work     string // temp dir: configs and server logs
	corefile string // template text
	ndFlags  string // nodedns --help output
	pprofOK  bool
	// unbound is Unbound's binary, "" when not installed; echoUp is the
	// miss scenario's upstream, started when it first runs.
	unbound string
	echoUp  *echo.Server
	stamp   string
	nstart  int // servers started, for log names
}

// Run builds what it needs (`make build`, tools/coredns/build.sh), runs the
// scenarios and writes <OutDir>/<date>.{md,json,svg} (and .pprof files with
// CPUProfile). It returns the results and the files written.
func Run(ctx context.Context, o Options) (*Results, []string, error) {
	if err := o.fill(); err != nil {
		return nil, nil, err
	}
	if o.Root == "" {
		o.Root = "."
	}
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return nil, nil, err
	}
	o.Root = root
	if o.OutDir == "" {
		o.OutDir = filepath.Join(root, "bench", "results")
	}
	r := &runner{o: o}
	defer func() {
		if r.up != nil {
			r.up.Close()
		}
		if r.echoUp != nil {
			r.echoUp.Close()
		}
	}()
	if err := r.prepare(ctx); err != nil {
		return nil, nil, err
	}
	if err := r.scenarios(ctx); err != nil {
		return r.res, nil, err
	}
	files, err := r.write()
	if err == nil {
		os.RemoveAll(r.work)
	}
	return r.res, files, err
}

func (r *runner) logf(format string, a ...any) {
	fmt.Fprintf(r.o.Log, "suite: "+format+"\n", a...)
}

func (r *runner) prepare(ctx context.Context) error {
	o := &r.o
	if _, err := os.Stat(filepath.Join(o.Root, "Makefile")); err != nil {
		return fmt.Errorf("root %s: no Makefile (run from the repository or pass --root)", o.Root)
	}
	if o.NodeDNS == "" && has(o.Servers, NodeDNS) {
		if !o.NoBuild {
			r.logf("make build")
			if err := r.command(ctx, o.Root, nil, "make", "build"); err != nil {
				return fmt.Errorf("make build: %w", err)
			}
		}
		o.NodeDNS = filepath.Join(o.Root, "bin", "nodedns")
	}
	if o.CoreDNS == "" && has(o.Servers, CoreDNS) {
		r.logf("tools/coredns/build.sh (the first build takes a few minutes)")
		var out bytes.Buffer
		if err := r.command(ctx, filepath.Join(o.Root, "tools", "coredns"), &out, "./build.sh"); err != nil {
			return fmt.Errorf("tools/coredns/build.sh: %w", err)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		o.CoreDNS = strings.TrimSpace(lines[len(lines)-1])
	}
	if has(o.Servers, CoreDNS) {
		b, err := os.ReadFile(filepath.Join(o.Root, "bench", "coredns", "Corefile.nodelocal"))
		if err != nil {
			return err
		}
		r.corefile = string(b)
	}
	r.res = &Results{Date: o.Now().UTC().Format(time.RFC3339), Params: o.Params}
	r.stamp = o.Now().UTC().Format("2006-01-02")
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return err
	}
	for i := 2; exists(filepath.Join(o.OutDir, r.stamp+".md")) || exists(filepath.Join(o.OutDir, r.stamp+".json")); i++ {
		r.stamp = o.Now().UTC().Format("2006-01-02") + "-" + strconv.Itoa(i)
	}
	work, err := os.MkdirTemp("", "nodedns-suite-")
	if err != nil {
		return err
	}
	r.work = work

	// Describe the machine and the servers.
	h := &r.res.Host
	h.CPUs = runtime.NumCPU()
	h.Go = runtime.Version()
	h.ServerCPU, h.LoadCPU = o.ServerCPU, o.LoadCPU
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	h.CPU = cpuModel()
	h.Git = strings.TrimSpace(r.output(ctx, o.Root, "git", "describe", "--always", "--dirty"))
	if h.CPUs < 2 || o.ServerCPU >= h.CPUs || o.LoadCPU >= h.CPUs {
		return fmt.Errorf("need CPUs %d and %d; the host has %d", o.ServerCPU, o.LoadCPU, h.CPUs)
	}
	if has(o.Servers, NodeDNS) {
		r.ndFlags = r.output(ctx, "", o.NodeDNS, "--help")
		r.pprofOK = strings.Contains(r.ndFlags, "--pprof-listen")
		v := strings.TrimSpace(r.output(ctx, "", o.NodeDNS, "--version"))
		if v == "" || strings.Contains(v, "\n") {
			v = h.Git
		}
		r.res.Servers = append(r.res.Servers, ServerBin{Name: NodeDNS, Path: o.NodeDNS, Version: v})
		if o.CPUProfile && !r.pprofOK {
			r.note("No CPU profile: this nodedns has no --pprof-listen flag.")
		}
	}
	if has(o.Servers, CoreDNS) {
		v := strings.TrimSpace(r.output(ctx, "", o.CoreDNS, "-version"))
		if i := strings.IndexByte(v, '\n'); i >= 0 {
			v = v[:i]
		}
		r.res.Servers = append(r.res.Servers, ServerBin{Name: CoreDNS, Path: o.CoreDNS, Version: v})
	}

	if has(o.Scenarios, ScMiss) {
		for _, p := range []string{"unbound", "/usr/sbin/unbound"} {
			if path, err := exec.LookPath(p); err == nil {
				r.unbound = path
				break
			}
		}
		if r.unbound != "" {
			v := r.output(ctx, "", r.unbound, "-V")
			if i := strings.IndexByte(v, '\n'); i >= 0 {
				v = v[:i]
			}
			r.res.Servers = append(r.res.Servers, ServerBin{Name: Unbound, Path: r.unbound, Version: strings.TrimSpace(v)})
		} else {
			r.note("Unbound is not installed: the miss scenario runs without it.")
		}
	}

	if err := pinSelf(o.LoadCPU); err != nil {
		return err
	}
	r.waitQuiet(ctx)

	up, err := fakeup.Listen(fakeup.Options{
		Addr:  "127.0.0.1:0",
		TTL:   o.AnswerTTL,
		Delay: o.UpstreamRTT,
		Dead:  []string{deadZone},
		Watch: []string{wsZone},
		NX: []fakeup.Zone{
			{Name: "cluster.local.", NegTTL: o.ClusterNegTTL},
			{Name: nxZone, NegTTL: o.NXTTL},
		},
	})
	if err != nil {
		return fmt.Errorf("fake upstream: %w", err)
	}
	r.up = up
	r.logf("fake upstream on %s", up.Addr())
	return nil
}

func (r *runner) note(format string, a ...any) {
	r.res.Notes = append(r.res.Notes, fmt.Sprintf(format, a...))
}

// command runs a build step, its output going to the log (stdout to out if
// given).
func (r *runner) command(ctx context.Context, dir string, out io.Writer, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stdout = r.o.Log
	if out != nil {
		cmd.Stdout = out
	}
	cmd.Stderr = r.o.Log
	return cmd.Run()
}

// output runs a short command and returns its combined output ("" on
// failure to start).
func (r *runner) output(ctx context.Context, dir, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	b, _ := cmd.CombinedOutput()
	return string(b)
}

func (r *runner) waitQuiet(ctx context.Context) {
	start := time.Now()
	for {
		la := loadavg()
		if la[0] < r.o.QuietLoad {
			r.logf("load average %.2f %.2f %.2f: starting", la[0], la[1], la[2])
			r.res.Host.LoadBefore = la
			return
		}
		if time.Since(start) >= r.o.QuietWait || ctx.Err() != nil {
			r.logf("load average still %.2f after %v: starting anyway", la[0], r.o.QuietWait)
			r.note("The machine was busy: the 1-minute load average was still %.2f (wanted below %.2f) after waiting %v; figures may be depressed.",
				la[0], r.o.QuietLoad, r.o.QuietWait.Round(time.Second))
			r.res.Host.LoadBefore = la
			return
		}
		r.logf("load average %.2f (want below %.2f): waiting", la[0], r.o.QuietLoad)
		select {
		case <-ctx.Done():
		case <-time.After(15 * time.Second):
		}
	}
}

// start starts a fresh server forwarding to the fake upstream.
func (r *runner) start(ctx context.Context, id, server string, pprof bool) (*proc, error) {
	dnsPort, err := freePort(true)
	if err != nil {
		return nil, err
	}
	httpPort, err := freePort(false)
	if err != nil {
		return nil, err
	}
	upstream := r.up.Addr()
	if id == ScMiss {
		if upstream, err = r.missUpstream(); err != nil {
			return nil, err
		}
	}
	r.nstart++
	logPath := filepath.Join(r.work, fmt.Sprintf("%02d-%s.log", r.nstart, server))
	var p *proc
	switch server {
	case Echo:
		args := append(append([]string(nil), r.o.EchoCommand[1:]...), "--listen", fmt.Sprintf("127.0.0.1:%d", dnsPort))
		p, err = startProc(server, r.o.EchoCommand[0], args, r.o.ServerCPU, logPath)
		if err != nil {
			return nil, err
		}
	case NodeDNS:
		args := []string{
			"--listen", fmt.Sprintf("127.0.0.1:%d", dnsPort),
			"--upstream", upstream,
			"--http-listen", fmt.Sprintf("127.0.0.1:%d", httpPort),
			"--log-level", "warn",
		}
		args = append(args, serverArgs[id]...)
		pprofURL := ""
		if pprof && r.pprofOK {
			pp, err := freePort(false)
			if err != nil {
				return nil, err
			}
			args = append(args, "--pprof-listen", fmt.Sprintf("127.0.0.1:%d", pp))
			pprofURL = fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/", pp)
		}
		p, err = startProc(server, r.o.NodeDNS, args, r.o.ServerCPU, logPath)
		if err != nil {
			return nil, err
		}
		p.pprof = pprofURL
		p.healthAddr = fmt.Sprintf("127.0.0.1:%d", httpPort)
	case CoreDNS:
		healthPort, err := freePort(false)
		if err != nil {
			return nil, err
		}
		conf := strings.NewReplacer(
			"__LISTEN_PORT__", strconv.Itoa(dnsPort),
			"__UPSTREAM__", upstream,
			"__HEALTH_PORT__", strconv.Itoa(healthPort),
			"__METRICS_PORT__", strconv.Itoa(httpPort),
		).Replace(r.corefile)
		path := filepath.Join(r.work, fmt.Sprintf("%02d-Corefile", r.nstart))
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			return nil, err
		}
		p, err = startProc(server, r.o.CoreDNS, []string{"-conf", path, "-quiet"}, r.o.ServerCPU, logPath)
		if err != nil {
			return nil, err
		}
		p.healthAddr = fmt.Sprintf("127.0.0.1:%d", healthPort)
	case Unbound:
		path := filepath.Join(r.work, fmt.Sprintf("%02d-unbound.conf", r.nstart))
		host, port, _ := strings.Cut(upstream, ":")
		if err := os.WriteFile(path, []byte(unboundConfig(r.work, dnsPort, host, port)), 0o644); err != nil {
			return nil, err
		}
		p, err = startProc(server, r.unbound, []string{"-d", "-c", path}, r.o.ServerCPU, logPath)
		if err != nil {
			return nil, err
		}
	}
	p.dns = fmt.Sprintf("127.0.0.1:%d", dnsPort)
	if server != Echo && server != Unbound {
		p.metrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", httpPort)
	}
	for i := range r.res.Servers {
		if r.res.Servers[i].Name == server && r.res.Servers[i].Args == nil {
			r.res.Servers[i].Args = p.args
		}
	}
	if err := p.waitReady(ctx, 20*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// scenarioFunc runs one scenario against a started server and fills run.
// prof, if set, asks for a CPU profile of the measured phase.
type scenarioFunc func(ctx context.Context, p *proc, run *ServerRun, prof *profileReq) error

type profileReq struct {
	seconds int
	path    string
	err     error
}

func (r *runner) scenarios(ctx context.Context) error {
	for _, id := range AllScenarios {
		if !has(r.o.Scenarios, id) {
			continue
		}
		sc := &Scenario{ID: id, Title: titles[id]}
		fn := r.scenarioFunc(id, sc)
		r.res.Scenarios = append(r.res.Scenarios, sc)
		servers := r.o.Servers
		if (id == ScLatency || id == ScStorm) && len(r.o.EchoCommand) > 0 {
			servers = append(slices.Clone(servers), Echo)
		}
		if id == ScMiss && r.unbound != "" {
			servers = append(slices.Clone(servers), Unbound)
		}
		reps := 1
		if id == ScHit || id == ScLatency || id == ScMiss {
			reps = r.o.Repeat
		}
		runs := map[string][]*ServerRun{}
		for rep := range reps {
			for _, server := range servers {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if reps > 1 {
					r.logf("%s: repetition %d of %d", id, rep+1, reps)
				}
				run := r.runOne(ctx, id, server, fn, nil)
				runs[server] = append(runs[server], run)
				if run.Error != "" {
					r.logf("%s/%s: %s", id, server, run.Error)
				}
				time.Sleep(2 * time.Second) // let sockets and the load settle
			}
		}
		for _, server := range servers {
			sc.Runs = append(sc.Runs, PickMedian(id, runs[server]))
		}
	}
	r.res.Host.LoadAfter = loadavg()
	if r.o.CPUProfile && r.pprofOK && has(r.o.Servers, NodeDNS) {
		for _, id := range []string{ScHit, ScStorm} {
			if !has(r.o.Scenarios, id) || ctx.Err() != nil {
				continue
			}
			sec := int(r.o.Duration.Seconds()) - 2
			if id == ScStorm {
				sec = int(r.o.StormDuration.Seconds()) - 2
			}
			sec = max(sec, 1)
			name := fmt.Sprintf("%s-nodedns-%s.pprof", r.stamp, id)
			req := &profileReq{seconds: sec, path: filepath.Join(r.o.OutDir, name)}
			r.logf("profile pass: %s against nodedns (%d s profile)", id, sec)
			run := r.runOne(ctx, id, NodeDNS, r.scenarioFunc(id, &Scenario{}), req)
			pr := Profile{Scenario: titles[id], File: name, Seconds: sec}
			switch {
			case run.Error != "":
				pr.Error = run.Error
			case req.err != nil:
				pr.Error = req.err.Error()
			default:
				pr.Top = r.pprofTop(ctx, req.path)
			}
			r.res.Profiles = append(r.res.Profiles, pr)
		}
	}
	r.res.Finished = r.o.Now().UTC().Format(time.RFC3339)
	return nil
}

func (r *runner) pprofTop(ctx context.Context, path string) []string {
	out := r.output(ctx, "", "go", "tool", "pprof", "-top", "-nodecount=25", path)
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
			continue
		}
		lines = append(lines, l)
	}
	return lines
}

// runOne starts a fresh server, runs the scenario and stops the server.
func (r *runner) runOne(ctx context.Context, id, server string, fn scenarioFunc, prof *profileReq) *ServerRun {
	run := &ServerRun{Server: server, GoroutinesMax: -1}
	r.up.SetDrop(false)
	r.up.SetDelay(r.o.UpstreamRTT)
	run.LoadAvg = loadavg()
	r.logf("%s: %s (load average %.2f)", id, server, run.LoadAvg[0])
	p, err := r.start(ctx, id, server, prof != nil)
	if err != nil {
		run.Error = err.Error()
		return run
	}
	defer p.stop()
	if err := fn(ctx, p, run, prof); err != nil {
		run.Error = err.Error()
	}
	if !p.alive() {
		msg := fmt.Sprintf("%s exited during the scenario (%v): %s", server, p.waitErr, p.logTail())
		if run.Error != "" {
			msg = run.Error + "; " + msg
		}
		run.Error = msg
	}
	return run
}

// measure runs load (the measured phase) and fills run's CPU, memory,
// upstream and metric figures around it.
func (r *runner) measure(p *proc, run *ServerRun, scrapeEvery time.Duration, prof *profileReq, load func() error) error {
	if m, err := p.memory(); err == nil {
		run.RSSBefore = m.RSS
	}
	before, _ := p.scrape()
	if before != nil && before.Has("go_goroutines") {
		run.GoroutinesMax = before.Sum("go_goroutines")
	}
	up0 := r.up.Stats()
	r.up.ResetMaxPending()
	drops0, _ := p.udpDrops()
	cpu0, err := p.cpuSeconds()
	if err != nil {
		return err
	}
	var health *healthWatch
	if g := healthGauges[p.name]; g != "" && scrapeEvery > 0 {
		health = newHealthWatch(g)
		health.observe(before)
	}
	t0 := time.Now()
	smp := startSampler(p, scrapeEvery, health)
	var pwg sync.WaitGroup
	if prof != nil && p.pprof != "" {
		pwg.Go(func() { prof.err = fetchProfile(p.pprof, prof.seconds, prof.path) })
	} else if prof != nil {
		prof.err = errors.New("nodedns was started without --pprof-listen")
	}
	lerr := load()
	pwg.Wait()
	maxRSS, gor := smp.stop()
	cpu1, cerr := p.cpuSeconds()
	wall := time.Since(t0).Seconds()
	run.Upstream = r.up.Stats().Sub(up0)
	drops1, _ := p.udpDrops()
	run.ServerDrops = drops1 - drops0
	if cerr == nil {
		run.CPUSeconds, run.Wall = cpu1-cpu0, wall
		run.Cores = run.CPUSeconds / wall
	}
	if m, err := p.memory(); err == nil {
		run.RSSPeak = m.HWM
		maxRSS = max(maxRSS, m.RSS)
	}
	run.RSSMaxSampled = maxRSS
	after, err := p.scrape()
	if err == nil {
		health.observe(after)
		if after.Has("go_goroutines") {
			run.GoroutinesMax = math.Max(run.GoroutinesMax, math.Max(gor, after.Sum("go_goroutines")))
		}
		if before != nil {
			run.Metrics = after.Delta(before, keptMetrics[p.name]...)
		}
	}
	run.Health = health.result()
	return lerr
}

func fetchProfile(base string, seconds int, path string) error {
	c := &http.Client{Timeout: time.Duration(seconds+60) * time.Second}
	resp, err := c.Get(fmt.Sprintf("%sprofile?seconds=%d", base, seconds))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("pprof: %s", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// quietAddr is the quiet client of the fair scenario; burstAddr the
// client of the burst scenario.
const (
	quietAddr = "127.0.0.4"
	burstAddr = "127.0.6.1"
	deadAddr  = "127.0.0.5" // dead-name: the client looping on the dead domain
)

// deadScrapeEvery is how often dead-name scrapes the upstream-health gauge:
// well within nodedns's 2 s probe period, so no outage goes unseen.
const deadScrapeEvery = 250 * time.Millisecond

// stormAddr is the address of storm client i (127.0.0.16...).
func stormAddr(i int) string { return fmt.Sprintf("127.0.0.%d", 16+i) }

// addrs returns n loopback addresses 127.0.<block>.1...
func addrs(block, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("127.0.%d.%d", block, 1+i)
	}
	return out
}

// The warm-up comes from one client address, as from one pod, with up to
// warmConcurrency names outstanding at once on warmSockets sockets; the
// passes that repair and check it keep warmRepairConcurrency outstanding
// (a burst of 500 overflows a socket buffer of the kernel's default size,
// CoreDNS's, even when every answer is a cache hit).
const (
	warmSource            = "127.0.1.1"
	warmConcurrency       = 500
	warmRepairConcurrency = 50
	warmSockets           = 16
)

// warm asks every name once from warmSource (a closed loop keeping up to
// warmConcurrency of them outstanding: a burst of misses). With full, it
// then asks them all again (at most 4 more passes, warmRepairConcurrency
// outstanding) until such a pass is answered NOERROR throughout, and fails
// otherwise: the scenario needs every name cached. Without full, that one
// burst is the whole warm-up and its failures are only described: the
// scenario then measures what they cost (the hit scenario counts the
// server's cache misses after it). The text describes the first pass and,
// with full, the last.
func warm(ctx context.Context, server string, names int, zone string, full bool) (string, error) {
	conc := min(names, warmConcurrency)
	var first, rep *bench.Report
	passes := 0
	for passes < 5 {
		if passes == 1 {
			conc = min(names, warmRepairConcurrency)
		}
		var err error
		rep, err = bench.Run(ctx, bench.Config{
			Server: server, Names: names, Zone: zone, Count: int64(names),
			Concurrency: conc, Sockets: min(warmSockets, conc), Sources: []string{warmSource},
			Duration: 30 * time.Second, Timeout: 2 * time.Second,
		})
		if err != nil {
			return "", fmt.Errorf("warm-up: %w", err)
		}
		passes++
		if first == nil {
			first = rep
		}
		if !full || passes >= 2 && rep.Rcodes["NOERROR"] == uint64(names) && rep.NoData == 0 {
			break
		}
	}
	burst := min(names, warmConcurrency)
	s := fmt.Sprintf("%d names from one client address (%s), up to %d outstanding at once on %d sockets; ",
		names, warmSource, burst, min(warmSockets, burst))
	if !full {
		s += fmt.Sprintf("one pass: %s, p50 %.3f ms, p99 %.3f ms.", outcome(first), first.Latency.P50, first.Latency.P99)
		return s, nil
	}
	s += fmt.Sprintf("first pass (misses) %s, p50 %.3f ms, p99 %.3f ms; then %d more at %d outstanding; last pass %s, p50 %.3f ms, p99 %.3f ms.",
		outcome(first), first.Latency.P50, first.Latency.P99, passes-1, conc, outcome(rep), rep.Latency.P50, rep.Latency.P99)
	if rep.Rcodes["NOERROR"] != uint64(names) {
		return s, fmt.Errorf("warm-up failed: %s", s)
	}
	return s, nil
}

func (r *runner) scenarioFunc(id string, sc *Scenario) scenarioFunc {
	o := r.o.Params
	switch id {
	case ScHit:
		sc.Setup = fmt.Sprintf("%d names (A) asked once to warm the cache, in one burst from one client address (%s, up to %d outstanding at once, as one pod "+
			"would), then a closed loop over them with %d queries outstanding on %d UDP sockets for %v (as fast as the server answers). "+
			"CPU is the server's utime+stime over the run (its core only: taskset); qps per core = answered qps / cores used. "+
			"Cache misses are the server's own counter over the run: every name was asked in the warm-up, so any miss is a name the warm-up failed to cache.",
			o.HitNames, warmSource, min(o.HitNames, warmConcurrency), o.HitConcurrency, o.HitSockets, o.Duration)
		return func(ctx context.Context, p *proc, run *ServerRun, prof *profileReq) error {
			w, err := warm(ctx, p.dns, o.HitNames, hitZone, false)
			if err != nil {
				return err
			}
			run.Warmup = w
			return r.measure(p, run, 0, prof, func() error {
				rep, err := bench.Run(ctx, bench.Config{
					Server: p.dns, Names: o.HitNames, Zone: hitZone, Concurrency: o.HitConcurrency,
					Sockets: o.HitSockets, Duration: o.Duration, Timeout: time.Second, Curve: true,
				})
				run.Load = rep
				return err
			})
		}
	case ScLatency:
		sc.Setup = fmt.Sprintf("The same %d warmed names, open loop (queries leave on a fixed schedule; latency from the intended send time) at a fixed rate "+
			"for %v on %d UDP sockets: %.0f%% of CoreDNS's cache-hit qps from scenario 1 unless --latency-qps is given.",
			o.HitNames, o.Duration, o.LatencySockets, 100*o.LatencyFraction)
		return func(ctx context.Context, p *proc, run *ServerRun, prof *profileReq) error {
			w, err := warm(ctx, p.dns, o.HitNames, hitZone, true)
			if err != nil {
				return err
			}
			run.Warmup = w
			rate := r.latencyQPS()
			if rate <= 0 {
				return errors.New("no rate: scenario 1 did not run and --latency-qps is not set")
			}
			return r.measure(p, run, 0, prof, func() error {
				rep, err := bench.Run(ctx, bench.Config{
					Server: p.dns, Names: o.HitNames, Zone: hitZone, QPS: rate,
					Sockets: o.LatencySockets, Duration: o.Duration, Timeout: time.Second, Curve: true,
				})
				run.Load = rep
				return err
			})
		}
	case ScStorm, ScStormDrop, ScStormShared:
		what := fmt.Sprintf("delays every answer by %v", o.StormDelay)
		if id == ScStormDrop {
			what = "drops every query (a dead cluster DNS)"
		}
		// Bystanders from their own address, or (storm-shared) from the
		// storm's first one: a pod whose retry storm must not starve its
		// own other lookups, or hostNetwork pods sharing the node's address.
		byAddr, byWhere := "127.0.0.3", "127.0.0.3"
		if id == ScStormShared {
			byAddr, byWhere = stormAddr(0), stormAddr(0)+", **the storm's first client address**"
		}
		sc.Setup = fmt.Sprintf("%d bystander names are cached first. Then for %v the upstream %s while a storm of unique random names (all misses) "+
			"arrives as an **open loop at %.0f qps** from %d client addresses (127.0.0.16+, %d sockets), and bystanders ask the cached names at a steady %.0f qps "+
			"(open loop, %s). Open loop because retrying clients do not wait for answers: a closed loop would let a server that stalls receive less load "+
			"than one that answers, and the upstream/storm ratio would compare different loads. Client timeout %v (glibc's); a query without an answer by then is lost. "+
			"Upstream queries are counted until the last storm query has been answered or timed out. "+
			"A bystander counts as failed when lost or answered with an RCODE other than NOERROR.",
			o.BystanderNames, o.StormDuration, what, o.StormQPS, o.StormClients, o.StormSockets, o.BystanderQPS, byWhere, o.StormTimeout)
		drop := id == ScStormDrop
		return func(ctx context.Context, p *proc, run *ServerRun, prof *profileReq) error {
			w, err := warm(ctx, p.dns, o.BystanderNames, byZone, true)
			if err != nil {
				return err
			}
			run.Warmup = w
			sources := make([]string, o.StormClients)
			for i := range sources {
				sources[i] = stormAddr(i)
			}
			if drop {
				r.up.SetDrop(true)
			} else {
				r.up.SetDelay(o.StormDelay)
			}
			defer func() {
				r.up.SetDrop(false)
				r.up.SetDelay(o.UpstreamRTT)
			}()
			return r.measure(p, run, time.Second, prof, func() error {
				var wg sync.WaitGroup
				var serr, berr error
				wg.Go(func() {
					run.Load, serr = bench.Run(ctx, bench.Config{
						Server: p.dns, RandomZone: stormZone, QPS: o.StormQPS, Sockets: o.StormSockets,
						Sources: sources, Duration: o.StormDuration, Timeout: o.StormTimeout, Curve: true,
					})
				})
				wg.Go(func() {
					run.Bystanders, berr = bench.Run(ctx, bench.Config{
						Server: p.dns, Names: o.BystanderNames, Zone: byZone, QPS: o.BystanderQPS, Sockets: o.BystanderSockets,
						Sources: []string{byAddr}, Duration: o.StormDuration, Timeout: o.StormTimeout, Curve: true,
					})
				})
				wg.Wait()
				return errors.Join(serr, berr)
			})
		}
	case ScFair:
		sc.Setup = fmt.Sprintf("For %v the upstream delays every answer by %v (a slow cluster DNS). One client address (%s, %d sockets) storms it with unique "+
			"random names (all misses) as an **open loop at %.0f qps**, far more than the upstream can have in flight; from %v after the storm's start to its end "+
			"a quiet client (%s, one socket) asks unique names of its own at %.0f qps (open loop). Client timeout %v. A server that shares what is scarce "+
			"(slots to the upstream, room to wait) between clients answers the quiet client at about the upstream's %v; one that serves misses in arrival order "+
			"makes it wait behind the storm, or sheds it. Reports the quiet client's answers and latency, the storm's, and the upstream queries.",
			o.FairDuration, o.StormDelay, stormAddr(0), fairSockets, o.FairQPS, fairQuietDelay, quietAddr, o.FairQuietQPS, o.StormTimeout, o.StormDelay)
		return func(ctx context.Context, p *proc, run *ServerRun, prof *profileReq) error {
			r.up.SetDelay(o.StormDelay)
			defer r.up.SetDelay(o.UpstreamRTT)
			return r.measure(p, run, time.Second, prof, func() error {
				var wg sync.WaitGroup
				var serr, qerr error
				wg.Go(func() {
					run.Load, serr = bench.Run(ctx, bench.Config{
						Server: p.dns, RandomZone: stormZone, QPS: o.FairQPS, Sockets: fairSockets,
						Sources: []string{stormAddr(0)}, Duration: o.FairDuration, Timeout: o.StormTimeout, Curve: true,
					})
				})
				wg.Go(func() {
					select {
					case <-ctx.Done():
						qerr = ctx.Err()
						return
					case <-time.After(fairQuietDelay):
					}
					run.Quiet, qerr = bench.Run(ctx, bench.Config{
						Server: p.dns, RandomZone: quietZone, QPS: o.FairQuietQPS, Sockets: 1,
						Sources: []string{quietAddr}, Duration: o.FairDuration - fairQuietDelay, Timeout: o.StormTimeout, Curve: true,
					})
				})
				wg.Wait()
				return errors.Join(serr, qerr)
			})
		}
	case ScNX:
		sc.Setup = fmt.Sprintf("%d names that do not exist (NXDOMAIN from the upstream, SOA TTL and MINIMUM %d s) asked over and over: open loop at %.0f qps "+
			"for %v from 8 client addresses (the same offered load for both servers, so upstream queries per client query compare like with like). Upstream answers after %v.",
			o.NXNames, o.NXTTL, o.NXQPS, o.NXDuration, o.UpstreamRTT)
		return func(ctx context.Context, p *proc, run *ServerRun, prof *profileReq) error {
			qs := make([]bench.Query, o.NXNames)
			for i := range qs {
				qs[i] = bench.Query{Name: fmt.Sprintf("nx-%d.%s", i, nxZone), Type: 1}
			}
			return r.measure(p, run, 0, prof, func() error {
				rep, err := bench.Run(ctx, bench.Config{
					Server: p.dns, Queries: qs, QPS: o.NXQPS, Sockets: 8, Sources: addrs(2, 8), Duration: o.NXDuration, Timeout: 2 * time.Second, Curve: true,
				})
				run.Load = rep
				return err
			})
		}
	case ScNXBurst:
		sc.Setup = fmt.Sprintf("The measurement the peer comparison uses, \"N identical misses → upstream\": %d bursts, each of **%d identical queries sent at once** "+
			"(a closed loop with all of them outstanding from the start) for a name that is not cached (a new `burst-N.%s` per burst: NXDOMAIN), "+
			"from %d client addresses (127.0.4.x, one socket each, %d queries per address), "+
			"with the upstream answering after %v, a realistic round trip for an external NXDOMAIN. "+
			"Upstream queries are counted per burst, from its first query until its last one is answered or times out (%v); bursts are %v apart. "+
			"A server that forwards every miss sends one upstream query per client query; one that coalesces identical misses in flight sends one per burst.",
			o.NXBursts, o.NXBurstSize, nxZone, o.NXBurstClients, (o.NXBurstSize+o.NXBurstClients-1)/o.NXBurstClients,
			o.NXBurstRTT, burstTimeout, burstPause)
		return func(ctx context.Context, p *proc, run *ServerRun, prof *profileReq) error {
			r.up.SetDelay(o.NXBurstRTT)
			defer r.up.SetDelay(o.UpstreamRTT)
			sources := addrs(4, o.NXBurstClients)
			return r.measure(p, run, 0, prof, func() error {
				defer func() { run.Load = AggregateBursts(run.Bursts) }()
				for i := range o.NXBursts {
					name := fmt.Sprintf("burst-%d.%s", i, nxZone)
					up0 := r.up.Stats()
					rep, err := bench.Run(ctx, bench.Config{
						Server: p.dns, Queries: []bench.Query{{Name: name, Type: 1}}, Count: int64(o.NXBurstSize),
						Concurrency: o.NXBurstSize, Sockets: o.NXBurstClients, Sources: sources,
						Duration: burstTimeout + time.Second, Timeout: burstTimeout,
					})
					if err != nil {
						return fmt.Errorf("burst %d: %w", i, err)
					}
					d := r.up.Stats().Sub(up0)
					run.Bursts = append(run.Bursts, BurstOf(name, rep, d.Received-d.Probes))
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-time.After(burstPause):
					}
				}
				return nil
			})
		}
	case ScBurst:
		sockets := min(burstSockets, o.BurstNames)
		sc.Setup = fmt.Sprintf("%d bursts, each of **%d distinct names never asked before, sent at once** (a closed loop with all of them outstanding "+
			"from the start; `b<burst>-<i>.%s`, A) from one client address (%s, %d sockets): a pod resolving what it needs at start-up, or the hostNetwork "+
			"pods of a node, which share its address. The upstream is idle and answers after %v. Client timeout %v; bursts are %v apart. "+
			"Nothing is scarce for long here, so a server that sheds only when it must answers every query NOERROR. "+
			"Upstream queries are counted per burst, from its first query until its last one is answered or times out.",
			o.Bursts, o.BurstNames, burstZone, burstAddr, sockets, o.UpstreamRTT, burstTimeout, burstPause)
		return func(ctx context.Context, p *proc, run *ServerRun, prof *profileReq) error {
			return r.measure(p, run, 0, prof, func() error {
				defer func() { run.Load = AggregateBursts(run.Bursts) }()
				for i := range o.Bursts {
					qs := make([]bench.Query, o.BurstNames)
					for j := range qs {
						qs[j] = bench.Query{Name: fmt.Sprintf("b%d-%d.%s", i, j, burstZone), Type: 1}
					}
					up0 := r.up.Stats()
					rep, err := bench.Run(ctx, bench.Config{
						Server: p.dns, Queries: qs, Count: int64(o.BurstNames), Concurrency: o.BurstNames, Sockets: sockets,
						Sources: []string{burstAddr}, Duration: burstTimeout + time.Second, Timeout: burstTimeout,
					})
					if err != nil {
						return fmt.Errorf("burst %d: %w", i, err)
					}
					d := r.up.Stats().Sub(up0)
					run.Bursts = append(run.Bursts, BurstOf(fmt.Sprintf("b%d-*.%s", i, burstZone), rep, d.Received-d.Probes))
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-time.After(burstPause):
					}
				}
				return nil
			})
		}
	case ScDeadName:
		sc.Setup = fmt.Sprintf("%d names are cached first. Then for %v one client (%s, its own address) loops on a dead domain: %d names under `%s`, "+
			"which the upstream never answers (as when a domain's authoritative servers are down), A and AAAA of each name back to back (both outstanding "+
			"at once, as glibc's getaddrinfo asks them), an open loop at %.0f qps; meanwhile other clients ask the cached names at %.0f qps "+
			"(127.0.8.1-4) and unique names, all misses the upstream answers after %v, at %.0f qps (127.0.9.1-4). Client timeout %v. "+
			"A server that takes a slow *name* as evidence against the *server* marks its only upstream down and fails every other miss. "+
			"Health flaps: %s scraped every %v, counting each time an upstream goes to 0 (CoreDNS has no such gauge: its failed health checks "+
			"and all-upstreams-down events are shown instead). Another client's query counts as failed when lost or answered with an RCODE other than NOERROR.",
			o.BystanderNames, o.DeadDuration, deadAddr, o.DeadNames, deadZone, o.DeadQPS, o.BystanderQPS, o.UpstreamRTT, o.DeadMissQPS, o.StormTimeout,
			healthGauges[NodeDNS], deadScrapeEvery)
		return func(ctx context.Context, p *proc, run *ServerRun, prof *profileReq) error {
			w, err := warm(ctx, p.dns, o.BystanderNames, byZone, true)
			if err != nil {
				return err
			}
			run.Warmup = w
			var dead []bench.Query
			for i := range o.DeadNames {
				name := fmt.Sprintf("dn-%d.%s", i, deadZone)
				dead = append(dead, bench.Query{Name: name, Type: 1}, bench.Query{Name: name, Type: 28})
			}
			return r.measure(p, run, deadScrapeEvery, prof, func() error {
				var wg sync.WaitGroup
				var derr, berr, merr error
				wg.Go(func() {
					// One socket: the list's order (A, AAAA, next name) is
					// the order sent.
					run.Load, derr = bench.Run(ctx, bench.Config{
						Server: p.dns, Queries: dead, QPS: o.DeadQPS, Sockets: 1,
						Sources: []string{deadAddr}, Duration: o.DeadDuration, Timeout: o.StormTimeout,
					})
				})
				wg.Go(func() {
					run.Bystanders, berr = bench.Run(ctx, bench.Config{
						Server: p.dns, Names: o.BystanderNames, Zone: byZone, QPS: o.BystanderQPS, Sockets: o.BystanderSockets,
						Sources: addrs(8, 4), Duration: o.DeadDuration, Timeout: o.StormTimeout, Curve: true,
					})
				})
				wg.Go(func() {
					run.Misses, merr = bench.Run(ctx, bench.Config{
						Server: p.dns, RandomZone: missZone, QPS: o.DeadMissQPS, Sockets: 4,
						Sources: addrs(9, 4), Duration: o.DeadDuration, Timeout: o.StormTimeout, Curve: true,
					})
				})
				wg.Wait()
				return errors.Join(derr, berr, merr)
			})
		}
	case ScScan:
		return r.scanScenario(sc)
	case ScMiss:
		return r.missScenario(sc)
	case ScHostileIdle, ScHostileHeaders, ScHostileTCP:
		return r.hostileScenario(id, sc)
	case ScNdots:
		sc.Setup = fmt.Sprintf("Stub-resolver emulation: %d external names `www.ext-N.%s` (3 dots, fewer than ndots:5) looked up like glibc's getaddrinfo "+
			"with AF_UNSPEC: A and AAAA in parallel for each candidate of the search list default.svc.cluster.local, svc.cluster.local, cluster.local, "+
			"then the name itself; the three cluster.local candidates are NXDOMAIN (SOA TTL and MINIMUM %d s, as kube-dns's), the last has answers. "+
			"%.0f lookups per second (paced, so both servers see the same lookups over the same time, and negative answers expire alike) by %d clients, "+
			"each its own address and socket, for %v. Upstream answers after %v.",
			o.NdotsNames, extZone, o.ClusterNegTTL, o.NdotsRate, o.NdotsConcurrency, o.NdotsDuration, o.UpstreamRTT)
		return func(ctx context.Context, p *proc, run *ServerRun, prof *profileReq) error {
			names := make([]bench.Query, o.NdotsNames)
			for i := range names {
				names[i] = bench.Query{Name: fmt.Sprintf("www.ext-%d.%s", i, extZone)}
			}
			return r.measure(p, run, 0, prof, func() error {
				rep, err := bench.Run(ctx, bench.Config{
					Server: p.dns, NdotsNames: names, NdotsAAAA: true, Concurrency: o.NdotsConcurrency, Sources: addrs(3, o.NdotsConcurrency),
					LookupRate: o.NdotsRate, Duration: o.NdotsDuration, Timeout: 2 * time.Second, Curve: true,
				})
				run.Load = rep
				return err
			})
		}
	}
	panic("unknown scenario " + id)
}

// latencyQPS is the fixed load of scenario 2.
func (r *runner) latencyQPS() float64 {
	if r.o.LatencyQPS > 0 {
		return r.o.LatencyQPS
	}
	hit := r.res.Scenario(ScHit)
	for _, s := range []string{CoreDNS, NodeDNS} {
		if run := hit.Run(s); usable(run) && run.Load.QPS > 0 {
			return math.Round(r.o.LatencyFraction * run.Load.QPS)
		}
	}
	return 0
}

func (r *runner) write() ([]string, error) {
	finish(r.res)
	r.res.Targets = Evaluate(r.res)
	base := filepath.Join(r.o.OutDir, r.stamp)
	var files []string
	j, err := json.MarshalIndent(r.res, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(base+".json", append(j, '\n'), 0o644); err != nil {
		return nil, err
	}
	files = append(files, base+".json")
	more, err := writeCharts(r.res, base)
	files = append(files, more...)
	if err != nil {
		return files, err
	}
	for _, p := range r.res.Profiles {
		if p.Error == "" {
			files = append(files, filepath.Join(r.o.OutDir, p.File))
		}
	}
	return files, nil
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
