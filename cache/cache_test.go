package cache

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodedns/nodedns/dnswire"
)

func TestNewConfig(t *testing.T) {
	tests := []struct {
		name       string
		cfg        Config
		wantErr    bool
		wantShards int
	}{
		{name: "zero size", cfg: Config{}, wantErr: true},
		{name: "negative size", cfg: Config{MaxBytes: -1}, wantErr: true},
		{name: "three shards", cfg: Config{MaxBytes: 1 << 30, Shards: 3}, wantErr: true},
		{name: "negative shards", cfg: Config{MaxBytes: 1 << 30, Shards: -4}, wantErr: true},
		{name: "twelve shards", cfg: Config{MaxBytes: 1 << 30, Shards: 12}, wantErr: true},
		{name: "default shards", cfg: Config{MaxBytes: 1 << 30}, wantShards: 256},
		{name: "shards reduced to keep 64 KiB each", cfg: Config{MaxBytes: 1 << 20}, wantShards: 16},
		{name: "tiny cache has one shard", cfg: Config{MaxBytes: 1000, Shards: 64}, wantShards: 1},
		{name: "explicit shards", cfg: Config{MaxBytes: 1 << 30, Shards: 8}, wantShards: 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg, prometheus.NewRegistry())
			if tt.wantErr {
				if err == nil || c != nil {
					t.Fatalf("New = %v, %v; want an error", c, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(c.store.shards) != tt.wantShards {
				t.Errorf("%d shards, want %d", len(c.store.shards), tt.wantShards)
			}
		})
	}
}

// fillName returns the i-th of a set of names of equal length.
func fillName(i int) string { return fmt.Sprintf("host-%05d.example.org.", i) }

// storeA stores an A reply for name with n addresses at now.
func storeA(t testing.TB, c *Cache, name string, n int, now time.Time) *Entry {
	t.Helper()
	q := newQuery(name, dns.TypeA)
	var answer []string
	for i := range n {
		answer = append(answer, fmt.Sprintf("%s 300 IN A 192.0.2.%d", name, i+1))
	}
	e, err := c.Store(parse(t, q).key, upstreamReply(t, q, dns.RcodeSuccess, answer, nil, nil), now)
	if err != nil || e == nil {
		t.Fatalf("Store(%s) = %v, %v", name, e, err)
	}
	return e
}

func TestCacheEviction(t *testing.T) {
	tests := []struct {
		name       string
		cfg        Config
		n          int
		wantLen    int // 0: only bounded by bytes
		checkBytes bool
	}{
		{name: "byte bound", cfg: Config{MaxBytes: 64 << 10, Shards: 1}, n: 1000, checkBytes: true},
		{name: "byte bound, sharded", cfg: Config{MaxBytes: 256 << 10, Shards: 4}, n: 3000, checkBytes: true},
		{name: "entry bound", cfg: Config{MaxBytes: 1 << 20, MaxEntries: 100, Shards: 1}, n: 1000, wantLen: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCache(t, tt.cfg)
			var size int64
			for i := range tt.n {
				size = int64(storeA(t, c, fillName(i), 1, t0).Size())
				if c.Bytes() > tt.cfg.MaxBytes {
					t.Fatalf("after %d stores: %d bytes > %d", i+1, c.Bytes(), tt.cfg.MaxBytes)
				}
			}
			if c.store.Evictions() == 0 {
				t.Error("no evictions")
			}
			if c.Bytes() != int64(c.Len())*size {
				t.Errorf("Bytes %d for %d entries of %d", c.Bytes(), c.Len(), size)
			}
			if tt.wantLen != 0 && c.Len() != tt.wantLen {
				t.Errorf("Len %d, want %d", c.Len(), tt.wantLen)
			}
			if tt.checkBytes && c.Bytes() < tt.cfg.MaxBytes-int64(len(c.store.shards))*size {
				t.Errorf("Bytes %d: shards are not full", c.Bytes())
			}
			if got := uint64(tt.n - c.Len()); c.store.Evictions() != got {
				t.Errorf("Evictions %d, want %d", c.store.Evictions(), got)
			}
			for i := tt.n - 10; i < tt.n; i++ {
				if hit(t, c, newQuery(fillName(i), dns.TypeA), at(0), tcpOpts) == nil {
					t.Errorf("newest entry %d missing", i)
				}
			}
			for i := range 10 {
				if hit(t, c, newQuery(fillName(i), dns.TypeA), at(0), tcpOpts) != nil {
					t.Errorf("oldest entry %d still present", i)
				}
			}
		})
	}
}

