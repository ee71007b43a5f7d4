package bench

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Defaults.
const (
	DefaultDuration    = 10 * time.Second
	DefaultTimeout     = time.Second
	DefaultConcurrency = 100
	DefaultSockets     = 16
	DefaultZone        = "bench.test."
	DefaultNamePrefix  = "name-"
	DefaultNdots       = 5
)

// DefaultSearch is the search list of a pod in namespace "default".
var DefaultSearch = []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}

// Config describes one load run. Exactly one query source must be set:
// Queries, Names, RandomZone or NdotsNames.
type Config struct {
	// Server is the target, "IP:PORT" ("localhost:PORT" is taken as
	// 127.0.0.1). Only loopback addresses are accepted unless AllowRemote.
	Server      string
	AllowRemote bool

	// TCP sends over TCP (RFC 7766 framing, pipelined on persistent
	// connections) instead of UDP.
	TCP bool

	// Sources, if set, are the local IP addresses queries are sent from:
	// socket (or ndots worker) i binds Sources[i%len(Sources)], so a server
	// sees several clients. Loopback only unless AllowRemote.
	Sources []string

	// Query sources.
	Queries    []Query // cycled in order (e.g. from a dnsperf file)
	Names      int     // generate Names names "<NamePrefix><i>.<Zone>", cycled
	NamePrefix string  // default "name-"
	Zone       string  // default "bench.test."
	RandomZone string  // unique random names under this zone (cache misses)
	QType      uint16  // type for Names/RandomZone; default A

	// NdotsNames switches to stub-resolver emulation: each lookup sends the
	// search-list expansions glibc would send (see ExpandSearch) until one
	// has an answer. A name's Type, if set, replaces A (and AAAA).
	NdotsNames []Query
	Search     []string // default DefaultSearch; use an empty non-nil slice for none
	Ndots      int      // default 5
	NdotsAAAA  bool     // also ask AAAA for each candidate, in parallel (like AF_UNSPEC)
	// LookupRate (ndots mode) paces lookups to at most this many per second
	// in all: each worker starts a lookup on its own schedule, or when its
	// previous lookup ends if that is later (no catching up). 0: as fast as
	// the workers go. Latency is measured from the actual start.
	LookupRate float64

	// Load shape: QPS > 0 is an open loop at that rate (latency from the
	// intended send time); otherwise a closed loop keeping Concurrency
	// queries (lookups in ndots mode) outstanding (default 100).
	QPS         float64
	Concurrency int
	// Sockets is the number of UDP sockets or TCP connections (default
	// min(16, Concurrency)). Not used in ndots mode, where each concurrent
	// lookup has its own socket, as a stub resolver would.
	Sockets int

	// Bounds: the run stops after Duration (default 10s) or, if Count > 0,
	// after Count queries (lookups in ndots mode), whichever comes first.
	// Warmup runs first and is not measured.
	Duration time.Duration
	Count    int64
	Warmup   time.Duration
	// Timeout is the per-query timeout (default 1s); a later reply is lost.
	Timeout time.Duration

	// Header/EDNS options.
	NoRD   bool   // clear the RD bit (default: recursion desired)
	EDNS   uint16 // add an OPT record advertising this UDP size (0: none)
	DNSSEC bool   // set the DO bit (adds OPT)

	// Curve adds the latency distribution at fixed percentiles
	// (CurvePercentiles) to the report, for plotting.
	Curve bool

	// Progress, if set, is called about once a second from a separate
	// goroutine while the run is in progress.
	Progress func(Progress)
}

// Progress is a snapshot of a run in progress.
type Progress struct {
	Elapsed  time.Duration
	Sent     uint64
	Answered uint64
	Lost     uint64
	QPS      float64 // answered per second since the previous snapshot
}

