package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/internal/testutil"
)

// These tests build the real nodedns binary and run it as a process on
// loopback, against real DNS servers started by the test, and query it with
// miekg/dns clients and with dig.

func binary(t *testing.T) string {
	t.Helper()
	return testutil.Binary(t, "./cmd/nodedns")
}

// freePort returns a loopback port free for both UDP and TCP right now.
func freePort(t *testing.T) int {
	t.Helper()
	for i := 0; i < 20; i++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		pc.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// upstreamServer is a real DNS server on loopback answering A queries with
// addr; it counts queries by name.
type upstreamServer struct {
	addr   string
	answer atomic.Value // string: the A record address
	mu     sync.Mutex
	counts map[string]int
}

func startUpstream(t *testing.T, answer string) *upstreamServer {
	t.Helper()
	u := &upstreamServer{counts: map[string]int{}}
	u.answer.Store(answer)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		q := r.Question[0]
		u.mu.Lock()
		u.counts[strings.ToLower(q.Name)]++
		u.mu.Unlock()
		m := new(dns.Msg)
		m.SetReply(r)
		if q.Qtype == dns.TypeA {
			rr, _ := dns.NewRR(fmt.Sprintf("%s 300 IN A %s", q.Name, u.answer.Load()))
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	})
	started := make(chan struct{})
	s := &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(started) }}
	go func() { _ = s.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = s.Shutdown() })
	return u
}

func (u *upstreamServer) count(name string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.counts[name]
}

// daemon is a running nodedns process.
type daemon struct {
	cmd     *exec.Cmd
	dnsAddr string
	http    string
	logs    *syncBuffer
	exited  chan error    // the exit status, for the test to take
	done    chan struct{} // closed once the process has exited
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
	// lines receives each log line as it is written.
	lines chan string
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	return startDaemonAt(t, fmt.Sprintf("127.0.0.1:%d", freePort(t)), args...)
}

// startDaemonAt starts nodedns serving DNS on dnsAddr.
func startDaemonAt(t *testing.T, dnsAddr string, args ...string) *daemon {
	t.Helper()
	d := &daemon{
		dnsAddr: dnsAddr,
		http:    fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		logs:    &syncBuffer{lines: make(chan string, 1000)},
		exited:  make(chan error, 1),
		done:    make(chan struct{}),
	}
	all := append([]string{"--listen", d.dnsAddr, "--http-listen", d.http}, args...)
	d.cmd = exec.Command(binary(t), all...)
	dieWithTest(d.cmd)
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			d.logs.mu.Lock()
			d.logs.b.WriteString(line + "\n")
			d.logs.mu.Unlock()
			select {
			case d.logs.lines <- line:
			default:
			}
			if strings.Contains(line, "nodedns started") {
				once.Do(func() { close(started) })
			}
		}
		err := d.cmd.Wait()
		close(d.done)
		d.exited <- err
	}()
	select {
	case <-started:
	case err := <-d.exited:
		t.Fatalf("nodedns exited at start: %v\n%s", err, d.logs)
	case <-time.After(20 * time.Second):
		t.Fatalf("nodedns did not start\n%s", d.logs)
	}
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	})
	return d
}

// waitLog waits for a log line containing s.
func (d *daemon) waitLog(t *testing.T, s string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case line := <-d.logs.lines:
			if strings.Contains(line, s) {
				return line
			}
		case <-timeout:
			t.Fatalf("no log line with %q\n%s", s, d.logs)
		}
	}
}

