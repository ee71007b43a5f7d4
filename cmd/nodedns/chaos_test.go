package main

import (
	"fmt"
	"hash/fnv"
	"net"
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

// chaosUpstream is a real DNS server on loopback whose behaviour a test
// switches while load runs: it answers every A query with an address that
// depends only on the name (so that a wrong answer can be told from a
// right one), and can be made slow, failing, refusing, silent, dead (port
// closed), flapping, or silent for one domain only.
type chaosUpstream struct {
	t       *testing.T
	Addr    string
	mode    atomic.Value // string
	queries atomic.Int64

	mu   sync.Mutex
	stop func() // closes the port; nil while it is closed
}

const (
	modeOK       = "ok"
	modeSlow     = "slow"     // answers after 500 ms
	modeServFail = "servfail" // answers SERVFAIL
	modeRefused  = "refused"  // answers REFUSED
	modeSilent   = "silent"   // reads and never answers
	modeKilled   = "killed"   // the port is closed: ICMP unreachable
	modeFlapping = "flapping" // silent and answering by turns of 300 ms
	modeDeadName = "deadname" // names under dead.test. are silent, others answered
)

// expectedIP is the one right answer for name.
func expectedIP(name string) string {
	h := fnv.New32a()
	h.Write([]byte(strings.ToLower(name)))
	v := h.Sum32()
	return fmt.Sprintf("10.%d.%d.%d", v>>16&0xFF, v>>8&0xFF, v&0xFF)
}

func startChaosUpstream(t *testing.T) *chaosUpstream {
	u := &chaosUpstream{t: t}
	u.mode.Store(modeOK)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.Addr = pc.LocalAddr().String()
	u.serve(pc)
	return u
}

// serve answers on pc (UDP only: a closed port is then refused at once).
func (u *chaosUpstream) serve(pc net.PacketConn) {
	stop := testutil.Serve(u.t, &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(u.handle)})
	u.mu.Lock()
	u.stop = stop
	u.mu.Unlock()
}

