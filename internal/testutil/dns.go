package testutil

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nodedns/nodedns/internal/loopnet"
)

// Serve starts the DNS servers (miekg/dns, each given its socket or
// listener and its handler), waits until each serves, and shuts them down
// when the test ends; stop shuts them down before, closing their sockets.
func Serve(t testing.TB, servers ...*dns.Server) (stop func()) {
	t.Helper()
	for _, s := range servers {
		started := make(chan struct{})
		notify := s.NotifyStartedFunc
		s.NotifyStartedFunc = func() {
			if notify != nil {
				notify()
			}
			close(started)
		}
		failed := make(chan error, 1)
		go func() { failed <- s.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-failed:
			t.Fatalf("test DNS server: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatal("test DNS server did not start in 5 s")
		}
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			for _, s := range servers {
				_ = s.Shutdown()
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// Upstream is a real DNS server on loopback, over UDP and TCP on one
// port, whose answers come from a handler; it counts the queries it gets,
// in all and by name.
type Upstream struct {
	Addr    string
	Queries atomic.Int64

	stop   func()
	mu     sync.Mutex
	byName map[string]int // lower-case question name -> queries
}

// StartUpstream starts an Upstream on a free port of 127.0.0.1; it stops
// with the test.
func StartUpstream(t testing.TB, h dns.HandlerFunc) *Upstream {
	t.Helper()
	pc, l, err := loopnet.Loopback()
	if err != nil {
		t.Fatal(err)
	}
	return ServeUpstream(t, pc, l, h)
}

// ServeUpstream starts an Upstream on the sockets given (either may be
// nil: UDP or TCP only), such as sockets opened inside a network
// namespace (Netns.Do); Addr is pc's address, or l's without pc. It stops
// with the test.
func ServeUpstream(t testing.TB, pc net.PacketConn, l net.Listener, h dns.HandlerFunc) *Upstream {
	t.Helper()
	u := &Upstream{byName: map[string]int{}}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		u.Queries.Add(1)
		if len(r.Question) > 0 {
			u.mu.Lock()
			u.byName[strings.ToLower(r.Question[0].Name)]++
			u.mu.Unlock()
		}
		h(w, r)
	})
	var servers []*dns.Server
	if pc != nil {
		u.Addr = pc.LocalAddr().String()
		servers = append(servers, &dns.Server{PacketConn: pc, Handler: handler})
	}
	if l != nil {
		if u.Addr == "" {
			u.Addr = l.Addr().String()
		}
		servers = append(servers, &dns.Server{Listener: l, Handler: handler})
	}
	u.stop = Serve(t, servers...)
	return u
}

// Count is the number of queries for name (any case) so far.
func (u *Upstream) Count(name string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.byName[strings.ToLower(name)]
}

// Close stops the server and closes its port.
func (u *Upstream) Close() { u.stop() }

// Zone answers from records written as zone-file text, by name and type:
// NOERROR with the records of the type asked (none: NODATA), NXDOMAIN for
// a name with no record; an SOA of test. (MINIMUM 30) times every denial.
// It answers EDNS with EDNS.
func Zone(t testing.TB, records ...string) dns.HandlerFunc {
	t.Helper()
	var rrs []dns.RR
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		rrs = append(rrs, rr)
	}
	soa, _ := dns.NewRR("test. 3600 IN SOA ns.test. host.test. 1 7200 3600 1209600 30")
	return func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		found := false
		for _, rr := range rrs {
			if strings.EqualFold(rr.Header().Name, q.Name) {
				found = true
				if rr.Header().Rrtype == q.Qtype {
					m.Answer = append(m.Answer, dns.Copy(rr))
				}
			}
		}
		if !found {
			m.Rcode = dns.RcodeNameError
		}
		if len(m.Answer) == 0 {
			m.Ns = append(m.Ns, dns.Copy(soa))
		}
		if opt := r.IsEdns0(); opt != nil {
			m.SetEdns0(4096, opt.Do())
		}
		_ = w.WriteMsg(m)
	}
}

// Query is a question for name and type, with RD set.
func Query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

// Exchange asks m of addr over network ("udp", "tcp") and fails the test
// when no reply comes within 3 s.
func Exchange(t testing.TB, network, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 3 * time.Second, UDPSize: 65535}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s exchange of %s: %v", network, m.Question[0].Name, err)
	}
	return r
}

// ExchangeFrom asks m of addr over UDP from the local address src (any
// 127.0.0.0/8 address works on Linux loopback), and fails the test when
// no reply comes within 3 s.
func ExchangeFrom(t testing.TB, src, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: "udp", Timeout: 3 * time.Second,
		Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}}}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("from %s: %s: %v", src, m.Question[0].Name, err)
	}
	return r
}

// Forward sends a query to the DNS server at addr under a fresh ID and
// gives the reply back under the query's: a forwarder for a resolver
// under test (resolver.ForwarderFunc(testutil.Forward(addr))).
func Forward(addr string) func(context.Context, *dns.Msg) (*dns.Msg, error) {
	return func(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
		c := &dns.Client{Timeout: 2 * time.Second}
		m := req.Copy()
		m.Id = dns.Id()
		resp, _, err := c.ExchangeContext(ctx, m, addr)
		if err != nil {
			return nil, err
		}
		resp.Id = req.Id
		return resp, nil
	}
}

// Metric reads the value of one counter or gauge series from g: the series
// of the family name whose labels include every name, value pair given.
// It fails the test when no series matches, or more than one.
func Metric(t testing.TB, g prometheus.Gatherer, name string, labelPairs ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var found []float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labelPairs); i += 2 {
				if !hasLabel(m.GetLabel(), labelPairs[i], labelPairs[i+1]) {
					continue series
				}
			}
			if c := m.GetCounter(); c != nil {
				found = append(found, c.GetValue())
			} else {
				found = append(found, m.GetGauge().GetValue())
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("metric %s%v: %d series match, want 1", name, labelPairs, len(found))
	}
	return found[0]
}

func hasLabel(labels []*dto.LabelPair, name, value string) bool {
	for _, l := range labels {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}
