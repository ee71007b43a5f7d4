package resolver

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// maxTCPQuery is the largest query accepted over TCP. A query is a header,
// one question of at most 255 bytes and an OPT record: 4 KiB leaves room for
// any EDNS options a client sends.
const maxTCPQuery = 4096

// tcpWriteTimeout bounds how long a slow client can hold a writer.
const tcpWriteTimeout = 5 * time.Second

// tcpConn is one client connection and what the accept loop needs to know
// to choose which connection to close when the pool is short.
type tcpConn struct {
	net.Conn
	client     netip.Addr
	lastActive atomic.Int64 // UnixNano of the last query read, or of the accept
	asked      atomic.Bool  // a query has been read
	pending    atomic.Int32 // misses not yet answered
	evicted    atomic.Bool
	state      readerState // busy while a query is handled, for Stalled
}

// idleSince reports whether the connection has had no query outstanding
// and none read since before t: one to close first when room is short
// (RFC 7766 section 6.2.3).
func (tc *tcpConn) idleSince(t int64) bool {
	return tc.pending.Load() == 0 && !tc.evicted.Load() && tc.lastActive.Load() <= t
}

// answered reports whether the connection has had its queries answered and
// has none outstanding. A connection whose first query is not read yet is
// not: its query may be waiting in the socket, and closing it would lose
// the query rather than make room.
func (tc *tcpConn) answered() bool {
	return tc.asked.Load() && tc.pending.Load() == 0 && !tc.evicted.Load()
}

// close asks the connection's reader to end: it is blocked reading the
// next query, which then fails.
func (tc *tcpConn) evict() {
	tc.evicted.Store(true)
	_ = tc.SetReadDeadline(time.Now())
}

// serveTCP accepts client connections. A client outside the allow list
// is closed at once (it could only be refused). A client address holds at
// most TCPMaxConnsPerClient connections; when the pool is nearly full, the
// connection idle longest makes room, and when it is full, the idlest one
// of the client holding the most. A connection that cannot get room is
// closed at once rather than left waiting in the backlog, so the client
// moves on.
func (s *Server) serveTCP(l net.Listener) {
	defer s.readers.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("accepting TCP connection", zap.Error(err))
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE: do not spin
			continue
		}
		tc := &tcpConn{Conn: c, client: clientKey(remoteAddrPort(c))}
		tc.lastActive.Store(time.Now().UnixNano())
		if !s.allow.Load().allows(tc.client) {
			s.metrics.tcpRejected.Inc()
			_ = c.Close()
			continue
		}
		if !s.admitConn(tc) {
			s.metrics.tcpRejected.Inc()
			_ = c.Close()
			continue
		}
		s.metrics.tcpConns.Inc()
		s.readers.Add(1)
		go s.serveConn(tc)
	}
}

// admitConn finds room for a new connection, closing another if need be:
// the client's own idlest answered one when it is at its cap; the pool's idlest one
// when the pool is nine tenths full, where another client's connection
// counts as idle once it has been for a tenth of the idle timeout (at most
// a second: a connection just opened, its first query not yet read, is
// not); and when the pool is full of busy connections, the idlest one of
// the client holding the most, if it holds more than one. So a few busy
// clients cannot keep a new one out.
func (s *Server) admitConn(tc *tcpConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	now := time.Now().UnixNano()
	if s.tcpPerClient[tc.client] >= s.cfg.TCPMaxConnsPerClient {
		victim := s.idlest(func(o *tcpConn) bool { return o.client == tc.client && o.answered() })
		if victim == nil {
			return false
		}
		s.makeRoom(victim)
		s.metrics.tcpIdleClosed.Inc()
	} else if n := len(s.tcpConns); n >= s.cfg.TCPMaxConns*9/10 {
		minIdle := int64(min(s.tun.Load().tcpIdleTimeout/10, time.Second))
		if victim := s.idlest(func(o *tcpConn) bool { return o.idleSince(now - minIdle) }); victim != nil {
			s.makeRoom(victim)
			s.metrics.tcpIdleClosed.Inc()
		} else if n >= s.cfg.TCPMaxConns {
			victim := s.idlestOfBiggest()
			if victim == nil {
				return false
			}
			s.makeRoom(victim)
			s.metrics.tcpEvicted.Inc()
		}
	}
	// Evicted connections leave the pool when their reader ends; until
	// then the pool may exceed its cap by the few being closed.
	s.tcpConns[tc.Conn] = tc
	s.tcpPerClient[tc.client]++
	return true
}

// makeRoom closes victim to make room for a new connection. It stops
// counting against its client's cap at once: its reader may take a moment
// to end, and meanwhile the client must not be refused for connections
// already on their way out. s.mu is held.
func (s *Server) makeRoom(victim *tcpConn) {
	victim.evict()
	s.uncount(victim.client)
}

// uncount takes a connection off its client's count. s.mu is held.
func (s *Server) uncount(client netip.Addr) {
	if s.tcpPerClient[client]--; s.tcpPerClient[client] <= 0 {
		delete(s.tcpPerClient, client)
	}
}

