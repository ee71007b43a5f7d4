package resolver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/dnswire"
)

// Liveness that tells the truth: nodedns serves when its readers answer
// queries, not when the process runs. Two pieces of evidence, both taken
// from the path that answers queries:
//
//   - Probe sends the liveness question through the real sockets, over UDP
//     and TCP, to every listen address. The reader that receives it
//     answers it on its own goroutine, as it answers a cache hit, without
//     a lock of the miss path; a reader that is stuck never does.
//   - Stalled lists the readers that have been busy with one batch (UDP)
//     or one query (TCP) for too long: blocked on a lock or spinning. A
//     reader waiting for packets is idle, never stalled.
//
// The daemon's watchdog renews the node's fail-open mark and answers
// /health from these (cmd/nodedns/watchdog.go).

// probeName is the liveness question's name, asked with RD=0 for TXT. It
// is under .invalid (RFC 6761), so no zone can own it; RD=0 keeps it out
// of the cache, and only a query from the node itself (a loopback source,
// or one of the listen addresses) gets the liveness answer: from anyone
// else it is an ordinary query.
const probeName = "live.nodedns.invalid."

var probeWire = func() []byte {
	b := make([]byte, 64)
	n, err := dns.PackDomainName(probeName, b, 0, nil, false)
	if err != nil {
		panic(err)
	}
	return b[:n]
}()

// isProbe reports whether q, from src, is the liveness question from the
// node.
func (s *Server) isProbe(q *dnswire.Query, src netip.AddrPort) bool {
	if len(q.Name) != len(probeWire) || q.QType != dns.TypeTXT || q.RD() || !bytes.EqualFold(q.Name, probeWire) {
		return false
	}
	a := src.Addr().Unmap()
	return a.IsLoopback() || slices.Contains(s.listenIPs, a)
}

// readerState is what a reader publishes of itself for Stalled.
type readerState struct {
	name string // "udp 169.254.20.10:53 #1", "tcp 10.244.1.7:40112"
	// busySince is the UnixNano when the reader took its current batch or
	// query, 0 while it waits for one.
	busySince atomic.Int64
	goid      uint64 // the goroutine, to find its stack
}

func (r *readerState) begin() { r.busySince.Store(time.Now().UnixNano()) }
func (r *readerState) end()   { r.busySince.Store(0) }

// goid is the calling goroutine's ID, as its stack trace names it.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		id, _ := strconv.ParseUint(string(b[:i]), 10, 64)
		return id
	}
	return 0
}

// Stall is a reader busy with one batch or query for longer than asked.
type Stall struct {
	Reader string
	For    time.Duration
	// Stack is the reader goroutine's stack, or "" when it was not found.
	Stack string
	goid  uint64
}

// readers are the UDP readers' states; registered by serveUDP.
type readerList struct {
	mu   sync.Mutex
	list []*readerState
}

func (l *readerList) add(r *readerState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.list = append(l.list, r)
}

func (l *readerList) remove(r *readerState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.list = slices.DeleteFunc(l.list, func(o *readerState) bool { return o == r })
}

func (l *readerList) snapshot() []*readerState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.list)
}

// Stalled returns the readers, UDP and TCP, busy with one batch or query
// for longer than d, with their stacks.
func (s *Server) Stalled(d time.Duration) []Stall {
	now := time.Now().UnixNano()
	var out []Stall
	check := func(r *readerState) {
		if since := r.busySince.Load(); since != 0 && time.Duration(now-since) > d {
			out = append(out, Stall{Reader: r.name, For: time.Duration(now - since), goid: r.goid})
		}
	}
	for _, r := range s.udpReaders.snapshot() {
		check(r)
	}
	for _, c := range s.conns() {
		check(&c.state)
	}
	if len(out) > 0 {
		stacks := allStacks()
		for i := range out {
			out[i].Stack = stacks[out[i].goid]
		}
	}
	return out
}

// conns are the client TCP connections now.
func (s *Server) conns() []*tcpConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*tcpConn, 0, len(s.tcpConns))
	for _, c := range s.tcpConns {
		out = append(out, c)
	}
	return out
}

// allStacks is every goroutine's stack, by goroutine ID.
func allStacks() map[uint64]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) || len(buf) >= 64<<20 {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[uint64]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		rest, ok := strings.CutPrefix(g, "goroutine ")
		if !ok {
			continue
		}
		idStr, _, _ := strings.Cut(rest, " ")
		if id, err := strconv.ParseUint(idStr, 10, 64); err == nil {
			out[id] = g
		}
	}
	return out
}

// ProbeTimeout bounds each of Probe's exchanges.
const ProbeTimeout = 500 * time.Millisecond

// Probe asks the liveness question of every listen address over UDP and
// TCP, from the listen address's own IP, on sockets with the packet mark
// mark (0 for none; the fail-open rules let marked packets through to the
// local sockets). It returns nil when every one was answered by a nodedns
// within ProbeTimeout, else what failed.
func (s *Server) Probe(ctx context.Context, mark int) error {
	addrs := s.Addrs()
	if len(addrs) == 0 {
		return errors.New("not serving")
	}
	errs := make([]error, 2*len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		for j, network := range []string{"udp", "tcp"} {
			wg.Go(func() { errs[2*i+j] = probeOne(ctx, network, a, mark) })
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

// probeOne asks one address over one transport.
func probeOne(ctx context.Context, network string, to netip.AddrPort, mark int) error {
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		if mark == 0 {
			return nil
		}
		return setMark(c, mark)
	}}
	if !to.Addr().IsUnspecified() {
		if network == "udp" {
			d.LocalAddr = &net.UDPAddr{IP: to.Addr().AsSlice()}
		} else {
			d.LocalAddr = &net.TCPAddr{IP: to.Addr().AsSlice()}
		}
	}
	conn, err := d.DialContext(ctx, network, to.String())
	if err != nil {
		return fmt.Errorf("%s %s: %w", network, to, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	q := new(dns.Msg)
	q.Id = dns.Id()
	q.Question = []dns.Question{{Name: probeName, Qtype: dns.TypeTXT, Qclass: dns.ClassINET}}
	dc := &dns.Conn{Conn: conn}
	if err := dc.WriteMsg(q); err != nil {
		return fmt.Errorf("%s %s: %w", network, to, err)
	}
	for {
		r, err := dc.ReadMsg()
		if err != nil {
			return fmt.Errorf("%s %s: %w", network, to, err)
		}
		if r.Id != q.Id {
			continue // a late answer to an earlier probe on a reused port
		}
		if r.Rcode != dns.RcodeSuccess || len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, probeName) {
			return fmt.Errorf("%s %s: not nodedns's liveness answer: %s", network, to, dns.RcodeToString[r.Rcode])
		}
		return nil
	}
}