func TestCacheReplaceAccounting(t *testing.T) {
	c := newCache(t, Config{MaxBytes: 1 << 20, Shards: 4})
	other := storeA(t, c, "other.example.org.", 1, t0)
	var last *Entry
	for _, n := range []int{1, 8, 3, 20, 2} {
		last = storeA(t, c, "www.example.org.", n, t0.Add(time.Duration(n)*time.Second))
		if c.Len() != 2 || c.Bytes() != int64(other.Size()+last.Size()) {
			t.Fatalf("%d addresses: Len %d Bytes %d, want 2 and %d", n, c.Len(), c.Bytes(), other.Size()+last.Size())
		}
	}
	m := hit(t, c, newQuery("www.example.org.", dns.TypeA), at(10*time.Second), tcpOpts)
	if m == nil || len(m.Answer) != 2 {
		t.Errorf("reply %v: want the last stored", m)
	}
	if c.store.Evictions() != 0 {
		t.Errorf("replacing counted %d evictions", c.store.Evictions())
	}
}

// TestEntrySize checks that an entry accounts for the memory it holds.
func TestEntrySize(t *testing.T) {
	e := storedEntry(t, "www.example.org.", 10)
	if e.Size() < len(e.data)+int(unsafe.Sizeof(*e)) {
		t.Errorf("Size %d below the data it holds", e.Size())
	}
	if got := len(e.ttlRefs()) / ttlRefLen; got != 10 {
		t.Errorf("%d TTL references, want 10", got)
	}
	if sz := unsafe.Sizeof(Entry{}); sz > entryStructSize {
		t.Errorf("Entry is %d bytes, above the %d-byte size class Size assumes", sz, entryStructSize)
	}
}

