package testutil

import (
	"fmt"
	"net"
	"testing"

	"github.com/nodedns/nodedns/internal/loopnet"
)

// FreePort returns a port of 127.0.0.1 that was free for both UDP and TCP
// a moment ago, for a server that cannot be handed its sockets (a process
// the test starts, which binds its own).
func FreePort(t testing.TB) int {
	t.Helper()
	u, l, err := loopnet.Loopback()
	if err != nil {
		t.Fatal(err)
	}
	port := u.LocalAddr().(*net.UDPAddr).Port
	u.Close()
	l.Close()
	return port
}

// FreeAddr is 127.0.0.1:FreePort(t).
func FreeAddr(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", FreePort(t))
}

// TCPPorts returns n distinct TCP ports of 127.0.0.1 that were free a
// moment ago: all are held until all are chosen, so they differ.
func TCPPorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("no free TCP port on 127.0.0.1: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
