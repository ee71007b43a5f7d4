package upstream

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// DefaultPort is used when an upstream address has no port.
const DefaultPort = 53

// ParseAddr normalises an upstream address to "host:port" ("[v6]:port" for
// IPv6) with port 53 when none is given. It accepts "IP", "IP:port", "[v6]"
// and "[v6]:port". Hostnames are rejected on purpose: resolving them would
// need DNS, which is what this process provides, and a resolver that depends
// on itself to start is a bootstrap loop. IPv4-mapped IPv6 addresses are
// unmapped; unspecified and multicast addresses and port 0 are rejected
// because nothing useful can answer there. Note that an unbracketed "::1:53"
// is the IPv6 address ::1:53 on port 53, as in every other IPv6 parser.
func ParseAddr(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("empty address")
	}
	var ap netip.AddrPort
	if a, err := netip.ParseAddr(s); err == nil {
		ap = netip.AddrPortFrom(a, DefaultPort)
	} else if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		a, err := netip.ParseAddr(s[1 : len(s)-1])
		if err != nil || !a.Is6() {
			return "", fmt.Errorf("%q: bracketed address is not IPv6", s)
		}
		ap = netip.AddrPortFrom(a, DefaultPort)
	} else {
		ap, err = netip.ParseAddrPort(s)
		if err != nil {
			return "", fmt.Errorf("want IP, IP:port or [IPv6]:port (hostnames are not allowed): %w", err)
		}
	}
	a := ap.Addr().Unmap()
	switch {
	case ap.Port() == 0:
		return "", fmt.Errorf("%q: port 0 is not allowed", s)
	case a.IsUnspecified():
		return "", fmt.Errorf("%q: unspecified address is not allowed", s)
	case a.IsMulticast():
		return "", fmt.Errorf("%q: multicast address is not allowed", s)
	}
	return netip.AddrPortFrom(a, ap.Port()).String(), nil
}

// SystemNameservers returns the nameservers listed in a resolv.conf-format
// file as normalised host:port strings, in file order and without duplicates.
// It exists so the default upstream group can follow the node's own resolver
// configuration (typically the kubelet's --resolv-conf). Like the C library,
// it skips nameserver entries that are not IP addresses; it fails if no usable
// entry remains, because an empty upstream list can only produce SERVFAIL.
func SystemNameservers(path string) ([]string, error) {
	cfg, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading nameservers from %s: %w", path, err)
	}
	var (
		out     []string
		skipped []string
		seen    = make(map[string]bool, len(cfg.Servers))
	)
	for _, s := range cfg.Servers {
		a, err := ParseAddr(net.JoinHostPort(s, cfg.Port))
		if err != nil {
			skipped = append(skipped, s)
			continue
		}
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		if len(skipped) > 0 {
			return nil, fmt.Errorf("reading nameservers from %s: no usable nameserver (skipped non-IP entries %q)", path, skipped)
		}
		return nil, fmt.Errorf("reading nameservers from %s: no nameserver lines", path)
	}
	return out, nil
}
