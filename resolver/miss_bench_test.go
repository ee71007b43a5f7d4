package resolver

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/nodedns/nodedns/cache"
	"github.com/nodedns/nodedns/dnswire"
	"github.com/nodedns/nodedns/internal/echo"
	"github.com/nodedns/nodedns/upstream"
)

// BenchmarkMiss runs cache misses through the whole miss path, one at a
// time, as a UDP reader hands them over: the fast path, dispatch,
// admission, the flight, the upstream group over a real UDP socket to a
// loopback responder that allocates nothing (internal/echo), the store
// and the answer. Each name is new. ns/op is a miss's latency on an idle
// server, loopback round trip included; allocs/op and B/op are what a
// miss costs the heap, the responder's share being none.
func BenchmarkMiss(b *testing.B) {
	up, err := echo.Listen("127.0.0.1:0", echo.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	g, err := upstream.NewGroup(upstream.GroupConfig{Name: "default", Zones: []string{"."}, Addrs: []string{up.Addr()},
		HealthInterval: time.Hour}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	c, err := cache.New(cache.Config{MaxBytes: 64 << 20, Policy: cache.Policy{MaxTTL: time.Hour, NegativeTTL: time.Minute}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{Listen: []string{"127.0.0.1:0"}}, c, ForwarderFunc(g.Exchange), zap.NewNop(), nil)
	if err != nil {
		b.Fatal(err)
	}
	w := s.newWorker(dnswire.MaxUDPReply)
	src := netip.MustParseAddrPort("127.0.0.1:5000")
	pkts := make([][]byte, b.N)
	for i := range pkts {
		q := query(fmt.Sprintf("n%d.miss.test.", i), dns.TypeA)
		q.SetEdns0(1232, false)
		if pkts[i], err = q.Pack(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if r := handleSync(s, w, pkts[i], src); len(r) != 1 {
			b.Fatalf("miss %d: %d answers", i, len(r))
		}
	}
}
