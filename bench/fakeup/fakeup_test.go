package fakeup

import (
	"testing"
	"time"

	"github.com/miekg/dns"
)

func exchange(t *testing.T, s *Server, net, name string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	t.Helper()
	c := &dns.Client{Net: net, Timeout: timeout}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(1232, false)
	r, _, err := c.Exchange(m, s.Addr())
	return r, err
}

func TestAnswers(t *testing.T) {
	s, err := Listen(Options{NX: []Zone{{Name: "cluster.local", NegTTL: 5}}, TTL: 300})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, proto := range []string{"udp", "tcp"} {
		r, err := exchange(t, s, proto, "www.example.test.", dns.TypeA, 2*time.Second)
		if err != nil {
			t.Fatalf("%s A: %v", proto, err)
		}
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 300 {
			t.Fatalf("%s A: %v", proto, r)
		}
		if a := r.Answer[0].(*dns.A).A; !a.IsLoopback() {
			t.Errorf("A record %v is not loopback", a)
		}
		if r.IsEdns0() == nil {
			t.Errorf("%s: no OPT in the reply to an EDNS query", proto)
		}
		r, err = exchange(t, s, proto, "www.example.test.", dns.TypeAAAA, 2*time.Second)
		if err != nil || len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeAAAA {
			t.Fatalf("%s AAAA: %v %v", proto, r, err)
		}
		r, err = exchange(t, s, proto, "x.default.svc.Cluster.Local.", dns.TypeA, 2*time.Second)
		if err != nil || r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 {
			t.Fatalf("%s NX: %v %v", proto, r, err)
		}
		if soa, ok := r.Ns[0].(*dns.SOA); !ok || soa.Minttl != 5 || soa.Hdr.Name != "cluster.local." {
			t.Fatalf("%s NX authority: %v", proto, r.Ns)
		}
		r, err = exchange(t, s, proto, "cluster.local.", dns.TypeA, 2*time.Second)
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
			t.Fatalf("%s apex NODATA: %v %v", proto, r, err)
		}
		r, err = exchange(t, s, proto, "www.example.test.", dns.TypeMX, 2*time.Second)
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
			t.Fatalf("%s MX NODATA: %v %v", proto, r, err)
		}
	}
	st := s.Stats()
	if st.Received != 10 || st.UDP != 5 || st.TCP != 5 || st.Answered != 10 || st.NXDomain != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestDelayAndDrop(t *testing.T) {
	s, err := Listen(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetDelay(50 * time.Millisecond)
	for _, proto := range []string{"udp", "tcp"} {
		start := time.Now()
		if _, err := exchange(t, s, proto, "a.test.", dns.TypeA, 5*time.Second); err != nil {
			t.Fatalf("%s delayed: %v", proto, err)
		}
		if d := time.Since(start); d < 50*time.Millisecond {
			t.Errorf("%s: answered after %v, before the delay", proto, d)
		}
	}
	s.SetDelay(0)
	s.SetDrop(true)
	for _, proto := range []string{"udp", "tcp"} {
		if r, err := exchange(t, s, proto, "b.test.", dns.TypeA, 200*time.Millisecond); err == nil {
			t.Fatalf("%s: answer in drop mode: %v", proto, r)
		}
	}
	st := s.Stats()
	if st.Received != 4 || st.Dropped != 2 || st.Answered != 2 {
		t.Errorf("stats %+v", st)
	}
	if st.MaxPending < 1 {
		t.Errorf("MaxPending %d", st.MaxPending)
	}
}

func TestRefusesNonLoopback(t *testing.T) {
	if _, err := Listen(Options{Addr: "0.0.0.0:0"}); err == nil {
		t.Fatal("listened on 0.0.0.0")
	}
}

func TestDead(t *testing.T) {
	s, err := Listen(Options{Dead: []string{"Dead.Test"}, NX: []Zone{{Name: "nx.test", NegTTL: 5}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, proto := range []string{"udp", "tcp"} {
		for _, q := range []struct {
			name  string
			qtype uint16
		}{{"www.dead.test.", dns.TypeA}, {"www.DEAD.test.", dns.TypeAAAA}, {"dead.test.", dns.TypeA}} {
			if r, err := exchange(t, s, proto, q.name, q.qtype, 200*time.Millisecond); err == nil {
				t.Errorf("%s %s: answered in a dead zone: %v", proto, q.name, r)
			}
		}
		// Everything else is answered as usual: other names, a name that
		// only ends like the zone, NXDOMAIN zones and health probes.
		r, err := exchange(t, s, proto, "www.notdead.test.", dns.TypeA, 2*time.Second)
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("%s: a live name beside the dead zone: %v %v", proto, r, err)
		}
		if r, err := exchange(t, s, proto, "x.nx.test.", dns.TypeA, 2*time.Second); err != nil || r.Rcode != dns.RcodeNameError {
			t.Fatalf("%s: NXDOMAIN beside the dead zone: %v %v", proto, r, err)
		}
		if r, err := exchange(t, s, proto, ".", dns.TypeNS, 2*time.Second); err != nil || r.Rcode != dns.RcodeSuccess {
			t.Fatalf("%s: probe: %v %v", proto, r, err)
		}
	}
	st := s.Stats()
	if st.Received != 12 || st.Dead != 6 || st.Answered != 6 || st.Probes != 2 || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
	if d := st.Sub(Stats{Received: 2, Dead: 1}); d.Dead != 5 || d.Received != 10 {
		t.Errorf("Sub: %+v", d)
	}
	if _, err := Listen(Options{Dead: []string{"."}}); err == nil {
		t.Error("the root accepted as a dead zone")
	}
}

func TestWatch(t *testing.T) {
	s, err := Listen(Options{Watch: []string{"WS.Test"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, name := range []string{"a.ws.test.", "B.WS.test.", "ws.test.", "a.notws.test.", "other.test."} {
		if r, err := exchange(t, s, "udp", name, dns.TypeA, 2*time.Second); err != nil || r.Rcode != dns.RcodeSuccess {
			t.Fatalf("%s: %v %v", name, r, err)
		}
	}
	st := s.Stats()
	if st.Watched != 3 || st.Received != 5 {
		t.Errorf("stats %+v, want 3 of 5 watched", st)
	}
	if d := st.Sub(Stats{Watched: 1}); d.Watched != 2 {
		t.Errorf("Sub: %+v", d)
	}
}
