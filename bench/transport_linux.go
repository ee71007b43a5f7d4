//go:build linux

package bench

import (
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// On Linux the UDP transport uses sendmmsg/recvmmsg on a connected socket:
// the writer sends each burst of queries (up to maxBurst) with one system
// call and the reader takes up to recvBatch replies per call. Buffers and
// message headers are allocated once per socket; the raw system calls run
// inside syscall.RawConn callbacks, so Go's poller still handles blocking
// and deadlines.

const (
	recvBatch   = 32
	recvBufSize = 1024 // replies are truncated to this; header and question fit
)

type udpConn struct {
	c  *net.UDPConn
	rc syscall.RawConn

	sbuf   []byte // maxBurst slots of sendBufSize
	siov   [maxBurst]unix.Iovec
	shdr   [maxBurst]unix.Mmsghdr
	nq     int // queued
	off    int // sent so far in the current flush
	sendFn func(fd uintptr) bool
	errs   *uint64 // the worker's send error count

	rbuf   []byte // recvBatch slots of recvBufSize
	riov   [recvBatch]unix.Iovec
	rhdr   [recvBatch]unix.Mmsghdr
	nrecv  int
	rerrno syscall.Errno
	recvFn func(fd uintptr) bool
}

func dialUDP(w *worker) (conn, error) {
	c, err := net.DialUDP("udp", udpLocal(w.e.source(w.idx)), net.UDPAddrFromAddrPort(w.e.target))
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(sockBufSize)
	_ = c.SetWriteBuffer(sockBufSize)
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	u := &udpConn{
		c:    c,
		rc:   rc,
		sbuf: make([]byte, maxBurst*sendBufSize),
		rbuf: make([]byte, recvBatch*recvBufSize),
		errs: &w.ss.sendErrors,
	}
	for i := range u.shdr {
		u.siov[i].Base = &u.sbuf[i*sendBufSize]
		u.shdr[i].Hdr.Iov = &u.siov[i]
		u.shdr[i].Hdr.SetIovlen(1)
	}
	for i := range u.rhdr {
		u.riov[i].Base = &u.rbuf[i*recvBufSize]
		u.riov[i].SetLen(recvBufSize)
		u.rhdr[i].Hdr.Iov = &u.riov[i]
		u.rhdr[i].Hdr.SetIovlen(1)
	}
	u.sendFn = u.doSend
	u.recvFn = u.doRecv
	return u, nil
}

func (u *udpConn) buf() []byte {
	return u.sbuf[u.nq*sendBufSize : (u.nq+1)*sendBufSize]
}

func (u *udpConn) send(n int) error {
	u.siov[u.nq].SetLen(n)
	u.nq++
	if u.nq == maxBurst {
		return u.flush()
	}
	return nil
}

func (u *udpConn) flush() error {
	if u.nq == 0 {
		return nil
	}
	u.off = 0
	err := u.rc.Write(u.sendFn)
	u.nq = 0
	return err
}

// doSend sends the queued queries; a message the kernel refuses (e.g. a
// pending ICMP error) is skipped and counted: its query times out as lost.
func (u *udpConn) doSend(fd uintptr) bool {
	for u.off < u.nq {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd,
			uintptr(unsafe.Pointer(&u.shdr[u.off])), uintptr(u.nq-u.off), 0, 0, 0)
		switch e {
		case 0:
			u.off += int(n)
		case unix.EAGAIN:
			return false // wait until writable
		case unix.EINTR:
		default:
			*u.errs++
			u.off++
		}
	}
	return true
}

func (u *udpConn) doRecv(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd,
			uintptr(unsafe.Pointer(&u.rhdr[0])), recvBatch, unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case unix.EAGAIN:
			return false // wait until readable
		case unix.EINTR:
			continue
		}
		u.nrecv, u.rerrno = int(n), e
		return true
	}
}

func (u *udpConn) readLoop(w *worker) bool {
	for {
		if err := u.rc.Read(u.recvFn); err != nil {
			return false // closed or interrupted
		}
		if u.rerrno != 0 {
			w.rs.recvErrors++
			if u.rerrno == unix.ECONNREFUSED { // ICMP port unreachable
				continue
			}
			return false
		}
		now := w.e.now()
		for i := range u.nrecv {
			b := u.rbuf[i*recvBufSize:]
			w.handleReply(b[:min(int(u.rhdr[i].Len), recvBufSize)], now)
		}
	}
}

func (u *udpConn) interrupt() { _ = u.c.SetReadDeadline(time.Unix(1, 0)) }

func (u *udpConn) close() { _ = u.c.Close() }

// timerPacer sleeps with a timerfd read through Go's poller: the wake-up
// comes from a high-resolution kernel timer, not from the runtime's timers,
// which round idle sleeps up to whole milliseconds — too coarse for an open
// loop whose latency is measured from the intended send time.
type timerPacer struct {
	fd  int
	f   *os.File
	buf [8]byte
}

func newPacer() pacer {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil // fall back to runtime timers
	}
	return &timerPacer{fd: fd, f: os.NewFile(uintptr(fd), "timerfd")}
}

func (p *timerPacer) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	if err := unix.TimerfdSettime(p.fd, 0, &spec, nil); err != nil {
		time.Sleep(d)
		return
	}
	_, _ = p.f.Read(p.buf[:]) // returns at expiry, or at once once interrupted
}

func (p *timerPacer) interrupt() { _ = p.f.SetReadDeadline(time.Unix(1, 0)) }

func (p *timerPacer) close() { _ = p.f.Close() }