func (u *chaosUpstream) close() {
	u.mu.Lock()
	stop := u.stop
	u.stop = nil
	u.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// set switches the behaviour; killed closes the port and any other mode
// opens it again on the same address.
func (u *chaosUpstream) set(mode string) {
	old := u.mode.Swap(mode)
	switch {
	case mode == modeKilled:
		u.close()
	case old == modeKilled:
		pc, err := net.ListenPacket("udp", u.Addr)
		if err != nil {
			u.t.Fatalf("reopening the upstream's port: %v", err)
		}
		u.serve(pc)
	}
}

func (u *chaosUpstream) handle(w dns.ResponseWriter, r *dns.Msg) {
	u.queries.Add(1)
	q := r.Question[0]
	mode := u.mode.Load().(string)
	if mode == modeFlapping {
		mode = modeOK
		if time.Now().UnixMilli()/300%2 == 0 {
			mode = modeSilent
		}
	}
	if mode == modeDeadName {
		mode = modeOK
		if dns.IsSubDomain("dead.test.", dns.CanonicalName(q.Name)) {
			mode = modeSilent
		}
	}
	m := new(dns.Msg)
	m.SetReply(r)
	switch mode {
	case modeSilent:
		return
	case modeServFail:
		m.Rcode = dns.RcodeServerFailure
	case modeRefused:
		m.Rcode = dns.RcodeRefused
	case modeSlow:
		time.Sleep(500 * time.Millisecond)
		fallthrough
	default:
		if q.Qtype == dns.TypeA {
			rr, _ := dns.NewRR(fmt.Sprintf("%s 1 IN A %s", q.Name, expectedIP(q.Name)))
			m.Answer = append(m.Answer, rr)
		} else if q.Qtype != dns.TypeNS || q.Name != "." {
			soa, _ := dns.NewRR("test. 1 IN SOA ns.test. h.test. 1 60 60 60 1")
			m.Ns = append(m.Ns, soa)
		}
	}
	_ = w.WriteMsg(m)
}

// outcome counts what clients got.
type outcome struct {
	right, stale, servfail, lost, wrong atomic.Int64
	wrongExample                        atomic.Value
}

func (o *outcome) String() string {
	return fmt.Sprintf("right %d, stale %d, SERVFAIL %d, lost %d, wrong %d",
		o.right.Load(), o.stale.Load(), o.servfail.Load(), o.lost.Load(), o.wrong.Load())
}

// classify sorts one reply to an A query for name.
func (o *outcome) classify(name string, r *dns.Msg, err error) {
	switch {
	case err != nil:
		o.lost.Add(1)
	case r.Rcode == dns.RcodeServerFailure && len(r.Answer) == 0:
		o.servfail.Add(1)
	case r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1 && answerIP(r) == expectedIP(name):
		if r.Answer[0].Header().Ttl == 30 {
			o.stale.Add(1)
		} else {
			o.right.Add(1)
		}
	default:
		o.wrong.Add(1)
		o.wrongExample.Store(fmt.Sprintf("%s: %v", name, r))
	}
}

// load runs clients against addr until stop is closed: each asks names
// from a warm set (cached, then stale once their 1 s TTL runs out) and now
// and then a name never asked before; o counts what they got.
func load(addr string, clients int, warm []string, o func() *outcome, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	var unique atomic.Int64
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &dns.Client{Timeout: 3 * time.Second}
			for i := 0; ; i++ { // until stop, at most one query in flight per client
				select {
				case <-stop:
					return
				default:
				}
				name := warm[(i*7+c)%len(warm)]
				if i%5 == 0 {
					name = fmt.Sprintf("u%d.fresh.test.", unique.Add(1))
				}
				m := new(dns.Msg)
				m.SetQuestion(name, dns.TypeA)
				r, _, err := cl.Exchange(m, addr)
				o().classify(name, r, err)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	return &wg
}

// TestDaemonChaos runs live load through nodedns while its upstream goes
// through every failure a cluster DNS has, and a bad config arrives by
// SIGHUP. Whatever happens, no answer is ever wrong, and every query gets
// one; what is answered, stale or failed in each phase is logged.
func TestDaemonChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("runs live load for about 30 s")
	}
	up := startChaosUpstream(t)
	cfg := filepath.Join(t.TempDir(), "nodedns.yaml")
	writeFile(t, cfg, fmt.Sprintf(`upstreams:
  - zones: ["."]
    servers: ["%s"]
    timeout: 300ms
    health_interval: 300ms
server:
  request_timeout: 1s
  max_queue_wait: 300ms
  stale_answer_timeout: 200ms
`, up.Addr))
	d := testutil.StartDaemon(t, "--config", cfg)
	var warm []string
	for i := range 40 {
		warm = append(warm, fmt.Sprintf("w%d.warm.test.", i))
	}
	for _, n := range warm {
		if r := ask(t, d.DNS, n); answerIP(r) != expectedIP(n) {
			t.Fatalf("warming %s: %v", n, r)
		}
	}

	var cur atomic.Pointer[outcome]
	cur.Store(new(outcome))
	stop := make(chan struct{})
	wg := load(d.DNS, 4, warm, cur.Load, stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	type phase struct {
		name    string
		run     func()
		check   func(t *testing.T, o *outcome)
		healthy bool // the upstream answers: wait until it is in rotation
	}
	noFailures := func(t *testing.T, o *outcome) {
		if o.servfail.Load() != 0 {
			t.Errorf("%d SERVFAIL with a working upstream", o.servfail.Load())
		}
	}
	staleForWarm := func(t *testing.T, o *outcome) {
		if o.stale.Load() == 0 {
			t.Error("no stale answer for the cached names")
		}
	}
	deadDomain := func() { // a client that asks a dead domain over and over
		stopDead := make(chan struct{})
		go func() {
			for {
				select {
				case <-stopDead:
					return
				default:
				}
				m := new(dns.Msg)
				m.SetQuestion("api.dead.test.", dns.TypeA)
				_, _, _ = (&dns.Client{Timeout: 3 * time.Second}).Exchange(m, d.DNS)
			}
		}()
		t.Cleanup(func() { close(stopDead) })
	}
	phases := []phase{
		{"upstream answers", func() { up.set(modeOK) }, noFailures, true},
		{"upstream slow (500 ms)", func() { up.set(modeSlow) }, staleForWarm, false},
		{"upstream answers SERVFAIL", func() { up.set(modeServFail) }, staleForWarm, false},
		{"upstream answers REFUSED", func() { up.set(modeRefused) }, staleForWarm, false},
		{"upstream silent", func() { up.set(modeSilent) }, staleForWarm, false},
		{"upstream killed (port closed)", func() { up.set(modeKilled) }, staleForWarm, false},
		{"upstream back", func() { up.set(modeOK) }, noFailures, true},
		{"upstream flapping", func() { up.set(modeFlapping) }, nil, false},
		{"one domain dead, others fine", func() { up.set(modeDeadName); deadDomain() }, noFailures, true},
		{"bad config on SIGHUP", func() {
			up.set(modeOK)
			writeFile(t, cfg, "upstreams: [{zones: [\".\"], servers: [\"nonsense\"]}]\n")
			_ = d.Cmd.Process.Signal(syscall.SIGHUP)
		}, noFailures, true},
	}
	healthy := fmt.Sprintf("nodedns_upstream_healthy{upstream=%q} 1", up.Addr)
	var total outcome
	for _, p := range phases {
		o := new(outcome)
		p.run()
		if p.healthy {
			waitMetric(t, d, healthy)
		}
		time.Sleep(500 * time.Millisecond) // let the change show before counting
		cur.Store(o)
		time.Sleep(2 * time.Second)
		cur.Store(new(outcome))
		t.Logf("%-32s %s", p.name, o)
		if o.wrong.Load() != 0 {
			t.Errorf("%s: %d wrong answers, e.g. %v", p.name, o.wrong.Load(), o.wrongExample.Load())
		}
		if o.lost.Load() != 0 {
			t.Errorf("%s: %d queries got no answer", p.name, o.lost.Load())
		}
		if p.check != nil {
			t.Run(p.name, func(t *testing.T) { p.check(t, o) })
		}
		total.right.Add(o.right.Load())
	}
	if total.right.Load() == 0 {
		t.Error("no right answer at all")
	}
	waitLog(t, d, "config reload rejected")
}

// A client looking up one dead domain over and over, as glibc does (A and
// AAAA, retries), while others resolve: the cluster DNS stays in rotation
// and nobody else gets a failure.
func TestDaemonDeadDomainKeepsTheUpstreamInRotation(t *testing.T) {
	up := startChaosUpstream(t)
	up.set(modeDeadName)
	d := testutil.StartDaemon(t, "--upstream", up.Addr, "--upstream-timeout", "300ms",
		"--request-timeout", "600ms", "--max-queue-wait", "300ms")
	var others outcome
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the others
		defer wg.Done()
		cl := &dns.Client{Timeout: 3 * time.Second}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("n%d.live.test.", i%50)
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeA)
			r, _, err := cl.Exchange(m, d.DNS)
			others.classify(name, r, err)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	for range 5 { // the dead domain's client: A and AAAA together, again and again
		var pair sync.WaitGroup
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
			pair.Add(1)
			go func() {
				defer pair.Done()
				m := new(dns.Msg)
				m.SetQuestion("api.dead.test.", qt)
				_, _, _ = (&dns.Client{Timeout: 3 * time.Second}).Exchange(m, d.DNS)
			}()
		}
		pair.Wait()
	}
	close(stop)
	wg.Wait()
	t.Logf("the others: %s", &others)
	if others.servfail.Load()+others.lost.Load()+others.wrong.Load() != 0 || others.right.Load() == 0 {
		t.Errorf("the others: %s; want every answer right", &others)
	}
	_, metrics := httpGet(t, "http://"+d.HTTP+"/metrics")
	if !strings.Contains(metrics, fmt.Sprintf("nodedns_upstream_healthy{upstream=%q} 1", up.Addr)) {
		t.Errorf("the upstream left rotation:\n%s", grepLines(metrics, "nodedns_upstream_healthy"))
	}
	if strings.Contains(d.Out.String(), "marked down") {
		t.Errorf("the upstream was marked down:\n%s", d.Out)
	}
}

