package echo

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestRespond(t *testing.T) {
	q := new(dns.Msg)
	q.SetQuestion("www.example.test.", dns.TypeA)
	q.SetEdns0(1232, false)
	b, _ := q.Pack()
	buf := make([]byte, 600)
	copy(buf, b)
	n := Respond(buf, len(b), true)
	var r dns.Msg
	if err := r.Unpack(buf[:n]); err != nil {
		t.Fatal(err)
	}
	if !r.Response || r.Id != q.Id || r.Rcode != 0 || len(r.Answer) != 1 || len(r.Extra) != 0 || !r.RecursionDesired {
		t.Fatalf("bad reply %v", &r)
	}
	if a, ok := r.Answer[0].(*dns.A); !ok || !a.A.Equal(net.IPv4(127, 0, 0, 1)) || a.Hdr.Name != "www.example.test." {
		t.Fatalf("bad answer %v", r.Answer[0])
	}

	q.SetQuestion("www.example.test.", dns.TypeAAAA)
	b, _ = q.Pack()
	copy(buf, b)
	n = Respond(buf, len(b), true)
	if err := r.Unpack(buf[:n]); err != nil || len(r.Answer) != 0 || !r.Response {
		t.Fatalf("AAAA: %v %v", err, &r)
	}

	for _, bad := range [][]byte{nil, make([]byte, 11), append(append([]byte{}, b[:2]...), 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0)} {
		if n := Respond(append([]byte{}, bad...), len(bad), true); n != 0 {
			t.Errorf("Respond(%x) = %d, want 0", bad, n)
		}
	}
}

func TestServer(t *testing.T) {
	if _, err := Listen("192.0.2.1:0", Options{}); err == nil {
		t.Fatal("listened on a non-loopback address")
	}
	s, err := Listen("127.0.0.1:0", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, netw := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: netw, Timeout: 5 * time.Second}
		for i := range 3 {
			q := new(dns.Msg)
			q.SetQuestion("n"+string(rune('a'+i))+".test.", dns.TypeA)
			r, _, err := c.Exchange(q, s.Addr())
			if err != nil || len(r.Answer) != 1 || r.Question[0].Name != q.Question[0].Name {
				t.Fatalf("%s: %v %v", netw, err, r)
			}
		}
	}
	if s.Queries.Load() != 6 || s.Conns.Load() == 0 {
		t.Errorf("queries %d conns %d", s.Queries.Load(), s.Conns.Load())
	}
}
