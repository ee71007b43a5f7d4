//go:build linux

package resolver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// On Linux each UDP reader moves datagrams in batches: one recvmmsg takes up
// to udpBatch queries, the cache hits among them are answered into the
// batch's reply slots, and one sendmmsg sends every reply, each to the
// address its query came from. Under load that divides the system calls
// per query by up to udpBatch; when queries trickle in, a batch is one
// query and costs what a plain read and write cost. The system calls run
// inside syscall.RawConn callbacks, so Go's poller still parks the reader
// while the socket is empty, and deadlines still stop it.

// udpSocketBytes is one UDP socket's batch buffers, for WorstCase.
const udpSocketBytes = udpBatch * (udpInSlot + 4096)

const (
	udpBatch = 32
	// udpInSlot is the largest query read whole; a longer datagram is
	// dropped (a query is a header, a name of at most 255 bytes and an OPT
	// record: no stub sends 4 KiB).
	udpInSlot = 4096
)

type udpBatchReader struct {
	s    *Server
	conn *net.UDPConn
	rc   syscall.RawConn
	w    *worker
	// state says whether the reader is busy with a batch, for Stalled.
	state readerState

	in      []byte // udpBatch slots of udpInSlot
	out     []byte // udpBatch slots of outSlot
	outSlot int
	names   [udpBatch]unix.RawSockaddrInet6 // source of each query; large enough for IPv4 too
	riov    [udpBatch]unix.Iovec
	rhdr    [udpBatch]unix.Mmsghdr
	siov    [udpBatch]unix.Iovec
	shdr    [udpBatch]unix.Mmsghdr
	replies [udpBatch][]byte // keeps a reply that outgrew its slot alive until sent

	nrecv, nsend, sent int
	rerr               syscall.Errno
	recvFn, sendFn     func(fd uintptr) bool
	// cur is the datagram being dispatched and to, while it is, where its
	// answer goes (nil otherwise); immediate is queueCurrent, bound once so
	// that passing it does not allocate.
	cur       int
	to        *replyTo
	immediate func([]byte)
}

func (s *Server) serveUDP(conn *net.UDPConn) {
	defer s.readers.Done()
	rc, err := conn.SyscallConn()
	if err != nil {
		s.log.Error("UDP socket without raw access", zap.Error(err))
		return
	}
	r := &udpBatchReader{
		s: s, conn: conn, rc: rc,
		w:       s.newWorker(0),
		outSlot: max(int(s.cfg.MaxUDPSize), 4096),
	}
	r.in = make([]byte, udpBatch*udpInSlot)
	r.out = make([]byte, udpBatch*r.outSlot)
	for i := range r.rhdr {
		r.riov[i].Base = &r.in[i*udpInSlot]
		r.riov[i].SetLen(udpInSlot)
		r.rhdr[i].Hdr.Iov = &r.riov[i]
		r.rhdr[i].Hdr.SetIovlen(1)
		r.rhdr[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		r.shdr[i].Hdr.Iov = &r.siov[i]
		r.shdr[i].Hdr.SetIovlen(1)
	}
	r.recvFn, r.sendFn, r.immediate = r.doRecv, r.doSend, r.queueCurrent
	r.state.name, r.state.goid = fmt.Sprintf("udp %s", conn.LocalAddr()), goid()
	s.udpReaders.add(&r.state)
	defer s.udpReaders.remove(&r.state)
	r.loop()
}

func (r *udpBatchReader) loop() {
	s := r.s
	for {
		for i := range r.rhdr {
			r.rhdr[i].Hdr.Namelen = unix.SizeofSockaddrInet6
			r.rhdr[i].Hdr.Flags = 0
		}
		if err := r.rc.Read(r.recvFn); err != nil {
			if !s.closing.Load() && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
				s.log.Error("UDP reader stopped", zap.Error(err))
			}
			return
		}
		if r.rerr != 0 {
			if r.rerr != unix.ECONNREFUSED { // ICMP errors of earlier replies surface here
				s.log.Warn("reading from UDP socket", zap.Error(r.rerr))
			}
			continue
		}
		r.state.begin()
		r.w.start()
		r.nsend = 0
		for i := range r.nrecv {
			r.handle(i)
		}
		if r.nsend > 0 {
			r.sent = 0
			_ = r.rc.Write(r.sendFn)
			clear(r.replies[:r.nsend])
		}
		r.w.observeHits(protoUDP)
		r.state.end()
	}
}

