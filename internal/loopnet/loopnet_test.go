package loopnet

import (
	"net/netip"
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