// TestConcurrent stores, looks up and renders from many goroutines; run it
// with -race. Every name has the same length and answer, so that every
// entry has the same size and the byte count can be checked exactly.
func TestConcurrent(t *testing.T) {
	const (
		goroutines = 8
		ops        = 1500
		names      = 400
	)
	cfg := Config{MaxBytes: 128 << 10, MaxEntries: 200, Shards: 2}
	c := newCache(t, cfg)
	type prepared struct {
		q    *dns.Msg
		p    *parsed
		resp *dns.Msg
	}
	all := make([]prepared, names)
	for i := range all {
		q := newQuery(fillName(i), dns.TypeA, withEDNS(1232, false))
		all[i] = prepared{q: q, p: parse(t, q),
			resp: upstreamReply(t, q, dns.RcodeSuccess, []string{fillName(i) + " 300 IN A 192.0.2.1"}, nil, nil)}
	}
	size := storeA(t, newCache(t, Config{}), fillName(0), 1, t0).Size()

	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 7))
			buf := make([]byte, 0, 1024)
			var q dnswire.Query
			key := make([]byte, 0, dnswire.MaxKeyLen)
			for i := range ops {
				pr := &all[r.IntN(names)]
				if err := dnswire.ParseQuery(pr.p.pkt, &q); err != nil {
					errs <- err
					return
				}
				key = dnswire.AppendKey(key[:0], q.Name, q.QType, q.QClass, q.DO, q.CD())
				now := t0.Add(time.Duration(i) * time.Millisecond)
				if e, state := c.Find(key, now.UnixNano()); state == Fresh {
					buf = e.AppendReply(buf[:0], &q, now.UnixNano(), tcpOpts)
					if id, _ := dnswire.ReadHeaderID(buf); id != q.ID || string(buf[dnswire.HeaderLen:q.QEnd]) != string(pr.p.pkt[dnswire.HeaderLen:q.QEnd]) {
						errs <- fmt.Errorf("reply for another question: %q", buf)
						return
					}
				} else if _, err := c.Store(key, pr.resp, now); err != nil {
					errs <- err
					return
				}
				if i%100 == 0 {
					if n, b := c.Len(), c.Bytes(); n > cfg.MaxEntries || b > cfg.MaxBytes {
						errs <- fmt.Errorf("Len %d Bytes %d over the bounds", n, b)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n, b := c.Len(), c.Bytes(); n > cfg.MaxEntries || b > cfg.MaxBytes || b != int64(n*size) {
		t.Errorf("Len %d Bytes %d, want Bytes = Len*%d within %d/%d", n, b, size, cfg.MaxEntries, cfg.MaxBytes)
	}
	if c.store.Evictions() == 0 {
		t.Error("no evictions: the test does not exercise them")
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c, err := New(Config{MaxBytes: 64 << 10, MaxEntries: 3, Shards: 1}, reg)
	if err != nil {
		t.Fatal(err)
	}
	q := newQuery("example.org.", dns.TypeA)
	if hit(t, c, q, at(0), tcpOpts) != nil {
		t.Fatal("hit in an empty cache")
	}
	e := storeA(t, c, "example.org.", 2, t0)
	for range 2 {
		if hit(t, c, q, at(time.Second), tcpOpts) == nil {
			t.Fatal("miss")
		}
	}
	hit(t, c, q, at(time.Hour), tcpOpts) // expired: a miss

	if got := testutil.ToFloat64(c.metrics.hits); got != 2 {
		t.Errorf("hits %v", got)
	}
	if got := testutil.ToFloat64(c.metrics.misses); got != 2 {
		t.Errorf("misses %v", got)
	}
	want := fmt.Sprintf(`
# HELP nodedns_cache_bytes Accounted size of the cache entries in bytes.
# TYPE nodedns_cache_bytes gauge
nodedns_cache_bytes %d
# HELP nodedns_cache_entries Entries in the cache, fresh or expired.
# TYPE nodedns_cache_entries gauge
nodedns_cache_entries 1
# HELP nodedns_cache_evictions_total Entries evicted to keep the cache within its byte and entry bounds.
# TYPE nodedns_cache_evictions_total counter
nodedns_cache_evictions_total 0
# HELP nodedns_cache_hits_total Queries answered from a fresh cache entry.
# TYPE nodedns_cache_hits_total counter
nodedns_cache_hits_total 2
# HELP nodedns_cache_misses_total Cacheable queries with no fresh entry.
# TYPE nodedns_cache_misses_total counter
nodedns_cache_misses_total 2
# HELP nodedns_cache_rejected_total Answers served but not stored: over the size limit, or for a name asked less often than the one it would evict (scan resistance).
# TYPE nodedns_cache_rejected_total counter
nodedns_cache_rejected_total 0
# HELP nodedns_cache_stores_total Replies stored in the cache, by kind.
# TYPE nodedns_cache_stores_total counter
nodedns_cache_stores_total{kind="nodata"} 0
nodedns_cache_stores_total{kind="nxdomain"} 0
nodedns_cache_stores_total{kind="positive"} 1
nodedns_cache_stores_total{kind="servfail"} 0
`, e.Size())
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}

	// Each is looked up first, as a miss is before its answer is stored,
	// and more often than example.org. and the names before it: the
	// frequency sketch admits a key asked more often than the one it
	// evicts.
	ask := func(key []byte, n int) {
		for range n {
			c.store.Get(c.hash(key))
		}
	}
	for i := range 5 {
		ask(parse(t, newQuery(fillName(i), dns.TypeA)).key, 5+i)
		storeA(t, c, fillName(i), 1, t0)
	}
	nx := newQuery("nope.example.org.", dns.TypeA)
	ask(parse(t, nx).key, 10)
	if _, err := c.Store(parse(t, nx).key, upstreamReply(t, nx, dns.RcodeNameError, nil, []string{soa3600min60}, nil), t0); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 10 {
		t.Errorf("%d series, %v", n, err)
	}
	want = `
# HELP nodedns_cache_entries Entries in the cache, fresh or expired.
# TYPE nodedns_cache_entries gauge
nodedns_cache_entries 3
# HELP nodedns_cache_evictions_total Entries evicted to keep the cache within its byte and entry bounds.
# TYPE nodedns_cache_evictions_total counter
nodedns_cache_evictions_total 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"nodedns_cache_entries", "nodedns_cache_evictions_total"); err != nil {
		t.Error(err)
	}
	if got := testutil.ToFloat64(c.metrics.stores.WithLabelValues("nxdomain")); got != 1 {
		t.Errorf("nxdomain stores %v", got)
	}
	if got := testutil.ToFloat64(c.metrics.stores.WithLabelValues("positive")); got != 6 {
		t.Errorf("positive stores %v", got)
	}
}

func TestNewWithoutRegistry(t *testing.T) {
	c, err := New(Config{MaxBytes: 1 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	storeA(t, c, "example.org.", 1, t0)
	if hit(t, c, newQuery("example.org.", dns.TypeA), at(0), tcpOpts) == nil {
		t.Error("miss")
	}
}

func TestSetPolicy(t *testing.T) {
	c := newCache(t, Config{Policy: Policy{MaxTTL: time.Minute}})
	e := storeA(t, c, "a.example.org.", 1, t0)
	c.SetPolicy(Policy{MaxTTL: 10 * time.Second})
	if c.Policy().MaxTTL != 10*time.Second {
		t.Errorf("Policy %+v", c.Policy())
	}
	e2 := storeA(t, c, "b.example.org.", 1, t0)
	if e.TTL(at(0)) != time.Minute || e2.TTL(at(0)) != 10*time.Second {
		t.Errorf("TTLs %v %v", e.TTL(at(0)), e2.TTL(at(0)))
	}
}

func TestInvalidate(t *testing.T) {
	c := newCache(t, Config{})
	store := func(name string, qtype uint16, edits ...func(*dns.Msg)) {
		q := newQuery(name, qtype, edits...)
		if _, err := c.Store(parse(t, q).key, upstreamReply(t, q, dns.RcodeNameError, nil,
			[]string{"cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30"}, nil), t0); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"web.team-a.svc.cluster.local.", "db.team-a.svc.cluster.local.", "x.web.team-a.svc.cluster.local.",
		"web.team-b.svc.cluster.local.", "team-a.example."} {
		store(n, dns.TypeA)
		store(n, dns.TypeAAAA)
		store(n, dns.TypeA, withEDNS(1232, true)) // a DO variant
	}
	if c.Len() != 15 {
		t.Fatalf("Len %d", c.Len())
	}
	// A Service created: its name, every type and variant, goes.
	if n := c.InvalidateName("Web.Team-A.svc.cluster.local."); n != 3 {
		t.Errorf("InvalidateName removed %d, want 3", n)
	}
	// A Namespace created: everything under it goes, nothing else.
	if n := c.InvalidateZone("team-a.svc.cluster.local."); n != 6 {
		t.Errorf("InvalidateZone removed %d, want 6", n)
	}
	if c.Len() != 6 {
		t.Errorf("Len %d after invalidation, want 6 (team-b and team-a.example)", c.Len())
	}
	if hit(t, c, newQuery("web.team-b.svc.cluster.local.", dns.TypeA), at(0), tcpOpts) == nil {
		t.Error("a name outside the zone was removed")
	}
	sum := 0
	c.store.RemoveIf(func(e *Entry) bool { sum += e.Size(); return false })
	if c.Bytes() != int64(sum) {
		t.Errorf("Bytes %d, but the %d entries left take %d", c.Bytes(), c.Len(), sum)
	}
	if c.store.Evictions() != 0 {
		t.Errorf("invalidations counted as %d evictions", c.store.Evictions())
	}
	// Several zones in one pass; a zone's own name goes too, a sibling
	// that merely shares a suffix of characters does not.
	for _, n := range []string{"team-a.svc.cluster.local.", "web.team-c.svc.cluster.local.", "eam-b.svc.cluster.local."} {
		store(n, dns.TypeA)
	}
	if n := c.InvalidateZones([]string{"TEAM-B.svc.cluster.local.", "team-a.svc.cluster.local.", "team-c.svc.cluster.local.", "bad..name"}); n != 5 {
		t.Errorf("InvalidateZones removed %d, want 5 (team-b's 3, team-a's apex, team-c's web)", n)
	}
	if hit(t, c, newQuery("eam-b.svc.cluster.local.", dns.TypeA), at(0), tcpOpts) == nil {
		t.Error("eam-b.svc.cluster.local. was removed with team-b.svc.cluster.local.")
	}
}
