package cache

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/dnswire"
)

// hitFixture is a cache holding replies for names, and the packed queries
// for them, as the UDP fast path sees them.
type hitFixture struct {
	c    *Cache
	pkts [][]byte
	now  int64
	opts ReplyOptions
}

func newHitFixture(tb testing.TB, names int) *hitFixture {
	f := &hitFixture{
		c:    newCache(tb, Config{MaxBytes: 64 << 20}),
		now:  at(10 * time.Second),
		opts: ReplyOptions{MaxSize: 1232, UDPSize: 1232},
	}
	for i := range names {
		name := fmt.Sprintf("svc-%d.default.svc.cluster.local.", i)
		q := newQuery(name, dns.TypeA, withEDNS(1232, false))
		resp := upstreamReply(tb, q, dns.RcodeSuccess,
			[]string{name + " 30 IN A 10.96.0.10", name + " 30 IN A 10.96.0.11"}, nil, nil)
		p := parse(tb, q)
		if _, err := f.c.Store(p.key, resp, t0); err != nil {
			tb.Fatal(err)
		}
		f.pkts = append(f.pkts, p.pkt)
	}
	return f
}

// serve is the whole hit path: parse, key, look up, render.
func (f *hitFixture) serve(pkt []byte, q *dnswire.Query, key, out []byte) ([]byte, []byte, bool) {
	if err := dnswire.ParseQuery(pkt, q); err != nil {
		return key, out, false
	}
	key = dnswire.AppendKey(key[:0], q.Name, q.QType, q.QClass, q.DO, q.CD())
	e, state := f.c.Find(key, f.now)
	ok := state == Fresh
	if !ok {
		return key, out, false
	}
	return key, e.AppendReply(out[:0], q, f.now, f.opts), true
}

func TestHitPathDoesNotAllocate(t *testing.T) {
	f := newHitFixture(t, 1)
	var q dnswire.Query
	key := make([]byte, 0, dnswire.MaxKeyLen)
	out := make([]byte, 0, 4096)
	ok := false
	n := testing.AllocsPerRun(200, func() {
		key, out, ok = f.serve(f.pkts[0], &q, key, out)
	})
	if !ok {
		t.Fatal("miss")
	}
	if n != 0 {
		t.Errorf("%v allocations per hit", n)
	}
}

func BenchmarkCacheHit(b *testing.B) {
	f := newHitFixture(b, 1)
	var q dnswire.Query
	key := make([]byte, 0, dnswire.MaxKeyLen)
	out := make([]byte, 0, 4096)
	ok := false
	b.ReportAllocs()
	for b.Loop() {
		if key, out, ok = f.serve(f.pkts[0], &q, key, out); !ok {
			b.Fatal("miss")
		}
	}
}

func BenchmarkCacheHitParallel(b *testing.B) {
	f := newHitFixture(b, 1024)
	var next atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var q dnswire.Query
		key := make([]byte, 0, dnswire.MaxKeyLen)
		out := make([]byte, 0, 4096)
		i := int(next.Add(1) * 7919)
		ok := false
		for pb.Next() {
			i++
			if key, out, ok = f.serve(f.pkts[i%len(f.pkts)], &q, key, out); !ok {
				b.Error("miss")
				return
			}
		}
	})
}

func BenchmarkStore(b *testing.B) {
	c := newCache(b, Config{MaxBytes: 16 << 20})
	const names = 1024
	keys := make([][]byte, names)
	resps := make([]*dns.Msg, names)
	for i := range names {
		name := fmt.Sprintf("svc-%d.default.svc.cluster.local.", i)
		q := newQuery(name, dns.TypeA, withEDNS(1232, false))
		keys[i] = parse(b, q).key
		resps[i] = upstreamReply(b, q, dns.RcodeSuccess,
			[]string{name + " 30 IN A 10.96.0.10", name + " 30 IN A 10.96.0.11"}, nil, nil)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := c.Store(keys[i%names], resps[i%names], t0); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
