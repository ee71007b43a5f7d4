// Package fakeup is a fake upstream DNS server for the benchmark suite: it
// listens on a loopback address (UDP and TCP on the same port) and answers
// every query itself, so the servers under test forward to something the
// suite controls and counts.
//
//   - A and AAAA queries get one record (127.x.y.z derived from the name, or
//     ::1) with Options.TTL;
//   - names in (or under) one of Options.NX get NXDOMAIN with the zone's SOA
//     in the authority section (TTL and MINIMUM: the zone's NegTTL), so that
//     negative answers can be cached (RFC 2308);
//   - other types get NODATA with an SOA for ".";
//   - queries for names in (or under) one of Options.Dead are counted
//     (Stats.Dead) and never answered: a domain whose authoritative servers
//     are down, while everything else resolves.
//
// Every answer can be delayed (SetDelay: e.g. a slow cluster DNS) or every
// query dropped (SetDrop: a dead one). Stats counts what was received.
package fakeup

import (
	"bufio"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/internal/loopnet"
)

// Zone is a zone whose names do not exist.
type Zone struct {
	Name   string // e.g. "cluster.local."
	NegTTL uint32 // TTL and MINIMUM of its SOA: how long NXDOMAIN may be cached
}

// Options configure Listen.
type Options struct {
	Addr  string        // loopback IP:PORT; port 0 picks a free one
	TTL   uint32        // TTL of A/AAAA answers (default 3600)
	NX    []Zone        // zones answered NXDOMAIN
	Delay time.Duration // initial delay of every answer
	// Dead are zones whose queries are counted (Stats.Dead) and never
	// answered, e.g. "dead.bench.test." (not the root: health probes ask
	// for ".").
	Dead []string
	// Watch are zones whose queries Stats.Watched counts (answered as any
	// other), e.g. a working set whose misses a scenario measures.
	Watch []string
	// QueueLen bounds the delayed UDP answers held at once (default 1<<20);
	// beyond it queries are dropped and counted in Stats.Overflow. Memory
	// is taken as answers are queued, not up front.
	QueueLen int
}

// Stats counts queries since the server started. Received counts every
// query read (UDP and TCP), whatever happened to it next.
type Stats struct {
	Received uint64 `json:"received"`
	UDP      uint64 `json:"udp"`      // messages read over UDP
	TCP      uint64 `json:"tcp"`      // messages read over TCP
	Answered uint64 `json:"answered"` // answers written (or attempted)
	NXDomain uint64 `json:"nxdomain"`
	Dropped  uint64 `json:"dropped"`  // in drop mode
	Dead     uint64 `json:"dead"`     // for a name in a dead zone (never answered)
	Overflow uint64 `json:"overflow"` // delay queue full
	Probes   uint64 `json:"probes"`   // queries for "." (health checks)
	Watched  uint64 `json:"watched"`  // for a name in one of Options.Watch
	Bad      uint64 `json:"bad"`      // not a query we could parse
	TCPConns uint64 `json:"tcp_conns"`
	// MaxPending is the most delayed UDP answers held at once.
	MaxPending uint64 `json:"max_pending"`
}

// Sub returns s - o, field by field (MaxPending: s's).
func (s Stats) Sub(o Stats) Stats {
	return Stats{
		Received: s.Received - o.Received, UDP: s.UDP - o.UDP, TCP: s.TCP - o.TCP,
		Answered: s.Answered - o.Answered, NXDomain: s.NXDomain - o.NXDomain,
		Dropped: s.Dropped - o.Dropped, Dead: s.Dead - o.Dead, Overflow: s.Overflow - o.Overflow,
		Probes: s.Probes - o.Probes, Watched: s.Watched - o.Watched, Bad: s.Bad - o.Bad, TCPConns: s.TCPConns - o.TCPConns,
		MaxPending: s.MaxPending,
	}
}

// Server is a running fake upstream.
type Server struct {
	o     Options
	nx    []Zone   // fully qualified, lower case
	dead  []string // fully qualified, lower case
	watch []string // fully qualified, lower case
	udp   *net.UDPConn
	tcp   *net.TCPListener
	delay atomic.Int64
	drop  atomic.Bool

	// Delayed UDP answers, in arrival order: queue[qhead:]. wake nudges
	// the sender when the queue was empty.
	qmu   sync.Mutex
	queue []delayed
	qhead int
	wake  chan struct{}

	received, udpN, tcpN, answered, nxdomain atomic.Uint64
	dropped, overflow, probes, bad, tcpConns atomic.Uint64
	deadN, watched                           atomic.Uint64
	pending, maxPending                      atomic.Int64

	wg           sync.WaitGroup
	tcpConnsOpen loopnet.Conns
	done         chan struct{}
}

type delayed struct {
	due  time.Time
	to   netip.AddrPort
	resp []byte
}

