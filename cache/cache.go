// Package cache is nodedns's packet cache: replies are stored packed and
// served by copying and patching a few bytes (ID, question case, TTLs), the
// way dnsdist's packet cache works, so a hit costs no unpacking, no message
// building and no allocation.
//
// It has two layers: Sharded, a byte- and entry-bounded store of LRU shards
// that knows nothing of DNS, and Cache, which adds the DNS rules: the key,
// the TTLs of positive and negative answers (RFC 2308) and what must never
// be cached.
package cache

import (
	"fmt"
	"hash/maphash"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodedns/nodedns/dnswire"
)

// Config sizes a Cache.
type Config struct {
	// MaxBytes bounds the accounted size of all entries.
	MaxBytes int64
	// MaxEntries bounds the number of entries; 0 means MaxBytes/160, which
	// only the byte bound reaches first.
	MaxEntries int
	// Shards is the number of independently locked shards, a power of two;
	// 0 means 256.
	Shards int
	Policy Policy
}

// Cache maps a question (see dnswire.AppendKey) to a stored reply. It is
// safe for concurrent use.
type Cache struct {
	store    *Sharded[*Entry]
	maxBytes int64
	seed     maphash.Seed
	policy   atomic.Pointer[Policy] // swapped by SetPolicy on a config reload
	metrics  *metrics
}

// New returns an empty cache and registers its metrics with reg.
func New(cfg Config, reg prometheus.Registerer) (*Cache, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	store := NewSharded[*Entry](cfg.Shards, cfg.MaxBytes, cfg.MaxEntries)
	// An answer over a sixteenth of a shard (8 KiB of the default 32 MiB:
	// only TCP answers are larger than a UDP packet) is served, not
	// stored: each would push out dozens of ordinary ones.
	store.LimitValues(cfg.MaxBytes / int64(cfg.Shards) / 16)
	c := &Cache{
		store:    store,
		maxBytes: cfg.MaxBytes,
		seed:     maphash.MakeSeed(),
	}
	c.policy.Store(&cfg.Policy)
	c.metrics = newMetrics(reg, c)
	return c, nil
}

// Policy returns the TTL rules the cache applies.
// withDefaults checks cfg and fills in the shards and the entry bound.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.MaxBytes <= 0 {
		return cfg, fmt.Errorf("cache size must be positive, got %d bytes", cfg.MaxBytes)
	}
	if cfg.Shards == 0 {
		cfg.Shards = 256
	}
	if cfg.Shards < 0 || cfg.Shards&(cfg.Shards-1) != 0 {
		return cfg, fmt.Errorf("cache shards must be a power of two, got %d", cfg.Shards)
	}
	// A shard must hold at least a few large replies.
	for cfg.Shards > 1 && cfg.MaxBytes/int64(cfg.Shards) < 64<<10 {
		cfg.Shards /= 2
	}
	if cfg.MaxEntries == 0 {
		// Below the smallest entry's Size: the byte bound is the one that
		// binds.
		cfg.MaxEntries = int(cfg.MaxBytes / 160)
	}
	if cfg.MaxEntries < cfg.Shards {
		cfg.MaxEntries = cfg.Shards
	}
	return cfg, nil
}

// Overhead is the memory a cache of cfg takes beyond its entries, which
// MaxBytes bounds: the frequency sketches of its shards.
func Overhead(cfg Config) int64 {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return 0
	}
	sk := newSketch(max(cfg.MaxEntries/cfg.Shards, 1))
	return int64(cfg.Shards) * int64(sk.bytes())
}

func (c *Cache) Policy() Policy { return *c.policy.Load() }

// SetPolicy changes the TTL rules for replies stored from now on; entries
// already stored keep the TTLs they were stored with.
func (c *Cache) SetPolicy(p Policy) { c.policy.Store(&p) }

func (c *Cache) hash(key []byte) uint64 { return maphash.Bytes(c.seed, key) }

// Get returns the entry stored for key, fresh or not; the caller decides
// what an expired entry is good for. The stored key is compared in full, so
// a hash collision is a miss, never a wrong answer.
func (c *Cache) Get(key []byte) (*Entry, bool) {
	e, ok := c.store.Peek(c.hash(key))
	if !ok || e.key() != string(key) {
		return nil, false
	}
	return e, true
}

// State says what Find found.
type State uint8

// States of a lookup.
const (
	Miss  State = iota // nothing usable
	Fresh              // an entry whose TTL has not run out
	Stale              // an expired entry within the serve-stale window
)

// Find looks key up at now (UnixNano) and returns a fresh entry, or else a
// stale one that may be served if the upstreams fail (RFC 8767). It counts
// a fresh entry as a hit and anything else as a miss.
func (c *Cache) Find(key []byte, now int64) (*Entry, State) {
	e, ok := c.store.Get(c.hash(key)) // counts the key as asked for, and makes it recent
	if ok && e.key() != string(key) {
		e, ok = nil, false
	}
	switch {
	case ok && e.Fresh(now):
		c.metrics.hits.Inc()
		return e, Fresh
	case ok && c.usableStale(e, now):
		c.metrics.misses.Inc()
		return e, Stale
	}
	c.metrics.misses.Inc()
	return nil, Miss
}

