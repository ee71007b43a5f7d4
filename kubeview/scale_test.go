// The race detector would measure itself, and compile the control plane's
// clientset into every race test: these run in make memory and view-scale.

//go:build !race

package kubeview

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/nodedns/nodedns/cache"
	"github.com/nodedns/nodedns/config"
	"github.com/nodedns/nodedns/internal/kubetest"
	"github.com/nodedns/nodedns/internal/testutil"
)

// The environment of TestViewScale.
const (
	// scaleEnv runs it: "1" at full scale (100,000 Services in 10,000
	// namespaces), a number for that many Services (a tenth as many
	// namespaces).
	scaleEnv = "NODEDNS_VIEW_SCALE"
	// scaleBinEnv measures another nodedns binary instead of building
	// ./cmd/nodedns (an older one, to compare).
	scaleBinEnv = "NODEDNS_VIEW_SCALE_BIN"
	// scaleMemoryEnv replaces the DaemonSet's memory limit: a size in
	// bytes, or "none" to measure without a limit what a nodedns that
	// does not fit would take.
	scaleMemoryEnv = "NODEDNS_VIEW_SCALE_MEMORY"
)

// TestViewScale runs nodedns as the DaemonSet does, in a memory cgroup
// with the DaemonSet's limit (deploy/base) and its config file (cache size,
// sockets, Go memory limit ratio), the cache full from a snapshot, against
// a real API server holding 100,000 Services as kubectl apply leaves them
// in 10,000 namespaces. It measures the peak of the cgroup's memory
// (memory.max_usage_in_bytes: what the kernel holds against the limit)
// and of the Go heap (sampled from /metrics) from the start until the view
// is synced, and again while an API server restart makes the view list
// everything again. It checks that nodedns is not OOM-killed, that the
// view holds every Service, and that a name under a Service that does not
// exist is NXDOMAIN on the node. Set NODEDNS_VIEW_SCALE=1 (make
// view-scale; root, cgroup v1, about 10 minutes on two cores); the heap
// peak of the list itself is checked in every run by TestViewListPeak.
func TestViewScale(t *testing.T) {
	nSvc, nNS := viewScale(t)
	limit, file := daemonSetMemory(t)
	if v := os.Getenv(scaleMemoryEnv); v != "" {
		if v == "none" {
			limit = 0
		} else if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			limit = n
		} else {
			t.Fatalf("%s=%q: want a size in bytes or none", scaleMemoryEnv, v)
		}
	}
	cg := newMemCgroup(t, limit)
	bin := os.Getenv(scaleBinEnv)
	if bin == "" {
		bin = testutil.Binary(t, "./cmd/nodedns")
	}

	c := kubetest.Start(t)
	populate(t, c, nNS, nSvc)

	// The cluster DNS and the node's resolvers, on loopback: every name
	// exists there, so that an NXDOMAIN can only come from nodedns's view.
	var asked sync.Map
	up := testutil.StartUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		asked.Store(strings.ToLower(r.Question[0].Name), true)
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR(r.Question[0].Name + " 30 IN A 192.0.2.1")
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	})

	// The DaemonSet's config file with the addresses of this test: DNS and
	// HTTP on loopback, every upstream group to the stand-in, the view
	// from this API server; the rest as shipped.
	dir := t.TempDir()
	dnsAddr, httpAddr := freeAddr(t), freeAddr(t)
	file.Listen, file.HTTPListen, file.Allow = []string{dnsAddr}, httpAddr, []string{"127.0.0.0/8"}
	for i := range file.Upstreams {
		file.Upstreams[i].Servers = []string{up.Addr}
	}
	file.Upstreams = append(file.Upstreams, config.GroupFile{Name: "node", Zones: []string{"."}, Servers: []string{up.Addr}})
	file.Kube.Enabled, file.Kube.Kubeconfig, file.Kube.NodeName = "true", c.Kubeconfig, "node-1"
	file.Cache.Snapshot = filepath.Join(dir, "cache.snapshot")
	b, err := yaml.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]string{"--config", cfgPath}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	entries := writeFullSnapshot(t, cfg.Cache, file.Cache.Snapshot)

	// nodedns in the cgroup, from its first instruction.
	logPath := filepath.Join(dir, "nodedns.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command("/bin/sh", "-c", `echo $$ > "$0" && exec "$@"`, filepath.Join(cg.dir, "cgroup.procs"), bin, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	d := &scaleDaemon{t: t, http: "http://" + httpAddr, cg: cg, exited: exited, logPath: logPath}
	samples := d.sample()

	// The start: the snapshot loaded and the view listed at once, as at
	// every restart of the DaemonSet's pods.
	d.waitFor(10*time.Minute, "the view to sync", func(m map[string]float64) bool {
		return m[`nodedns_kube_view_synced{resource="services"}`] == 1 && m[`nodedns_kube_view_synced{resource="namespaces"}`] == 1 &&
			m[`nodedns_kube_view_objects{resource="services"}`] == float64(nSvc+1)
	})
	atStart := samples.take()
	m := d.metrics()
	if loaded := m["nodedns_cache_snapshot_loaded_entries_total"]; loaded < float64(entries)*0.95 {
		t.Errorf("%v cache entries loaded from the snapshot of %d: the cache is not full", loaded, entries)
	}
	limitText := "no limit"
	if limit > 0 {
		limitText = mibs(float64(limit))
	}
	t.Logf("nodedns (%s) in a memory cgroup of %s, its cache full (%s, %d entries from a snapshot), %d Services in %d namespaces:",
		bin, limitText, mibs(m["nodedns_cache_bytes"]), entries, nSvc, nNS)
	t.Logf("  %-38s %6v: %s", "start until synced", time.Since(started).Round(100*time.Millisecond), atStart)

	// Names under a Service or a namespace that does not exist are denied
	// on the node; those under one that does go to the cluster DNS.
	for _, q := range []struct {
		name  string
		rcode int
	}{
		{"nosuch." + teamNS(0) + ".svc.cluster.local.", dns.RcodeNameError},
		{"api." + teamNS(nNS) + ".svc.cluster.local.", dns.RcodeNameError},
		{serviceName(nSvc-1) + "." + teamNS((nSvc-1)%nNS) + ".svc.cluster.local.", dns.RcodeSuccess},
	} {
		r := testutil.Exchange(t, "udp", dnsAddr, testutil.Query(q.name, dns.TypeA))
		_, forwarded := asked.Load(q.name)
		if r.Rcode != q.rcode || forwarded == (q.rcode == dns.RcodeNameError) {
			t.Errorf("%s: %s (forwarded: %v), want %s", q.name, dns.RcodeToString[r.Rcode], forwarded, dns.RcodeToString[q.rcode])
		}
	}

	// An API server restart: the watches cannot resume, and the view
	// lists everything again.
	lists, ok := m[`nodedns_kube_view_lists_total{resource="services"}`]
	if !ok {
		t.Fatalf("%s exports no nodedns_kube_view_lists_total: a relist cannot be told", bin)
	}
	cg.resetPeak()
	_ = samples.take()
	restarted := time.Now()
	if err := c.RestartAPIServer(); err != nil {
		t.Fatal(err)
	}
	d.waitFor(10*time.Minute, "the view to list again after the restart", func(m map[string]float64) bool {
		return m[`nodedns_kube_view_lists_total{resource="services"}`] > lists && m[`nodedns_kube_view_synced{resource="services"}`] == 1 &&
			m[`nodedns_kube_view_objects{resource="services"}`] == float64(nSvc+1)
	})
	atRelist := samples.take()
	samples.stop()
	t.Logf("  %-38s %6v: %s", "API server restart until listed again", time.Since(restarted).Round(100*time.Millisecond), atRelist)

	if n := cg.value("memory.oom_control", "oom_kill"); n > 0 {
		t.Errorf("nodedns was OOM-killed %v times", n)
	}
	if limit > 0 && max(atStart.cgroup, atRelist.cgroup) >= float64(limit) {
		t.Errorf("the cgroup reached its limit")
	}
}

