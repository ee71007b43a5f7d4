package resolver

import (
	"net/netip"
	"testing"
)

func TestAllowList(t *testing.T) {
	l := &allowList{prefixes: DefaultAllow}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1", true},
		{"10.244.1.7", true},
		{"::ffff:10.244.1.7", true}, // an IPv4 client of a dual-stack socket
		{"fe80::1", true},
		{"fe80::1%eth0", true}, // a link-local TCP client keeps its zone
		{"fd00::5", true},
		{"8.8.8.8", false},
		{"::ffff:8.8.8.8", false},
		{"2001:db8::1%eth0", false},
	} {
		if got := l.allows(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("allows(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}
