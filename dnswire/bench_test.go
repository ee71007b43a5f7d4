package dnswire

import (
	"testing"

	"github.com/miekg/dns"
)

func BenchmarkParseQuery(b *testing.B) {
	plain := mustPack(b, newQuery("kubernetes.default.svc.cluster.local.", dns.TypeA))
	m := newQuery("kubernetes.default.svc.cluster.local.", dns.TypeA)
	m.SetEdns0(1232, true)
	m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
	edns := mustPack(b, m)
	for _, c := range []struct {
		name string
		pkt  []byte
	}{{"plain", plain}, {"edns", edns}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.pkt)))
			var q Query
			for b.Loop() {
				if err := ParseQuery(c.pkt, &q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendKey(b *testing.B) {
	name := wireName(b, "Kubernetes.Default.svc.cluster.local.")
	key := make([]byte, 0, MaxKeyLen)
	b.ReportAllocs()
	for b.Loop() {
		key = AppendKey(key[:0], name, dns.TypeA, dns.ClassINET, true, false)
	}
}

func BenchmarkTTLOffsets(b *testing.B) {
	pkt := mustPack(b, replyCases(b)["positive with OPT"])
	offs := make([]uint16, 0, 16)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if offs, err = TTLOffsets(pkt, offs[:0]); err != nil {
			b.Fatal(err)
		}
	}
}
