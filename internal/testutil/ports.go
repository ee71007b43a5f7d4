package testutil

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nodedns/nodedns/internal/loopnet"
)

// FreePort returns a port of 127.0.0.1 that was free for both UDP and TCP
// a moment ago, for a server that cannot be handed its sockets (a process
// the test starts, which binds its own). It is chosen at random below the
// kernel's ephemeral range (net.ipv4.ip_local_port_range), which the
// kernel never hands out by itself: another process binding port 0 or
// connecting out while the server starts cannot take it. Within a test
// process no port is returned twice.
func FreePort(t testing.TB) int {
	t.Helper()
	lo, hi := 10000, ephemeralStart()
	for range 1000 {
		port := lo + rand.IntN(hi-lo)
		if _, dup := handedOut.LoadOrStore(port, true); dup {
			continue
		}
		u, l, err := loopnet.Listen(netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port)))
		if err != nil {
			continue
		}
		u.Close()
		l.Close()
		return port
	}
	t.Fatalf("no free port of 127.0.0.1 between %d and %d", lo, hi)
	return 0
}

// handedOut holds the ports FreePort returned.
var handedOut sync.Map

// ephemeralStart is the first port of the kernel's ephemeral range.
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 10000+1000 {
				return n
			}
		}
	}
	return 32768
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
