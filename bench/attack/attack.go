// Package attack holds what a hostile pod can do to a node's DNS server
// through its ports: hold thousands of idle HTTP connections, stream
// header bytes slowly, and keep DNS-over-TCP connections busy. The
// daemon's tests (cmd/nodedns) and the benchmark suite (bench/suite) run
// the same attacks, against nodedns alone or beside CoreDNS.
//
// Every attack runs until its context is done and connects from the
// attacker's local addresses (loopback only, as pods come from their own
// addresses); connections the server closes are opened again after a
// pause, so the attack keeps pressing for its whole run.
package attack

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Sources returns n addresses 127.<block>.x.y, x from 0, y from 1 to 250,
// for the attacking connections.
func Sources(block byte, n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{127, block + byte(i/250), 0, 1 + byte(i%250)})
	}
	return out
}

// Attacker is one hostile pod: where it connects from, how fast it can
// dial, and what its connections met. The zero value of DialRate dials
// as fast as the machine allows.
type Attacker struct {
	Sources []netip.Addr // connection i comes from Sources[i%len(Sources)]
	// DialRate bounds the attack's dials per second, as an attacker's own
	// CPU would (a benchmark whose load generator shares a core with the
	// attack needs the bound); 0: no bound.
	DialRate float64
	Stats

	mu   sync.Mutex
	next time.Time // the earliest time of the next dial under DialRate
}

// Stats count an attack's connections.
type Stats struct {
	Opened atomic.Int64 // connections established
	Failed atomic.Int64 // dials that failed or timed out
	// Closed counts connections that ended before the attack did: closed
	// or reset by the server or, in BusyTCP, an answer that did not come
	// within 2 s.
	Closed atomic.Int64
}

func (s *Stats) String() string {
	return fmt.Sprintf("%d connections opened, %d ended by the server, %d dials failed", s.Opened.Load(), s.Closed.Load(), s.Failed.Load())
}

// reopenPause is how long a worker waits before connecting again after the
// server closed its connection or a dial failed.
const reopenPause = 500 * time.Millisecond

// dialLimit bounds the dials in progress at once.
const dialLimit = 256

// IdleHTTP opens conns connections to addr (HOST:PORT); each asks path
// once with keep-alive, reads the answer and then holds the connection
// idle.
func (a *Attacker) IdleHTTP(ctx context.Context, addr, path string, conns int) {
	request := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	a.run(ctx, addr, conns, func(c net.Conn) {
		if _, err := c.Write([]byte(request)); err != nil {
			return
		}
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				return // closed by the server, or the attack is over
			}
		}
	})
}

// SlowHeaders opens conns connections to addr; each sends a request line
// for path and then a header whose value never ends, 64 bytes every 10 ms.
func (a *Attacker) SlowHeaders(ctx context.Context, addr, path string, conns int) {
	start := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: x\r\nX-Pad: ", path)
	chunk := []byte(strings.Repeat("a", 64))
	a.run(ctx, addr, conns, func(c net.Conn) {
		_, err := c.Write([]byte(start))
		for err == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			_, err = c.Write(chunk)
		}
	})
}

// BusyTCP opens perSource DNS-over-TCP connections to addr from each of
// the attacker's addresses; each asks q every interval and waits for the
// answer, so that none is ever idle.
func (a *Attacker) BusyTCP(ctx context.Context, addr string, q *dns.Msg, perSource int, interval time.Duration) {
	a.run(ctx, addr, perSource*len(a.Sources), func(nc net.Conn) {
		c := &dns.Conn{Conn: nc}
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(interval):
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			if c.WriteMsg(q) != nil {
				return
			}
			if _, err := c.ReadMsg(); err != nil {
				return
			}
		}
	})
}

// run keeps conns connections to addr open until ctx is done, each used by
// use until it returns; a connection is closed when ctx is done.
func (a *Attacker) run(ctx context.Context, addr string, conns int, use func(net.Conn)) {
	st := &a.Stats
	sem := make(chan struct{}, dialLimit)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: a.Sources[i%len(a.Sources)].AsSlice()}, Timeout: time.Second}
			for ctx.Err() == nil {
				if !a.pace(ctx) {
					return
				}
				select {
				case <-ctx.Done():
					return
				case sem <- struct{}{}:
				}
				c, err := dl.DialContext(ctx, "tcp", addr)
				<-sem
				if err != nil {
					if ctx.Err() == nil {
						st.Failed.Add(1)
					}
				} else {
					st.Opened.Add(1)
					stop := context.AfterFunc(ctx, func() { c.Close() })
					use(c)
					if stop() { // the server's doing, not the attack's end
						st.Closed.Add(1)
						c.Close()
					}
				}
				select {
				case <-ctx.Done():
				case <-time.After(reopenPause):
				}
			}
		})
	}
	wg.Wait()
}

// pace waits for the next dial DialRate allows; false if ctx ended first.
func (a *Attacker) pace(ctx context.Context) bool {
	if a.DialRate <= 0 {
		return true
	}
	a.mu.Lock()
	now := time.Now()
	at := a.next
	if at.Before(now) {
		at = now
	}
	a.next = at.Add(time.Duration(float64(time.Second) / a.DialRate))
	a.mu.Unlock()
	select {
	case <-ctx.Done():
		return false
	case <-time.After(at.Sub(now)):
		return true
	}
}
