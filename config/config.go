// Package config reads nodedns's settings from defaults, a YAML file and
// command-line flags, in that order of precedence, and checks them. Every
// error names the field or flag it is about, in one line, so an operator
// can fix a bad rollout without reading code.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"sigs.k8s.io/yaml"

	"github.com/nodedns/nodedns/cache"
	"github.com/nodedns/nodedns/resolver"
	"github.com/nodedns/nodedns/upstream"
)

// File is the YAML configuration file. Durations are Go durations ("1.5s",
// "1h"), sizes take a binary suffix ("32MiB"). Every key is optional.
type File struct {
	Listen         []string     `json:"listen,omitempty"`
	HTTPListen     string       `json:"http_listen,omitempty"`
	Allow          []string     `json:"allow,omitempty"`
	LogLevel       string       `json:"log_level,omitempty"`
	LogFormat      string       `json:"log_format,omitempty"`
	QueryLogSample *float64     `json:"query_log_sample,omitempty"`
	Cache          CacheFile    `json:"cache,omitempty"`
	Server         ServerFile   `json:"server,omitempty"`
	Upstreams      []GroupFile  `json:"upstreams,omitempty"`
	Search         SearchFile   `json:"search,omitempty"`
	Kube           KubeFile     `json:"kube,omitempty"`
	Shutdown       ShutdownFile `json:"shutdown,omitempty"`
	Setup          SetupFile    `json:"setup,omitempty"`
	PprofListen    string       `json:"pprof_listen,omitempty"`
	// MemoryLimitRatio is the share of the cgroup memory limit given to the
	// Go runtime as its soft limit when GOMEMLIMIT is not set.
	MemoryLimitRatio *float64 `json:"memory_limit_ratio,omitempty"`
}

// CacheFile is the `cache` section.
type CacheFile struct {
	Size        string `json:"size,omitempty"`
	MaxEntries  *int   `json:"max_entries,omitempty"`
	Shards      *int   `json:"shards,omitempty"`
	MinTTL      string `json:"min_ttl,omitempty"`
	MaxTTL      string `json:"max_ttl,omitempty"`
	NegativeTTL string `json:"negative_ttl,omitempty"`
	ServFailTTL string `json:"servfail_ttl,omitempty"`
	ServeStale  string `json:"serve_stale,omitempty"`
	// Snapshot is the file the cache is saved to and loaded from across
	// restarts and upgrades; SnapshotInterval saves it periodically too.
	Snapshot         string `json:"snapshot,omitempty"`
	SnapshotInterval string `json:"snapshot_interval,omitempty"`
}

// ServerFile is the `server` section.
type ServerFile struct {
	UDPSockets           *int   `json:"udp_sockets,omitempty"`
	MaxUDPSize           *int   `json:"max_udp_size,omitempty"`
	TCPMaxConns          *int   `json:"tcp_max_conns,omitempty"`
	TCPMaxConnsPerClient *int   `json:"tcp_max_conns_per_client,omitempty"`
	TCPIdleTimeout       string `json:"tcp_idle_timeout,omitempty"`
	MaxInflight          *int   `json:"max_inflight,omitempty"`
	MaxQueueWait         string `json:"max_queue_wait,omitempty"`
	RequestTimeout       string `json:"request_timeout,omitempty"`
	StaleAnswerTimeout   string `json:"stale_answer_timeout,omitempty"`
	PrefetchMinHits      *int   `json:"prefetch_min_hits,omitempty"`
	MaxWaiters           *int   `json:"max_waiters,omitempty"`
}

// GroupFile is one entry of `upstreams`: the servers that answer a set of
// zones. The group whose zones include "." gets every other name.
type GroupFile struct {
	Name           string   `json:"name,omitempty"`
	Zones          []string `json:"zones"`
	Servers        []string `json:"servers"`
	ForceTCP       *bool    `json:"force_tcp,omitempty"`
	Timeout        string   `json:"timeout,omitempty"`
	MaxFails       *int     `json:"max_fails,omitempty"`
	HealthInterval string   `json:"health_interval,omitempty"`
	MaxInflight    *int     `json:"max_inflight,omitempty"`
}

// SearchFile is the `search` section: the search stage, which answers on
// the node the names under the cluster domains that cannot exist.
type SearchFile struct {
	Enabled        *bool    `json:"enabled,omitempty"`
	ClusterDomains []string `json:"cluster_domains,omitempty"`
	NegativeTTL    string   `json:"negative_ttl,omitempty"`
	ExtraZones     []string `json:"extra_zones,omitempty"`
}

