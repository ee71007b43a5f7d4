package bench

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/internal/loopnet"
	"github.com/nodedns/nodedns/internal/testutil"
)

// testServer is a miekg/dns server on loopback (UDP and TCP on one port)
// that counts what it sees and does.
type testServer struct {
	addr    string
	queries atomic.Int64 // queries received
	replied atomic.Int64 // replies written
	dropped atomic.Int64 // queries deliberately not answered
	conns   atomic.Int64 // TCP connections accepted

	mu     sync.Mutex
	rcodes map[string]int64 // replies by rcode name
	nodata int64
	tc     int64
	names  []string // questions in arrival order, if recordNames
	record bool
}

type serverOpts struct {
	dropEvery     int64 // drop every Nth query (0: none)
	maxTCPQueries int   // miekg's per-connection limit (0: unlimited)
	recordNames   bool
	// answer decides the reply to q; nil: answerByName.
	answer func(q dns.Question, m *dns.Msg)
}

// answerByName picks the reply from the first label of the name:
// nx-* NXDOMAIN, sf-* SERVFAIL, ref-* REFUSED, nodata-* NOERROR without
// answers, tc-* TC bit set; anything else gets an A record.
func answerByName(q dns.Question, m *dns.Msg) {
	switch l := strings.ToLower(q.Name); {
	case strings.HasPrefix(l, "nx-"):
		m.Rcode = dns.RcodeNameError
	case strings.HasPrefix(l, "sf-"):
		m.Rcode = dns.RcodeServerFailure
	case strings.HasPrefix(l, "ref-"):
		m.Rcode = dns.RcodeRefused
	case strings.HasPrefix(l, "nodata-"):
	case strings.HasPrefix(l, "tc-"):
		m.Truncated = true
	default:
		addA(q, m)
	}
}

func addA(q dns.Question, m *dns.Msg) {
	if q.Qtype != dns.TypeA {
		return
	}
	m.Answer = append(m.Answer, &dns.A{
		Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
		A:   net.IPv4(127, 0, 0, 1),
	})
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func startServer(t testing.TB, o serverOpts) *testServer {
	t.Helper()
	s := &testServer{rcodes: map[string]int64{}, record: o.recordNames}
	answer := o.answer
	if answer == nil {
		answer = answerByName
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		n := s.queries.Add(1)
		if len(r.Question) != 1 {
			return
		}
		if s.record {
			s.mu.Lock()
			s.names = append(s.names, r.Question[0].Name+" "+dns.TypeToString[r.Question[0].Qtype])
			s.mu.Unlock()
		}
		if o.dropEvery > 0 && n%o.dropEvery == 0 {
			s.dropped.Add(1)
			return
		}
		m := new(dns.Msg)
		m.SetReply(r)
		answer(r.Question[0], m)
		s.mu.Lock()
		s.rcodes[dns.RcodeToString[m.Rcode]]++
		if m.Rcode == dns.RcodeSuccess && len(m.Answer) == 0 {
			s.nodata++
		}
		if m.Truncated {
			s.tc++
		}
		s.mu.Unlock()
		if err := w.WriteMsg(m); err == nil {
			s.replied.Add(1)
		}
	})

	pc, l, err := loopnet.Loopback()
	if err != nil {
		t.Fatal(err)
	}
	s.addr = pc.LocalAddr().String()
	maxq := o.maxTCPQueries
	if maxq == 0 {
		maxq = -1
	}
	testutil.Serve(t,
		&dns.Server{PacketConn: pc, Handler: h},
		&dns.Server{Listener: countingListener{l, &s.conns}, Handler: h, MaxTCPQueries: maxq})
	return s
}

func (s *testServer) rcodeCounts() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]uint64{}
	for k, v := range s.rcodes {
		out[k] = uint64(v)
	}
	return out
}

func (s *testServer) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.names...)
}
