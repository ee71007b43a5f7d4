//go:build linux

package echo

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	batch   = 64
	bufSize = 512 + 16 // a query up to 512 bytes plus the A record
)

// serveUDP answers in batches: recvmmsg up to 64 queries, rewrite them in
// place, sendmmsg the replies back to their senders.
func (s *Server) serveUDP() {
	rc, err := s.udp.SyscallConn()
	if err != nil {
		s.serveUDPPlain()
		return
	}
	var (
		bufs  = make([]byte, batch*bufSize)
		names = make([]unix.RawSockaddrInet6, batch)
		iov   = make([]unix.Iovec, batch)
		hdr   = make([]unix.Mmsghdr, batch)
		out   = make([]unix.Mmsghdr, 0, batch)
		n     int
	)
	for i := range hdr {
		iov[i].Base = &bufs[i*bufSize]
		hdr[i].Hdr.Iov = &iov[i]
		hdr[i].Hdr.SetIovlen(1)
		hdr[i].Hdr.Name = (*byte)(unsafe.Pointer(&names[i]))
	}
	recv := func(fd uintptr) bool {
		for i := range hdr {
			iov[i].SetLen(512)
			hdr[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		}
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&hdr[0])), batch, unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN {
			return false
		}
		n = int(r)
		if e != 0 {
			n = 0
		}
		return true
	}
	off := 0
	send := func(fd uintptr) bool {
		for off < len(out) {
			r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&out[off])), uintptr(len(out)-off), 0, 0, 0)
			switch e {
			case 0:
				off += int(r)
			case unix.EAGAIN:
				return false
			case unix.EINTR:
			default:
				off++ // drop this reply
			}
		}
		return true
	}
	for {
		if err := rc.Read(recv); err != nil {
			return // closed
		}
		out = out[:0]
		for i := range n {
			m := Respond(bufs[i*bufSize:(i+1)*bufSize], int(hdr[i].Len), s.answer)
			if m == 0 {
				continue
			}
			h := hdr[i]
			iov[i].SetLen(m)
			out = append(out, h)
		}
		if len(out) > 0 {
			s.Queries.Add(uint64(len(out)))
			off = 0
			if err := rc.Write(send); err != nil {
				return
			}
		}
	}
}