// KubeFile is the `kube` section: the view of the cluster from the
// Kubernetes API.
type KubeFile struct {
	// Enabled is "auto" (on inside a cluster, or with kubeconfig), "true"
	// or "false".
	Enabled    string   `json:"enabled,omitempty"`
	Kubeconfig string   `json:"kubeconfig,omitempty"`
	NodeName   string   `json:"node_name,omitempty"`
	DNSService *string  `json:"dns_service,omitempty"`
	Autopath   *bool    `json:"autopath,omitempty"`
	NodeSearch []string `json:"node_search,omitempty"`
}

// ShutdownFile is the `shutdown` section.
type ShutdownFile struct {
	Lameduck     string `json:"lameduck,omitempty"`
	Timeout      string `json:"timeout,omitempty"`
	HandoverWait string `json:"handover_wait,omitempty"`
}

// Config is the checked, typed result: the settings of each package in
// that package's own type (the resolver's, the cache's, each upstream
// group's), which the daemon hands over as they are, and the daemon's own.
// settings.go names each one by its config file key and says whether a
// reload applies it while serving.
type Config struct {
	// Server holds listen, allow, query_log_sample, the server section and
	// shutdown.handover_wait. Its Local and Walker are not settings: the
	// daemon sets them from the search and kube sections.
	Server resolver.Config
	// Cache holds the cache section but the snapshot.
	Cache cache.Config
	// Upstreams are the upstream groups; the group whose zones include "."
	// gets every name no other group serves. LoopToken is set by the
	// daemon.
	Upstreams []upstream.GroupConfig

	HTTPListen       string
	LogLevel         string
	LogFormat        string
	PprofListen      string
	MemoryLimitRatio float64 // 0: off

	// Snapshot is the cache snapshot file, "" for none; SnapshotInterval 0
	// saves it only at shutdown and when a new process asks.
	Snapshot         string
	SnapshotInterval time.Duration

	SearchEnabled     bool
	ClusterDomains    []string
	SearchNegativeTTL time.Duration // 0: its answers are not cached
	SearchExtraZones  []string

	// Kube is "auto", "true" or "false": whether to keep a view of the
	// cluster (KubeOn says what auto means).
	Kube           string
	Kubeconfig     string   // "": in-cluster
	NodeName       string   // "": $NODE_NAME
	KubeDNSService string   // "": no endpoint discovery
	Autopath       bool     //
	NodeSearch     []string // nil: resolv.conf's search list

	Lameduck        time.Duration
	ShutdownTimeout time.Duration

	// The node's networking (package nodenet); SkipTeardown is read at
	// shutdown, so a reload changes it.
	SetupInterface    bool
	InterfaceName     string
	SetupRules        bool
	SetupRulesBackend string        // auto, iptables, nftables
	SetupInterval     time.Duration // 0: no re-check
	SkipTeardown      bool
	// FailOpen is in effect with SetupRules only.
	FailOpen      bool
	FailOpenAfter time.Duration

	// ConfigFile is the path given with --config, "" for none.
	ConfigFile string

	// forceTCPSet says, for each group of Upstreams, that force_tcp was
	// given; if not, a group serving a cluster domain defaults to TCP
	// (defaultForceTCP).
	forceTCPSet []bool
}

// NoStaleAnswer is server.stale_answer_timeout 0 as the resolver takes it:
// a client waits for the upstream's answer or failure, never a stale one.
const NoStaleAnswer = -1

// Defaults returns the built-in settings: a resolver that works on a fresh
// machine without root (loopback, port 5353) and forwards to the host's
// resolvers. The DaemonSet overrides listen with the node-local address.
// The server's settings come from resolver.Defaults and the groups' from
// package upstream: each default has one source.
func Defaults() Config {
	srv := resolver.Defaults()
	srv.Listen = []string{"127.0.0.1:5353"}
	srv.Allow = nil // the resolver's default, not spelt out in a reload's diff
	return Config{
		Server: srv,
		Cache: cache.Config{
			MaxBytes: 32 << 20,
			Policy: cache.Policy{
				MaxTTL:      time.Hour,
				NegativeTTL: time.Minute,
				ServFailTTL: 2 * time.Second,
				ServeStale:  time.Hour,
			},
		},
		HTTPListen:       "127.0.0.1:9253",
		LogLevel:         "info",
		LogFormat:        "json",
		ShutdownTimeout:  5 * time.Second,
		SnapshotInterval: 5 * time.Minute,
		MemoryLimitRatio: 0.9,
		SearchEnabled:    true,
		ClusterDomains:   []string{"cluster.local"},
		// The TTL of CoreDNS's kubernetes plugin: a Service created a
		// moment after a denial resolves within it.
		SearchNegativeTTL: 5 * time.Second,
		Kube:              "auto",
		KubeDNSService:    "kube-system/kube-dns",
		Autopath:          true,
		InterfaceName:     "nodedns0",
		SetupRulesBackend: "auto",
		// NodeLocal DNSCache's node-cache checks every 60 s; while a rule
		// set is flushed, every query costs a conntrack entry.
		SetupInterval: 10 * time.Second,
		FailOpen:      true,
		FailOpenAfter: time.Second,
	}
}

