package resolver

import "net/netip"

// DefaultAllow lists the networks that may query nodedns when --allow is
// not given: loopback, RFC 1918, link-local and unique local addresses,
// the ranges pods and nodes use. Everything else is REFUSED, so nodedns is
// never an open resolver even when bound to a public address.
var DefaultAllow = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("fc00::/7"),
}

// allowList answers whether a client may use the resolver.
type allowList struct{ prefixes []netip.Prefix }

func (l *allowList) allows(a netip.Addr) bool {
	// IPv4 clients of a dual-stack socket arrive as ::ffff:a.b.c.d; a
	// link-local IPv6 client over TCP carries its zone (fe80::1%eth0), which
	// no prefix contains.
	a = a.Unmap().WithZone("")
	for _, p := range l.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
