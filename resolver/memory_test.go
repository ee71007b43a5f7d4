package resolver

import (
	"encoding/binary"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/upstream"
)

// memInUse is the live heap and the goroutine stacks after a full
// collection: what a resolver's bounded state costs.
func memInUse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc + ms.StackInuse)
}

// maximalQuery is a query a client may send that nodedns keeps whole while
// it waits: 512 bytes, with an EDNS option the fast path leaves to the full
// parser (so it is neither cached nor coalesced: every one is a flight of
// its own).
func maximalQuery(t *testing.T, id int) []byte {
	t.Helper()
	m := query(fmt.Sprintf("w%d.worst.test.", id), dns.TypeA)
	m.SetEdns0(1232, false)
	b, _ := m.Pack()
	pad := maxKeptQuery - len(b) - 4
	m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_LOCAL{Code: 65001, Data: make([]byte, pad)})
	b, err := m.Pack()
	if err != nil || len(b) != maxKeptQuery {
		t.Fatalf("maximal query: %d bytes, %v", len(b), err)
	}
	return b
}

// The bounds hold memory to what WorstCase says: every slot in flight to a
// dead upstream through the real forwarder, the room to wait full of
// maximal queries, the TCP pool full.
func TestWorstCaseMemoryIsWhatWorstCaseSays(t *testing.T) {
	if testing.Short() {
		t.Skip("fills every bound")
	}
	if raceEnabled {
		t.Skip("the race detector grows goroutine stacks; make test runs this without it")
	}
	hole, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hole.Close() })
	go func() { // reads and never answers
		buf := make([]byte, 4096)
		for {
			if _, _, err := hole.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	g, err := upstream.NewGroup(upstream.GroupConfig{Name: "dead", Zones: []string{"."},
		Addrs: []string{hole.LocalAddr().String()}, Timeout: time.Minute}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	cfg := Config{RequestTimeout: 2 * time.Minute, MaxQueueWait: time.Minute, UDPSockets: 2}
	s := startServer(t, cfg, ForwarderFunc(g.Exchange))
	cfg = s.cfg // with the defaults filled in
	base := memInUse()

	// Every slot: distinct cacheable misses, from two clients (one alone
	// does not take the reserved tenth).
	c := newUDPClients(t, "127.0.0.1", s.addr, 8)
	c2 := newUDPClients(t, "127.0.0.2", s.addr, 8)
	for i := range cfg.MaxInflight {
		cl := c
		if i%2 == 1 {
			cl = c2
		}
		cl.send(t, uint16(i+1), query(fmt.Sprintf("s%d.worst.test.", i), dns.TypeA))
	}
	waitFor(t, "every slot taken", func() bool { return s.inflight() == cfg.MaxInflight })
	m1 := memInUse()
	t.Logf("per slot: %d bytes", (m1-base)/int64(cfg.MaxInflight))
	// The room to wait: maximal queries from many clients.
	waiting := cfg.MaxWaiters - cfg.MaxInflight // the running flights' first queries hold the rest
	dst := s.Addrs()[0]
	for i := range waiting {
		conn := c.conns[i%len(c.conns)]
		b := maximalQuery(t, i)
		binary.BigEndian.PutUint16(b, uint16(i))
		if _, err := conn.WriteToUDPAddrPort(b, dst); err != nil {
			t.Fatal(err)
		}
		if i%500 == 499 {
			want := i + 1
			waitFor(t, "queries to queue", func() bool { return s.waitingCount() == cfg.MaxInflight+want })
		}
	}
	m2 := memInUse()
	t.Logf("per waiting query: %d bytes", (m2-m1)/int64(waiting))
	// The TCP pool: each connection opened, asked a cached-nowhere query
	// that waits (so it holds its buffers), from enough addresses.
	var conns []net.Conn
	for i := range cfg.TCPMaxConns {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(i/cfg.TCPMaxConnsPerClient+1))}}
		nc, err := d.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, nc)
		t.Cleanup(func() { _ = nc.Close() })
		b := maximalQuery(t, 100000+i)
		if _, err := nc.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every TCP connection open", func() bool { return s.tcpCount() == cfg.TCPMaxConns })
	m3 := memInUse()
	t.Logf("per TCP connection: %d bytes", (m3-m2)/int64(cfg.TCPMaxConns))
	used := m3 - base
	worst := WorstCase(cfg)
	t.Logf("measured %.1f MiB beyond the idle server; WorstCase says %.1f MiB (%s)",
		float64(used)/(1<<20), float64(worst.Total())/(1<<20), worst)
	if used > worst.Total() {
		t.Errorf("measured %d bytes, above the stated worst case of %d", used, worst.Total())
	}
	if used < worst.Total()*2/3 {
		t.Errorf("measured %d bytes, far below the stated worst case of %d: the statement is stale", used, worst.Total())
	}
	runtime.KeepAlive(conns)
}
