//go:build linux

package resolver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// One process replaces another on the same address under continuous load:
// the old one hands the address over and answers what was queued on its
// sockets, and not one query is lost. (Closing at once, as before, drops
// the queries in its socket buffers.)
func TestHandOverLosesNoQuery(t *testing.T) {
	var calls atomic.Int64
	old := startServer(t, Config{UDPSockets: 2, HandOverWait: 5 * time.Second}, answerWith("192.0.2.1", &calls))
	addr := old.addr
	const names = 200
	for i := range names {
		exchange(t, "udp", addr, query(fmt.Sprintf("n%d.handover.test.", i), dns.TypeA))
	}

	// Load from 16 sockets (16 flows for the kernel to spread): each sends
	// its share and reads every answer.
	const socks, perSock = 16, 1500
	var sent, answered atomic.Int64
	start := make(chan struct{})
	var wg sync.WaitGroup
	dst := net.UDPAddrFromAddrPort(old.Addrs()[0])
	for s := range socks {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetReadBuffer(1 << 20)
		wg.Go(func() {
			buf := make([]byte, 1500)
			for {
				_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
				if _, err := conn.Read(buf); err != nil {
					return // every answer is in, or lost
				}
				answered.Add(1)
			}
		})
		wg.Go(func() {
			<-start
			for i := range perSock {
				m := query(fmt.Sprintf("n%d.handover.test.", (s*perSock+i)%names), dns.TypeA)
				m.Id = uint16(i)
				b, _ := m.Pack()
				if _, err := conn.WriteToUDP(b, dst); err != nil {
					t.Error(err)
					return
				}
				sent.Add(1)
				time.Sleep(2 * time.Millisecond) // about 8k queries/s in all, for 3 s

			}
		})
	}
	close(start)
	// The new process joins while the load runs, then the old one stops.
	time.Sleep(500 * time.Millisecond)
	next := startServer(t, Config{Listen: []string{addr}, UDPSockets: 2}, answerWith("192.0.2.1", &calls))
	time.Sleep(500 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := old.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if testutil.ToFloat64(old.metrics.handOvers) != 1 {
		t.Error("the old server did not hand over")
	}
	if lost := sent.Load() - answered.Load(); lost != 0 || sent.Load() != socks*perSock {
		t.Errorf("%d of %d queries lost across the hand-over", lost, sent.Load())
	}
	if n := metricTotal(t, next, "nodedns_requests_total"); n == 0 {
		t.Error("the new server answered nothing: the load never reached it")
	}
}

// With no other process on the address, a stop does not wait past
// HandOverWait, and does not hand over.
func TestHandOverWaitsOnlyThatLong(t *testing.T) {
	var calls atomic.Int64
	s := startServer(t, Config{HandOverWait: 200 * time.Millisecond}, answerWith("192.0.2.1", &calls))
	begin := time.Now()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d < 200*time.Millisecond || d > 2*time.Second {
		t.Errorf("stopped after %v, want the 200 ms wait and not much more", d)
	}
	if testutil.ToFloat64(s.metrics.handOvers) != 0 {
		t.Error("handed over to nobody")
	}
}

func TestParseProcUDP(t *testing.T) {
	for line, want := range map[string]udpSocket{
		"11507: 0100007F:3C27 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 6903328 2 000000003442c980 0": {
			local: mustAddrPort("127.0.0.1:15399"), inode: 6903328},
		"  10: 0A14FEA9:0035 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 42 2 0 0": {
			local: mustAddrPort("169.254.20.10:53"), connected: true, inode: 42},
		"  3: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000  0  0 7 2 0 0": {
			local: mustAddrPort("[::1]:53"), inode: 7},
	} {
		got, ok := parseProcUDP(line)
		if !ok || got != want {
			t.Errorf("parseProcUDP(%q) = %+v, %v; want %+v", line, got, ok, want)
		}
	}
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// metricTotal sums every sample of a metric family of the server.
func metricTotal(t *testing.T, s *testServer, family string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}