// viewScale reads NODEDNS_VIEW_SCALE, skipping the test without it.
func viewScale(t *testing.T) (nSvc, nNS int) {
	v := os.Getenv(scaleEnv)
	switch n, err := strconv.Atoi(v); {
	case v == "":
		t.Skipf("set %s=1 to run nodedns against 100,000 Services in the DaemonSet's memory limit (make view-scale)", scaleEnv)
	case v == "1":
		return 100_000, 10_000
	case err == nil && n >= 10:
		return n, n / 10
	}
	t.Fatalf("%s=%q: want 1, or a number of Services", scaleEnv, v)
	return 0, 0
}

// daemonSetMemory returns the memory limit of the nodedns container of
// deploy/base's DaemonSet, in bytes, and the config file it mounts.
func daemonSetMemory(t *testing.T) (int64, config.File) {
	t.Helper()
	b, err := os.ReadFile("../deploy/base/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(b, &ds); err != nil {
		t.Fatal(err)
	}
	var limit int64
	for _, c := range ds.Spec.Template.Spec.Containers {
		if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok && c.Name == "nodedns" {
			limit = q.Value()
		}
	}
	if limit == 0 {
		t.Fatal("deploy/base/daemonset.yaml: no memory limit on the nodedns container")
	}
	if b, err = os.ReadFile("../deploy/base/config.yaml"); err != nil {
		t.Fatal(err)
	}
	var f config.File
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatal(err)
	}
	return limit, f
}

