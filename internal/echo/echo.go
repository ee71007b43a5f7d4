// Package echo is a minimal, fast loopback DNS responder for benchmarking
// load generators: it answers each query with its own question (QR set,
// NOERROR) and, for A queries, one A record 127.0.0.1. One goroutine serves
// the UDP socket without allocations (on Linux with recvmmsg/sendmmsg, up to
// 64 queries per system call); TCP (RFC 7766 framing, pipelined) is served
// per connection.
package echo

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/nodedns/nodedns/internal/loopnet"
)

// Server is a running responder.
type Server struct {
	udp    *net.UDPConn
	tcp    *net.TCPListener
	answer bool

	// Queries counts UDP and TCP queries answered; Conns counts accepted
	// TCP connections.
	Queries atomic.Uint64
	Conns   atomic.Uint64

	wg    sync.WaitGroup
	conns loopnet.Conns
}

// Options configure Listen.
type Options struct {
	NoAnswer bool // reply NODATA (no answer records) to every query
	NoTCP    bool // do not listen on TCP
}

// Listen starts a responder on addr ("127.0.0.1:0" for any free port),
// which must be a loopback address.
func Listen(addr string, o Options) (*Server, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	if !ap.Addr().Unmap().IsLoopback() {
		return nil, errors.New("echo: refusing to listen on a non-loopback address")
	}
	var (
		u *net.UDPConn
		t *net.TCPListener
	)
	if o.NoTCP {
		u, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	} else {
		u, t, err = loopnet.Listen(ap) // TCP on the UDP socket's port
	}
	if err != nil {
		return nil, err
	}
	_ = u.SetReadBuffer(4 << 20)
	_ = u.SetWriteBuffer(4 << 20)
	s := &Server{udp: u, answer: !o.NoAnswer}
	if t != nil {
		s.tcp = t
		s.wg.Add(1)
		go s.serveTCP()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.serveUDP()
	}()
	return s, nil
}

// Addr returns the listening address (UDP and TCP share the port).
func (s *Server) Addr() string { return s.udp.LocalAddr().String() }

// Close stops the responder and waits for its goroutines.
func (s *Server) Close() error {
	s.conns.CloseAll()
	err := s.udp.Close()
	if s.tcp != nil {
		s.tcp.Close()
	}
	s.wg.Wait()
	return err
}

// serveUDPPlain is the portable UDP loop: one read and one write per query.
func (s *Server) serveUDPPlain() {
	buf := make([]byte, 65535)
	for {
		n, from, err := s.udp.ReadFromUDPAddrPort(buf[:512])
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if m := Respond(buf, n, s.answer); m > 0 {
			s.Queries.Add(1)
			_, _ = s.udp.WriteToUDPAddrPort(buf[:m], from)
		}
	}
}

func (s *Server) serveTCP() {
	defer s.wg.Done()
	s.conns.Serve(s.tcp, &s.wg, func(c net.Conn) {
		s.Conns.Add(1)
		s.serveConn(c)
	})
}

func (s *Server) serveConn(c net.Conn) {
	br := bufio.NewReader(c)
	bw := bufio.NewWriter(c)
	buf := make([]byte, 2+65535)
	for {
		if _, err := io.ReadFull(br, buf[:2]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(buf))
		if _, err := io.ReadFull(br, buf[2:2+n]); err != nil {
			return
		}
		m := Respond(buf[2:], n, s.answer)
		if m == 0 {
			continue
		}
		s.Queries.Add(1)
		binary.BigEndian.PutUint16(buf, uint16(m))
		if _, err := bw.Write(buf[:2+m]); err != nil {
			return
		}
		if br.Buffered() == 0 { // flush once the pipeline is drained
			if err := bw.Flush(); err != nil {
				return
			}
		}
	}
}

// Respond turns the query msg[:n] into a reply in place and returns its
// length, or 0 if msg is not a query to answer. msg must have room for 16
// more bytes than the question needs (the A record).
func Respond(msg []byte, n int, answer bool) int {
	if n < 12 || msg[2]&0x80 != 0 || binary.BigEndian.Uint16(msg[4:]) != 1 {
		return 0
	}
	i := 12
	for {
		if i >= n {
			return 0
		}
		l := int(msg[i])
		if l == 0 {
			i++
			break
		}
		if l&0xC0 != 0 {
			return 0
		}
		i += l + 1
	}
	if i+4 > n {
		return 0
	}
	qtype := binary.BigEndian.Uint16(msg[i:])
	i += 4
	msg[2] = msg[2]&0x79 | 0x80 // QR, keep opcode and RD, clear AA/TC
	msg[3] = 0x80               // RA, NOERROR
	clear(msg[6:12])            // no answer/authority/additional (drops OPT)
	if answer && qtype == 1 && i+16 <= len(msg) {
		msg[7] = 1
		copy(msg[i:], []byte{0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1})
		i += 16
	}
	return i
}
