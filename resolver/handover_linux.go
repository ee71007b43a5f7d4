//go:build linux

package resolver

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// An upgrade hands the node's DNS from one process to the next without a
// lost query. Both bind the same addresses with SO_REUSEPORT (during a
// rolling update with maxSurge, two hostNetwork pods run on the node at
// once), so the kernel spreads queries over both. When the old one stops,
// it waits until the new one serves every address, then connects its UDP
// sockets: a connected socket leaves the reuseport group's spreading (the
// kernel steers other senders' datagrams to the unconnected sockets, the
// new process's), and what is already queued on it stays readable. It
// reads and answers that, and only then closes. Closing at once instead
// would drop every query queued in its socket buffers.

// udpSocket is a UDP socket bound in this network namespace, as
// /proc/net/udp{,6} lists it.
type udpSocket struct {
	local     netip.AddrPort
	connected bool
	inode     uint64
}

// udpSockets lists the UDP sockets of the network namespace.
func udpSockets() ([]udpSocket, error) {
	var out []udpSocket
	for _, path := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		f, err := os.Open(path)
		if err != nil {
			if os.IsNotExist(err) {
				continue // no IPv6
			}
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			if s, ok := parseProcUDP(sc.Text()); ok {
				out = append(out, s)
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// parseProcUDP reads one line of /proc/net/udp{,6}: "sl local rem st ...
// inode ...", addresses in hex, each 32-bit word in host byte order.
func parseProcUDP(line string) (udpSocket, bool) {
	f := strings.Fields(line)
	if len(f) < 10 {
		return udpSocket{}, false
	}
	hostHex, portHex, ok := strings.Cut(f[1], ":")
	if !ok {
		return udpSocket{}, false
	}
	raw, err := hex.DecodeString(hostHex)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return udpSocket{}, false
	}
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(raw[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(raw)
	port, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		return udpSocket{}, false
	}
	inode, err := strconv.ParseUint(f[9], 10, 64)
	if err != nil {
		return udpSocket{}, false
	}
	// st 01 is TCP_ESTABLISHED: a connected socket, which takes only its
	// peer's datagrams.
	return udpSocket{local: netip.AddrPortFrom(addr.Unmap(), uint16(port)), connected: f[3] == "01", inode: inode}, true
}

// peersServe reports whether, for every address in addrs, a UDP socket not
// among ours (by inode) and not connected is bound to it: another process
// serves it.
func peersServe(addrs []netip.AddrPort, ours map[uint64]bool) bool {
	socks, err := udpSockets()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		found := false
		for _, s := range socks {
			if !s.connected && !ours[s.inode] && s.local.Port() == a.Port() && s.local.Addr() == a.Addr().Unmap() {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// PeersServe reports whether another process serves every one of addrs
// (IP:port) over UDP now: before this one binds them, it is taking over
// from a running nodedns.
func PeersServe(addrs []string) bool {
	var aps []netip.AddrPort
	for _, a := range addrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil || ap.Port() == 0 {
			return false
		}
		aps = append(aps, ap)
	}
	return peersServe(aps, nil)
}

// ownInodes returns the inodes of the server's UDP sockets.
func (s *Server) ownInodes() map[uint64]bool {
	ours := map[uint64]bool{}
	for _, c := range s.udp {
		rc, err := c.SyscallConn()
		if err != nil {
			continue
		}
		_ = rc.Control(func(fd uintptr) {
			var st unix.Stat_t
			if unix.Fstat(int(fd), &st) == nil {
				ours[st.Ino] = true
			}
		})
	}
	return ours
}

// leaveUDP takes the server's UDP sockets out of their reuseport groups by
// connecting each to its own address (no datagram ever comes from there):
// new queries go to the other process's sockets, queued ones stay
// readable. Answers still go out: a destination given with each send
// overrides the connected one.
func (s *Server) leaveUDP() error {
	for _, c := range s.udp {
		ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
		addr := ap.Addr()
		if addr.IsUnspecified() {
			addr = netip.IPv6Loopback()
			if addr.Is4() || ap.Addr().Is4() {
				addr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
			}
		}
		var sa unix.Sockaddr
		if addr.Is4() {
			sa = &unix.SockaddrInet4{Addr: addr.As4(), Port: int(ap.Port())}
		} else {
			sa = &unix.SockaddrInet6{Addr: addr.As16(), Port: int(ap.Port())}
		}
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var cerr error
		if err := rc.Control(func(fd uintptr) { cerr = unix.Connect(int(fd), sa) }); err != nil {
			return err
		}
		if cerr != nil {
			return cerr
		}
	}
	return nil
}

// queuedUDP reports whether a datagram waits on any of the server's UDP
// sockets.
func (s *Server) queuedUDP() bool {
	for _, c := range s.udp {
		rc, err := c.SyscallConn()
		if err != nil {
			continue
		}
		n := 0
		_ = rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
		if n > 0 {
			return true
		}
	}
	return false
}
