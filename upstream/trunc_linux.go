//go:build linux

package upstream

import "golang.org/x/sys/unix"

// msgTrunc is the flag ReadMsgUDP reports for a datagram larger than the
// buffer.
const msgTrunc = unix.MSG_TRUNC
