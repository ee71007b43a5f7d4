//go:build linux

package main

import (
	"fmt"
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

// An upgrade as a DaemonSet with maxSurge does it: a new nodedns starts
// on the node while the old one serves, then the old one gets SIGTERM.
// Under continuous load from 16 clients, not one query is lost; the new
// process takes the old one's cache through the snapshot and answers the
// names in use without asking the upstream again.
func TestDaemonUpgradeLosesNoQueryAndKeepsTheCache(t *testing.T) {
	up := startUpstream(t, "192.0.2.1")
	snap := filepath.Join(t.TempDir(), "cache.snapshot")
	addr := testutil.FreeAddr(t)
	args := []string{"--upstream", up.Addr, "--cache-snapshot", snap, "--handover-wait", "5s", "--prefetch-min-hits", "0"}
	old := testutil.StartDaemonAt(t, addr, args...)
	const names = 300
	name := func(i int) string { return fmt.Sprintf("n%d.upgrade.test.", i) }
	for i := range names {
		ask(t, addr, name(i))
	}
	upstreamQueries := func() int {
		n := 0
		for i := range names {
			n += up.Count(name(i))
		}
		return n
	}
	warm := upstreamQueries()

	// Load: 16 clients, each a query every 2 ms for 4 s (8k qps in all).
	dst, _ := net.ResolveUDPAddr("udp", addr)
	var sent, answered, wrong atomic.Int64
	var wg sync.WaitGroup
	for c := range 16 {
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
				n, err := conn.Read(buf)
				if err != nil {
					return
				}
				r := new(dns.Msg)
				if r.Unpack(buf[:n]) != nil || answerIP(r) != "192.0.2.1" {
					wrong.Add(1)
				}
				answered.Add(1)
			}
		})
		wg.Go(func() {
			for i := range 2000 {
				m := new(dns.Msg)
				m.SetQuestion(name((c*2000+i)%names), dns.TypeA)
				b, _ := m.Pack()
				if _, err := conn.WriteToUDP(b, dst); err != nil {
					t.Error(err)
					return
				}
				sent.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	// The new pod shares the node's network: its HTTP port too.
	next := testutil.StartDaemonAt(t, addr, append(args, "--http-listen", old.HTTP)...)
	next.HTTP = old.HTTP
	line := waitLog(t, next, "cache snapshot loaded")
	time.Sleep(500 * time.Millisecond)
	if err := old.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := old.Wait(); err != nil {
		t.Fatalf("the old nodedns exited with %v\n%s", err, old.Out)
	}
	wg.Wait()
	if code, _ := httpGet(t, "http://"+next.HTTP+"/ready"); code != 200 {
		t.Errorf("/ready on the shared HTTP port after the upgrade: %d, want the new process's 200", code)
	}

	if lost := sent.Load() - answered.Load(); lost != 0 || wrong.Load() != 0 {
		t.Errorf("across the upgrade: %d of %d queries lost, %d wrong answers", lost, sent.Load(), wrong.Load())
	}
	if !strings.Contains(old.Out.String(), "handed the listen addresses over") {
		t.Errorf("the old nodedns did not hand over:\n%s", old.Out)
	}
	if got := upstreamQueries() - warm; got > names/20 {
		t.Errorf("the new nodedns asked the upstream %d times for the %d names in use, want at most 5%% (%d); its snapshot: %s",
			got, names, names/20, line)
	}
	t.Logf("%d queries across the upgrade, none lost; the new process loaded %s; upstream queries for the warm set after the warm-up: %d",
		sent.Load(), strings.TrimSpace(line[strings.Index(line, "\"entries\""):]), upstreamQueries()-warm)
}
