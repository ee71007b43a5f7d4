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

// serveTCP accepts client connections. Over the cap a connection is closed
// at once rather than left waiting in the backlog, so the client moves on.
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
		s.mu.Lock()
		if len(s.tcpConns) >= s.cfg.TCPMaxConns || s.closing.Load() {
			s.mu.Unlock()
			s.metrics.tcpRejected.Inc()
			_ = c.Close()
			continue
		}
		s.tcpConns[c] = struct{}{}
		s.mu.Unlock()
		s.metrics.tcpConns.Inc()
		s.readers.Add(1)
		go s.serveConn(c)
	}
}

// serveConn reads the queries of one connection (RFC 7766: several per
// connection, pipelined). Hits are answered in order by this goroutine;
// misses are answered when they resolve, possibly out of order, which
// RFC 7766 section 7 allows.
func (s *Server) serveConn(c net.Conn) {
	var pending sync.WaitGroup // misses of this connection
	defer func() {
		// Every miss is answered within the request timeout; the bound is a
		// guard so that a lost answer cannot keep the connection forever.
		waitTimeout(&pending, s.cfg.RequestTimeout+time.Second)
		s.mu.Lock()
		delete(s.tcpConns, c)
		s.mu.Unlock()
		_ = c.Close()
		s.metrics.tcpConns.Dec()
		s.readers.Done()
	}()
	src := remoteAddrPort(c)
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
	for !s.closing.Load() {
		_ = c.SetReadDeadline(time.Now().Add(s.cfg.TCPIdleTimeout))
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
		s.handleTCP(w, pkt, src, writeFramed, &pending)
	}
}

// handleTCP answers one query of a connection: a hit at once, in order; a
// miss when it resolves. A panic is caught here, per query: the query gets
// SERVFAIL and the connection goes on.
func (s *Server) handleTCP(w *worker, pkt []byte, src netip.AddrPort, writeFramed func([]byte), pending *sync.WaitGroup) {
	var write func([]byte)
	answered := false
	defer func() {
		if p := recover(); p != nil {
			s.recovered(p)
			switch {
			case write != nil:
				write(servfailFor(nil, pkt)) // a no-op if dispatch answered
			case !answered:
				if out := servfailFor(nil, pkt); out != nil {
					writeFramed(frame(out))
				}
			}
		}
	}()
	out, act := w.fast(pkt, src, protoTCP, w.out[:2])
	switch act {
	case actReply:
		answered = true
		binary.BigEndian.PutUint16(out, uint16(len(out)-2))
		writeFramed(out)
		if cap(out) > 4096 {
			out = make([]byte, 0, 2+512) // do not keep a large reply's buffer per connection
		}
		w.out = out[:0]
	case actMiss:
		// Answered exactly once, from whichever goroutine resolves it.
		var once atomic.Bool
		pending.Add(1)
		write = func(b []byte) {
			if once.CompareAndSwap(false, true) {
				defer pending.Done()
				if b != nil {
					writeFramed(frame(b))
				}
			}
		}
		s.dispatch(w, pkt, src, protoTCP, write, nil)
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