// handle answers datagram i of the batch: into the send batch for a cache
// hit, to the miss pipeline otherwise. A panic is caught here, per packet:
// the datagram gets SERVFAIL and the reader (and the node's DNS) goes on.
func (r *udpBatchReader) handle(i int) {
	defer r.recoverPacket(i)
	s := r.s
	h := &r.rhdr[i]
	if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
		s.metrics.droppedMalformed.Inc()
		return
	}
	pkt := r.in[i*udpInSlot : i*udpInSlot+int(h.Len)]
	src, ok := sockaddrToAddrPort(&r.names[i])
	if !ok {
		return
	}
	slot := r.out[i*r.outSlot : i*r.outSlot : (i+1)*r.outSlot]
	out, act := r.w.fast(pkt, src, protoUDP, slot)
	switch act {
	case actReply:
		r.queue(i, out)
	case actMiss:
		conn := r.conn
		r.cur = i
		r.to = &replyTo{now: r.immediate, write: func(b []byte) { s.writeUDP(conn, b, src) }}
		s.dispatch(r.w, pkt, src, protoUDP, r.to)
		r.to = nil
	}
}

// recoverPacket answers datagram i SERVFAIL after a panic (recoverQuery):
// into the batch, unless the query was dispatched and has its replyTo.
func (r *udpBatchReader) recoverPacket(i int) {
	p := recover()
	if p == nil {
		return
	}
	to := r.to
	r.to, r.cur = nil, i
	pkt := r.in[i*udpInSlot : i*udpInSlot+int(r.rhdr[i].Len)]
	r.s.recoverQuery(p, pkt, to, r.immediate)
}

// queue adds the reply to datagram i to the send batch. out is usually in
// i's reply slot; a reply that outgrew it is kept alive until sent.
func (r *udpBatchReader) queue(i int, out []byte) {
	k := r.nsend
	r.replies[k] = out
	r.siov[k].Base = &out[0]
	r.siov[k].SetLen(len(out))
	r.shdr[k].Hdr.Name = r.rhdr[i].Hdr.Name
	r.shdr[k].Hdr.Namelen = r.rhdr[i].Hdr.Namelen
	r.nsend++
}

// queueCurrent is an answer to datagram r.cur given on the reader's
// goroutine: copied into its reply slot and sent with the batch.
func (r *udpBatchReader) queueCurrent(b []byte) {
	if len(b) == 0 {
		return
	}
	slot := r.out[r.cur*r.outSlot : r.cur*r.outSlot : (r.cur+1)*r.outSlot]
	r.queue(r.cur, append(slot, b...))
}

func (r *udpBatchReader) doRecv(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.rhdr[0])),
			udpBatch, unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case unix.EAGAIN:
			return false // the poller waits until the socket is readable
		case unix.EINTR:
			continue
		}
		r.nrecv, r.rerr = int(n), e
		return true
	}
}

// doSend sends the batch's replies; one the kernel refuses (the client's
// port is gone) is skipped.
func (r *udpBatchReader) doSend(fd uintptr) bool {
	for r.sent < r.nsend {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&r.shdr[r.sent])),
			uintptr(r.nsend-r.sent), 0, 0, 0)
		switch e {
		case 0:
			r.sent += int(n)
		case unix.EAGAIN:
			return false // the poller waits until the socket is writable
		case unix.EINTR:
		default:
			r.sent++
		}
	}
	return true
}

// udpReceiveBuffer is the receive buffer asked for each UDP socket: about
// 1,300 queries, so that a burst or a pause of the reader (a GC, the
// scheduler) costs a few milliseconds of latency rather than dropped
// queries; the kernel's default, about 270, dropped bystanders' queries in
// the storm benchmark, and 4 MiB turned the drops into a 25 ms backlog.
const udpReceiveBuffer = 1 << 20

// sizeSocket raises a UDP socket's receive buffer, beyond the system's
// rmem_max when the process may (CAP_NET_ADMIN), else as far as it allows.
// bind calls it before the address serves, so that a burst arriving before
// the reader first runs finds the full buffer.
func sizeSocket(conn *net.UDPConn) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return
	}
	setReceiveBuffer(rc, udpReceiveBuffer)
}

func setReceiveBuffer(rc syscall.RawConn, size int) {
	_ = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
		}
	})
}

// sockaddrToAddrPort converts a source address written by the kernel.
func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) (netip.AddrPort, bool) {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port), true
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port), true
	}
	return netip.AddrPort{}, false
}
