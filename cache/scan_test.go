package cache

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// A client that asks many names once each must not evict what every
// other client asks again and again. The working set: 2,000 names, each
// asked three times (a miss, its store, two hits), in a 32 MiB cache
// (the default). Then one of two floods from one client, each name asked
// once and its answer stored. Plain LRU kept 0 % of the working set after
// the scan and 60 % after the large answers. Under the race detector,
// which makes each store ten times slower, the cache and the scan are a
// quarter of that, in the same proportion.
func TestFloodsKeepTheWorkingSet(t *testing.T) {
	size, scan, big := int64(32<<20), 300000, 2000
	if raceEnabled {
		size, scan, big = size/4, scan/4, big/4
	}
	for _, flood := range []struct {
		name  string
		n     int
		store func(t *testing.T, c *Cache, i int)
	}{
		{fmt.Sprintf("%d one-off names", scan), scan, func(t *testing.T, c *Cache, i int) {
			name := fmt.Sprintf("scan-%06d.example.net.", i)
			miss(t, c, name)
			storeA(t, c, name, 1, t0)
		}},
		{fmt.Sprintf("%d one-off answers of about 59 KB", big), big, func(t *testing.T, c *Cache, i int) {
			name := fmt.Sprintf("big-%04d.example.net.", i)
			miss(t, c, name)
			q := newQuery(name, dns.TypeTXT)
			var txt []string
			for j := range 230 { // 230 × 255 bytes
				txt = append(txt, fmt.Sprintf(`%s 300 IN TXT "%s"`, name, strings.Repeat(string(rune('a'+j%26)), 255)))
			}
			if _, err := c.Store(parse(t, q).key, upstreamReply(t, q, dns.RcodeSuccess, txt, nil, nil), t0); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(flood.name, func(t *testing.T) {
			c, err := New(Config{MaxBytes: size}, prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			const working = 2000
			for i := range working {
				name := fillName(i)
				miss(t, c, name)
				storeA(t, c, name, 1, t0)
			}
			for range 2 {
				for i := range working {
					if _, st := c.Find(keyA(t, fillName(i)), at(time.Second)); st != Fresh {
						t.Fatalf("%s not cached before the flood", fillName(i))
					}
				}
			}
			for i := range flood.n {
				flood.store(t, c, i)
			}
			kept := 0
			for i := range working {
				if _, st := c.Find(keyA(t, fillName(i)), at(2*time.Second)); st == Fresh {
					kept++
				}
			}
			t.Logf("%s: %d of %d names of the working set still cached (%.1f %%); %d entries, %d rejected",
				flood.name, kept, working, 100*float64(kept)/working, c.Len(), c.store.Rejected())
			if kept < working*95/100 {
				t.Errorf("%d of %d names of the working set cached after the flood; want at least 95 %%", kept, working)
			}
		})
	}
}

// A new name asked for again and again gets in, even with the cache full
// of names asked before.
func TestARepeatedNameGetsIn(t *testing.T) {
	c, err := New(Config{MaxBytes: 64 << 10, Shards: 1}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; c.store.Evictions() == 0 && i < 10000; i++ {
		name := fillName(i)
		miss(t, c, name)
		miss(t, c, name)
		storeA(t, c, name, 1, t0)
	}
	const name = "popular.example.com."
	for range 5 {
		if _, st := c.Find(keyA(t, name), at(0)); st == Fresh {
			return
		}
		storeA(t, c, name, 1, t0)
	}
	t.Error("a name asked five times is not cached")
}

func keyA(t *testing.T, name string) []byte { return parse(t, newQuery(name, dns.TypeA)).key }

// miss looks a name up as the fast path does before its answer is stored.
func miss(t *testing.T, c *Cache, name string) { c.Find(keyA(t, name), at(0)) }

// A hot name must not age the names that share its shard: only lookups
// that change the frequency sketch count towards its halving. The working
// set of TestFloodsKeepTheWorkingSet, in a cache of 9,984 entries (the
// size of CoreDNS's), asked with a Zipf distribution while one client
// scans 50,000 one-off names: when every lookup of the hottest names
// aged their shards, 3 % of the working set was lost (1,941 of 2,000
// kept); now at most a few names are, to a hot name's counters sharing a
// scan name's.
func TestHotNamesDoNotAgeTheirShard(t *testing.T) {
	c, err := New(Config{MaxBytes: 32 << 20, MaxEntries: 9984}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	const working, scan = 2000, 50000
	for i := range working {
		name := fillName(i)
		miss(t, c, name)
		storeA(t, c, name, 1, t0)
		for range 2 {
			if _, st := c.Find(keyA(t, name), at(time.Second)); st != Fresh {
				t.Fatalf("%s not cached", name)
			}
		}
	}
	z := rand.NewZipf(rand.New(rand.NewPCG(1, 2)), 1.1, 1, working-1)
	zipf := func() {
		name := fillName(int(z.Uint64()))
		if _, st := c.Find(keyA(t, name), at(time.Second)); st != Fresh {
			storeA(t, c, name, 1, t0)
		}
	}
	for range 10000 {
		zipf()
	}
	for i := range scan {
		name := fmt.Sprintf("scan-%06d.example.net.", i)
		miss(t, c, name)
		storeA(t, c, name, 1, t0)
		if i%5 == 0 {
			zipf()
			zipf()
		}
	}
	kept := 0
	for i := range working {
		if _, ok := c.store.Peek(c.hash(keyA(t, fillName(i)))); ok {
			kept++
		}
	}
	t.Logf("%d of %d names of the working set still cached; %d rejected", kept, working, c.store.Rejected())
	if kept < working*995/1000 {
		t.Errorf("%d of %d names of the working set cached after the scan; want at least 99.5 %%", kept, working)
	}
}