// A pod that looks up 1,000 names at once with the default caps gets
// 1,000 answers from an idle upstream: no cap on slots, waiters or a
// client's share refuses any of them. How long the queued half waits
// depends on the machine's load, so the queue wait is not what is tested.
func TestDaemonBurstFromOneAddressIsAnswered(t *testing.T) {
	up := startChaosUpstream(t)
	d := testutil.StartDaemon(t, "--upstream", up.Addr, "--max-queue-wait", "30s", "--request-timeout", "40s")
	dst, _ := net.ResolveUDPAddr("udp", d.DNS)
	const n, socks = 1000, 10
	var got outcome
	var wg sync.WaitGroup
	for s := range socks {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetReadBuffer(1 << 20)
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1500)
			for range n / socks {
				_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				k, err := conn.Read(buf)
				if err != nil {
					got.lost.Add(1)
					continue
				}
				r := new(dns.Msg)
				if err := r.Unpack(buf[:k]); err != nil {
					got.wrong.Add(1)
					continue
				}
				id := int(r.Id) - 1
				got.classify(fmt.Sprintf("b%d.burst.test.", id), r, nil)
			}
		}()
		for i := s; i < n; i += socks {
			m := new(dns.Msg)
			m.SetQuestion(fmt.Sprintf("b%d.burst.test.", i), dns.TypeA)
			m.Id = uint16(i + 1)
			b, _ := m.Pack()
			if _, err := conn.WriteToUDP(b, dst); err != nil {
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	if got.right.Load() != n {
		t.Errorf("a burst of %d distinct names: %s; want every one answered", n, &got)
	}
}

// nodedns forwarding to a server that forwards back to it (resolv.conf
// pointing at the node-local address): the loop is found by its probe,
// reported, and queries fail at once instead of circling; the upstream
// stays in rotation.
func TestDaemonDetectsAForwardingLoop(t *testing.T) {
	nodedns := testutil.FreeAddr(t)
	relay := startRelay(t, nodedns)
	d := testutil.StartDaemonAt(t, nodedns, "--upstream", relay)
	waitLog(t, d, "forwarding loop")
	start := time.Now()
	r := ask(t, d.DNS, "www.example.org.")
	if r.Rcode != dns.RcodeServerFailure || time.Since(start) > time.Second {
		t.Errorf("in a loop: %s after %v, want SERVFAIL at once", dns.RcodeToString[r.Rcode], time.Since(start))
	}
	_, metrics := httpGet(t, "http://"+d.HTTP+"/metrics")
	for _, want := range []string{
		`nodedns_upstream_loop_detected{group="default"} 1`,
		fmt.Sprintf("nodedns_upstream_healthy{upstream=%q} 1", relay),
		`nodedns_shed_total{reason="loop"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// startRelay starts a forwarder on loopback that sends every query to
// target and relays the answer, as a CoreDNS with "forward . /etc/resolv.conf"
// on a node whose resolv.conf names the node-local address does.
func startRelay(t *testing.T, target string) string {
	t.Helper()
	return testutil.StartUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		resp, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(r, target)
		if err != nil {
			return
		}
		_ = w.WriteMsg(resp)
	}).Addr
}

// waitMetric waits until /metrics has a line containing want.
func waitMetric(t *testing.T, d *testutil.Daemon, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, m := httpGet(t, "http://"+d.HTTP+"/metrics")
		if strings.Contains(m, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics never showed %q", want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