func ask(t *testing.T, addr, name string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	c := &dns.Client{Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	return r
}

func answerIP(r *dns.Msg) string {
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			return a.A.String()
		}
	}
	return ""
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestDaemonServesForwardsAndRoutesZones(t *testing.T) {
	def := startUpstream(t, "192.0.2.1")
	cluster := startUpstream(t, "10.96.0.1")
	// A dead upstream: a bound socket that never answers.
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	cfg := filepath.Join(t.TempDir(), "nodedns.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
upstreams:
  - name: cluster
    zones: [cluster.local, in-addr.arpa]
    servers: ["%s", "%s"]
    force_tcp: false # the test's upstreams serve UDP only
    timeout: 300ms
`, dead.LocalAddr(), cluster.addr))
	d := startDaemon(t, "--config", cfg, "--upstream", def.addr)

	if ip := answerIP(ask(t, d.dnsAddr, "www.example.org.")); ip != "192.0.2.1" {
		t.Errorf("default zone answered %q", ip)
	}
	for i := 0; i < 3; i++ { // the dead member costs at most one timeout, then it is skipped
		if ip := answerIP(ask(t, d.dnsAddr, fmt.Sprintf("svc%d.default.svc.cluster.local.", i))); ip != "10.96.0.1" {
			t.Errorf("cluster zone answered %q", ip)
		}
	}
	if n := def.count("svc0.default.svc.cluster.local."); n != 0 {
		t.Errorf("cluster.local name reached the default upstream %d times", n)
	}

	// dig, a real client, gets the cached answer.
	out, err := exec.Command("dig", "@127.0.0.1", "-p", strings.Split(d.dnsAddr, ":")[1], "+tries=1", "+time=3",
		"WWW.Example.ORG", "A").CombinedOutput()
	if err != nil {
		t.Fatalf("dig: %v\n%s", err, out)
	}
	for _, want := range []string{"status: NOERROR", "flags: qr rd ra", "WWW.Example.ORG.", "192.0.2.1"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("dig output lacks %q:\n%s", want, out)
		}
	}
	if n := def.count("www.example.org."); n != 1 {
		t.Errorf("upstream saw www.example.org %d times, want 1", n)
	}

	if code, body := httpGet(t, "http://"+d.http+"/ready"); code != 200 {
		t.Errorf("/ready = %d %s", code, body)
	}
	if code, _ := httpGet(t, "http://"+d.http+"/health"); code != 200 {
		t.Errorf("/health = %d", code)
	}
	_, metrics := httpGet(t, "http://"+d.http+"/metrics")
	for _, want := range []string{
		`nodedns_requests_total{proto="udp",qtype="A",rcode="NOERROR"}`,
		"nodedns_cache_hits_total 1",
		"nodedns_request_duration_seconds_bucket",
		"nodedns_upstream_healthy{upstream=",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit 10s after SIGTERM")
	}
}

func TestDaemonReloadsOnSIGHUPKeepingTheCache(t *testing.T) {
	first := startUpstream(t, "192.0.2.1")
	second := startUpstream(t, "192.0.2.2")
	cfg := filepath.Join(t.TempDir(), "nodedns.yaml")
	writeFile(t, cfg, fmt.Sprintf("upstreams:\n  - zones: [\".\"]\n    servers: [\"%s\"]\n", first.addr))
	d := startDaemon(t, "--config", cfg)

	if ip := answerIP(ask(t, d.dnsAddr, "cached.test.")); ip != "192.0.2.1" {
		t.Fatalf("before reload: %q", ip)
	}
	writeFile(t, cfg, fmt.Sprintf("upstreams:\n  - zones: [\".\"]\n    servers: [\"%s\"]\n", second.addr))
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	d.waitLog(t, "config reloaded")
	if ip := answerIP(ask(t, d.dnsAddr, "cached.test.")); ip != "192.0.2.1" {
		t.Errorf("cached name after reload answered %q: the cache was lost", ip)
	}
	if ip := answerIP(ask(t, d.dnsAddr, "new.test.")); ip != "192.0.2.2" {
		t.Errorf("new name after reload answered %q, want the new upstream's", ip)
	}

	// Every change is applied or named as needing a restart.
	writeFile(t, cfg, fmt.Sprintf("upstreams:\n  - zones: [\".\"]\n    servers: [\"%s\"]\nserver:\n  request_timeout: 3s\ncache:\n  size: 8MiB\n", second.addr))
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	if line := d.waitLog(t, "config reloaded"); !strings.Contains(line, "server.request_timeout") {
		t.Errorf("reload did not say it applied server.request_timeout: %s", line)
	}
	if line := d.waitLog(t, "take effect only after a restart"); !strings.Contains(line, "cache.size") {
		t.Errorf("reload did not name cache.size as needing a restart: %s", line)
	}

	// A bad config is rejected and the running one stays.
	writeFile(t, cfg, "upstreams:\n  - zones: [\".\"]\n    servers: [\"not-an-ip\"]\n")
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	line := d.waitLog(t, "config reload rejected")
	if !strings.Contains(line, "servers[0]") {
		t.Errorf("rejection does not name the field: %s", line)
	}
	if ip := answerIP(ask(t, d.dnsAddr, "another.test.")); ip != "192.0.2.2" {
		t.Errorf("after a rejected reload: %q", ip)
	}
}

func TestDaemonBadConfigExitsWithStatus2(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		file string
		want string
	}{
		{"unknown flag", []string{"--cache-sise", "1MiB"}, "", "cache-sise"},
		{"bad size", []string{"--cache-size", "lots"}, "", "--cache-size"},
		{"bad duration", []string{"--cache-max-ttl", "forever"}, "", "--cache-max-ttl"},
		{"bad listen", []string{"--listen", "localhost"}, "", "listen"},
		{"unknown key", nil, "cache:\n  sise: 1MiB\n", "sise"},
		{"bad key value", nil, "cache:\n  negative_ttl: soon\n", "cache.negative_ttl"},
		{"bad server", nil, "upstreams:\n  - zones: [cluster.local]\n    servers: [\"1.2.3\"]\n", "upstreams[0].servers[0]"},
		{"duplicate zone", nil, "upstreams:\n  - zones: [\".\"]\n    servers: [\"127.0.0.1\"]\n  - zones: [\".\"]\n    servers: [\"127.0.0.1\"]\n", "upstreams[1].zones"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml")
				writeFile(t, p, tc.file)
				args = append(args, "--config", p)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, binary(t), append([]string{"--upstream", "127.0.0.1:1"}, args...)...)
			out, err := cmd.CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit %v, want status 2; output:\n%s", err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Errorf("want one line naming %q, got:\n%s", tc.want, out)
			}
		})
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Every metric the running binary exports is in the metrics table of
// docs/reference/metrics.md: dashboards and alerts are written from it.
func TestEveryMetricIsDocumented(t *testing.T) {
	up := startUpstream(t, "192.0.2.1")
	d := startDaemon(t, "--upstream", up.addr)
	ask(t, d.dnsAddr, "www.example.org.")
	doc, err := os.ReadFile("../../docs/reference/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	_, metrics := httpGet(t, "http://"+d.http+"/metrics")
	n := 0
	for _, line := range strings.Split(metrics, "\n") {
		name, ok := strings.CutPrefix(line, "# TYPE ")
		if !ok || !strings.HasPrefix(name, "nodedns_") {
			continue
		}
		name, _, _ = strings.Cut(name, " ")
		n++
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("docs/reference/metrics.md lacks %s", name)
		}
	}
	if n < 20 {
		t.Errorf("only %d nodedns metrics exported", n)
	}
}