// defaultForceTCP gives a group that serves a cluster domain TCP with
// reused connections unless force_tcp says otherwise, as NodeLocal
// DNSCache does: over UDP each miss is a fresh socket and a conntrack entry
// on the node (test/e2e/conntrack_test.go: 497 entries for 500 misses, 0 over
// TCP).
func defaultForceTCP(c *Config) {
	for i := range c.Upstreams {
		g := &c.Upstreams[i]
		if c.forceTCPSet[i] {
			continue
		}
		for _, z := range g.Zones {
			for _, cd := range c.ClusterDomains {
				if strings.EqualFold(strings.TrimSuffix(z, "."), strings.TrimSuffix(cd, ".")) {
					g.ForceTCP = true
				}
			}
		}
	}
}

// KubeOn reports whether the view of the cluster is on: kube.enabled
// true, or auto with a kubeconfig given or inside a cluster (a pod's
// KUBERNETES_SERVICE_HOST). A kubeconfig is never looked for elsewhere:
// a daemon must not pick up whatever cluster a shell points at.
func (c Config) KubeOn() bool {
	switch c.Kube {
	case "true":
		return true
	case "auto":
		return c.Kubeconfig != "" || os.Getenv("KUBERNETES_SERVICE_HOST") != ""
	}
	return false
}

// defaultGroup is a group with the per-group defaults of package upstream.
func defaultGroup() upstream.GroupConfig {
	return upstream.GroupConfig{
		Timeout: upstream.DefaultTimeout, MaxFails: upstream.DefaultMaxFails,
		HealthInterval: upstream.DefaultHealthInterval, MaxInflight: upstream.DefaultMaxInflight,
	}
}

// addGroup appends a group; forceTCP says force_tcp was given for it.
func (c *Config) addGroup(g upstream.GroupConfig, forceTCP bool) {
	c.Upstreams = append(c.Upstreams, g)
	c.forceTCPSet = append(c.forceTCPSet, forceTCP)
}

// ErrHelp is returned when -h or --help was asked for.
var ErrHelp = flag.ErrHelp

// flagValues holds what the flags set; only flags given on the command line
// are applied, so the file keeps the values the flags do not override.
type flagValues struct {
	configFile string
	set        map[string]string
}

// Parse reads args (without the program name), the config file named by
// --config if any, and returns the checked configuration.
func Parse(args []string, usage io.Writer) (Config, error) {
	fs, fv := newFlagSet()
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(usage)
		}
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (flags take the form --name=value)", fs.Arg(0))
	}
	fv.set = map[string]string{}
	fs.Visit(func(f *flag.Flag) { fv.set[f.Name] = f.Value.String() })
	return load(fv)
}

// Reload reads the config file again and applies the same flags, for SIGHUP.
func Reload(args []string) (Config, error) { return Parse(args, io.Discard) }

func load(fv *flagValues) (Config, error) {
	var f File
	if fv.configFile != "" {
		b, err := os.ReadFile(fv.configFile)
		if err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
		if err := yaml.UnmarshalStrict(b, &f); err != nil {
			return Config{}, fmt.Errorf("config %s: %s", fv.configFile, cleanYAMLError(err))
		}
	}
	c := Defaults()
	c.ConfigFile = fv.configFile
	if err := apply(&c, &f); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", fv.configFile, err)
	}
	// The default group from resolv.conf comes before the flags, so that
	// --upstream-timeout and friends apply to it too.
	if _, given := fv.set["upstream"]; !given && !anyRoot(c.Upstreams) {
		servers, err := upstream.SystemNameservers(ResolvConf)
		if err != nil {
			return Config{}, fmt.Errorf("upstream: no --upstream and no group for \".\", and %v", err)
		}
		if err := setDefaultUpstream(&c, servers); err != nil {
			return Config{}, fmt.Errorf("upstream: %v", err)
		}
	}
	if err := applyFlags(&c, fv.set); err != nil {
		return Config{}, err
	}
	if c.NodeName == "" {
		c.NodeName = os.Getenv("NODE_NAME") // the downward API's spec.nodeName
	}
	defaultForceTCP(&c)
	if c.NodeSearch == nil {
		// What kubelet appends to a ClusterFirst pod's search list: the
		// node's own (nodedns runs with dnsPolicy Default, so its
		// resolv.conf is the node's).
		if rc, err := dns.ClientConfigFromFile(ResolvConf); err == nil {
			c.NodeSearch = rc.Search
		}
	}
	if err := validate(&c); err != nil {
		return Config{}, err
	}
	return c, nil
}

