package upstream

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// The UDP sockets of one upstream server. Opening a socket for every query
// (socket, connect, two epoll calls, close) was 40 % of a miss's CPU. A
// Remote instead keeps udpSockets connected sockets, each on a port the
// kernel picks at random, shares them between its exchanges, and replaces
// each after udpSocketUses queries, so that the ports keep changing. A
// reply is matched to its query by socket, ID and question.
//
// What it costs against a fresh port per query: an off-path attacker
// forging an answer must hit one of the 16 ports in use among the ~28,000
// of the ephemeral range and the query's random ID, about 2^26 guesses
// against 2^31. The kernel still delivers only datagrams from the
// upstream's own address and port, and only a reply with the query's ID
// and question is accepted.
const (
	udpSockets    = 16
	udpSocketUses = 256
)

// errSocketRetired ends the rare exchange whose socket was closed before
// the query could be written; the caller retries on another.
var errSocketRetired = errors.New("upstream socket retired")

type udpMux struct {
	r     *Remote
	mu    sync.Mutex
	socks [udpSockets]*muxSock // nil until first used
	next  int
}

func newUDPMux(r *Remote) *udpMux { return &udpMux{r: r} }

// muxSock is one connected socket and the exchanges waiting on it.
type muxSock struct {
	conn *net.UDPConn
	mu   sync.Mutex
	wait map[uint16]*udpWait // by query ID
	uses int                 // queries written; at udpSocketUses it retires
	// retired: no new exchange; closed once the last waiting one leaves.
	retired bool
	closed  bool
}

// udpWait is one exchange waiting for its reply.
type udpWait struct {
	q          *dns.Msg
	headerOnly bool
	reply      chan udpReply // buffered: the reader never blocks
	dropped    int           // bogus replies with its ID
}

type udpReply struct {
	msg *dns.Msg
	err error
}

// socket returns a socket to send a new query on, opening one when the
// slot is empty or its socket retired, with the query registered under a
// free ID (q's, or a new random one written into q and packed).
func (m *udpMux) socket(ctx context.Context, q *dns.Msg, packed []byte, w *udpWait) (*muxSock, error) {
	m.mu.Lock()
	i := m.next
	m.next = (m.next + 1) % udpSockets
	s := m.socks[i]
	if s == nil || s.full() {
		m.mu.Unlock()
		ns, err := m.open(ctx)
		if err != nil {
			return nil, err
		}
		m.mu.Lock()
		if old := m.socks[i]; old == s {
			m.socks[i] = ns
			if old != nil {
				old.retire()
			}
			s = ns
		} else { // another exchange replaced it first
			ns.retire()
			s = old
		}
	}
	m.mu.Unlock()
	if !s.register(q, packed, w) {
		return nil, errSocketRetired
	}
	return s, nil
}

func (m *udpMux) open(ctx context.Context) (*muxSock, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", m.r.addr)
	if err != nil {
		return nil, err
	}
	s := &muxSock{conn: c.(*net.UDPConn), wait: make(map[uint16]*udpWait)}
	go s.read(m.r)
	return s, nil
}

// close closes every socket; exchanges waiting on them fail.
func (m *udpMux) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, s := range m.socks {
		if s != nil {
			s.retire()
			s.shut(net.ErrClosed)
			m.socks[i] = nil
		}
	}
}

// full reports whether the socket has carried its share of queries.
func (s *muxSock) full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.retired || s.uses >= udpSocketUses
}

// register adds w under q's ID, drawing another random ID while that one
// is taken; false if the socket retired meanwhile.
func (s *muxSock) register(q *dns.Msg, packed []byte, w *udpWait) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.retired {
		return false
	}
	for {
		if _, taken := s.wait[q.Id]; !taken {
			break
		}
		q.Id = uint16(rand.Uint32())
	}
	binary.BigEndian.PutUint16(packed, q.Id)
	s.wait[q.Id] = w
	s.uses++
	return true
}

// leave removes the exchange waiting under id, closing a retired socket
// nobody waits on any more.
func (s *muxSock) leave(id uint16, w *udpWait) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wait[id] == w {
		delete(s.wait, id)
	}
	if s.retired && len(s.wait) == 0 && !s.closed {
		s.closed = true
		_ = s.conn.Close()
	}
}

