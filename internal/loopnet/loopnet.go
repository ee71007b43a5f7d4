// Package loopnet opens a UDP socket and a TCP listener on one address, as
// a DNS server needs, for the test servers and benchmark peers. With port 0
// the kernel picks a free UDP port whose TCP twin may be taken by someone
// else; Listen then tries another port.
package loopnet

import (
	"net"
	"net/netip"
)

// tries bounds the attempts with port 0.
const tries = 20

// Listen opens UDP and TCP on ap (port 0: any port free for both).
func Listen(ap netip.AddrPort) (*net.UDPConn, *net.TCPListener, error) {
	for try := 0; ; try++ {
		u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return nil, nil, err
		}
		port := u.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		t, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr(), port)))
		if err == nil {
			return u, t, nil
		}
		u.Close()
		if ap.Port() != 0 || try == tries-1 {
			return nil, nil, err
		}
	}
}

// Loopback opens UDP and TCP on a free port of 127.0.0.1.
func Loopback() (*net.UDPConn, *net.TCPListener, error) {
	return Listen(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 0))
}
