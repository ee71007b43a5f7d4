package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
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

// Fail-open with the real binary, on a node as Kubernetes makes one: a
// "node" namespace with nodedns (its interface and rules) and kube-proxy
// emulated (a DNAT of the kube-dns Service address 10.96.0.10 to the
// cluster DNS pod, in kube-proxy's iptables chains or nftables table), a
// "cluster DNS pod" namespace with CoreDNS on 10.244.2.10, and a "pod"
// namespace sending a steady stream of queries to the node-local address
// (or, in transparent mode, to the kube-dns address) and resolving with
// glibc. CoreDNS's whoami plugin tells who asked it: the node (nodedns
// forwarding) or the pod itself (the fail-open DNAT, or kube-proxy's).
//
// For each mode and rules backend: nodedns is killed (SIGKILL), then
// started again; stopped (SIGSTOP), then continued; and finally stopped
// with SIGTERM, which leaves nothing behind. Measured each time: the gap
// (from the fault to the first query answered through the fallback), the
// queries lost, and the take-back (from nodedns ready again to the first
// query it answers).

const (
	podIP     = "10.244.1.7"
	podIP6    = "fd00:244:1::7"
	clusterIP = "10.244.2.10" // the cluster DNS pod
	cluster6  = "fd00:244:2::10"
	kubeDNS   = "10.96.0.10" // the kube-dns Service
	nodeLocal = "169.254.20.10"
	nodeLoc6  = "fd00:10::a"
)

// failBed is a node with kube-proxy emulated, a cluster DNS pod and a pod.
type failBed struct {
	node, pod, dnsPod *testutil.Netns
	nodedns           string
	backend           string // iptables-legacy, iptables-nft or nftables
	listen            []string
	target            netip.AddrPort // where the pod sends its queries
	http              string
}

var failSeq atomic.Int32

