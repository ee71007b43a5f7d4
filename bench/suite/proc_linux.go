//go:build linux

package suite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// clkTck is USER_HZ, the unit of utime/stime in /proc/PID/stat: 100 on
// every Linux architecture Go supports.
const clkTck = 100

// proc is a server under test, started by the suite.
type proc struct {
	name    string
	pid     int
	args    []string
	dns     string // 127.0.0.1:PORT
	metrics string // URL of /metrics
	// healthAddr is the HOST:PORT of the liveness endpoint, /health
	// (nodedns: its HTTP port; CoreDNS: the health plugin's).
	healthAddr string
	pprof      string // base URL of /debug/pprof/, "" if none
	logPath    string

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// startProc starts bin pinned to cpu with GOMAXPROCS=1. The child gets
// SIGKILL if the suite dies (Pdeathsig) and is otherwise stopped by stop().
func startProc(name, bin string, args []string, cpu int, logPath string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("taskset", append([]string{"-c", strconv.Itoa(cpu), bin}, args...)...)
	env := []string{"GOMAXPROCS=1"}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "GOMAXPROCS=") {
			env = append(env, e)
		}
	}
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, pid: cmd.Process.Pid, args: args, logPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the process (by its PID), then SIGKILL after 5 s.
func (p *proc) stop() {
	if !p.alive() {
		return
	}
	_ = syscall.Kill(p.pid, syscall.SIGTERM)
	select {
	case <-p.exited:
		return
	case <-time.After(5 * time.Second):
	}
	_ = syscall.Kill(p.pid, syscall.SIGKILL)
	<-p.exited
}

// logTail returns the end of the process's log, for error messages.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 800 {
		s = "..." + s[len(s)-800:]
	}
	return s
}

// waitReady waits until the server answers a query (any reply) or timeout.
func (p *proc) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion("ready.bench.test.", dns.TypeA)
	for {
		if !p.alive() {
			return fmt.Errorf("%s exited at start (%v): %s", p.name, p.waitErr, p.logTail())
		}
		if _, _, err := c.ExchangeContext(ctx, m, p.dns); err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer on %s within %v: %s", p.name, p.dns, timeout, p.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func readProc(pid int, file string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), file))
	return string(b), err
}

func (p *proc) memory() (Memory, error) {
	s, err := readProc(p.pid, "status")
	if err != nil {
		return Memory{}, err
	}
	return ParseStatus(s)
}

// cpuSeconds is the process's user+system CPU time so far.
func (p *proc) cpuSeconds() (float64, error) {
	s, err := readProc(p.pid, "stat")
	if err != nil {
		return 0, err
	}
	t, err := ParseStatCPU(s)
	return float64(t) / clkTck, err
}

var httpClient = &http.Client{Timeout: 3 * time.Second}

func (p *proc) scrape() (Metrics, error) {
	if p.metrics == "" {
		return nil, errors.New("no metrics endpoint")
	}
	resp, err := httpClient.Get(p.metrics)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", p.metrics, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, err
	}
	return ParseMetrics(string(b))
}

// sampler records the largest VmRSS (every 100 ms) and go_goroutines (every
// scrapeEvery, if > 0) of a process until stopped, and hands every scrape to
// health (if not nil).
type sampler struct {
	mu         sync.Mutex
	maxRSS     uint64
	goroutines float64
	stopc      chan struct{}
	done       chan struct{}
}

func startSampler(p *proc, scrapeEvery time.Duration, health *healthWatch) *sampler {
	s := &sampler{goroutines: -1, stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		lastScrape := time.Now()
		for {
			if m, err := p.memory(); err == nil {
				s.mu.Lock()
				s.maxRSS = max(s.maxRSS, m.RSS)
				s.mu.Unlock()
			}
			if scrapeEvery > 0 && time.Since(lastScrape) >= scrapeEvery {
				lastScrape = time.Now()
				if m, err := p.scrape(); err == nil {
					s.mu.Lock()
					if m.Has("go_goroutines") {
						s.goroutines = max(s.goroutines, m.Sum("go_goroutines"))
					}
					health.observe(m)
					s.mu.Unlock()
				}
			}
			select {
			case <-s.stopc:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) stop() (maxRSS uint64, goroutines float64) {
	close(s.stopc)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxRSS, s.goroutines
}

// freePort returns a loopback port that is free for both UDP and TCP (or
// TCP only), by binding port 0 and releasing it.
func freePort(udpToo bool) (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		if !udpToo {
			l.Close()
			return port, nil
		}
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port, nil
	}
	return 0, errors.New("no free port pair")
}

// pinSelf pins every thread of this process to cpu (threads started later
// inherit it) and runs Go on one P, so the generator and the fake upstream
// stay off the servers' core.
func pinSelf(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pin thread %d to CPU %d: %w", tid, cpu, err)
		}
	}
	runtime.GOMAXPROCS(1)
	return nil
}

func loadavg() [3]float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return [3]float64{}
	}
	la, _ := ParseLoadavg(string(b))
	return la
}

// udpDrops returns the receive-buffer drops so far of the UDP sockets on
// the server's DNS port and of the clients' sockets connected to it (they
// live only as long as the socket: take the client figure before the load
// closes its sockets).
func (p *proc) udpDrops() (server, clients uint64) {
	_, portStr, _ := strings.Cut(p.dns, ":")
	port, _ := strconv.Atoi(portStr)
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s, c, err := UDPDrops(string(b), port)
		if err == nil {
			server += s
			clients += c
		}
	}
	return server, clients
}
