package dnswire

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/miekg/dns"
)

// mustRR parses one record in zone-file syntax.
func mustRR(t testing.TB, s string) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatalf("dns.NewRR(%q): %v", s, err)
	}
	return rr
}

// newQuery returns a recursive query for name and qtype with a fixed ID.
func newQuery(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 0xBEEF
	return m
}

func mustPack(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	return b
}

// wireName packs a presentation-form name into its uncompressed wire form.
func wireName(t testing.TB, name string) []byte {
	t.Helper()
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(name, buf, 0, nil, false)
	if err != nil {
		t.Fatalf("PackDomainName(%q): %v", name, err)
	}
	return buf[:n]
}

// rawMsg builds a packet by hand: a header with the given flags and counts,
// then body.
func rawMsg(flags, qd, an, ns, ar uint16, body ...[]byte) []byte {
	b := make([]byte, HeaderLen, 512)
	binary.BigEndian.PutUint16(b[offID:], 0xBEEF)
	binary.BigEndian.PutUint16(b[offFlags:], flags)
	binary.BigEndian.PutUint16(b[offQDCount:], qd)
	binary.BigEndian.PutUint16(b[offANCount:], an)
	binary.BigEndian.PutUint16(b[offNSCount:], ns)
	binary.BigEndian.PutUint16(b[offARCount:], ar)
	for _, p := range body {
		b = append(b, p...)
	}
	return b
}

// question is a wire-form name followed by qtype and qclass.
func question(name []byte, qtype, qclass uint16) []byte {
	b := append([]byte(nil), name...)
	b = binary.BigEndian.AppendUint16(b, qtype)
	return binary.BigEndian.AppendUint16(b, qclass)
}

// labels builds a wire-form name from label lengths, each label filled with
// 'a', ending with the root label.
func labels(lens ...int) []byte {
	var b []byte
	for _, l := range lens {
		b = append(b, byte(l))
		b = append(b, bytes.Repeat([]byte{'a'}, l)...)
	}
	return append(b, 0)
}

// optRR is an OPT record with the given payload size, TTL word and options
// data, as the wire carries it.
func optRR(size uint16, ttl uint32, rdata []byte) []byte {
	b := []byte{0, 0, TypeOPT}
	b = binary.BigEndian.AppendUint16(b, size)
	b = binary.BigEndian.AppendUint32(b, ttl)
	b = binary.BigEndian.AppendUint16(b, uint16(len(rdata)))
	return append(b, rdata...)
}

// option is one EDNS option in wire form.
func option(code uint16, data []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, code)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

// agreeWithMiekg checks that miekg/dns unpacks a packet that ParseQuery
// accepted into q, and that both read the same query.
func agreeWithMiekg(pkt []byte, q *Query) error {
	m := new(dns.Msg)
	if err := m.Unpack(pkt); err != nil {
		return fmt.Errorf("ParseQuery accepted a packet miekg rejects: %v", err)
	}
	switch {
	case m.Id != q.ID:
		return fmt.Errorf("ID %#x, miekg %#x", q.ID, m.Id)
	case m.Response || m.Opcode != dns.OpcodeQuery || q.Opcode() != dns.OpcodeQuery:
		return fmt.Errorf("accepted a response or opcode %d", m.Opcode)
	case m.RecursionDesired != q.RD() || m.CheckingDisabled != q.CD():
		return fmt.Errorf("RD/CD %v/%v, miekg %v/%v", q.RD(), q.CD(), m.RecursionDesired, m.CheckingDisabled)
	case len(m.Question) != 1 || len(m.Answer) != 0 || len(m.Ns) != 0:
		return fmt.Errorf("miekg sees %d questions, %d answers, %d authority", len(m.Question), len(m.Answer), len(m.Ns))
	}
	mq := m.Question[0]
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(mq.Name, buf, 0, nil, false)
	if err != nil {
		return fmt.Errorf("repacking miekg's name %q: %v", mq.Name, err)
	}
	if !bytes.Equal(buf[:n], q.Name) {
		return fmt.Errorf("name %q, miekg %q (%q)", q.Name, buf[:n], mq.Name)
	}
	if mq.Qtype != q.QType || mq.Qclass != q.QClass {
		return fmt.Errorf("type/class %d/%d, miekg %d/%d", q.QType, q.QClass, mq.Qtype, mq.Qclass)
	}
	opt := m.IsEdns0()
	if (opt != nil) != q.EDNS {
		return fmt.Errorf("EDNS %v, miekg OPT %v", q.EDNS, opt)
	}
	wantExtra := 0
	if opt != nil {
		wantExtra = 1
		if opt.UDPSize() != q.UDPSize || opt.Do() != q.DO || opt.Version() != q.EDNSVersion {
			return fmt.Errorf("EDNS size/DO/version %d/%v/%d, miekg %d/%v/%d",
				q.UDPSize, q.DO, q.EDNSVersion, opt.UDPSize(), opt.Do(), opt.Version())
		}
		ecs := false
		for _, o := range opt.Option {
			if _, ok := o.(*dns.EDNS0_SUBNET); ok {
				ecs = true
			}
		}
		if ecs != q.ECS {
			return fmt.Errorf("ECS %v, miekg %v", q.ECS, ecs)
		}
	}
	if len(m.Extra) != wantExtra {
		return fmt.Errorf("miekg sees %d additional records", len(m.Extra))
	}
	return nil
}

// checkTTLOffsets compares the offsets TTLOffsets found in msg with miekg's
// view of the same message: one offset per record other than OPT, in
// message order, each holding that record's TTL.
func checkTTLOffsets(msg []byte, offs []uint16) error {
	m := new(dns.Msg)
	if err := m.Unpack(msg); err != nil {
		return nil // nothing to compare with
	}
	var rrs []dns.RR
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype != dns.TypeOPT {
				rrs = append(rrs, rr)
			}
		}
	}
	if len(rrs) != len(offs) {
		return fmt.Errorf("%d offsets for %d records", len(offs), len(rrs))
	}
	for i, off := range offs {
		if got := binary.BigEndian.Uint32(msg[off:]); got != rrs[i].Header().Ttl {
			return fmt.Errorf("offset %d of record %d (%s) holds %d, its TTL is %d", off, i, rrs[i], got, rrs[i].Header().Ttl)
		}
	}
	return nil
}