func newFailBed(t *testing.T, coredns, nodedns, backend string, transparent, ipv6 bool) *failBed {
	t.Helper()
	b := &failBed{nodedns: nodedns, backend: backend, http: nodeLocal + ":9253"}
	b.node = newNetns(t, "nameserver "+nodeLocal+"\n")
	b.dnsPod = newNetns(t, "nameserver 127.0.0.1\n")
	b.pod = newNetns(t, "")
	b.node.Exec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	b.node.Exec(t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")

	seq := failSeq.Add(1)
	link := func(pod *testutil.Netns, n int, ip4, ip6 string) {
		podIf, nodeIf := fmt.Sprintf("fo%d-%d-%dp", os.Getpid()%10000, seq, n), fmt.Sprintf("fo%d-%d-%dn", os.Getpid()%10000, seq, n)
		testutil.Run(t, "ip", "link", "add", podIf, "netns", pod.Name, "type", "veth", "peer", "name", nodeIf, "netns", b.node.Name)
		testutil.Run(t, "ip", "-n", pod.Name, "addr", "add", ip4+"/24", "dev", podIf)
		testutil.Run(t, "ip", "-n", pod.Name, "addr", "add", ip6+"/64", "dev", podIf, "nodad")
		testutil.Run(t, "ip", "-n", pod.Name, "link", "set", podIf, "up")
		gw4, gw6 := fmt.Sprintf("10.244.%d.1", n), fmt.Sprintf("fd00:244:%d::1", n)
		testutil.Run(t, "ip", "-n", pod.Name, "route", "add", "default", "via", gw4)
		testutil.Run(t, "ip", "-n", pod.Name, "-6", "route", "add", "default", "via", gw6)
		testutil.Run(t, "ip", "-n", b.node.Name, "addr", "add", gw4+"/24", "dev", nodeIf)
		testutil.Run(t, "ip", "-n", b.node.Name, "addr", "add", gw6+"/64", "dev", nodeIf, "nodad")
		testutil.Run(t, "ip", "-n", b.node.Name, "link", "set", nodeIf, "up")
	}
	link(b.pod, 1, podIP, podIP6)
	link(b.dnsPod, 2, clusterIP, cluster6)

	// The cluster DNS pod: whoami under whoami.test, a zone for glibc.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "test.db"), []byte(externalZone), 0o644); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 250)
	corefile := fmt.Sprintf(`whoami.test:53 {
    bind %[2]s %[3]s
    whoami
}
big.test:53 {
    bind %[2]s %[3]s
    template IN TXT {
        answer "{{ .Name }} 300 IN TXT %[4]s %[4]s %[4]s %[4]s"
    }
}
test:53 {
    bind %[2]s %[3]s
    file %[1]s/test.db
}
`, dir, clusterIP, cluster6, big)
	if err := os.WriteFile(filepath.Join(dir, "Corefile"), []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	b.dnsPod.Start(t, "coredns", coredns, "-conf", filepath.Join(dir, "Corefile"))
	b.dnsPod.WaitDNS(t, clusterIP, "53")

	// kube-proxy: the kube-dns Service's DNAT to the cluster DNS pod.
	switch backend {
	case "nftables":
		b.node.ExecStdin(t, nftKubeProxy, "nft", "-f", "-")
	default:
		ipt := backend
		for _, a := range [][]string{
			{"-t", "nat", "-N", "KUBE-SERVICES"},
			{"-t", "nat", "-I", "PREROUTING", "1", "-j", "KUBE-SERVICES"},
			{"-t", "nat", "-I", "OUTPUT", "1", "-j", "KUBE-SERVICES"},
			{"-t", "mangle", "-N", "KUBE-KUBELET-CANARY"},
		} {
			b.node.Exec(t, append([]string{ipt, "-w", "5"}, a...)...)
		}
		for _, p := range []string{"udp", "tcp"} {
			b.node.Exec(t, ipt, "-w", "5", "-t", "nat", "-A", "KUBE-SERVICES", "-d", kubeDNS+"/32", "-p", p, "--dport", "53",
				"-j", "DNAT", "--to-destination", clusterIP+":53")
		}
	}

	if transparent {
		b.listen = []string{nodeLocal + ":53", kubeDNS + ":53"}
		b.target = netip.MustParseAddrPort(kubeDNS + ":53")
	} else {
		b.listen = []string{nodeLocal + ":53"}
		b.target = netip.MustParseAddrPort(nodeLocal + ":53")
	}
	if ipv6 {
		b.listen = append(b.listen, "["+nodeLoc6+"]:53")
		b.target = netip.MustParseAddrPort("[" + nodeLoc6 + "]:53")
	}
	b.pod.SetResolvConf(t, "nameserver "+b.target.Addr().String()+"\noptions attempts:1 timeout:2\n")
	return b
}

// nftKubeProxy is kube-proxy's nftables mode, reduced to the kube-dns
// Service.
const nftKubeProxy = `table ip kube-proxy {
	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 10.96.0.10 udp dport 53 dnat to 10.244.2.10:53
		ip daddr 10.96.0.10 tcp dport 53 dnat to 10.244.2.10:53
	}
	chain nat-output {
		type nat hook output priority -100; policy accept;
		ip daddr 10.96.0.10 udp dport 53 dnat to 10.244.2.10:53
		ip daddr 10.96.0.10 tcp dport 53 dnat to 10.244.2.10:53
	}
}
`

// start runs nodedns on the node with the set-up and fail-open on.
func (b *failBed) start(t *testing.T, extra ...string) *testutil.Process {
	t.Helper()
	return b.node.Start(t, "nodedns", b.nodeArgs(extra...)...)
}

// ready reports whether nodedns's /ready answers 200.
func (b *failBed) ready() bool {
	err := exec.Command("ip", "netns", "exec", b.node.Name, "curl", "-sf", "-o", "/dev/null", "--max-time", "1", "http://"+b.http+"/ready").Run()
	return err == nil
}

// ruleset is the backend's listing, both families.
func (b *failBed) ruleset(t *testing.T) string {
	t.Helper()
	if b.backend == "nftables" {
		return b.node.Exec(t, "nft", "list", "ruleset")
	}
	return b.node.Exec(t, b.backend+"-save") + b.node.Exec(t, "ip6"+b.backend[len("ip"):]+"-save")
}

// answer is one query of the stream.
type answer struct {
	sent time.Time
	ok   bool
	via  string // "nodedns" or "fallback" (the cluster DNS asked by the pod itself)
}

// stream sends a query every period from the pod, each on a new socket (as
// a stub resolver does), and records who answered.
type stream struct {
	mu      sync.Mutex
	answers []answer
	stop    chan struct{}
	done    chan struct{}
}

func (b *failBed) startStream(t *testing.T, period time.Duration) *stream {
	t.Helper()
	s := &stream{stop: make(chan struct{}), done: make(chan struct{})}
	ready := make(chan error, 1)
	var wg sync.WaitGroup
	go func() {
		defer close(s.done)
		defer wg.Wait()
		// Sockets are made in the namespace of the thread that makes them:
		// this one, moved into the pod's while the stream runs.
		leave, err := b.pod.Enter()
		if err != nil {
			ready <- err
			return
		}
		defer leave()
		ready <- nil
		tick := time.NewTicker(period)
		defer tick.Stop()
		for seq := 0; ; seq++ {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			sent := time.Now()
			conn, err := net.Dial("udp", b.target.String())
			if err != nil {
				s.record(answer{sent: sent})
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				s.record(exchangeWhoami(conn, fmt.Sprintf("q%d-%d.whoami.test.", seq, sent.UnixNano()%1e6), sent))
			}()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.halt() })
	return s
}

func (s *stream) record(a answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answers = append(s.answers, a)
}

func (s *stream) halt() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// snapshot is the answers so far, by the time their query was sent.
func (s *stream) snapshot() []answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]answer(nil), s.answers...)
	sortAnswers(out)
	return out
}