// retire takes the socket out of use; it closes when nobody waits on it.
func (s *muxSock) retire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retired = true
	if len(s.wait) == 0 && !s.closed {
		s.closed = true
		_ = s.conn.Close()
	}
}

// shut fails every waiting exchange with err and closes the socket.
func (s *muxSock) shut(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, w := range s.wait {
		w.reply <- udpReply{err: err}
		delete(s.wait, id)
	}
	if !s.closed {
		s.closed = true
		_ = s.conn.Close()
	}
}

// read hands each datagram to the exchange its ID names, until the socket
// closes. A socket error other than the close (an ICMP port unreachable
// for an earlier query surfaces as ECONNREFUSED) fails the exchanges
// waiting on the socket at once, as a socket of their own would have.
func (s *muxSock) read(r *Remote) {
	buf := make([]byte, udpReadSize)
	for {
		n, _, flags, _, err := s.conn.ReadMsgUDP(buf, nil)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.failWaiting(err)
			continue
		}
		if n < dnsHeaderLen {
			r.dropped(replyMalformed)
			continue
		}
		if flags&msgTrunc != 0 {
			// Too large for the buffer: set TC so that the caller asks
			// again over TCP, as it would after a truncated reply.
			buf[2] |= flagTC >> 8
		}
		s.deliver(r, buf[:n])
	}
}

func (s *muxSock) failWaiting(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, w := range s.wait {
		w.reply <- udpReply{err: err}
		delete(s.wait, id)
	}
}

func (s *muxSock) deliver(r *Remote, b []byte) {
	id := binary.BigEndian.Uint16(b)
	s.mu.Lock()
	w, ok := s.wait[id]
	s.mu.Unlock()
	if !ok {
		// A reply for no query waiting: late, or forged. Not a failed
		// try, so only the mismatched counter counts it.
		r.m.mismatched.WithLabelValues(r.addr).Inc()
		return
	}
	resp, v := checkReply(bytes.Clone(b), w.q, w.headerOnly)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wait[id] != w {
		return // it left meanwhile
	}
	switch {
	case v == replyOK:
		delete(s.wait, id)
		w.reply <- udpReply{msg: resp}
	default:
		r.dropped(v)
		if w.dropped++; w.dropped >= maxDroppedReplies {
			delete(s.wait, id)
			w.reply <- udpReply{err: errTooManyDropped}
		}
	}
}

// exchangeUDP sends packed (q packed) on a shared socket and waits for the
// reply until deadline or ctx ends.
func (r *Remote) exchangeUDP(ctx context.Context, q *dns.Msg, packed []byte, deadline time.Time, headerOnly bool) (*dns.Msg, error) {
	w := &udpWait{q: q, headerOnly: headerOnly, reply: make(chan udpReply, 1)}
	var s *muxSock
	var err error
	for range 3 { // a socket retired between choice and registration
		if s, err = r.mux.socket(ctx, q, packed, w); !errors.Is(err, errSocketRetired) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	defer s.leave(q.Id, w)
	if _, err := s.conn.Write(packed); err != nil {
		return nil, err
	}
	t := timerPool.Get().(*time.Timer)
	t.Reset(time.Until(deadline))
	defer func() {
		t.Stop()
		timerPool.Put(t)
	}()
	select {
	case rep := <-w.reply:
		return rep.msg, rep.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, &net.OpError{Op: "read", Net: "udp", Err: errUDPTimeout{}}
	}
}

// timerPool holds stopped timers for exchanges to wait with: a timer and
// its channel are two allocations a miss need not make. (Since Go 1.23 a
// stopped timer's channel holds no stale value, so one is safe to reuse.)
var timerPool = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// errUDPTimeout is the timeout of an exchange over a shared socket: a
// net.Error with Timeout true, as a socket deadline's error is.
type errUDPTimeout struct{}

func (errUDPTimeout) Error() string   { return "i/o timeout" }
func (errUDPTimeout) Timeout() bool   { return true }
func (errUDPTimeout) Temporary() bool { return true }