// LookupStale returns an entry for key whose TTL ran out at now (UnixNano)
// less than the policy's ServeStale ago: an answer to fall back on when the
// upstreams fail (RFC 8767). It counts nothing.
func (c *Cache) LookupStale(key []byte, now int64) (*Entry, bool) {
	e, ok := c.Get(key)
	if !ok || e.Fresh(now) || !c.usableStale(e, now) {
		return nil, false
	}
	return e, true
}

// StaleUsable reports whether e, expired at now (UnixNano), may still be
// served as a stale answer.
func (c *Cache) StaleUsable(e *Entry, now int64) bool { return !e.Fresh(now) && c.usableStale(e, now) }

// usableStale reports whether an expired entry may still be served.
func (c *Cache) usableStale(e *Entry, now int64) bool {
	if e.Kind() == KindServFail {
		return false // a stale failure is no better than a fresh one
	}
	return now < e.expires()+int64(c.policy.Load().ServeStale)
}

// Store caches resp, the upstream's reply to the question with key, if the
// policy allows it, and returns the new entry (nil when it was not cached).
func (c *Cache) Store(key []byte, resp *dns.Msg, now time.Time) (*Entry, error) {
	e, err := c.policy.Load().NewEntry(key, resp, now)
	if err != nil || e == nil {
		return nil, err
	}
	if !c.store.Add(c.hash(key), e) {
		// Not stored (scan resistance, see Sharded): the answer is served
		// all the same.
		return e, nil
	}
	c.metrics.stores.WithLabelValues(e.Kind().String()).Inc()
	return e, nil
}

// Len returns the number of entries.
func (c *Cache) Len() int { return c.store.Len() }

// Bytes returns the accounted size of all entries.
func (c *Cache) Bytes() int64 { return c.store.Bytes() }

// KeyOf returns the cache key of a parsed message's question, for paths
// that have a *dns.Msg rather than wire bytes.
func KeyOf(dst []byte, m *dns.Msg) []byte {
	q := m.Question[0]
	var name [dnswire.MaxNameLen + 1]byte
	n, err := dns.PackDomainName(dns.Fqdn(q.Name), name[:], 0, nil, false)
	if err != nil {
		return nil
	}
	opt := m.IsEdns0()
	do := opt != nil && opt.Do()
	return dnswire.AppendKey(dst, name[:n], q.Qtype, q.Qclass, do, m.CheckingDisabled)
}

type metrics struct {
	hits, misses prometheus.Counter
	stores       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, c *Cache) *metrics {
	m := &metrics{
		hits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodedns_cache_hits_total", Help: "Queries answered from a fresh cache entry.",
		}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodedns_cache_misses_total", Help: "Cacheable queries with no fresh entry.",
		}),
		stores: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodedns_cache_stores_total", Help: "Replies stored in the cache, by kind.",
		}, []string{"kind"}),
	}
	for _, k := range []Kind{KindPositive, KindNXDomain, KindNoData, KindServFail} {
		m.stores.WithLabelValues(k.String())
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.hits, m.misses, m.stores,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "nodedns_cache_evictions_total", Help: "Entries evicted to keep the cache within its byte and entry bounds.",
		}, func() float64 { return float64(c.store.Evictions()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "nodedns_cache_rejected_total",
			Help: "Answers served but not stored: over the size limit, or for a name asked less often than the one it would evict (scan resistance).",
		}, func() float64 { return float64(c.store.Rejected()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nodedns_cache_entries", Help: "Entries in the cache, fresh or expired.",
		}, func() float64 { return float64(c.store.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nodedns_cache_bytes", Help: "Accounted size of the cache entries in bytes.",
		}, func() float64 { return float64(c.store.Bytes()) }),
	)
	return m
}

// InvalidateName removes the entries of one name, every type, class and
// DO/CD variant, and returns how many there were. name is fully qualified,
// in any case.
func (c *Cache) InvalidateName(name string) int {
	wire, ok := wireName(name)
	if !ok {
		return 0
	}
	return c.store.RemoveIf(func(e *Entry) bool { return string(e.keyName()) == string(wire) })
}

// InvalidateZone removes the entries of every name at or under zone (fully
// qualified, any case) and returns how many there were: when a Namespace
// or a Service is created, the denials cached under it must go.
func (c *Cache) InvalidateZone(zone string) int { return c.InvalidateZones([]string{zone}) }

// InvalidateZones removes, in one pass over the cache, the entries of
// every name at or under any of zones (fully qualified, any case), and
// returns how many there were. The Kubernetes view batches the zones of
// the Namespaces and Services created or deleted in a moment into one
// call, so that churn costs one pass, not one per object.
func (c *Cache) InvalidateZones(zones []string) int {
	set := make(map[string]struct{}, len(zones))
	for _, z := range zones {
		if w, ok := wireName(z); ok {
			set[string(w)] = struct{}{}
		}
	}
	if len(set) == 0 {
		return 0
	}
	return c.store.RemoveIf(func(e *Entry) bool {
		name := e.keyName()
		for off := 0; off < len(name); off += int(name[off]) + 1 {
			if _, ok := set[name[off:]]; ok {
				return true
			}
			if name[off] == 0 {
				break
			}
		}
		return false
	})
}

// wireName packs a name in lower-case wire form, as keys hold it.
func wireName(name string) ([]byte, bool) {
	buf := make([]byte, dnswire.MaxNameLen+1)
	n, err := dns.PackDomainName(dns.CanonicalName(name), buf, 0, nil, false)
	if err != nil {
		return nil, false
	}
	return buf[:n], true
}