// cleanYAMLError drops the decoder's layers of prefixes, keeping the part
// that names the field.
func cleanYAMLError(err error) string {
	s := err.Error()
	for _, p := range []string{"error unmarshaling JSON: ", "while decoding JSON: ", "json: "} {
		s = strings.ReplaceAll(s, p, "")
	}
	return strings.ReplaceAll(s, "\n", " ")
}

// fieldError names the field a value came from.
type fieldError struct {
	field string
	err   error
}

func (e *fieldError) Error() string { return e.field + ": " + e.err.Error() }
func (e *fieldError) Unwrap() error { return e.err }

func fieldErr(field string, err error) error { return &fieldError{field: field, err: err} }

func apply(c *Config, f *File) error {
	if len(f.Listen) > 0 {
		c.Server.Listen = f.Listen
	}
	setStr(&c.HTTPListen, f.HTTPListen)
	setStr(&c.LogLevel, f.LogLevel)
	setStr(&c.LogFormat, f.LogFormat)
	if f.QueryLogSample != nil {
		c.Server.QueryLogSample = *f.QueryLogSample
	}
	if len(f.Allow) > 0 {
		p, err := parsePrefixes(f.Allow)
		if err != nil {
			return fieldErr("allow", err)
		}
		c.Server.Allow = p
	}
	var err error
	if f.Cache.Size != "" {
		if c.Cache.MaxBytes, err = ParseSize(f.Cache.Size); err != nil {
			return fieldErr("cache.size", err)
		}
	}
	setInt(&c.Cache.MaxEntries, f.Cache.MaxEntries)
	setInt(&c.Cache.Shards, f.Cache.Shards)
	var stale time.Duration = -2 // not given
	for _, d := range []struct {
		field string
		s     string
		dst   *time.Duration
	}{
		{"cache.min_ttl", f.Cache.MinTTL, &c.Cache.Policy.MinTTL},
		{"cache.max_ttl", f.Cache.MaxTTL, &c.Cache.Policy.MaxTTL},
		{"cache.negative_ttl", f.Cache.NegativeTTL, &c.Cache.Policy.NegativeTTL},
		{"cache.servfail_ttl", f.Cache.ServFailTTL, &c.Cache.Policy.ServFailTTL},
		{"cache.serve_stale", f.Cache.ServeStale, &c.Cache.Policy.ServeStale},
		{"server.stale_answer_timeout", f.Server.StaleAnswerTimeout, &stale},
		{"server.tcp_idle_timeout", f.Server.TCPIdleTimeout, &c.Server.TCPIdleTimeout},
		{"server.request_timeout", f.Server.RequestTimeout, &c.Server.RequestTimeout},
		{"server.max_queue_wait", f.Server.MaxQueueWait, &c.Server.MaxQueueWait},
		{"shutdown.lameduck", f.Shutdown.Lameduck, &c.Lameduck},
		{"shutdown.timeout", f.Shutdown.Timeout, &c.ShutdownTimeout},
		{"shutdown.handover_wait", f.Shutdown.HandoverWait, &c.Server.HandOverWait},
		{"cache.snapshot_interval", f.Cache.SnapshotInterval, &c.SnapshotInterval},
		{"search.negative_ttl", f.Search.NegativeTTL, &c.SearchNegativeTTL},
	} {
		if d.s == "" {
			continue
		}
		if *d.dst, err = parseDuration(d.s); err != nil {
			return fieldErr(d.field, err)
		}
	}
	if stale != -2 {
		c.Server.StaleAnswerTimeout = staleAnswerTimeout(stale)
	}
	setInt(&c.Server.UDPSockets, f.Server.UDPSockets)
	setInt(&c.Server.TCPMaxConns, f.Server.TCPMaxConns)
	setInt(&c.Server.TCPMaxConnsPerClient, f.Server.TCPMaxConnsPerClient)
	setInt(&c.Server.MaxInflight, f.Server.MaxInflight)
	setInt(&c.Server.MaxWaiters, f.Server.MaxWaiters)
	if n := f.Server.MaxUDPSize; n != nil {
		if c.Server.MaxUDPSize, err = udpSize(*n); err != nil {
			return fieldErr("server.max_udp_size", err)
		}
	}
	if n := f.Server.PrefetchMinHits; n != nil {
		if c.Server.PrefetchMinHits, err = hits(*n); err != nil {
			return fieldErr("server.prefetch_min_hits", err)
		}
	}
	setStr(&c.PprofListen, f.PprofListen)
	setStr(&c.Snapshot, f.Cache.Snapshot)
	if f.Search.Enabled != nil {
		c.SearchEnabled = *f.Search.Enabled
	}
	if len(f.Search.ClusterDomains) > 0 {
		c.ClusterDomains = f.Search.ClusterDomains
	}
	if len(f.Search.ExtraZones) > 0 {
		c.SearchExtraZones = f.Search.ExtraZones
	}
	if f.MemoryLimitRatio != nil {
		c.MemoryLimitRatio = *f.MemoryLimitRatio
	}
	setStr(&c.Kube, f.Kube.Enabled)
	setStr(&c.Kubeconfig, f.Kube.Kubeconfig)
	setStr(&c.NodeName, f.Kube.NodeName)
	if f.Kube.DNSService != nil {
		c.KubeDNSService = *f.Kube.DNSService
	}
	if f.Kube.Autopath != nil {
		c.Autopath = *f.Kube.Autopath
	}
	if len(f.Kube.NodeSearch) > 0 {
		c.NodeSearch = f.Kube.NodeSearch
	}
	if err := applySetup(c, f.Setup); err != nil {
		return err
	}
	for i, g := range f.Upstreams {
		grp, err := group(g)
		if err != nil {
			return fieldErr(fmt.Sprintf("upstreams[%d].%s", i, err.(*fieldError).field), err.(*fieldError).err)
		}
		c.addGroup(grp, g.ForceTCP != nil)
	}
	return nil
}

