package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/internal/testutil"
)

// These tests build the real nodedns binary and run it as a process on
// loopback, against real DNS servers started by the test, and query it with
// miekg/dns clients and with dig.

// startUpstream starts a DNS server on loopback that answers every A
// question with the address answer.
func startUpstream(t *testing.T, answer string) *testutil.Upstream {
	t.Helper()
	return testutil.StartUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		q := r.Question[0]
		m := new(dns.Msg)
		m.SetReply(r)
		if q.Qtype == dns.TypeA {
			rr, _ := dns.NewRR(fmt.Sprintf("%s 300 IN A %s", q.Name, answer))
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	})
}

// waitLog waits for a log line of d containing s, after the one it last
// returned.
func waitLog(t *testing.T, d *testutil.Daemon, s string) string {
	t.Helper()
	return d.Out.WaitLine(t, s, 10*time.Second)
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
    force_tcp: false # over UDP: the dead member reads and never answers
    timeout: 300ms
`, dead.LocalAddr(), cluster.Addr))
	d := testutil.StartDaemon(t, "--config", cfg, "--upstream", def.Addr)

	if ip := answerIP(ask(t, d.DNS, "www.example.org.")); ip != "192.0.2.1" {
		t.Errorf("default zone answered %q", ip)
	}
	for i := 0; i < 3; i++ { // the dead member costs at most one timeout, then it is skipped
		if ip := answerIP(ask(t, d.DNS, fmt.Sprintf("svc%d.default.svc.cluster.local.", i))); ip != "10.96.0.1" {
			t.Errorf("cluster zone answered %q", ip)
		}
	}
	if n := def.Count("svc0.default.svc.cluster.local."); n != 0 {
		t.Errorf("cluster.local name reached the default upstream %d times", n)
	}

	// dig, a real client, gets the cached answer.
	out, err := exec.Command("dig", "@127.0.0.1", "-p", strings.Split(d.DNS, ":")[1], "+tries=1", "+time=3",
		"WWW.Example.ORG", "A").CombinedOutput()
	if err != nil {
		t.Fatalf("dig: %v\n%s", err, out)
	}
	for _, want := range []string{"status: NOERROR", "flags: qr rd ra", "WWW.Example.ORG.", "192.0.2.1"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("dig output lacks %q:\n%s", want, out)
		}
	}
	if n := def.Count("www.example.org."); n != 1 {
		t.Errorf("upstream saw www.example.org %d times, want 1", n)
	}

	if code, body := httpGet(t, "http://"+d.HTTP+"/ready"); code != 200 {
		t.Errorf("/ready = %d %s", code, body)
	}
	if code, _ := httpGet(t, "http://"+d.HTTP+"/health"); code != 200 {
		t.Errorf("/health = %d", code)
	}
	_, metrics := httpGet(t, "http://"+d.HTTP+"/metrics")
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

	if err := d.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.Done():
		if err := d.Wait(); err != nil {
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
	writeFile(t, cfg, fmt.Sprintf("upstreams:\n  - zones: [\".\"]\n    servers: [\"%s\"]\n", first.Addr))
	d := testutil.StartDaemon(t, "--config", cfg)

	if ip := answerIP(ask(t, d.DNS, "cached.test.")); ip != "192.0.2.1" {
		t.Fatalf("before reload: %q", ip)
	}
	writeFile(t, cfg, fmt.Sprintf("upstreams:\n  - zones: [\".\"]\n    servers: [\"%s\"]\n", second.Addr))
	_ = d.Cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, d, "config reloaded")
	if ip := answerIP(ask(t, d.DNS, "cached.test.")); ip != "192.0.2.1" {
		t.Errorf("cached name after reload answered %q: the cache was lost", ip)
	}
	if ip := answerIP(ask(t, d.DNS, "new.test.")); ip != "192.0.2.2" {
		t.Errorf("new name after reload answered %q, want the new upstream's", ip)
	}

	// Every change is applied or named as needing a restart.
	writeFile(t, cfg, fmt.Sprintf("upstreams:\n  - zones: [\".\"]\n    servers: [\"%s\"]\nserver:\n  request_timeout: 3s\ncache:\n  size: 8MiB\n", second.Addr))
	_ = d.Cmd.Process.Signal(syscall.SIGHUP)
	if line := waitLog(t, d, "config reloaded"); !strings.Contains(line, "server.request_timeout") {
		t.Errorf("reload did not say it applied server.request_timeout: %s", line)
	}
	if line := waitLog(t, d, "take effect only after a restart"); !strings.Contains(line, "cache.size") {
		t.Errorf("reload did not name cache.size as needing a restart: %s", line)
	}

	// A bad config is rejected and the running one stays.
	writeFile(t, cfg, "upstreams:\n  - zones: [\".\"]\n    servers: [\"not-an-ip\"]\n")
	_ = d.Cmd.Process.Signal(syscall.SIGHUP)
	line := waitLog(t, d, "config reload rejected")
	if !strings.Contains(line, "servers[0]") {
		t.Errorf("rejection does not name the field: %s", line)
	}
	if ip := answerIP(ask(t, d.DNS, "another.test.")); ip != "192.0.2.2" {
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
			cmd := exec.CommandContext(ctx, testutil.Binary(t, "./cmd/nodedns"), append([]string{"--upstream", "127.0.0.1:1"}, args...)...)
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
	d := testutil.StartDaemon(t, "--upstream", up.Addr)
	ask(t, d.DNS, "www.example.org.")
	doc, err := os.ReadFile("../../docs/reference/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	_, metrics := httpGet(t, "http://"+d.HTTP+"/metrics")
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
