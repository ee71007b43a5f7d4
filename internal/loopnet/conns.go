package loopnet

import (
	"net"
	"sync"
)

// Conns runs a TCP accept loop for a test server and tracks its open
// connections, so that the server's Close can end them all.
type Conns struct {
	mu     sync.Mutex
	m      map[net.Conn]struct{} // guarded by mu
	closed bool                  // guarded by mu
}

// Serve accepts on l until l fails or CloseAll has run. Each connection
// is served by serve on its own goroutine, counted in wg, and is closed and
// forgotten when serve returns.
func (t *Conns) Serve(l net.Listener, wg *sync.WaitGroup, serve func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			c.Close()
			return
		}
		if t.m == nil {
			t.m = make(map[net.Conn]struct{})
		}
		t.m[c] = struct{}{}
		t.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				t.mu.Lock()
				delete(t.m, c)
				t.mu.Unlock()
				c.Close()
			}()
			serve(c)
		}()
	}
}

// CloseAll closes every open connection and makes Serve refuse new ones.
// It reports whether this was the first call.
func (t *Conns) CloseAll() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.closed = true
	for c := range t.m {
		c.Close()
	}
	return true
}