// Listen starts a fake upstream on o.Addr, which must be a loopback address.
func Listen(o Options) (*Server, error) {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	ap, err := netip.ParseAddrPort(o.Addr)
	if err != nil {
		return nil, err
	}
	if !ap.Addr().Unmap().IsLoopback() {
		return nil, errors.New("fakeup: refusing to listen on a non-loopback address")
	}
	if o.TTL == 0 {
		o.TTL = 3600
	}
	if o.QueueLen <= 0 {
		o.QueueLen = 1 << 20
	}
	s := &Server{o: o, done: make(chan struct{}), wake: make(chan struct{}, 1)}
	for _, z := range o.NX {
		s.nx = append(s.nx, Zone{Name: strings.ToLower(dns.Fqdn(z.Name)), NegTTL: z.NegTTL})
	}
	for _, z := range o.Dead {
		if z = strings.ToLower(dns.Fqdn(z)); z == "." {
			return nil, errors.New("fakeup: the root cannot be a dead zone (health probes ask for it)")
		}
		s.dead = append(s.dead, z)
	}
	for _, z := range o.Watch {
		s.watch = append(s.watch, strings.ToLower(dns.Fqdn(z)))
	}
	s.delay.Store(int64(o.Delay))
	if s.udp, s.tcp, err = loopnet.Listen(ap); err != nil {
		return nil, err
	}
	_ = s.udp.SetReadBuffer(8 << 20)
	_ = s.udp.SetWriteBuffer(8 << 20)
	s.wg.Add(3)
	go s.serveUDP()
	go s.sendDelayed()
	go s.serveTCP()
	return s, nil
}

// Addr is the listening address (UDP and TCP share the port).
func (s *Server) Addr() string { return s.udp.LocalAddr().String() }

// SetDelay delays every later answer by d (0: answer at once).
func (s *Server) SetDelay(d time.Duration) { s.delay.Store(int64(d)) }

// SetDrop makes the server drop (count but never answer) every query.
func (s *Server) SetDrop(drop bool) { s.drop.Store(drop) }

// Pending is the number of delayed UDP answers not sent yet.
func (s *Server) Pending() int64 { return s.pending.Load() }

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Received: s.received.Load(), UDP: s.udpN.Load(), TCP: s.tcpN.Load(),
		Answered: s.answered.Load(), NXDomain: s.nxdomain.Load(),
		Dropped: s.dropped.Load(), Dead: s.deadN.Load(), Overflow: s.overflow.Load(), Probes: s.probes.Load(),
		Watched: s.watched.Load(),
		Bad:     s.bad.Load(), TCPConns: s.tcpConns.Load(), MaxPending: uint64(s.maxPending.Load()),
	}
}

// ResetMaxPending restarts the MaxPending high-water mark.
func (s *Server) ResetMaxPending() { s.maxPending.Store(s.pending.Load()) }

// Close stops the server, dropping answers still delayed.
func (s *Server) Close() error {
	if !s.tcpConnsOpen.CloseAll() {
		return nil
	}
	close(s.done)
	err := s.udp.Close()
	s.tcp.Close()
	s.wg.Wait()
	return err
}

// respond builds the reply to the query in msg, or nil to send nothing.
func (s *Server) respond(msg []byte) []byte {
	q := new(dns.Msg)
	if err := q.Unpack(msg); err != nil || q.Response || len(q.Question) != 1 {
		s.bad.Add(1)
		return nil
	}
	s.received.Add(1)
	qq := q.Question[0]
	if qq.Name == "." {
		s.probes.Add(1)
	}
	if s.drop.Load() {
		s.dropped.Add(1)
		return nil
	}
	name := strings.ToLower(qq.Name)
	if inZone(name, s.watch) {
		s.watched.Add(1)
	}
	if inZone(name, s.dead) {
		s.deadN.Add(1)
		return nil
	}
	r := new(dns.Msg)
	r.SetReply(q)
	r.RecursionAvailable = true
	r.Compress = true
	if q.Opcode != dns.OpcodeQuery {
		r.Rcode = dns.RcodeNotImplemented
	} else if z, ok := s.nxZone(name); ok {
		if name != z.Name {
			r.Rcode = dns.RcodeNameError
			s.nxdomain.Add(1)
		} // the apex exists: NODATA
		r.Ns = []dns.RR{soa(z.Name, z.NegTTL)}
	} else {
		hdr := dns.RR_Header{Name: qq.Name, Class: dns.ClassINET, Ttl: s.o.TTL}
		switch qq.Qtype {
		case dns.TypeA:
			h := fnv.New32a()
			h.Write([]byte(name))
			v := h.Sum32()
			hdr.Rrtype = dns.TypeA
			r.Answer = []dns.RR{&dns.A{Hdr: hdr, A: net.IPv4(127, byte(v>>16), byte(v>>8), byte(v)|1)}}
		case dns.TypeAAAA:
			hdr.Rrtype = dns.TypeAAAA
			r.Answer = []dns.RR{&dns.AAAA{Hdr: hdr, AAAA: net.IPv6loopback}}
		default:
			r.Ns = []dns.RR{soa(".", 60)}
		}
	}
	if opt := q.IsEdns0(); opt != nil {
		r.SetEdns0(1232, opt.Do())
	}
	out, err := r.Pack()
	if err != nil {
		s.bad.Add(1)
		return nil
	}
	return out
}

