package nodenet

import (
	"sync"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Sockets opened in another network namespace need setns(2), which needs
// CAP_SYS_ADMIN even into the namespace the process is already in: the
// DaemonSet runs with NET_ADMIN and NET_BIND_SERVICE only. So for the
// process's own namespace (the production case) netlink and nftables
// sockets are opened as they are, in the namespace of the thread, and only
// a set-up made for another namespace (the tests, on a locked thread) uses
// setns.

// processNS is the namespace of the process: its main thread's.
var processNS = sync.OnceValues(func() (netns.NsHandle, error) {
	return netns.GetFromPath("/proc/self/ns/net")
})

// own reports whether ns is the process's own namespace.
func own(ns netns.NsHandle) bool {
	p, err := processNS()
	return err == nil && p.Equal(ns)
}

// netlinkHandle opens a netlink handle in ns.
func netlinkHandle(ns netns.NsHandle) (*netlink.Handle, error) {
	if own(ns) {
		return netlink.NewHandle()
	}
	return netlink.NewHandleAt(ns)
}

// nftConn opens an nftables connection in ns.
func nftConn(ns netns.NsHandle) (*nftables.Conn, error) {
	if own(ns) {
		return nftables.New()
	}
	return nftables.New(nftables.WithNetNSFd(int(ns)))
}
