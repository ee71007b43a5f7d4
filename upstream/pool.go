package upstream

import (
	"net"
	"sync"
	"time"
)

// DefaultIdleTimeout is how long an idle pooled TCP connection is kept. It is
// close to common server-side idle timeouts; a connection the server closed
// first is detected on use and the query is retried once on a fresh one.
const DefaultIdleTimeout = 10 * time.Second

// maxIdleConns bounds the idle pool of one upstream.
const maxIdleConns = 32

// tcpPool keeps idle TCP connections to one upstream so that ForceTCP does
// not pay a handshake per query (modelled on CoreDNS's persistent transport).
// Connections are handed out FIFO, which spreads queries over the pool and
// retires old connections first. Connections are always closed outside the
// lock because Close can block.
type tcpPool struct {
	expire time.Duration

	mu     sync.Mutex
	idle   []idleConn // oldest first
	closed bool
}

type idleConn struct {
	c     net.Conn
	since time.Time
}

func newTCPPool(expire time.Duration) *tcpPool {
	if expire <= 0 {
		expire = DefaultIdleTimeout
	}
	return &tcpPool{expire: expire}
}

// get returns an idle, unexpired connection, or nil if there is none.
func (p *tcpPool) get() net.Conn {
	got, stale := p.take(time.Now())
	closeConns(stale)
	return got
}

// take removes idle connections until an unexpired one, and returns it
// with the expired ones it passed.
func (p *tcpPool) take(now time.Time) (got net.Conn, stale []net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.idle) > 0 { // bounded: every iteration removes one entry
		ic := p.idle[0]
		p.idle[0] = idleConn{}
		p.idle = p.idle[1:]
		if now.Sub(ic.since) < p.expire {
			return ic.c, stale
		}
		stale = append(stale, ic.c)
	}
	return nil, stale
}

// put returns a healthy connection to the pool (or closes it if the pool is
// closed or full).
func (p *tcpPool) put(c net.Conn) {
	if !p.keep(c) {
		_ = c.Close()
	}
}

// keep adds c to the idle connections, unless the pool is closed or full.
func (p *tcpPool) keep(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle) >= maxIdleConns {
		return false
	}
	p.idle = append(p.idle, idleConn{c: c, since: time.Now()})
	return true
}

// sweep closes expired idle connections so that an idle upstream does not
// hold sockets forever.
func (p *tcpPool) sweep() {
	closeConns(p.expired(time.Now()))
}

// expired removes and returns the idle connections expired at now.
func (p *tcpPool) expired(now time.Time) []net.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	var stale []net.Conn
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].since) >= p.expire {
		stale = append(stale, p.idle[n].c)
		p.idle[n] = idleConn{}
		n++
	}
	p.idle = p.idle[n:]
	return stale
}

// len reports the number of idle connections.
func (p *tcpPool) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// close closes every idle connection and makes later puts close theirs.
func (p *tcpPool) close() {
	closeConns(p.drain())
}

// drain closes the pool and returns its idle connections.
func (p *tcpPool) drain() []net.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	all := make([]net.Conn, 0, len(p.idle))
	for _, ic := range p.idle {
		all = append(all, ic.c)
	}
	p.idle = nil
	return all
}

func closeConns(cs []net.Conn) {
	for _, c := range cs {
		_ = c.Close()
	}
}