// normalize fills defaults and validates; the error names the field.
func (c *Config) normalize() error {
	sources := 0
	if len(c.Queries) > 0 {
		sources++
	}
	if c.Names > 0 {
		sources++
	}
	if c.RandomZone != "" {
		sources++
	}
	if len(c.NdotsNames) > 0 {
		sources++
	}
	switch {
	case c.Names < 0:
		return errors.New("config: Names: must be > 0")
	case sources == 0:
		return errors.New("config: no query source: set Queries, Names, RandomZone or NdotsNames")
	case sources > 1:
		return errors.New("config: more than one query source set")
	}
	if c.QPS < 0 {
		return errors.New("config: QPS: must be >= 0")
	}
	if c.LookupRate != 0 && len(c.NdotsNames) == 0 {
		return errors.New("config: LookupRate: only in ndots mode")
	}
	if c.QPS > 0 && c.Concurrency > 0 {
		return errors.New("config: QPS and Concurrency are exclusive")
	}
	if c.Concurrency < 0 {
		return errors.New("config: Concurrency: must be > 0")
	}
	if c.Sockets < 0 {
		return errors.New("config: Sockets: must be > 0")
	}
	if c.Duration < 0 || c.Count < 0 || c.Warmup < 0 || c.Timeout < 0 {
		return errors.New("config: Duration, Count, Warmup and Timeout must not be negative")
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Concurrency == 0 && c.QPS == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Sockets == 0 {
		c.Sockets = DefaultSockets
		if c.Concurrency > 0 && c.Concurrency < c.Sockets {
			c.Sockets = c.Concurrency
		}
	}
	if c.Concurrency > 0 && c.Sockets > c.Concurrency {
		return fmt.Errorf("config: Sockets (%d) must not exceed Concurrency (%d)", c.Sockets, c.Concurrency)
	}
	if c.NamePrefix == "" {
		c.NamePrefix = DefaultNamePrefix
	}
	if c.Zone == "" {
		c.Zone = DefaultZone
	}
	if c.QType == 0 {
		c.QType = dns.TypeA
	}
	if c.Names > 0 {
		if err := CheckName(c.NamePrefix + itoa(c.Names) + "." + dns.Fqdn(c.Zone)); err != nil {
			return fmt.Errorf("config: Zone/NamePrefix: %w", err)
		}
	}
	if c.RandomZone != "" {
		if err := CheckName(c.RandomZone); err != nil {
			return fmt.Errorf("config: RandomZone: %w", err)
		}
	}
	if len(c.NdotsNames) > 0 {
		if c.QPS > 0 {
			return errors.New("config: QPS: ndots mode is closed-loop per lookup; use Concurrency")
		}
		if c.Search == nil {
			c.Search = DefaultSearch
		}
		for _, s := range c.Search {
			if err := CheckName(s); err != nil {
				return fmt.Errorf("config: Search: %w", err)
			}
		}
		if c.Ndots == 0 {
			c.Ndots = DefaultNdots
		}
		if c.LookupRate < 0 {
			return errors.New("config: LookupRate: must be >= 0")
		}
		if c.Ndots < 0 || c.Ndots > 15 { // glibc caps ndots at 15
			return errors.New("config: Ndots: must be between 1 and 15")
		}
	}
	if c.DNSSEC && c.EDNS == 0 {
		c.EDNS = 1232
	}
	if _, err := ResolveTarget(c.Server, c.AllowRemote); err != nil {
		return fmt.Errorf("config: Server: %w", err)
	}
	if _, err := parseSources(c.Sources, c.AllowRemote); err != nil {
		return fmt.Errorf("config: Sources: %w", err)
	}
	return nil
}

// CheckSources validates Sources (IP literals, loopback unless AllowRemote).
func (c *Config) CheckSources() error {
	_, err := parseSources(c.Sources, c.AllowRemote)
	return err
}

// parseSources parses local source addresses; loopback only unless
// allowRemote.
func parseSources(srcs []string, allowRemote bool) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(srcs))
	for _, s := range srcs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q: not an IP address", s)
		}
		a = a.Unmap()
		if !allowRemote && !a.IsLoopback() {
			return nil, fmt.Errorf("%s: not a loopback address", s)
		}
		out = append(out, a)
	}
	return out, nil
}

func (c *Config) wireOpts() wireOpts {
	return wireOpts{RD: !c.NoRD, EDNS: c.EDNS, DO: c.DNSSEC}
}

// ErrNotLoopback is returned for a non-loopback target without AllowRemote.
var ErrNotLoopback = errors.New("refusing to send load to a non-loopback address (use --allow-remote to override)")

// ResolveTarget parses "IP:PORT" (or "localhost:PORT", taken as 127.0.0.1;
// host names are never resolved, so no query leaves the machine to find the
// target) and, unless allowRemote, refuses addresses outside 127.0.0.0/8 and
// ::1.
func ResolveTarget(server string, allowRemote bool) (netip.AddrPort, error) {
	if server == "" {
		return netip.AddrPort{}, errors.New("no server given (want IP:PORT)")
	}
	host, portStr, err := net.SplitHostPort(server)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: want IP:PORT: %v", server, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q: bad port %q", server, portStr)
	}
	var addr netip.Addr
	if strings.EqualFold(host, "localhost") {
		addr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	} else {
		addr, err = netip.ParseAddr(host)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("%q: host must be an IP address or localhost", server)
		}
		if addr.Zone() != "" && !allowRemote {
			return netip.AddrPort{}, fmt.Errorf("%s: %w", server, ErrNotLoopback)
		}
		addr = addr.Unmap()
	}
	if !allowRemote && !addr.IsLoopback() {
		return netip.AddrPort{}, fmt.Errorf("%s: %w", server, ErrNotLoopback)
	}
	if addr.IsUnspecified() {
		return netip.AddrPort{}, fmt.Errorf("%q: unspecified address", server)
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
