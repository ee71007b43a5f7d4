package resolver

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/nodedns/nodedns/cache"
	"github.com/nodedns/nodedns/dnswire"
)

// echoForwarder answers every query with one A record, like a healthy
// upstream, without the network.
var echoForwarder = ForwarderFunc(func(_ context.Context, req *dns.Msg) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetReply(req)
	if req.Question[0].Qtype == dns.TypeA {
		rr, err := dns.NewRR(dns.Fqdn(req.Question[0].Name) + " 60 IN A 192.0.2.1")
		if err == nil {
			m.Answer = append(m.Answer, rr)
		}
	}
	return m, nil
})

func newUnstartedServer(tb testing.TB) *Server {
	tb.Helper()
	c, err := cache.New(cache.Config{MaxBytes: 1 << 20, Policy: cache.Policy{MaxTTL: time.Hour, NegativeTTL: time.Minute}}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := New(Config{Listen: []string{"127.0.0.1:0"}}, c, echoForwarder, zap.NewNop(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// handleSync runs a packet through the whole request path the way a UDP
// reader does, but resolving misses on the calling goroutine.
func handleSync(s *Server, w *worker, pkt []byte, src netip.AddrPort) [][]byte {
	var (
		mu      sync.Mutex
		replies [][]byte
	)
	w.start()
	out, act := w.fast(pkt, src, protoUDP, nil)
	w.observeHits(protoUDP)
	switch act {
	case actReply:
		replies = append(replies, out)
	case actMiss:
		s.dispatch(w, pkt, src, protoUDP, &replyTo{write: func(b []byte) {
			mu.Lock()
			replies = append(replies, append([]byte(nil), b...))
			mu.Unlock()
		}})
		s.misses.Wait()
	}
	mu.Lock()
	defer mu.Unlock()
	return replies
}

// FuzzRequestPath feeds arbitrary packets to the request path: it must
// never panic, answer at most once, and every answer must be a response
// with the query's ID that fits a UDP client.
func FuzzRequestPath(f *testing.F) {
	seed := func(m *dns.Msg) {
		b, err := m.Pack()
		if err == nil {
			f.Add(b)
		}
	}
	seed(query("example.test.", dns.TypeA))
	e := query("Example.TEST.", dns.TypeAAAA)
	e.SetEdns0(4096, true)
	seed(e)
	n := query("example.test.", dns.TypeSOA)
	n.Opcode = dns.OpcodeNotify
	seed(n)
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1})
	f.Add([]byte{1, 2, 3})

	s := newUnstartedServer(f)
	w := s.newWorker(dnswire.MaxUDPReply)
	src := netip.MustParseAddrPort("127.0.0.1:5000")
	f.Fuzz(func(t *testing.T, pkt []byte) {
		replies := handleSync(s, w, pkt, src)
		if len(replies) > 1 {
			t.Fatalf("%d replies to one packet", len(replies))
		}
		for _, r := range replies {
			if len(r) < dnswire.HeaderLen {
				t.Fatalf("reply of %d bytes", len(r))
			}
			if len(r) > 512 {
				var q dnswire.Query
				if dnswire.ParseQuery(pkt, &q) == nil && !q.EDNS {
					t.Fatalf("reply of %d bytes to a query without EDNS", len(r))
				}
			}
			if r[0] != pkt[0] || r[1] != pkt[1] {
				t.Fatalf("reply ID %x%x, query ID %x%x", r[0], r[1], pkt[0], pkt[1])
			}
			if dnswire.Flags(r)&dnswire.FlagQR == 0 {
				t.Fatal("reply without QR")
			}
		}
	})
}

// BenchmarkFastPathHit measures a cache hit from parsed packet to reply
// bytes, without the socket: it must not allocate.
func BenchmarkFastPathHit(b *testing.B) {
	s := newUnstartedServer(b)
	w := s.newWorker(dnswire.MaxUDPReply)
	src := netip.MustParseAddrPort("127.0.0.1:5000")
	q := query("www.example.test.", dns.TypeA)
	q.SetEdns0(1232, false)
	pkt, _ := q.Pack()
	if r := handleSync(s, w, pkt, src); len(r) != 1 {
		b.Fatal("warming the cache failed")
	}
	b.ReportAllocs()
	b.ResetTimer()
	// As a loaded UDP reader: the clock read and the durations recorded
	// once per batch of 16.
	for i := 0; i < b.N; i++ {
		if i%16 == 0 {
			w.observeHits(protoUDP)
			w.start()
		}
		pkt[0], pkt[1] = byte(i>>8), byte(i)
		if _, act := w.fast(pkt, src, protoUDP, w.out[:0]); act != actReply {
			b.Fatal("miss")
		}
	}
}

// BenchmarkUDPHitLoopback measures cache hits through real sockets: one
// client socket, one query in flight. Compare with a read+write echo
// server to see the cost nodedns adds to the two syscalls.
func BenchmarkUDPHitLoopback(b *testing.B) {
	s := startServer(b, Config{UDPSockets: 1}, echoForwarder)
	c, err := dns.Dial("udp", s.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	q := query("www.example.test.", dns.TypeA)
	pkt, _ := q.Pack()
	buf := make([]byte, 1500)
	exch := func() {
		if _, err := c.Write(pkt); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
	exch()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		exch()
	}
}