func sortAnswers(a []answer) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j].sent.Before(a[j-1].sent); j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// exchangeWhoami asks name and reads who asked the cluster DNS from the
// whoami answer: the pod's own address means the query reached it past
// nodedns.
func exchangeWhoami(conn net.Conn, name string, sent time.Time) answer {
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	wire, _ := q.Pack()
	_ = conn.SetDeadline(sent.Add(time.Second))
	if _, err := conn.Write(wire); err != nil {
		return answer{sent: sent}
	}
	buf := make([]byte, 1500)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return answer{sent: sent} // a timeout, or ICMP unreachable
		}
		r := new(dns.Msg)
		if r.Unpack(buf[:n]) != nil || r.Id != q.Id {
			continue
		}
		via := "nodedns"
		for _, rr := range r.Extra {
			switch rr := rr.(type) {
			case *dns.A:
				if rr.A.String() == podIP {
					via = "fallback"
				}
			case *dns.AAAA:
				if rr.AAAA.String() == podIP6 {
					via = "fallback"
				}
			}
		}
		return answer{sent: sent, ok: r.Rcode == dns.RcodeSuccess, via: via}
	}
}

// waitVia waits until a query sent after since is answered by via, and
// returns when that query was sent.
func (s *stream) waitVia(t *testing.T, since time.Time, via string, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, a := range s.snapshot() {
			if a.ok && a.via == via && !a.sent.Before(since) {
				return a.sent
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no query sent after the fault was answered by %s within %v:\n%s", via, timeout, s.summary(since))
	return time.Time{}
}

// summary tells, per 250 ms from since, how the queries fared: for the
// log of a failure.
func (s *stream) summary(since time.Time) string {
	type bucket struct{ nodedns, fallback, lost int }
	var bs []bucket
	for _, a := range s.snapshot() {
		if a.sent.Before(since) {
			continue
		}
		i := int(a.sent.Sub(since) / (250 * time.Millisecond))
		for len(bs) <= i {
			bs = append(bs, bucket{})
		}
		switch {
		case !a.ok:
			bs[i].lost++
		case a.via == "fallback":
			bs[i].fallback++
		default:
			bs[i].nodedns++
		}
	}
	var b strings.Builder
	for i, x := range bs {
		fmt.Fprintf(&b, "  +%v: nodedns %d, fallback %d, lost %d\n", time.Duration(i)*250*time.Millisecond, x.nodedns, x.fallback, x.lost)
	}
	return b.String()
}

// lost counts the queries sent in [from, to) that got no answer.
func (s *stream) lost(from, to time.Time) (lost, sent int) {
	for _, a := range s.snapshot() {
		if a.sent.Before(from) || !a.sent.Before(to) {
			continue
		}
		sent++
		if !a.ok {
			lost++
		}
	}
	return lost, sent
}

// settle waits until every query sent before t has had its second to be
// answered.
func settle(t time.Time) { time.Sleep(time.Until(t.Add(1100 * time.Millisecond))) }

func TestFailOpen(t *testing.T) {
	requireRoot(t)
	// Mostly waiting (for processes and timeouts): beside the other
	// long tests.
	t.Parallel()
	requireFirewallTools(t)
	coredns := buildCoreDNS(t)
	nodedns := testutil.Binary(t, "./cmd/nodedns")

	for _, c := range []struct {
		mode, backend string
		transparent   bool
		ipv6          bool
	}{
		{"link-local", "nftables", false, false},
		{"link-local", "iptables-legacy", false, false},
		{"link-local", "iptables-nft", false, false},
		{"transparent", "nftables", true, false},
		{"transparent", "iptables-legacy", true, false},
		{"transparent", "iptables-nft", true, false},
		{"link-local-ipv6", "nftables", false, true},
		{"link-local-ipv6", "iptables-nft", false, true},
	} {
		t.Run(c.mode+"/"+c.backend, func(t *testing.T) {
			b := newFailBed(t, coredns, nodedns, c.backend, c.transparent, c.ipv6)
			p := b.start(t)
			testutil.WaitFor(t, 10*time.Second, "nodedns ready", b.ready)
			s := b.startStream(t, 10*time.Millisecond)
			s.waitVia(t, time.Now(), "nodedns", 5*time.Second)

			// SIGKILL, as an OOM kill: the process gone, its rules left.
			fault := time.Now()
			signal(t, p, syscall.SIGKILL)
			p.WaitExit(t, 10*time.Second)
			first := s.waitVia(t, fault, "fallback", 5*time.Second)
			gap := first.Sub(fault)
			if out := b.getent(t); !strings.Contains(out, "192.0.2.10") {
				t.Errorf("glibc in the pod while failed open: %q", out)
			}
			p = b.start(t)
			testutil.WaitFor(t, 10*time.Second, "nodedns ready again", b.ready)
			readyAt := time.Now()
			back := s.waitVia(t, fault.Add(time.Millisecond), "nodedns", 5*time.Second)
			takeBack := max(back.Sub(readyAt), 0)
			settle(time.Now())
			lost, sent := s.lost(fault, first)
			t.Logf("%s %s: SIGKILL: gap %v (%d of %d queries lost); take-back %v after ready",
				c.mode, c.backend, gap.Round(time.Millisecond), lost, sent, takeBack.Round(time.Millisecond))
			if gap > 2*time.Second {
				t.Errorf("SIGKILL: the gap was %v; want at most 2 s", gap)
			}
			if takeBack > 2*time.Second {
				t.Errorf("SIGKILL: taken back %v after ready; want within 2 s", takeBack)
			}
			if l, _ := s.lost(first, readyAt); l > 0 {
				t.Errorf("SIGKILL: %d queries lost after the fallback took over", l)
			}

			// SIGSTOP: a hung process.
			fault = time.Now()
			signal(t, p, syscall.SIGSTOP)
			first = s.waitVia(t, fault, "fallback", 6*time.Second)
			gap = first.Sub(fault)
			cont := time.Now()
			signal(t, p, syscall.SIGCONT)
			back = s.waitVia(t, cont, "nodedns", 5*time.Second)
			settle(time.Now())
			lost, sent = s.lost(fault, first)
			t.Logf("%s %s: SIGSTOP: gap %v (%d of %d queries lost); SIGCONT: taken back after %v",
				c.mode, c.backend, gap.Round(time.Millisecond), lost, sent, back.Sub(cont).Round(time.Millisecond))
			if gap > 3*time.Second {
				t.Errorf("SIGSTOP: the gap was %v; want at most 3 s", gap)
			}
			if d := back.Sub(cont); d > 2*time.Second {
				t.Errorf("SIGCONT: taken back after %v; want within 2 s", d)
			}
			if l, _ := s.lost(back, time.Now().Add(-1100*time.Millisecond)); l > 0 {
				t.Errorf("%d queries lost after nodedns took the traffic back", l)
			}
			s.halt()

			// SIGTERM with no successor: an uninstall, nothing left.
			terminate(t, p)
			if rs := b.ruleset(t); strings.Contains(rs, "nodedns") || strings.Contains(rs, "NODEDNS") {
				t.Errorf("rules left after SIGTERM:\n%s", rs)
			}
			if out := testutil.Run(t, "ip", "-n", b.node.Name, "addr"); strings.Contains(out, nodeLocal) {
				t.Errorf("address left after SIGTERM:\n%s", out)
			}
		})
	}
}

// getent resolves a name with glibc in the pod.
func (b *failBed) getent(t *testing.T) string {
	t.Helper()
	out, _ := exec.Command("ip", "netns", "exec", b.pod.Name, "getent", "ahosts", "example.test").CombinedOutput()
	return string(out)
}

// TestFailOpenOOMKill: nodedns in a memory cgroup (v1) with a limit, its
// cache allowed past it, fills with large answers until the kernel's OOM
// killer ends it, as a container's limit would. Queries go to the cluster
// DNS from then on, with no gap beyond the query in flight, and nodedns
// takes them back once it runs again.
func TestFailOpenOOMKill(t *testing.T) {
	requireRoot(t)
	// Not beside the other long tests: the flood keeps a core busy, and
	// the cluster DNS, on a machine that the parallel tests also load,
	// could then take more than a query's second to answer the first
	// queries the fallback sends it, which this test counts as lost.
	requireFirewallTools(t)
	const memRoot = "/sys/fs/cgroup/memory"
	if _, err := os.Stat(memRoot + "/memory.limit_in_bytes"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must run the OOM kill test: no cgroup v1 memory controller at %s", memRoot)
		}
		t.Skip("needs the cgroup v1 memory controller")
	}
	coredns := buildCoreDNS(t)
	nodedns := testutil.Binary(t, "./cmd/nodedns")
	b := newFailBed(t, coredns, nodedns, "nftables", false, false)

	cg := filepath.Join(memRoot, fmt.Sprintf("nodedns-e2e-oom-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(cg) })
	const limit = 96 << 20
	if err := os.WriteFile(filepath.Join(cg, "memory.limit_in_bytes"), []byte(fmt.Sprint(limit)), 0o644); err != nil {
		t.Fatal(err)
	}
	// The cache may outgrow the limit, and the Go runtime does not try to
	// stay under it: the kernel has to step in.
	// `ip netns exec` mounts a /sys of its own, without the cgroup
	// hierarchy: the process is moved into the cgroup from here, by PID
	// (the command execs nodedns in place), before it has cached anything.
	p := b.node.Start(t, "nodedns", b.nodeArgs("--cache-size", "1GiB", "--memory-limit-ratio", "0")...)
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(fmt.Sprint(p.Cmd.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "nodedns ready", b.ready)
	s := b.startStream(t, 10*time.Millisecond)
	s.waitVia(t, time.Now(), "nodedns", 5*time.Second)

	// 5,000 a second fills the cache past the limit in seconds. Faster,
	// nodedns forwards more of the flood than the cluster DNS can answer
	// at once: at the kill its queue holds them, and the fallback's first
	// queries wait behind them past their second.
	stop := b.flood(t, "big.test.", 5000, 90*time.Second)
	exited := make(chan time.Time, 1)
	go func() {
		_ = p.Wait()
		exited <- time.Now()
	}()
	var died time.Time
	select {
	case died = <-exited:
	case <-time.After(90 * time.Second):
		stop()
		t.Fatal("nodedns was not OOM-killed within 90 s of the flood")
	}
	stop()
	if ws, ok := p.Cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("nodedns ended with %v, want killed by SIGKILL (the OOM killer):\n%s", p.Cmd.ProcessState, p.Out.String())
	}
	if oc, _ := os.ReadFile(filepath.Join(cg, "memory.oom_control")); !strings.Contains(string(oc), "oom_kill 1") {
		t.Errorf("memory.oom_control does not count the kill:\n%s", oc)
	}
	first := s.waitVia(t, died.Add(-time.Second), "fallback", 5*time.Second)
	gap := max(first.Sub(died), 0)
	// The cluster DNS answers the pod for two seconds: what nodedns had
	// sent it of the flood drains meanwhile, so that the next nodedns
	// does not find it overloaded at start.
	time.Sleep(2 * time.Second)
	restart := time.Now()
	p = b.start(t)
	testutil.WaitFor(t, 10*time.Second, "nodedns ready again", b.ready)
	readyAt := time.Now()
	back := s.waitVia(t, restart, "nodedns", 5*time.Second)
	settle(time.Now())
	lost, sent := s.lost(died, first)
	t.Logf("OOM kill at %d MiB: first query answered by the cluster DNS %v after the process ended (%d of %d lost); taken back %v after ready",
		limit>>20, gap.Round(time.Millisecond), lost, sent, max(back.Sub(readyAt), 0).Round(time.Millisecond))
	if gap > 2*time.Second {
		t.Errorf("the gap after the OOM kill was %v; want at most 2 s", gap)
	}
	// Under memory pressure before the kill the process may answer its
	// probes one moment and not the next: the node fails open and back
	// until it dies. From its death on, every query is answered.
	from := maxTime(first, died)
	if l, _ := s.lost(from, restart); l > 0 {
		t.Errorf("%d queries lost after the process died and the fallback took over:\n%s", l, s.summary(from))
	}
	s.halt()
	terminate(t, p)
}

// nodeArgs is the command line start uses.
func (b *failBed) nodeArgs(extra ...string) []string {
	backend := b.backend
	if backend != "nftables" {
		backend = "auto" // finds kube-proxy's chains in that flavour
	}
	return append([]string{b.nodedns, "--listen", strings.Join(b.listen, ","), "--http-listen", b.http,
		"--upstream", clusterIP + ":53,[" + cluster6 + "]:53", "--log-level", "info",
		"--setup-interface", "--setup-rules", "--setup-rules-backend", backend, "--setup-interval", "1s"}, extra...)
}

// flood sends up to n queries for distinct names under zone from the pod,
// as fast as one socket goes, bounded by d; stop ends it early.
func (b *failBed) flood(t *testing.T, zone string, rate int, d time.Duration) (stop func()) {
	t.Helper()
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		leave, err := b.pod.Enter()
		if err != nil {
			return
		}
		defer leave()
		conn, err := net.Dial("udp", b.target.String())
		if err != nil {
			return
		}
		defer conn.Close()
		go func() { // drain the answers
			buf := make([]byte, 1500)
			for {
				if _, err := conn.Read(buf); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
					return
				}
			}
		}()
		tick := time.NewTicker(time.Second / 100)
		defer tick.Stop()
		end := time.Now().Add(d)
		for i := 0; time.Now().Before(end); {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			for range rate / 100 {
				q := new(dns.Msg)
				q.SetQuestion(fmt.Sprintf("f%d.%s", i, zone), dns.TypeTXT)
				q.SetEdns0(1232, false)
				wire, _ := q.Pack()
				_, _ = conn.Write(wire)
				i++
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-done
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
