package main

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The HTTP port is on the node's address, which every pod can reach, so
// it is bounded like the DNS ports: what a pod can make nodedns hold is
// a few connections, each a few KiB, for a few seconds.
//
//   - Headers: at most httpMaxHeaderBytes, read within httpHeaderTimeout;
//     a request is read within httpReadTimeout and its answer written
//     within httpWriteTimeout; an idle keep-alive connection is closed
//     after httpIdleTimeout.
//   - Connections: at most httpPerSource from one address, and
//     httpMaxConns in all. At the cap, a new connection closes the oldest
//     one of the address holding the most that is not in the middle of a
//     request (a slow or idle one); when every connection is busy with a
//     request, the new one is closed.
//   - Connections from the node itself (the source is the address asked,
//     as for kubelet's probes of a hostNetwork pod, or a client on the
//     node asking its own address) are apart: up to httpNodeConns of
//     them, never evicted, so that kubelet's probes get in whatever pods
//     do. A pod cannot send from the node's address.
//   - /metrics: at most two scrapes at once.
const (
	httpMaxHeaderBytes = 8 << 10
	httpHeaderTimeout  = 3 * time.Second
	httpReadTimeout    = 10 * time.Second
	httpWriteTimeout   = 30 * time.Second
	httpIdleTimeout    = 30 * time.Second
	httpMaxConns       = 64
	httpPerSource      = 8
	httpNodeConns      = 16
	httpMaxScrapes     = 2
)

// connGuard caps the HTTP server's connections, in all and per source
// address. Its listener admits or closes each accepted connection; the
// server's ConnState hook tells it which ones are busy with a request.
type connGuard struct {
	net.Listener
	maxConns, perSource, nodeConns int
	rejected                       prometheus.Counter // closed at accept, or evicted

	mu    sync.Mutex
	conns map[net.Conn]*guardedConn
	bySrc map[netip.Addr]int
	nodes int // connections from the node itself
}

type guardedConn struct {
	src    netip.Addr
	node   bool      // from the node itself: apart from the caps
	since  time.Time // of the connection, or of its last idle period
	active bool      // a request is being read or answered
}

func newConnGuard(l net.Listener, maxConns, perSource, nodeConns int, rejected prometheus.Counter) *connGuard {
	return &connGuard{Listener: l, maxConns: maxConns, perSource: perSource, nodeConns: nodeConns, rejected: rejected,
		conns: map[net.Conn]*guardedConn{}, bySrc: map[netip.Addr]int{}}
}

// Accept returns the next connection that finds room, closing the ones
// that do not.
func (g *connGuard) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		admitted, victim := g.admit(c)
		if victim != nil {
			_ = victim.Close()
			g.rejected.Inc()
		}
		if admitted {
			return c, nil
		}
		_ = c.Close()
		g.rejected.Inc()
	}
}

// addrOf is a connection end's IP.
func addrOf(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// admit records c when there is room for it, making room by evicting a
// connection not busy with a request when the cap is reached.
func (g *connGuard) admit(c net.Conn) (ok bool, victim net.Conn) {
	src, dst := addrOf(c.RemoteAddr()), addrOf(c.LocalAddr())
	node := src.IsValid() && src == dst
	g.mu.Lock()
	defer g.mu.Unlock()
	if node {
		if g.nodes >= g.nodeConns {
			return false, nil
		}
		g.nodes++
		g.conns[c] = &guardedConn{src: src, node: true, since: time.Now()}
		return true, nil
	}
	if g.bySrc[src] >= g.perSource {
		return false, nil
	}
	if len(g.conns)-g.nodes >= g.maxConns {
		if victim = g.victim(); victim == nil {
			return false, nil
		}
		g.forget(victim)
	}
	g.conns[c] = &guardedConn{src: src, since: time.Now()}
	g.bySrc[src]++
	return true, victim
}

// victim is the oldest connection not busy with a request of the address
// that holds the most; nil when every one is busy. mu is held.
func (g *connGuard) victim() net.Conn {
	var victim net.Conn
	var vs *guardedConn
	for c, st := range g.conns {
		if st.node || st.active {
			continue
		}
		if vs == nil || g.bySrc[st.src] > g.bySrc[vs.src] || g.bySrc[st.src] == g.bySrc[vs.src] && st.since.Before(vs.since) {
			victim, vs = c, st
		}
	}
	return victim
}

// forget drops c from the accounting; mu is held.
func (g *connGuard) forget(c net.Conn) {
	st, ok := g.conns[c]
	if !ok {
		return
	}
	delete(g.conns, c)
	if st.node {
		g.nodes--
		return
	}
	if g.bySrc[st.src]--; g.bySrc[st.src] <= 0 {
		delete(g.bySrc, st.src)
	}
}

// connState is the server's ConnState hook.
func (g *connGuard) connState(c net.Conn, s http.ConnState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch s {
	case http.StateActive:
		if st := g.conns[c]; st != nil {
			st.active = true
		}
	case http.StateIdle:
		if st := g.conns[c]; st != nil {
			st.active, st.since = false, time.Now()
		}
	case http.StateHijacked, http.StateClosed:
		g.forget(c)
	}
}

// fromNode reports whether r comes from the node itself (its source is
// the address it was sent to, or loopback), which alone gets
// /ready?verbose's detail: a shell on the node, or kubectl exec into the
// pod, which shares the node's network. A pod cannot send from the node's
// address.
func fromNode(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	src := ap.Addr().Unmap()
	if src.IsLoopback() {
		return true
	}
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	return ok && addrOf(local) == src
}
