package bench

import (
	"context"
	"errors"
	"maps"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func mustRun(t *testing.T, cfg Config) *Report {
	t.Helper()
	r, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r.Sent != r.Answered+r.Lost {
		t.Errorf("sent %d != answered %d + lost %d", r.Sent, r.Answered, r.Lost)
	}
	return r
}

func mixedQueries() []Query {
	return []Query{
		{"www.example.test.", dns.TypeA},
		{"nx-1.example.test.", dns.TypeA},
		{"sf-1.example.test.", dns.TypeA},
		{"ref-1.example.test.", dns.TypeA},
		{"nodata-1.example.test.", dns.TypeA},
		{"tc-1.example.test.", dns.TypeA},
		{"aaaa.example.test.", dns.TypeAAAA}, // NODATA too: only A has data
	}
}

// Counts are exact for a --count run and rcodes are tallied by name exactly
// as the server sent them.
func TestRunCountExactUDP(t *testing.T) {
	s := startServer(t, serverOpts{})
	r := mustRun(t, Config{
		Server:      s.addr,
		Queries:     mixedQueries(),
		Count:       2000,
		Concurrency: 24,
		Sockets:     5,
		Timeout:     5 * time.Second,
	})
	if r.Sent != 2000 || r.Answered != 2000 || r.Lost != 0 {
		t.Fatalf("sent/answered/lost = %d/%d/%d, want 2000/2000/0", r.Sent, r.Answered, r.Lost)
	}
	if got := s.queries.Load(); got != 2000 {
		t.Errorf("server saw %d queries, want 2000", got)
	}
	if want := s.rcodeCounts(); !maps.Equal(r.Rcodes, want) {
		t.Errorf("rcodes = %v, server sent %v", r.Rcodes, want)
	}
	for _, rc := range []string{"NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED"} {
		if r.Rcodes[rc] == 0 {
			t.Errorf("no %s counted: %v", rc, r.Rcodes)
		}
	}
	if r.NoData != uint64(s.nodata) || r.NoData == 0 {
		t.Errorf("nodata = %d, server sent %d", r.NoData, s.nodata)
	}
	if r.TC != uint64(s.tc) || r.TC == 0 {
		t.Errorf("truncated = %d, server sent %d", r.TC, s.tc)
	}
	if r.Unexpected+r.Mismatched+r.Garbage+r.Late != 0 {
		t.Errorf("anomalies: %+v", r)
	}
	if r.Latency.P50 <= 0 || r.Latency.Max < r.Latency.P99 || r.Latency.P99 < r.Latency.P50 {
		t.Errorf("latency summary inconsistent: %+v", r.Latency)
	}
	if r.Mode != "closed" || r.Transport != "udp" || r.Sockets != 5 {
		t.Errorf("mode/transport/sockets = %s/%s/%d", r.Mode, r.Transport, r.Sockets)
	}
}

// A run of as many queries as the list has asks each of them exactly once,
// however the list divides among the sockets: one pass of a warm-up must
// cache every name. A run of k times as many asks each k times.
func TestRunCountOnePass(t *testing.T) {
	for _, c := range []struct {
		names, sockets, passes int
		qps                    float64
	}{{1000, 16, 1, 0}, {5000, 16, 1, 0}, {997, 7, 1, 0}, {10, 3, 1, 0}, {2, 4, 50, 0}, {7, 16, 3, 0}, {1000, 16, 1, 5000}} {
		s := startServer(t, serverOpts{recordNames: true})
		count := c.names * c.passes
		cfg := Config{Server: s.addr, Names: c.names, Zone: "once.test.", Count: int64(count),
			Sockets: c.sockets, Timeout: 5 * time.Second, Duration: 10 * time.Second}
		if c.qps > 0 {
			cfg.QPS = c.qps
		} else {
			cfg.Concurrency = max(c.sockets, min(count, 48))
		}
		r := mustRun(t, cfg)
		if r.Sent != uint64(count) || r.Lost != 0 {
			t.Fatalf("%+v: sent %d, lost %d", c, r.Sent, r.Lost)
		}
		seen := map[string]int{}
		for _, n := range s.seen() {
			seen[n]++
		}
		if len(seen) != c.names {
			t.Errorf("%+v: %d distinct names asked of %d", c, len(seen), c.names)
		}
		for n, k := range seen {
			if k != c.passes {
				t.Errorf("%+v: %s asked %d times, want %d", c, n, k, c.passes)
			}
		}
	}
}

// Queries the server drops are counted lost, each exactly once.
func TestRunCountsLost(t *testing.T) {
	s := startServer(t, serverOpts{dropEvery: 7})
	r := mustRun(t, Config{
		Server:      s.addr,
		Names:       50,
		Count:       700,
		Concurrency: 20,
		Timeout:     150 * time.Millisecond,
	})
	if r.Sent != 700 {
		t.Fatalf("sent = %d, want 700", r.Sent)
	}
	if r.Lost != uint64(s.dropped.Load()) || r.Lost != 100 {
		t.Errorf("lost = %d, server dropped %d (want 100)", r.Lost, s.dropped.Load())
	}
	if r.Answered != uint64(s.replied.Load()) {
		t.Errorf("answered = %d, server replied %d", r.Answered, s.replied.Load())
	}
}

func TestRunOpenLoop(t *testing.T) {
	s := startServer(t, serverOpts{})
	// Count bound: exactly Count queries, at (roughly) the requested rate.
	r := mustRun(t, Config{
		Server:   s.addr,
		Names:    10,
		QPS:      4000,
		Count:    400,
		Duration: 30 * time.Second,
		Timeout:  2 * time.Second,
	})
	if r.Sent != 400 || r.Answered != 400 || r.Mode != "open" {
		t.Fatalf("sent/answered/mode = %d/%d/%s, want 400/400/open", r.Sent, r.Answered, r.Mode)
	}
	// 400 queries at 4000/s take 0.1 s; allow a wide margin either way
	// (this is a loose check that the schedule is honoured, not a timing
	// assertion on the machine's speed).
	if r.Duration < 0.05 || r.Duration > 10 {
		t.Errorf("duration %.3fs for 400 queries at 4000 qps", r.Duration)
	}
	if r.SendLag == nil {
		t.Error("no send lag in open loop")
	}

	// Duration bound: about QPS*Duration queries, never more than due.
	r = mustRun(t, Config{
		Server:   s.addr,
		Names:    10,
		QPS:      2000,
		Duration: 300 * time.Millisecond,
		Timeout:  time.Second,
	})
	if r.Sent > 600 || r.Sent+r.Unsent+r.Skipped < 500 {
		t.Errorf("sent %d (unsent %d, skipped %d) at 2000 qps for 0.3s, want ~600", r.Sent, r.Unsent, r.Skipped)
	}
}

// Warmup queries go to the server but are not counted.
func TestRunWarmup(t *testing.T) {
	s := startServer(t, serverOpts{})
	r := mustRun(t, Config{
		Server:      s.addr,
		Names:       10,
		Concurrency: 2,
		Count:       100,
		Warmup:      50 * time.Millisecond,
	})
	if r.Sent != 100 || r.Answered != 100 {
		t.Fatalf("sent/answered = %d/%d, want 100/100", r.Sent, r.Answered)
	}
	if got := s.queries.Load(); got <= 100 {
		t.Errorf("server saw %d queries, want warmup queries on top of 100", got)
	}
}

// TCP pipelines many queries on each of a few connections.
func TestRunTCP(t *testing.T) {
	s := startServer(t, serverOpts{})
	r := mustRun(t, Config{
		Server:      s.addr,
		TCP:         true,
		Queries:     mixedQueries(),
		Count:       1500,
		Concurrency: 12,
		Sockets:     3,
		Timeout:     5 * time.Second,
	})
	if r.Sent != 1500 || r.Answered != 1500 {
		t.Fatalf("sent/answered = %d/%d, want 1500/1500", r.Sent, r.Answered)
	}
	if c := s.conns.Load(); c != 3 || r.Connections != 3 {
		t.Errorf("connections: server accepted %d, client opened %d; want 3", c, r.Connections)
	}
	if want := s.rcodeCounts(); !maps.Equal(r.Rcodes, want) {
		t.Errorf("rcodes = %v, server sent %v", r.Rcodes, want)
	}
	if r.Transport != "tcp" {
		t.Errorf("transport = %s", r.Transport)
	}

	// Open loop over TCP: one pacer, three connections.
	r = mustRun(t, Config{
		Server:  s.addr,
		TCP:     true,
		Names:   5,
		QPS:     5000,
		Count:   300,
		Sockets: 3,
		Timeout: 5 * time.Second,
	})
	if r.Sent != 300 || r.Answered != 300 || r.Connections != 3 {
		t.Errorf("open loop: sent/answered/conns = %d/%d/%d, want 300/300/3", r.Sent, r.Answered, r.Connections)
	}
}

// When the server closes connections (miekg closes after MaxTCPQueries),
// the client reconnects and re-sends what was in flight: nothing is lost.
func TestRunTCPReconnect(t *testing.T) {
	s := startServer(t, serverOpts{maxTCPQueries: 50})
	r := mustRun(t, Config{
		Server:      s.addr,
		TCP:         true,
		Names:       20,
		Count:       1000,
		Concurrency: 16,
		Sockets:     2,
		Timeout:     5 * time.Second,
	})
	if r.Sent != 1000 || r.Answered != 1000 || r.Lost != 0 {
		t.Fatalf("sent/answered/lost = %d/%d/%d, want 1000/1000/0", r.Sent, r.Answered, r.Lost)
	}
	if c := s.conns.Load(); c < 1000/50 || r.Connections != uint64(c) {
		t.Errorf("connections: server accepted %d, client opened %d; want >= 20 and equal", c, r.Connections)
	}
}

// Random names are unique (cache misses).
func TestRunRandomZone(t *testing.T) {
	s := startServer(t, serverOpts{recordNames: true})
	r := mustRun(t, Config{
		Server:      s.addr,
		RandomZone:  "miss.test",
		QType:       dns.TypeAAAA,
		Count:       500,
		Concurrency: 8,
	})
	if r.Answered != 500 {
		t.Fatalf("answered = %d", r.Answered)
	}
	seen := map[string]bool{}
	for _, n := range s.seen() {
		if seen[n] {
			t.Fatalf("duplicate name %s", n)
		}
		seen[n] = true
		if !dns.IsSubDomain("miss.test.", n[:len(n)-len(" AAAA")]) || n[len(n)-4:] != "AAAA" {
			t.Fatalf("unexpected question %q", n)
		}
	}
	if len(seen) != 500 {
		t.Errorf("%d distinct names, want 500", len(seen))
	}
}

// Replies that do not match an outstanding query are counted, not taken.
func TestRunCountsAnomalies(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			send := func(m *dns.Msg) {
				b, _ := m.Pack()
				_, _ = pc.WriteToUDPAddrPort(b, from)
			}
			_, _ = pc.WriteToUDPAddrPort([]byte("garbage"), from)
			other := new(dns.Msg)
			other.SetReply(q)
			other.Id = q.Id + 1 // not in flight with one query outstanding
			send(other)
			wrong := new(dns.Msg)
			wrong.SetReply(q)
			wrong.Question[0].Name = "other.test."
			send(wrong)
			m := new(dns.Msg)
			m.SetReply(q)
			m.Rcode = dns.RcodeNameError
			send(m)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })

	r := mustRun(t, Config{
		Server:      pc.LocalAddr().String(),
		Names:       3,
		Count:       20,
		Concurrency: 1,
		Timeout:     5 * time.Second,
	})
	if r.Answered != 20 || r.Rcodes["NXDOMAIN"] != 20 {
		t.Errorf("answered %d, rcodes %v; want 20 NXDOMAIN", r.Answered, r.Rcodes)
	}
	if r.Garbage != 20 || r.Unexpected != 20 || r.Mismatched != 20 {
		t.Errorf("garbage/unexpected/mismatched = %d/%d/%d, want 20 each", r.Garbage, r.Unexpected, r.Mismatched)
	}
}

