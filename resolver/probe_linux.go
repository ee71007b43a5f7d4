//go:build linux

package resolver

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// setMark sets the packet mark (SO_MARK, which needs CAP_NET_ADMIN) of a
// socket.
func setMark(c syscall.RawConn, mark int) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark) }); err != nil {
		return err
	}
	return serr
}
