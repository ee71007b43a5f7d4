package dnswire

import (
	"bytes"
	"errors"
	"net"
	"testing"

	"github.com/miekg/dns"
)

// querySeeds are packed queries, common and unusual, for the fuzz corpus
// and the benchmarks.
func querySeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	add := func(m *dns.Msg) { seeds = append(seeds, mustPack(t, m)) }
	add(newQuery("example.org.", dns.TypeA))
	add(newQuery("Kubernetes.Default.svc.cluster.local.", dns.TypeAAAA))
	add(newQuery(".", dns.TypeNS))
	m := newQuery("www.example.org.", dns.TypeA)
	m.SetEdns0(1232, true)
	add(m)
	m = newQuery("www.example.org.", dns.TypeHTTPS)
	m.SetEdns0(4096, false)
	o := m.IsEdns0()
	o.Option = append(o.Option,
		&dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.ParseIP("192.0.2.0").To4()},
		&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"},
		&dns.EDNS0_PADDING{Padding: make([]byte, 12)})
	add(m)
	m = newQuery("a\\.b\\000.example.org.", dns.TypeTXT)
	m.CheckingDisabled = true
	add(m)
	m = newQuery("example.org.", dns.TypeSOA)
	m.Opcode = dns.OpcodeNotify
	add(m)
	m = newQuery("example.org.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().SetVersion(1)
	add(m)
	seeds = append(seeds,
		rawMsg(FlagRD, 1, 0, 0, 0, []byte{3, 'w', 'w', 'w', 0xC0, 12, 0, 1, 0, 1}),
		rawMsg(FlagRD, 1, 0, 0, 0, question(labels(63, 63, 63, 61), 1, 1)),
		rawMsg(FlagRD, 1, 0, 0, 1, question(labels(7, 3), 1, 1), optRR(1232, 0, option(optionKeepalive, nil))),
		rawMsg(FlagRD, 1, 0, 0, 1, question(labels(7, 3), 1, 1), optRR(1232, 0, option(dns.EDNS0UL, []byte{0, 0, 0, 1}))),
	)
	return seeds
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range querySeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		orig := bytes.Clone(pkt)
		var q Query
		err := ParseQuery(pkt, &q)
		if !bytes.Equal(pkt, orig) {
			t.Fatal("ParseQuery modified the packet")
		}
		switch {
		case err == nil:
		case errors.Is(err, ErrShort):
			if len(pkt) >= HeaderLen {
				t.Fatalf("ErrShort for %d bytes", len(pkt))
			}
			return
		case errors.Is(err, ErrFormat), errors.Is(err, ErrSlowPath):
			return
		default:
			t.Fatalf("unexpected error %v", err)
		}
		if q.QEnd > len(pkt) || len(q.Name) > MaxNameLen || q.QEnd != HeaderLen+len(q.Name)+4 {
			t.Fatalf("QEnd %d, name %d bytes, packet %d bytes", q.QEnd, len(q.Name), len(pkt))
		}
		if err := agreeWithMiekg(pkt, &q); err != nil {
			t.Fatal(err)
		}
		if key := AppendKey(nil, q.Name, q.QType, q.QClass, q.DO, q.CD()); len(key) > MaxKeyLen {
			t.Fatalf("key of %d bytes", len(key))
		}
		resp := AppendError(nil, &q, dns.RcodeRefused, 1232)
		var m dns.Msg
		if err := m.Unpack(resp); err != nil {
			t.Fatalf("AppendError's reply does not unpack: %v", err)
		}
		if !m.Response || m.Rcode != dns.RcodeRefused || len(m.Question) != 1 || (m.IsEdns0() != nil) != q.EDNS {
			t.Fatalf("AppendError's reply: %v", &m)
		}
	})
}

func FuzzTTLOffsets(f *testing.F) {
	for _, m := range replyCases(f) {
		f.Add(mustPack(f, m))
		m.Compress = true
		f.Add(mustPack(f, m))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		offs, err := TTLOffsets(msg, nil)
		prev := -1
		for _, off := range offs {
			if int(off) <= prev || int(off)+4 > len(msg) {
				t.Fatalf("offset %d after %d in %d bytes", off, prev, len(msg))
			}
			prev = int(off)
		}
		if err != nil {
			return
		}
		if err := checkTTLOffsets(msg, offs); err != nil {
			t.Fatal(err)
		}
		// Truncation walks the same records: it never panics, never grows
		// the message and keeps it walkable.
		if len(msg) >= HeaderLen {
			qEnd, err := skipName(msg, HeaderLen)
			if err != nil || qEnd+4 > len(msg) {
				return
			}
			cut := TruncateRRsets(bytes.Clone(msg), qEnd+4, len(msg)/2)
			if len(cut) > len(msg) {
				t.Fatalf("truncation grew %d bytes to %d", len(msg), len(cut))
			}
		}
	})
}