func TestRunRefusesRemote(t *testing.T) {
	for _, srv := range []string{"192.0.2.1:53", "[2001:db8::1]:53", "10.0.0.1:53", "0.0.0.0:53", "ns.example.com:53"} {
		_, err := Run(context.Background(), Config{Server: srv, Names: 1, Count: 1})
		if err == nil {
			t.Errorf("Run(%s) succeeded", srv)
		}
	}
	_, err := Run(context.Background(), Config{Server: "192.0.2.1:53", Names: 1, Count: 1})
	if !errors.Is(err, ErrNotLoopback) {
		t.Errorf("err = %v, want ErrNotLoopback", err)
	}
}

func TestResolveTarget(t *testing.T) {
	tests := []struct {
		in     string
		remote bool
		want   string // "" = error
	}{
		{"127.0.0.1:53", false, "127.0.0.1:53"},
		{"127.8.9.10:5353", false, "127.8.9.10:5353"},
		{"localhost:53", false, "127.0.0.1:53"},
		{"[::1]:53", false, "[::1]:53"},
		{"[::ffff:127.0.0.1]:53", false, "127.0.0.1:53"},
		{"192.0.2.1:53", false, ""},
		{"[fe80::1%lo]:53", false, ""},
		{"192.0.2.1:53", true, "192.0.2.1:53"},
		{"dns.example:53", true, ""}, // never resolved
		{"127.0.0.1", false, ""},
		{"127.0.0.1:0", false, ""},
		{"127.0.0.1:70000", false, ""},
		{"0.0.0.0:53", true, ""},
	}
	for _, tt := range tests {
		got, err := ResolveTarget(tt.in, tt.remote)
		if tt.want == "" {
			if err == nil {
				t.Errorf("ResolveTarget(%q, %v) = %v, want error", tt.in, tt.remote, got)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("ResolveTarget(%q, %v) = %v, %v; want %s", tt.in, tt.remote, got, err, tt.want)
		}
	}
}

func TestRunBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no source":     {Server: "127.0.0.1:53"},
		"two sources":   {Server: "127.0.0.1:53", Names: 1, RandomZone: "x.test"},
		"qps and conc":  {Server: "127.0.0.1:53", Names: 1, QPS: 1, Concurrency: 1},
		"sockets>conc":  {Server: "127.0.0.1:53", Names: 1, Concurrency: 2, Sockets: 3},
		"ndots and qps": {Server: "127.0.0.1:53", NdotsNames: []Query{{Name: "a"}}, QPS: 5},
		"bad zone":      {Server: "127.0.0.1:53", RandomZone: "a..b"},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// Cancelling the context stops the run early with partial results.
func TestRunCancel(t *testing.T) {
	s := startServer(t, serverOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	r, err := Run(ctx, Config{
		Server:      s.addr,
		Names:       10,
		Concurrency: 4,
		Duration:    time.Minute,
		Progress: func(p Progress) {
			calls++
			cancel()
		},
	})
	if !errors.Is(err, context.Canceled) || r == nil {
		t.Fatalf("Run = %v, %v; want partial report and context.Canceled", r, err)
	}
	if calls == 0 || r.Sent == 0 || r.Sent != r.Answered+r.Lost {
		t.Errorf("progress calls %d, sent/answered/lost %d/%d/%d", calls, r.Sent, r.Answered, r.Lost)
	}
}
