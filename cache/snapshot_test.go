package cache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/dnswire"
)

// fillForSnapshot stores replies of every kind in c at t0 and returns the
// queries that find them.
func fillForSnapshot(t *testing.T, c *Cache) []*dns.Msg {
	t.Helper()
	soa := []string{"example. 300 IN SOA ns.example. host.example. 1 7200 1800 86400 60"}
	var qs []*dns.Msg
	add := func(q *dns.Msg, rcode int, answer, ns, extra []string) {
		if _, err := c.Store(parse(t, q).key, upstreamReply(t, q, rcode, answer, ns, extra), t0); err != nil {
			t.Fatal(err)
		}
		qs = append(qs, q)
	}
	add(newQuery("a.example.", dns.TypeA), dns.RcodeSuccess, []string{"a.example. 300 IN A 192.0.2.1", "a.example. 300 IN A 192.0.2.2"}, nil, nil)
	add(newQuery("www.example.", dns.TypeAAAA), dns.RcodeSuccess,
		[]string{"www.example. 60 IN CNAME edge.example.", "edge.example. 30 IN AAAA 2001:db8::1"}, nil, nil)
	add(newQuery("nx.example.", dns.TypeA), dns.RcodeNameError, nil, soa, nil)
	add(newQuery("a.example.", dns.TypeMX), dns.RcodeSuccess, nil, soa, nil)
	add(newQuery("_http._tcp.example.", dns.TypeSRV, withEDNS(1232, true)), dns.RcodeSuccess,
		[]string{"_http._tcp.example. 120 IN SRV 0 0 80 web.example."}, nil, []string{"web.example. 120 IN A 192.0.2.9"})
	for i := range 50 {
		name := fmt.Sprintf("host-%d.example.", i)
		add(newQuery(name, dns.TypeA), dns.RcodeSuccess, []string{fmt.Sprintf("%s 600 IN A 192.0.2.%d", name, i)}, nil, nil)
	}
	return qs
}

func snapshotOf(t *testing.T, c *Cache, now time.Time) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := c.WriteSnapshot(&buf, now); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A snapshot carries every entry across: the next process answers each
// query byte for byte as the first would have, TTLs counted down from when
// the entry was stored.
func TestSnapshotRoundTrip(t *testing.T) {
	a := newCache(t, Config{})
	qs := fillForSnapshot(t, a)
	snap := snapshotOf(t, a, t0.Add(10*time.Second))

	b := newCache(t, Config{}) // another process: another hash seed
	n, err := b.LoadSnapshot(bytes.NewReader(snap), t0.Add(20*time.Second), 1<<30)
	if err != nil || n != len(qs) {
		t.Fatalf("loaded %d entries (%v), want %d", n, err, len(qs))
	}
	now := at(25 * time.Second)
	for _, q := range qs {
		p := parse(t, q)
		ea, _ := a.Find(p.key, now)
		eb, state := b.Find(p.key, now)
		if state != Fresh {
			t.Fatalf("%s: %v after loading", q.Question[0].Name, state)
		}
		_, wa := render(t, ea, p, now, tcpOpts)
		_, wb := render(t, eb, p, now, tcpOpts)
		if !bytes.Equal(wa, wb) {
			t.Errorf("%s: the loaded entry answers differently", q.Question[0].Name)
		}
	}
	if m := hit(t, b, newQuery("www.example.", dns.TypeAAAA), now, tcpOpts); ttls(m)[1] != 5 {
		t.Errorf("TTLs after 25 s: %v, want the AAAA's 30 s counted down to 5", ttls(m))
	}
}