// staleAnswerTimeout is server.stale_answer_timeout as the resolver takes
// it: 0 turns stale answers to a slow upstream off.
func staleAnswerTimeout(d time.Duration) time.Duration {
	if d == 0 {
		return NoStaleAnswer
	}
	return d
}

// udpSize checks server.max_udp_size.
func udpSize(n int) (uint16, error) {
	if n < 512 || n > 65535 {
		return 0, fmt.Errorf("%d is not between 512 and 65535", n)
	}
	return uint16(n), nil
}

// hits checks server.prefetch_min_hits (0: no prefetching).
func hits(n int) (uint32, error) {
	if n < 0 || n > 1<<30 {
		return 0, fmt.Errorf("%d is not between 0 and 2^30", n)
	}
	return uint32(n), nil
}

func group(g GroupFile) (upstream.GroupConfig, error) {
	out := defaultGroup()
	out.Name, out.Zones, out.Addrs = g.Name, g.Zones, g.Servers
	if g.ForceTCP != nil {
		out.ForceTCP = *g.ForceTCP
	}
	if g.MaxInflight != nil {
		if *g.MaxInflight < 1 {
			return out, fieldErr("max_inflight", fmt.Errorf("must be at least 1, got %d", *g.MaxInflight))
		}
		out.MaxInflight = *g.MaxInflight
	}
	if len(g.Zones) == 0 {
		return out, fieldErr("zones", errors.New("must list at least one zone"))
	}
	if len(g.Servers) == 0 {
		return out, fieldErr("servers", errors.New("must list at least one server"))
	}
	var err error
	if g.Timeout != "" {
		if out.Timeout, err = parseDuration(g.Timeout); err != nil {
			return out, fieldErr("timeout", err)
		}
	}
	if g.HealthInterval != "" {
		if out.HealthInterval, err = parseDuration(g.HealthInterval); err != nil {
			return out, fieldErr("health_interval", err)
		}
	}
	if g.MaxFails != nil {
		if *g.MaxFails < 1 {
			return out, fieldErr("max_fails", fmt.Errorf("must be at least 1, got %d", *g.MaxFails))
		}
		out.MaxFails = *g.MaxFails
	}
	if out.Name == "" {
		out.Name = g.Zones[0]
	}
	return out, nil
}

func setStr(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

func setInt(dst *int, v *int) {
	if v != nil {
		*dst = *v
	}
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (e.g. 1.5s, 1h)", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}

// ParseSize parses a byte size: a number with an optional suffix B, KiB,
// MiB, GiB (or KB, MB, GB, K, M, G, taken as binary too).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{
		{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10},
		{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1},
	} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.m
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (e.g. 32MiB)", s)
	}
	return int64(n * float64(mult)), nil
}

func parsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR or an address", s)
			}
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
