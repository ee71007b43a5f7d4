package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/bench/attack"
	"github.com/nodedns/nodedns/internal/testutil"
)

// Attacks a pod can make on nodedns's HTTP port, which is on the node's
// address. Each is bounded in time and count; each measures the daemon's
// RSS growth while DNS and /ready must keep answering every time.

// bystanders asks a cached name over UDP and /ready over HTTP (from
// 127.0.0.1, not an attacking address) every 20 ms until stop, and
// reports the failures of each.
func bystanders(t *testing.T, d *testutil.Daemon, stop <-chan struct{}) (dnsFail, dnsTotal, readyFail, readyTotal *atomic.Int64, wait func()) {
	dnsFail, dnsTotal, readyFail, readyTotal = new(atomic.Int64), new(atomic.Int64), new(atomic.Int64), new(atomic.Int64)
	var wg sync.WaitGroup
	wg.Go(func() {
		c := &dns.Client{Timeout: time.Second}
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			dnsTotal.Add(1)
			if r, _, err := c.Exchange(query("cached.test.", dns.TypeA), d.DNS); err != nil || r.Rcode != dns.RcodeSuccess {
				dnsFail.Add(1)
			}
		}
	})
	wg.Go(func() {
		hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			readyTotal.Add(1)
			resp, err := hc.Get("http://" + d.HTTP + "/ready")
			if err != nil {
				readyFail.Add(1)
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				readyFail.Add(1)
			}
		}
	})
	return dnsFail, dnsTotal, readyFail, readyTotal, wg.Wait
}

func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

// peakRSS samples the daemon's RSS every 20 ms until stop and returns
// the largest.
func peakRSS(t *testing.T, pid int, stop <-chan struct{}) func() int64 {
	var peak atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if r := rss(t, pid); r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() int64 { <-done; return peak.Load() }
}

func TestHostileHTTP(t *testing.T) {
	up := startUpstream(t, "192.0.2.1")
	for _, attack := range []struct {
		name string
		run  func(t *testing.T, addr string, stop <-chan struct{})
	}{
		{"15000 idle keep-alive connections", holdIdle},
		{"600 connections streaming header bytes", streamHeaders},
	} {
		t.Run(attack.name, func(t *testing.T) {
			d := testutil.StartDaemon(t, "--upstream", up.Addr)
			if r, err := exchangeDNS(d.DNS, query("cached.test.", dns.TypeA)); err != nil || r.Rcode != dns.RcodeSuccess {
				t.Fatalf("warming the cache: %v %v", r, err)
			}
			time.Sleep(200 * time.Millisecond) // the GC after start-up settles
			before := rss(t, d.Cmd.Process.Pid)
			stop := make(chan struct{})
			peak := peakRSS(t, d.Cmd.Process.Pid, stop)
			dnsFail, dnsTotal, readyFail, readyTotal, wait := bystanders(t, d, stop)
			attackDone := make(chan struct{})
			go func() { defer close(attackDone); attack.run(t, d.HTTP, stop) }()
			time.Sleep(5 * time.Second)
			close(stop)
			wait()
			<-attackDone
			grew := peak() - before
			rejected := metricValue(t, d, "nodedns_http_connections_rejected_total")
			t.Logf("%s: RSS grew %.1f MiB at most; DNS %d/%d answered, /ready %d/%d; %v connections rejected or evicted",
				attack.name, float64(grew)/(1<<20), dnsTotal.Load()-dnsFail.Load(), dnsTotal.Load(),
				readyTotal.Load()-readyFail.Load(), readyTotal.Load(), rejected)
			if grew > 20<<20 {
				t.Errorf("RSS grew by %.1f MiB; want at most 20 MiB", float64(grew)/(1<<20))
			}
			if dnsFail.Load() > 0 || dnsTotal.Load() == 0 {
				t.Errorf("%d of %d DNS queries unanswered during the attack", dnsFail.Load(), dnsTotal.Load())
			}
			if readyFail.Load() > 0 || readyTotal.Load() == 0 {
				t.Errorf("%d of %d /ready requests failed during the attack", readyFail.Load(), readyTotal.Load())
			}
			if rejected == 0 {
				t.Error("no connection rejected: the attack did not reach the caps")
			}
		})
	}
}

func exchangeDNS(addr string, m *dns.Msg) (*dns.Msg, error) {
	c := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, addr)
	return r, err
}

// holdIdle holds 15,000 idle keep-alive connections from 60 addresses
// until stop.
func holdIdle(t *testing.T, addr string, stop <-chan struct{}) {
	a := &attack.Attacker{Sources: attack.Sources(1, 60)}
	a.IdleHTTP(stopContext(stop), addr, "/health", 15000)
	t.Logf("idle connections: %v", &a.Stats)
}

// streamHeaders streams header bytes on 600 connections from 100
// addresses until stop.
func streamHeaders(t *testing.T, addr string, stop <-chan struct{}) {
	a := &attack.Attacker{Sources: attack.Sources(1, 100)}
	a.SlowHeaders(stopContext(stop), addr, "/metrics", 600)
	t.Logf("streaming connections: %v", &a.Stats)
}

// stopContext is a context done when stop is closed.
func stopContext(stop <-chan struct{}) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-stop; cancel() }()
	return ctx
}

// metricValue reads one unlabelled series from the daemon's /metrics.
func metricValue(t *testing.T, d *testutil.Daemon, name string) float64 {
	t.Helper()
	_, body := httpGet(t, "http://"+d.HTTP+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return -1
}

func TestVerboseReadyOnlyFromTheNode(t *testing.T) {
	node := &net.TCPAddr{IP: net.ParseIP("10.0.0.5"), Port: 9253}
	for _, tc := range []struct {
		remote string
		local  net.Addr
		want   bool
	}{
		{"127.0.0.1:40000", &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 9253}, true},
		{"[::1]:40000", nil, true},
		{"10.0.0.5:40000", node, true}, // the node asking its own address
		{"10.244.1.7:40000", node, false},
		{"[fd00::7]:40000", node, false},
		{"garbage", node, false},
	} {
		r := &http.Request{RemoteAddr: tc.remote}
		if tc.local != nil {
			r = r.WithContext(context.WithValue(context.Background(), http.LocalAddrContextKey, tc.local))
		}
		if got := fromNode(r); got != tc.want {
			t.Errorf("fromNode(%s) = %v, want %v", tc.remote, got, tc.want)
		}
	}
}

// The snapshot is read only from a regular file, never through a
// symbolic link (the hostPath is shared) or from a FIFO (which would block
// the start).
func TestSnapshotOpensOnlyARegularFile(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere")
	if err := os.WriteFile(target, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := openRegular(link); err == nil {
		t.Error("opened a snapshot through a symbolic link")
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := openRegular(fifo); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("opened a FIFO as a snapshot")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("opening a FIFO blocked")
	}
	if f, err := openRegular(target); err != nil {
		t.Errorf("a regular file: %v", err)
	} else {
		f.Close()
	}
}
