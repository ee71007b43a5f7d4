package loopnet

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
)

func TestListenSharesThePort(t *testing.T) {
	u, l, err := Loopback()
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	defer l.Close()
	up, tp := u.LocalAddr().String(), l.Addr().String()
	if up != tp {
		t.Errorf("UDP on %s, TCP on %s: want one address", up, tp)
	}
	// A fixed port already in use is an error, not another port.
	if _, _, err := Listen(netip.MustParseAddrPort(up)); err == nil {
		t.Error("listening again on a taken port succeeded")
	}
}

func TestConnsCloseAllEndsOpenConnections(t *testing.T) {
	u, l, err := Loopback()
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	var (
		conns  Conns
		wg     sync.WaitGroup
		served = make(chan struct{})
	)
	go conns.Serve(l, &wg, func(c net.Conn) {
		close(served)
		_, _ = io.Copy(io.Discard, c) // returns when the connection is closed
	})
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-served
	if !conns.CloseAll() {
		t.Fatal("first CloseAll reported false")
	}
	wg.Wait() // the serving goroutine ended: its connection was closed
	if conns.CloseAll() {
		t.Error("second CloseAll reported true")
	}
	l.Close()
}