func (s *Server) nxZone(name string) (Zone, bool) {
	for _, z := range s.nx {
		if name == z.Name || strings.HasSuffix(name, "."+z.Name) {
			return z, true
		}
	}
	return Zone{}, false
}

// inZone reports whether name (lower case, fully qualified) is one of zones
// or under one.
func inZone(name string, zones []string) bool {
	for _, z := range zones {
		if name == z || strings.HasSuffix(name, "."+z) {
			return true
		}
	}
	return false
}

func soa(zone string, negTTL uint32) *dns.SOA {
	ns := "ns." + zone
	mbox := "hostmaster." + zone
	if zone == "." {
		ns, mbox = "a.root-servers.test.", "nstld.test."
	}
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: negTTL},
		Ns:  ns, Mbox: mbox, Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: negTTL,
	}
}

func (s *Server) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := s.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.udpN.Add(1)
		resp := s.respond(buf[:n])
		if resp == nil {
			continue
		}
		if d := time.Duration(s.delay.Load()); d > 0 {
			s.enqueue(delayed{due: time.Now().Add(d), to: from, resp: resp})
			continue
		}
		s.answered.Add(1) // before the write: the client may read the stats as soon as it has the answer
		_, _ = s.udp.WriteToUDPAddrPort(resp, from)
	}
}

func (s *Server) enqueue(d delayed) {
	s.qmu.Lock()
	if len(s.queue)-s.qhead >= s.o.QueueLen {
		s.qmu.Unlock()
		s.overflow.Add(1)
		return
	}
	if s.qhead > 0 && s.qhead == len(s.queue) {
		s.queue, s.qhead = s.queue[:0], 0 // drained: reuse from the start
	}
	s.queue = append(s.queue, d)
	s.qmu.Unlock()
	if p := s.pending.Add(1); p > s.maxPending.Load() {
		s.maxPending.Store(p)
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// dequeue returns the oldest delayed answer, if any.
func (s *Server) dequeue() (delayed, bool) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.qhead == len(s.queue) {
		return delayed{}, false
	}
	d := s.queue[s.qhead]
	s.queue[s.qhead] = delayed{} // release the reply
	s.qhead++
	if s.qhead > 4096 && s.qhead*2 > len(s.queue) {
		// Compact: drop the sent half so the slice does not grow forever.
		n := copy(s.queue, s.queue[s.qhead:])
		clear(s.queue[n:])
		s.queue, s.qhead = s.queue[:n], 0
	}
	return d, true
}

// sendDelayed sends delayed UDP answers in arrival order (the delay is the
// same for all, so the queue is ordered by due time; after SetDelay it may
// be briefly out of order, which only ever makes an answer later).
func (s *Server) sendDelayed() {
	defer s.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		d, ok := s.dequeue()
		if !ok {
			select {
			case <-s.wake:
				continue
			case <-s.done:
				return
			}
		}
		if w := time.Until(d.due); w > 0 {
			t.Reset(w)
			select {
			case <-t.C:
			case <-s.done:
				return
			}
		}
		s.pending.Add(-1)
		if s.drop.Load() { // dropped after all: the server died meanwhile
			s.dropped.Add(1)
			continue
		}
		s.answered.Add(1)
		_, _ = s.udp.WriteToUDPAddrPort(d.resp, d.to)
	}
}

func (s *Server) serveTCP() {
	defer s.wg.Done()
	s.tcpConnsOpen.Serve(s.tcp, &s.wg, func(c net.Conn) {
		s.tcpConns.Add(1)
		s.serveConn(c)
	})
}

// serveConn reads pipelined queries and answers each after the delay, in
// order, from a writer goroutine of its own.
func (s *Server) serveConn(c net.Conn) {
	out := make(chan delayed, 1024)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		bw := bufio.NewWriter(c)
		var hdr [2]byte
		for d := range out {
			if w := time.Until(d.due); w > 0 {
				select {
				case <-time.After(w):
				case <-s.done:
					return
				}
			}
			if s.drop.Load() {
				s.dropped.Add(1)
				continue
			}
			s.answered.Add(1)
			binary.BigEndian.PutUint16(hdr[:], uint16(len(d.resp)))
			if _, err := bw.Write(hdr[:]); err != nil {
				return
			}
			if _, err := bw.Write(d.resp); err != nil {
				return
			}
			if len(out) == 0 {
				if err := bw.Flush(); err != nil {
					return
				}
			}
		}
		_ = bw.Flush()
	}()
	defer func() {
		close(out)
		<-writerDone
	}()
	br := bufio.NewReader(c)
	buf := make([]byte, 65535)
	var hdr [2]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(br, buf[:n]); err != nil {
			return
		}
		s.tcpN.Add(1)
		resp := s.respond(buf[:n])
		if resp == nil {
			continue
		}
		select {
		case out <- delayed{due: time.Now().Add(time.Duration(s.delay.Load())), resp: resp}:
		case <-writerDone:
			return
		case <-s.done:
			return
		}
	}
}
