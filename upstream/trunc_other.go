//go:build !linux

package upstream

import "syscall"

// msgTrunc is the flag ReadMsgUDP reports for a datagram larger than the
// buffer.
const msgTrunc = syscall.MSG_TRUNC