// What the next process gets: entries still worth keeping (fresh, or
// within the serve-stale window), never over what it already holds, never
// beyond its own size.
func TestSnapshotLoadKeepsWhatMatters(t *testing.T) {
	a := newCache(t, Config{Policy: Policy{MaxTTL: time.Hour, NegativeTTL: time.Minute, ServeStale: time.Minute}})
	fillForSnapshot(t, a)
	snap := snapshotOf(t, a, t0)

	// 10.5 minutes on: the 600 s hosts are stale but within the window; the
	// rest is past it.
	b := newCache(t, Config{Policy: Policy{ServeStale: time.Minute}})
	if n, err := b.LoadSnapshot(bytes.NewReader(snap), t0.Add(630*time.Second), 1<<30); err != nil || n != 50 {
		t.Errorf("10.5 minutes on: loaded %d (%v), want the 50 entries still in the serve-stale window", n, err)
	}

	// What this process stored itself is newer than the snapshot's.
	c := newCache(t, Config{})
	q := newQuery("a.example.", dns.TypeA)
	if _, err := c.Store(parse(t, q).key, upstreamReply(t, q, dns.RcodeSuccess, []string{"a.example. 300 IN A 198.51.100.7"}, nil, nil), t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.LoadSnapshot(bytes.NewReader(snap), t0.Add(2*time.Second), 1<<30); err != nil {
		t.Fatal(err)
	}
	if m := hit(t, c, q, at(3*time.Second), tcpOpts); m.Answer[0].(*dns.A).A.String() != "198.51.100.7" {
		t.Errorf("the snapshot replaced a newer entry: %v", m.Answer)
	}

	// A small cache takes what fits and stops.
	small := newCache(t, Config{MaxBytes: 4 << 10, Shards: 1})
	n, err := small.LoadSnapshot(bytes.NewReader(snap), t0, 1<<30)
	if err != nil || n == 0 || n >= 55 || small.Bytes() > 4<<10 {
		t.Errorf("a 4 KiB cache loaded %d entries, %d bytes (%v)", n, small.Bytes(), err)
	}
	if small.store.Evictions() != 0 {
		t.Errorf("loading evicted %d entries: it should stop when full", small.store.Evictions())
	}
	if _, err := newCache(t, Config{}).LoadSnapshot(bytes.NewReader(snap), t0, int64(len(snap)-1)); !errors.Is(err, ErrSnapshot) {
		t.Errorf("a snapshot over the size limit: %v", err)
	}
}

// A snapshot that is foreign, torn, corrupt or inconsistent is rejected
// whole: nothing of it is loaded.
func TestSnapshotRejectsBadFiles(t *testing.T) {
	a := newCache(t, Config{})
	fillForSnapshot(t, a)
	good := snapshotOf(t, a, t0)
	resum := func(b []byte) []byte {
		binary.BigEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], crcTable))
		return b
	}
	firstRecord := snapshotHeader
	cases := map[string][]byte{
		"empty":        nil,
		"foreign":      []byte("# nodedns config\nlisten: [\"169.254.20.10:53\"]\n"),
		"newer format": resum(append([]byte(nil), good...)),
		"torn":         good[:len(good)/2],
		"one bit flipped": func() []byte {
			b := append([]byte(nil), good...)
			b[len(b)/2] ^= 0x10
			return b
		}(),
		// Checksummed but inconsistent, as a crafted file would be.
		"TTL table pointing elsewhere": func() []byte {
			b := append([]byte(nil), good...)
			n := int(binary.BigEndian.Uint32(b[firstRecord:]))
			b[firstRecord+n-ttlRefLen+1]++ // the last TTL reference's offset
			return resum(b)
		}(),
		"question not the key's": func() []byte {
			b := append([]byte(nil), good...)
			b[firstRecord+recordHeader+1] ^= 0x01 // a letter of the key's name
			return resum(b)
		}(),
		"record count too high": func() []byte {
			b := append([]byte(nil), good...)
			binary.BigEndian.PutUint32(b[len(snapshotMagic)+2:], 1<<20)
			return resum(b)
		}(),
	}
	binary.BigEndian.PutUint16(cases["newer format"][len(snapshotMagic):], snapshotVersion+1)
	resum(cases["newer format"])
	for name, b := range cases {
		c := newCache(t, Config{})
		n, err := c.LoadSnapshot(bytes.NewReader(b), t0, 1<<30)
		if !errors.Is(err, ErrSnapshot) || n != 0 || c.Len() != 0 {
			t.Errorf("%s: loaded %d entries, err %v; want the file rejected", name, n, err)
		}
	}
}