// writeFullSnapshot fills a cache of cfg's size with A answers and writes
// its snapshot to path; it returns the number of entries.
func writeFullSnapshot(t *testing.T, cfg cache.Config, path string) int {
	t.Helper()
	c, err := cache.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i := 0; c.Bytes() < cfg.MaxBytes*98/100 && i < 10_000_000; i++ {
		q := testutil.Query(fmt.Sprintf("host-%07d.example.test.", i), dns.TypeA)
		r := new(dns.Msg)
		r.SetReply(q)
		rr, _ := dns.NewRR(fmt.Sprintf("%s 3600 IN A 192.0.2.%d", q.Question[0].Name, i%250+1))
		r.Answer = []dns.RR{rr}
		if _, err := c.Store(cache.KeyOf(nil, q), r, now); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.WriteSnapshot(f, now)
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// freeAddr returns a loopback address whose port was free for TCP and
// UDP a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no free loopback port for TCP and UDP")
	return ""
}

// memCgroup is a cgroup v1 memory cgroup made for the test, under the
// test's own.
type memCgroup struct {
	t   *testing.T
	dir string
}

func newMemCgroup(t *testing.T, limit int64) *memCgroup {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root, for a memory cgroup")
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	parent := ""
	for _, line := range strings.Split(string(b), "\n") {
		// hierarchy-ID:controllers:path
		if f := strings.SplitN(line, ":", 3); len(f) == 3 && slices.Contains(strings.Split(f[1], ","), "memory") {
			parent = filepath.Join("/sys/fs/cgroup/memory", f[2])
		}
	}
	if parent == "" {
		t.Skip("no cgroup v1 memory controller")
	}
	dir := filepath.Join(parent, fmt.Sprintf("nodedns-view-scale-%08x", rand.Uint32()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a memory cgroup: %v", err)
	}
	t.Cleanup(func() {
		// The cgroup goes once its processes have (killed by the cleanup
		// registered after this one, which runs first).
		for range 50 {
			if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("cgroup %s left behind", dir)
	})
	g := &memCgroup{t: t, dir: dir}
	if limit > 0 {
		g.write("memory.limit_in_bytes", strconv.FormatInt(limit, 10))
		if _, err := os.Stat(filepath.Join(dir, "memory.memsw.limit_in_bytes")); err == nil {
			g.write("memory.memsw.limit_in_bytes", strconv.FormatInt(limit, 10)) // no swap either
		}
	}
	return g
}

func (g *memCgroup) write(file, v string) {
	g.t.Helper()
	if err := os.WriteFile(filepath.Join(g.dir, file), []byte(v), 0o644); err != nil {
		g.t.Fatal(err)
	}
}

// read returns a file's number, or the number of a "key value" line of it
// when key is given.
func (g *memCgroup) value(file string, key ...string) float64 {
	b, err := os.ReadFile(filepath.Join(g.dir, file))
	if err != nil {
		g.t.Error(err)
		return 0
	}
	s := strings.TrimSpace(string(b))
	if len(key) > 0 {
		s = ""
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, " "); ok && k == key[0] {
				s = v
			}
		}
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil {
		g.t.Errorf("%s %v: %q", file, key, b)
	}
	return n
}

// resetPeak starts memory.max_usage_in_bytes again from the usage now.
func (g *memCgroup) resetPeak() { g.write("memory.max_usage_in_bytes", "0") }

// scaleDaemon is the nodedns TestViewScale runs.
type scaleDaemon struct {
	t       *testing.T
	http    string
	cg      *memCgroup
	exited  chan error
	logPath string
}

// metrics scrapes /metrics into a map of "name{labels}" to value.
func (d *scaleDaemon) metrics() map[string]float64 {
	out := map[string]float64{}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(d.http + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.LastIndexByte(line, ' '); i > 0 && !strings.HasPrefix(line, "#") {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				out[line[:i]] = v
			}
		}
	}
	return out
}

// waitFor polls the metrics until cond holds; nodedns exiting meanwhile,
// or the timeout, fails the test with nodedns's log.
func (d *scaleDaemon) waitFor(timeout time.Duration, what string, cond func(map[string]float64) bool) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case err := <-d.exited:
			d.exited <- err
			oom := d.cg.value("memory.oom_control", "oom_kill")
			d.t.Fatalf("nodedns exited (%v; OOM kills in its cgroup: %v) waiting for %s; its log:\n%s", err, oom, what, d.logTail())
		default:
		}
		if cond(d.metrics()) {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("timed out after %v waiting for %s; nodedns's log:\n%s", timeout, what, d.logTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (d *scaleDaemon) logTail() string {
	b, _ := os.ReadFile(d.logPath)
	if len(b) > 8<<10 {
		b = b[len(b)-8<<10:]
	}
	return string(b)
}

// peaks are the highest memory figures of a phase: the cgroup's usage
// (memory.max_usage_in_bytes, what the limit applies to), and, sampled
// every 100 ms, its anonymous memory (memory.stat rss: the process's own,
// without the pages of its binary), the process's RSS and its Go heap in
// use (from /metrics).
type peaks struct{ cgroup, anon, rss, heap float64 }

func (p peaks) String() string {
	return fmt.Sprintf("cgroup %s; sampled: anonymous %s, RSS %s, Go heap in use %s", mibs(p.cgroup), mibs(p.anon), mibs(p.rss), mibs(p.heap))
}

func mibs(n float64) string { return fmt.Sprintf("%.1f MiB", n/(1<<20)) }

type sampler struct {
	d    *scaleDaemon
	mu   sync.Mutex
	p    peaks
	done chan struct{}
	wg   sync.WaitGroup
}

// sample samples the metrics until stop.
func (d *scaleDaemon) sample() *sampler {
	s := &sampler{d: d, done: make(chan struct{})}
	s.wg.Go(func() {
		for {
			m := d.metrics()
			anon := d.cg.value("memory.stat", "rss")
			s.mu.Lock()
			s.p.anon = max(s.p.anon, anon)
			s.p.rss = max(s.p.rss, m["process_resident_memory_bytes"])
			s.p.heap = max(s.p.heap, m["go_memstats_heap_inuse_bytes"])
			s.mu.Unlock()
			select {
			case <-s.done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	return s
}

// take returns the peaks since the last take, with the cgroup's.
func (s *sampler) take() peaks {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.p
	p.cgroup = s.d.cg.value("memory.max_usage_in_bytes")
	s.p = peaks{}
	return p
}

func (s *sampler) stop() { close(s.done); s.wg.Wait() }
