package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/upstream"
)

// validate checks the merged configuration. One rule for zero: 0 turns a
// feature or a bound off (min_ttl, max_ttl, negative_ttl, servfail_ttl,
// serve_stale, stale_answer_timeout, prefetch_min_hits, lameduck,
// memory_limit_ratio, query_log_sample); caps and timeouts that cannot be
// off must be at least 1; three sizes are chosen for you at 0
// (cache.max_entries, cache.shards, server.udp_sockets).
func validate(c *Config) error {
	if len(c.Server.Listen) == 0 {
		return errors.New("listen: no address given")
	}
	for _, a := range c.Server.Listen {
		if _, err := netip.ParseAddrPort(a); err != nil {
			return fmt.Errorf("listen: %q is not IP:port (IPv6 as [::1]:53)", a)
		}
	}
	if c.HTTPListen != "" {
		if _, err := netip.ParseAddrPort(c.HTTPListen); err != nil {
			return fmt.Errorf("http_listen: %q is not IP:port", c.HTTPListen)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level: %q is not one of debug, info, warn, error", c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		return fmt.Errorf("log_format: %q is not json or console", c.LogFormat)
	}
	srv, pol := &c.Server, &c.Cache.Policy
	if srv.QueryLogSample < 0 || srv.QueryLogSample > 1 {
		return fmt.Errorf("query_log_sample: %v is not between 0 and 1", srv.QueryLogSample)
	}
	if c.Cache.MaxBytes < 64<<10 {
		return fmt.Errorf("cache.size: %d bytes is below the minimum of 64KiB", c.Cache.MaxBytes)
	}
	if c.Cache.Shards < 0 || c.Cache.Shards&(c.Cache.Shards-1) != 0 {
		return fmt.Errorf("cache.shards: %d is not a power of two", c.Cache.Shards)
	}
	if pol.MaxTTL > 0 && pol.MinTTL > pol.MaxTTL {
		return fmt.Errorf("cache.min_ttl: %v is above cache.max_ttl %v", pol.MinTTL, pol.MaxTTL)
	}
	for _, n := range []struct {
		field  string
		v, min int
	}{
		{"cache.max_entries", c.Cache.MaxEntries, 0}, {"server.udp_sockets", srv.UDPSockets, 0},
		{"server.tcp_max_conns", srv.TCPMaxConns, 1}, {"server.tcp_max_conns_per_client", srv.TCPMaxConnsPerClient, 1},
		{"server.max_inflight", srv.MaxInflight, 1}, {"server.max_waiters", srv.MaxWaiters, 1},
	} {
		if n.v < n.min {
			return fmt.Errorf("%s: %d is below %d", n.field, n.v, n.min)
		}
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"server.request_timeout", srv.RequestTimeout}, {"server.tcp_idle_timeout", srv.TCPIdleTimeout}} {
		if d.v <= 0 {
			return fmt.Errorf("%s: must be positive (it cannot be off)", d.field)
		}
	}
	if srv.MaxQueueWait <= 0 || srv.MaxQueueWait >= srv.RequestTimeout {
		return fmt.Errorf("server.max_queue_wait: %v must be positive and below server.request_timeout (%v)", srv.MaxQueueWait, srv.RequestTimeout)
	}
	if c.MemoryLimitRatio < 0 || c.MemoryLimitRatio > 1 {
		return fmt.Errorf("memory_limit_ratio: %v is not between 0 (off) and 1", c.MemoryLimitRatio)
	}
	if c.PprofListen != "" {
		if _, err := netip.ParseAddrPort(c.PprofListen); err != nil {
			return fmt.Errorf("pprof_listen: %q is not IP:port", c.PprofListen)
		}
	}
	for i, d := range c.ClusterDomains {
		if _, ok := dns.IsDomainName(d); !ok || d == "" || dns.Fqdn(d) == "." {
			return fmt.Errorf("search.cluster_domains[%d]: %q is not a domain name (nor the root)", i, d)
		}
	}
	if c.SearchEnabled && len(c.ClusterDomains) == 0 {
		return errors.New("search.cluster_domains: the search stage needs at least one cluster domain")
	}
	for i, z := range c.SearchExtraZones {
		if _, ok := dns.IsDomainName(z); !ok || z == "" {
			return fmt.Errorf("search.extra_zones[%d]: %q is not a domain name", i, z)
		}
	}
	switch c.Kube {
	case "auto", "true", "false":
	default:
		return fmt.Errorf("kube.enabled: %q is not auto, true or false", c.Kube)
	}
	if c.KubeDNSService != "" {
		if ns, name, ok := strings.Cut(c.KubeDNSService, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return fmt.Errorf("kube.dns_service: %q is not NAMESPACE/NAME", c.KubeDNSService)
		}
	}
	if c.Kube == "true" && len(c.ClusterDomains) == 0 {
		return errors.New("search.cluster_domains: the Kubernetes view needs the cluster domain")
	}
	for i, d := range c.NodeSearch {
		if _, ok := dns.IsDomainName(d); !ok || d == "" {
			return fmt.Errorf("kube.node_search[%d]: %q is not a domain name", i, d)
		}
	}
	if err := validateSetup(c); err != nil {
		return err
	}
	if !anyRoot(c.Upstreams) {
		return errors.New(`upstreams: no group serves "."`)
	}
	seen := map[string]string{}
	for i, g := range c.Upstreams {
		for _, z := range g.Zones {
			if _, ok := dns.IsDomainName(z); !ok {
				return fmt.Errorf("upstreams[%d].zones: %q is not a domain name", i, z)
			}
			fz := strings.ToLower(dns.Fqdn(z))
			if other, dup := seen[fz]; dup {
				return fmt.Errorf("upstreams[%d].zones: %q is already served by group %q", i, z, other)
			}
			seen[fz] = g.Name
		}
		for j, s := range g.Addrs {
			a, err := upstream.ParseAddr(s)
			if err != nil {
				return fmt.Errorf("upstreams[%d].servers[%d]: %v", i, j, err)
			}
			if l, ok := ownAddress(c.Server.Listen, a); ok {
				return fmt.Errorf("upstreams[%d].servers[%d]: %s is nodedns's own listen address %s: queries would loop back to it", i, j, s, l)
			}
		}
		if g.Timeout <= 0 {
			return fmt.Errorf("upstreams[%d].timeout: must be positive", i)
		}
		if g.HealthInterval <= 0 {
			return fmt.Errorf("upstreams[%d].health_interval: must be positive", i)
		}
		if g.MaxInflight <= 0 {
			return fmt.Errorf("upstreams[%d].max_inflight: must be positive", i)
		}
	}
	return nil
}

// ownAddress reports whether the upstream address up (IP:port) reaches one
// of the listen addresses: the same address, or a wildcard listen address
// on the same port and up a loopback address.
func ownAddress(listen []string, up string) (string, bool) {
	ua, err := netip.ParseAddrPort(up)
	if err != nil {
		return "", false
	}
	for _, l := range listen {
		la, err := netip.ParseAddrPort(l)
		if err != nil || la.Port() != ua.Port() {
			continue
		}
		if la.Addr().Unmap() == ua.Addr().Unmap() || (la.Addr().IsUnspecified() && ua.Addr().IsLoopback()) {
			return l, true
		}
	}
	return "", false
}

func anyRoot(gs []upstream.GroupConfig) bool {
	for _, g := range gs {
		if hasRoot(g.Zones) {
			return true
		}
	}
	return false
}
