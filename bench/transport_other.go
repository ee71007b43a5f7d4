//go:build !linux

package bench

import (
	"errors"
	"net"
	"os"
	"syscall"
	"time"
)

// udpConn is a connected UDP socket: Write/Read without addresses, so
// nothing is allocated per packet.
type udpConn struct {
	c    *net.UDPConn
	wbuf []byte
	rbuf []byte
}

func dialUDP(w *worker) (conn, error) {
	c, err := net.DialUDP("udp", udpLocal(w.e.source(w.idx)), net.UDPAddrFromAddrPort(w.e.target))
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(sockBufSize)
	_ = c.SetWriteBuffer(sockBufSize)
	return &udpConn{c: c, wbuf: make([]byte, sendBufSize), rbuf: make([]byte, maxMsg)}, nil
}

func (u *udpConn) buf() []byte { return u.wbuf }

func (u *udpConn) send(n int) error {
	_, err := u.c.Write(u.wbuf[:n])
	return err
}

func (u *udpConn) flush() error { return nil }

func (u *udpConn) readLoop(w *worker) bool {
	for {
		n, err := u.c.Read(u.rbuf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
				return false
			}
			w.rs.recvErrors++
			if errors.Is(err, syscall.ECONNREFUSED) { // ICMP port unreachable
				continue
			}
			return false
		}
		now := w.e.now()
		w.handleReply(u.rbuf[:n], now)
	}
}

func (u *udpConn) interrupt() { _ = u.c.SetReadDeadline(time.Unix(1, 0)) }

func (u *udpConn) close() { _ = u.c.Close() }

func newPacer() pacer { return nil }