// forgetConn takes a connection out of the pool.
func (s *Server) forgetConn(tc *tcpConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tcpConns, tc.Conn)
	if !tc.evicted.Load() { // makeRoom uncounted it
		s.uncount(tc.client)
	}
}

// idlestOfBiggest returns the connection idle longest, busy or not, of
// the client holding the most connections, when it holds more than one;
// nil otherwise. s.mu is held.
func (s *Server) idlestOfBiggest() *tcpConn {
	var biggest netip.Addr
	most := 1
	for c, n := range s.tcpPerClient {
		if n > most {
			biggest, most = c, n
		}
	}
	if !biggest.IsValid() {
		return nil
	}
	return s.idlest(func(o *tcpConn) bool { return o.client == biggest && !o.evicted.Load() })
}

// idlest returns the connection last active longest ago among those
// match accepts, or nil when it accepts none. s.mu is held.
func (s *Server) idlest(match func(*tcpConn) bool) *tcpConn {
	var best *tcpConn
	for _, o := range s.tcpConns {
		if match(o) && (best == nil || o.lastActive.Load() < best.lastActive.Load()) {
			best = o
		}
	}
	return best
}

// serveConn reads the queries of one connection (RFC 7766: several per
// connection, pipelined). Hits are answered in order by this goroutine;
// misses are answered when they resolve, possibly out of order, which
// RFC 7766 section 7 allows.
func (s *Server) serveConn(tc *tcpConn) {
	c := tc.Conn
	var pending sync.WaitGroup // misses of this connection
	defer func() {
		// Every miss is answered within the request timeout; the bound is a
		// guard so that a lost answer cannot keep the connection forever.
		waitTimeout(&pending, s.tun.Load().requestTimeout+time.Second)
		s.forgetConn(tc)
		_ = c.Close()
		s.metrics.tcpConns.Dec()
		s.readers.Done()
	}()
	src := remoteAddrPort(c)
	tc.state.name, tc.state.goid = "tcp "+src.String(), goid()
	var wmu sync.Mutex
	writeFramed := func(b []byte) {
		wmu.Lock()
		defer wmu.Unlock()
		_ = c.SetWriteDeadline(time.Now().Add(tcpWriteTimeout))
		if _, err := c.Write(b); err != nil {
			_ = c.Close() // the reader sees the error and ends the connection
		}
	}
	w := s.newWorker(2 + 512) // grows to the largest reply this connection needed
	in := make([]byte, 0, 512)
	var lenBuf [2]byte
	for {
		_ = c.SetReadDeadline(time.Now().Add(s.tun.Load().tcpIdleTimeout))
		// After the deadline is set: evict and Shutdown set their flag,
		// then a deadline in the past, so one of the two is seen here.
		if s.closing.Load() || tc.evicted.Load() {
			return
		}
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if n > maxTCPQuery {
			// No stub sends such a query; refusing it keeps a connection's
			// memory small whatever a client does.
			s.metrics.droppedMalformed.Inc()
			return
		}
		if cap(in) < n {
			in = make([]byte, n)
		}
		pkt := in[:n]
		if _, err := io.ReadFull(c, pkt); err != nil {
			return
		}
		tc.lastActive.Store(time.Now().UnixNano())
		tc.asked.Store(true)
		tc.state.begin()
		s.handleTCP(w, pkt, src, writeFramed, &pending, &tc.pending)
		tc.state.end()
	}
}

// handleTCP answers one query of a connection: a hit at once, in order; a
// miss when it resolves. A panic is caught here, per query: the query gets
// SERVFAIL and the connection goes on.
func (s *Server) handleTCP(w *worker, pkt []byte, src netip.AddrPort, writeFramed func([]byte), pending *sync.WaitGroup, npending *atomic.Int32) {
	var to *replyTo
	defer func() {
		if p := recover(); p != nil {
			s.recoverQuery(p, pkt, to, func(b []byte) {
				if b != nil {
					writeFramed(frame(b))
				}
			})
		}
	}()
	w.start()
	out, act := w.fast(pkt, src, protoTCP, w.out[:2])
	switch act {
	case actReply:
		binary.BigEndian.PutUint16(out, uint16(len(out)-2))
		writeFramed(out)
		w.observeHits(protoTCP)
		if cap(out) > 4096 {
			out = make([]byte, 0, 2+512) // do not keep a large reply's buffer per connection
		}
		w.out = out[:0]
	case actMiss:
		// Its one answer, from whichever goroutine gives it, ends it.
		pending.Add(1)
		npending.Add(1)
		to = &replyTo{write: func(b []byte) {
			defer pending.Done()
			// Not outstanding from here: the connection may be chosen to
			// make room while the answer is written, and eviction only
			// stops the next read.
			npending.Add(-1)
			if b != nil {
				writeFramed(frame(b))
			}
		}}
		s.dispatch(w, pkt, src, protoTCP, to)
	}
}

func remoteAddrPort(c net.Conn) netip.AddrPort {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// waitTimeout waits for wg, at most d.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}
