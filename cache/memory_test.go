package cache

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/miekg/dns"
)

// heapInUse returns the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// The byte bound is only a bound if the accounting matches what entries
// really cost: for each shape of reply, 50,000 cached answers are accounted
// within 10 % of the live heap they take.
func TestAccountedBytesMatchTheHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("fills caches of 50,000 entries")
	}
	if raceEnabled {
		t.Skip("the race detector's shadow memory would be measured; make test runs this without it (make memory)")
	}
	shapes := []struct {
		name   string
		qtype  uint16
		answer func(name string, i int) []string
	}{
		{"one A record (about 60 bytes)", dns.TypeA, func(name string, i int) []string {
			return []string{fmt.Sprintf("%s 300 IN A 192.0.2.%d", name, i%250+1)}
		}},
		{"CNAME and two A records (about 130 bytes)", dns.TypeA, func(name string, i int) []string {
			target := fmt.Sprintf("edge-%d.cdn.example.net.", i%1000)
			return []string{name + " 300 IN CNAME " + target,
				target + " 60 IN A 192.0.2.1", target + " 60 IN A 192.0.2.2"}
		}},
		{"eight AAAA records (about 300 bytes)", dns.TypeAAAA, func(name string, i int) []string {
			var rrs []string
			for k := range 8 {
				rrs = append(rrs, fmt.Sprintf("%s 300 IN AAAA 2001:db8::%x:%x", name, i, k))
			}
			return rrs
		}},
	}
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			const n = 50_000
			c := newCache(t, Config{MaxBytes: 1 << 30, MaxEntries: 1 << 22})
			// Build the replies first, so that only the cache's own memory
			// is measured.
			type item struct {
				key  []byte
				resp *dns.Msg
			}
			items := make([]item, n)
			for i := range items {
				name := fmt.Sprintf("host-%06d.example.com.", i)
				q := newQuery(name, sh.qtype)
				items[i] = item{KeyOf(nil, q), upstreamReply(t, q, dns.RcodeSuccess, sh.answer(name, i), nil, nil)}
			}
			before := heapInUse()
			for _, it := range items {
				if _, err := c.Store(it.key, it.resp, t0); err != nil {
					t.Fatal(err)
				}
			}
			after := heapInUse()
			runtime.KeepAlive(items)
			if c.Len() != n {
				t.Fatalf("%d entries stored, want %d", c.Len(), n)
			}
			heap := float64(after - before)
			acct := float64(c.Bytes())
			t.Logf("heap %.0f B/entry, accounted %.0f B/entry", heap/n, acct/n)
			if r := acct / heap; r < 0.9 || r > 1.1 {
				t.Errorf("accounted %.0f bytes for a heap growth of %.0f (ratio %.2f); want within 10%%", acct, heap, r)
			}
		})
	}
}