// FuzzLoadSnapshot: a snapshot is read from a file another process wrote;
// whatever it holds, loading never panics, and every entry it accepts
// renders.
func FuzzLoadSnapshot(f *testing.F) {
	a, err := New(Config{MaxBytes: 1 << 20}, nil)
	if err != nil {
		f.Fatal(err)
	}
	q := newQuery("www.example.", dns.TypeA)
	var key []byte
	key = KeyOf(key, q)
	r := new(dns.Msg)
	r.SetReply(q)
	rr, _ := dns.NewRR("www.example. 60 IN A 192.0.2.1")
	r.Answer = []dns.RR{rr}
	if _, err := a.Store(key, r, t0); err != nil {
		f.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := a.WriteSnapshot(&buf, t0); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte(snapshotMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Let mutated bodies past the checksum, to reach the record checks.
		if len(b) >= 4 {
			binary.BigEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], crcTable))
		}
		entries, err := parseSnapshot(b)
		if err != nil {
			return
		}
		for _, e := range entries {
			name, qtype, qclass, do, _, ok := parseKeyOf(e)
			if !ok {
				t.Fatalf("accepted an entry with a bad key")
			}
			m := new(dns.Msg)
			qname, _, err := dns.UnpackDomainName(name, 0)
			if err != nil {
				continue
			}
			m.SetQuestion(qname, qtype)
			m.Question[0].Qclass = qclass
			if do {
				m.SetEdns0(1232, true)
			}
			p := parse(t, m)
			e.AppendReply(nil, &p.q, t0.UnixNano(), tcpOpts)
		}
	})
}

func parseKeyOf(e *Entry) (name []byte, qtype, qclass uint16, do, cd, ok bool) {
	return dnswire.ParseKey([]byte(e.key()))
}

// A snapshot is trusted no further than an upstream: entries stored in the
// future are dropped, and TTLs are held to what the loading process's
// policy allows, even when the writer's allowed more.
func TestSnapshotLoadReclampsAndDropsTheFuture(t *testing.T) {
	long := newCache(t, Config{Policy: Policy{MaxTTL: 24 * time.Hour, NegativeTTL: time.Hour, ServFailTTL: 5 * time.Second}})
	a := newQuery("a.example.", dns.TypeA)
	if _, err := long.Store(parse(t, a).key, upstreamReply(t, a, dns.RcodeSuccess, []string{"a.example. 86400 IN A 192.0.2.1"}, nil, nil), t0); err != nil {
		t.Fatal(err)
	}
	nx := newQuery("nx.example.", dns.TypeA)
	soa := []string{"example. 3600 IN SOA ns.example. host.example. 1 7200 1800 86400 3600"}
	if _, err := long.Store(parse(t, nx).key, upstreamReply(t, nx, dns.RcodeNameError, nil, soa, nil), t0); err != nil {
		t.Fatal(err)
	}
	future := newQuery("future.example.", dns.TypeA)
	if _, err := long.Store(parse(t, future).key, upstreamReply(t, future, dns.RcodeSuccess, []string{"future.example. 300 IN A 192.0.2.2"}, nil, nil), t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	snap := snapshotOf(t, long, t0)

	short := newCache(t, Config{Policy: Policy{MaxTTL: time.Hour, NegativeTTL: time.Minute, ServFailTTL: 5 * time.Second}})
	n, err := short.LoadSnapshot(bytes.NewReader(snap), t0.Add(time.Second), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("loaded %d entries, want 2 (not the one stored an hour from now)", n)
	}
	if _, ok := short.Get(parse(t, future).key); ok {
		t.Error("an entry stored in the future was loaded")
	}
	for _, tc := range []struct {
		q   *dns.Msg
		max uint32
	}{{a, 3600}, {nx, 60}} {
		r := hit(t, short, tc.q, at(time.Second), tcpOpts)
		if r == nil {
			t.Fatalf("%s not loaded", tc.q.Question[0].Name)
		}
		for _, rr := range append(r.Answer, r.Ns...) {
			if rr.Header().Ttl > tc.max {
				t.Errorf("%s: %v served with TTL %d, over the policy's %d", tc.q.Question[0].Name, rr, rr.Header().Ttl, tc.max)
			}
		}
		if hit(t, short, tc.q, at(time.Duration(tc.max+2)*time.Second), tcpOpts) != nil {
			t.Errorf("%s still fresh past the policy's %d s", tc.q.Question[0].Name, tc.max)
		}
	}
}
