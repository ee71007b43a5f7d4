package upstream

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// rawResponder answers UDP queries on loopback, recording the source port
// of each; hold > 0 keeps that many queries and answers them in reverse
// order of arrival; late answers each query twice, the second after the
// first.
type rawResponder struct {
	conn  *net.UDPConn
	hold  int
	late  bool
	mu    sync.Mutex
	ports map[int]int
}

func startRaw(t *testing.T, hold int, late bool) *rawResponder {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &rawResponder{conn: c, hold: hold, late: late, ports: map[int]int{}}
	t.Cleanup(func() { c.Close() })
	go r.serve()
	return r
}

func (r *rawResponder) addr() string { return r.conn.LocalAddr().String() }

func (r *rawResponder) serve() {
	type held struct {
		to  *net.UDPAddr
		msg []byte
	}
	var batch []held
	buf := make([]byte, 4096)
	for {
		n, from, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		q := new(dns.Msg)
		if q.Unpack(buf[:n]) != nil {
			continue
		}
		r.mu.Lock()
		r.ports[from.Port]++
		r.mu.Unlock()
		a := new(dns.Msg)
		a.SetReply(q)
		rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 192.0.2.1")
		a.Answer = []dns.RR{rr}
		out, _ := a.Pack()
		batch = append(batch, held{from, out})
		if len(batch) < max(r.hold, 1) {
			continue
		}
		for i := len(batch) - 1; i >= 0; i-- {
			_, _ = r.conn.WriteToUDP(batch[i].msg, batch[i].to)
			if r.late {
				_, _ = r.conn.WriteToUDP(batch[i].msg, batch[i].to)
			}
		}
		batch = batch[:0]
	}
}

func (r *rawResponder) sourcePorts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ports)
}

// Queries share a few sockets, and the sockets change: 5,000 queries one
// after another leave from more than udpSockets ports (each socket is
// replaced after udpSocketUses queries) and far fewer than 5,000.
func TestUDPSocketsAreSharedAndReplaced(t *testing.T) {
	up := startRaw(t, 0, false)
	r := newRemote(t, RemoteConfig{Addr: up.addr()}, nil)
	const n = 5000
	for i := range n {
		resp, err := r.Exchange(ctxWithTimeout(t, 2*time.Second), query(fmt.Sprintf("n%d.example.", i), dns.TypeA))
		if err != nil || len(resp.Answer) != 1 {
			t.Fatalf("query %d: %v %v", i, resp, err)
		}
	}
	ports := up.sourcePorts()
	lo, hi := udpSockets+1, udpSockets*(n/(udpSockets*udpSocketUses)+2)
	t.Logf("%d queries from %d source ports", n, ports)
	if ports < lo || ports > hi {
		t.Errorf("%d source ports for %d queries; want %d to %d", ports, n, lo, hi)
	}
}

// Concurrent queries on shared sockets each get their own answer, whatever
// the order the answers come back in.
func TestUDPSharedSocketsMatchRepliesToQueries(t *testing.T) {
	const n = 64
	up := startRaw(t, n, false) // answers all 64 at once, in reverse
	r := newRemote(t, RemoteConfig{Addr: up.addr()}, nil)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			name := fmt.Sprintf("q%d.example.", i)
			resp, err := r.Exchange(ctxWithTimeout(t, 5*time.Second), query(name, dns.TypeA))
			switch {
			case err != nil:
				errs <- err
			case resp.Question[0].Name != name || len(resp.Answer) != 1 || resp.Answer[0].Header().Name != name:
				errs <- fmt.Errorf("%s answered with %v", name, resp)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A second answer to a query no longer waiting is dropped and counted as
// mismatched, not as a failed try.
func TestUDPLateReplyIsDroppedNotAFailure(t *testing.T) {
	up := startRaw(t, 0, true)
	m, _ := newTestMetrics(t)
	r := newRemote(t, RemoteConfig{Addr: up.addr()}, m)
	if _, err := r.Exchange(ctxWithTimeout(t, 2*time.Second), query("late.example.", dns.TypeA)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the late reply counted", func() bool {
		return testutil.ToFloat64(m.mismatched.WithLabelValues(r.Address())) == 1
	})
	if got := testutil.ToFloat64(m.errors.WithLabelValues(r.Address(), ReasonMismatch)); got != 0 {
		t.Errorf("errors_total{reason=mismatch} = %v for a late reply", got)
	}
}
