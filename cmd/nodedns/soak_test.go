package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/internal/testutil"
)

// TestSoak runs nodedns for NODEDNS_SOAK (e.g. 1m, as make test does, or
// 10m, as make soak does) under a mix of cache hits, misses, retry storms
// and upstream faults, cycling every few seconds, and checks that its
// memory and goroutines stay flat: what grows in a soak leaks.
func TestSoak(t *testing.T) {
	v := os.Getenv("NODEDNS_SOAK")
	if v == "" {
		t.Skip("set NODEDNS_SOAK to a duration to run the soak (make soak)")
	}
	total, err := time.ParseDuration(v)
	if err != nil || total < 30*time.Second {
		t.Fatalf("NODEDNS_SOAK=%q: want a duration of at least 30s", v)
	}
	up := startChaosUpstream(t)
	cfg := filepath.Join(t.TempDir(), "nodedns.yaml")
	writeFile(t, cfg, fmt.Sprintf(`upstreams:
  - zones: ["."]
    servers: ["%s"]
    timeout: 300ms
    health_interval: 500ms
server:
  request_timeout: 1s
  max_queue_wait: 300ms
  stale_answer_timeout: 200ms
`, up.Addr))
	// A small cache, so that it is full within the first cycles (the storms
	// fill it with their unique names): growth after that is not the cache.
	d := testutil.StartDaemon(t, "--config", cfg, "--cache-size", "4MiB")
	var warm []string
	for i := range 200 {
		warm = append(warm, fmt.Sprintf("w%d.warm.test.", i))
	}
	for _, n := range warm {
		ask(t, d.DNS, n)
	}

	var o atomic.Pointer[outcome]
	o.Store(new(outcome))
	stop := make(chan struct{})
	clients := load(d.DNS, 4, warm, o.Load, stop)
	var storms sync.WaitGroup
	defer func() {
		close(stop)
		clients.Wait()
		storms.Wait()
	}()

	// A cycle: a storm of unique names for 2 s at 5,000 qps from its own
	// address, while the upstream goes through one fault.
	faults := []string{modeOK, modeSlow, modeServFail, modeOK, modeSilent, modeRefused, modeOK, modeKilled, modeFlapping, modeDeadName}
	type sample struct {
		at         time.Duration
		rss        int64
		goroutines int
	}
	var samples []sample
	start := time.Now()
	for cycle := 0; time.Since(start) < total; cycle++ {
		up.set(faults[cycle%len(faults)])
		storms.Add(1)
		go func() {
			defer storms.Done()
			storm(t, d.DNS, "127.0.0.16", 5000, 2*time.Second, cycle)
		}()
		time.Sleep(3 * time.Second)
		storms.Wait()
		samples = append(samples, sample{time.Since(start), rss(t, d.Cmd.Process.Pid), goroutines(t, d)})
	}
	up.set(modeOK)
	got := o.Load()
	t.Logf("%d cycles: %s", len(samples), got)
	for _, s := range samples {
		t.Logf("%6.1fs  RSS %5.1f MB  goroutines %d", s.at.Seconds(), float64(s.rss)/1e6, s.goroutines)
	}
	if got.wrong.Load() != 0 {
		t.Errorf("%d wrong answers, e.g. %v", got.wrong.Load(), got.wrongExample.Load())
	}
	if got.lost.Load() != 0 {
		t.Errorf("%d queries got no answer", got.lost.Load())
	}
	// Flat: the last third peaks no higher than the second (by then the
	// cache is full and the runtime has grown to its working size), within a
	// margin for the garbage collector's timing.
	n := len(samples)
	if n < 6 {
		t.Fatalf("only %d samples", n)
	}
	peak := func(ss []sample) (rss int64, g int) {
		for _, s := range ss {
			rss, g = max(rss, s.rss), max(g, s.goroutines)
		}
		return
	}
	firstRSS, firstG := peak(samples[n/3 : n-n/3])
	lastRSS, lastG := peak(samples[n-n/3:])
	if lastRSS > firstRSS*5/4+4<<20 {
		t.Errorf("RSS grew: peak %.1f MB in the second third, %.1f MB in the last", float64(firstRSS)/1e6, float64(lastRSS)/1e6)
	}
	if lastG > firstG+firstG/4+20 {
		t.Errorf("goroutines grew: peak %d in the second third, %d in the last", firstG, lastG)
	}
}

// storm sends unique names at qps for d from src, open loop, and reads
// whatever comes back.
func storm(t *testing.T, addr, src string, qps int, d time.Duration, cycle int) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)})
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close()
	dst, _ := net.ResolveUDPAddr("udp", addr)
	go func() { // drains replies until the socket closes
		buf := make([]byte, 1500)
		for {
			if _, err := conn.Read(buf); err != nil {
				return
			}
		}
	}()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(d)
	perTick := max(qps/1000, 1)
	for i := 0; time.Now().Before(end); {
		<-tick.C
		for range perTick {
			m := new(dns.Msg)
			m.SetQuestion(fmt.Sprintf("s%d-%d.storm.test.", cycle, i), dns.TypeA)
			b, _ := m.Pack()
			_, _ = conn.WriteToUDP(b, dst)
			i++
		}
	}
	time.Sleep(1500 * time.Millisecond) // answers still due: request_timeout + margin
}

// rss returns the resident memory of a process, from /proc.
func rss(t *testing.T, pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// goroutines returns go_goroutines from the daemon's metrics.
func goroutines(t *testing.T, d *testutil.Daemon) int {
	_, m := httpGet(t, "http://"+d.HTTP+"/metrics")
	for _, l := range strings.Split(m, "\n") {
		if v, ok := strings.CutPrefix(l, "go_goroutines "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatal("no go_goroutines")
	return 0
}
