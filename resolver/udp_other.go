//go:build !linux

package resolver

import (
	"errors"
	"net"
	"net/netip"
	"os"

	"go.uber.org/zap"

	"github.com/nodedns/nodedns/dnswire"
)

// sizeSocket leaves the receive buffer to the system.
func sizeSocket(*net.UDPConn) {}

// udpSocketBytes is one UDP socket's buffers, for WorstCase.
const udpSocketBytes = 65535 + dnswire.MaxUDPReply

// serveUDP is the read loop of one UDP socket, one datagram per system
// call (Linux uses the batched loop of udp_linux.go). Each socket has exactly one
// reader, which answers cache hits itself; the kernel spreads clients over
// the SO_REUSEPORT sockets of an address.
func (s *Server) serveUDP(conn *net.UDPConn) {
	defer s.readers.Done()
	w := s.newWorker(dnswire.MaxUDPReply)
	in := make([]byte, 65535)
	state := &readerState{name: "udp " + conn.LocalAddr().String(), goid: goid()}
	s.udpReaders.add(state)
	defer s.udpReaders.remove(state)
	for {
		n, src, err := conn.ReadFromUDPAddrPort(in)
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
			s.log.Warn("reading from UDP socket", zap.Error(err))
			continue
		}
		state.begin()
		s.handleUDP(w, conn, in[:n], src)
		state.end()
	}
}

// handleUDP answers one datagram; a panic is caught here, per packet.
func (s *Server) handleUDP(w *worker, conn *net.UDPConn, pkt []byte, src netip.AddrPort) {
	var to *replyTo
	defer func() {
		if p := recover(); p != nil {
			s.recoverQuery(p, pkt, to, func(b []byte) { s.writeUDP(conn, b, src) })
		}
	}()
	w.start()
	out, act := w.fast(pkt, src, protoUDP, w.out[:0])
	switch act {
	case actReply:
		s.writeUDP(conn, out, src)
		w.observeHits(protoUDP)
	case actMiss:
		to = &replyTo{write: func(b []byte) { s.writeUDP(conn, b, src) }}
		s.dispatch(w, pkt, src, protoUDP, to)
	}
}
