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

// Config is the checked, typed result. Each field's key tag names it as
// the config file does (errors and reload logs use it); reload tags the
// fields a SIGHUP changes while serving ("live"); any other field changes
// only with a restart, and a reload that changes it says so (Diff).
type Config struct {
	Listen         []string       `key:"listen"`
	HTTPListen     string         `key:"http_listen"`
	Allow          []netip.Prefix `key:"allow" reload:"live"` // nil: the resolver's default
	LogLevel       string         `key:"log_level" reload:"live"`
	LogFormat      string         `key:"log_format"`
	QueryLogSample float64        `key:"query_log_sample" reload:"live"`

	CacheSize        int64         `key:"cache.size"`
	CacheMaxEntries  int           `key:"cache.max_entries"` // 0: chosen from the size
	CacheShards      int           `key:"cache.shards"`      // 0: chosen from the size
	CacheMinTTL      time.Duration `key:"cache.min_ttl" reload:"live"`
	CacheMaxTTL      time.Duration `key:"cache.max_ttl" reload:"live"`
	CacheNegativeTTL time.Duration `key:"cache.negative_ttl" reload:"live"`
	CacheServFailTTL time.Duration `key:"cache.servfail_ttl" reload:"live"`
	CacheServeStale  time.Duration `key:"cache.serve_stale" reload:"live"`
	// CacheSnapshot is "" for none; CacheSnapshotInterval 0 saves only at
	// shutdown and when a new process asks.
	CacheSnapshot         string        `key:"cache.snapshot"`
	CacheSnapshotInterval time.Duration `key:"cache.snapshot_interval"`

	UDPSockets           int           `key:"server.udp_sockets"` // 0: GOMAXPROCS
	MaxUDPSize           int           `key:"server.max_udp_size"`
	TCPMaxConns          int           `key:"server.tcp_max_conns"`
	TCPMaxConnsPerClient int           `key:"server.tcp_max_conns_per_client"`
	TCPIdleTimeout       time.Duration `key:"server.tcp_idle_timeout" reload:"live"`
	MaxInflight          int           `key:"server.max_inflight"`
	MaxQueueWait         time.Duration `key:"server.max_queue_wait" reload:"live"`
	RequestTimeout       time.Duration `key:"server.request_timeout" reload:"live"`
	StaleAnswerTimeout   time.Duration `key:"server.stale_answer_timeout" reload:"live"` // 0: off
	PrefetchMinHits      int           `key:"server.prefetch_min_hits" reload:"live"`    // 0: off
	MaxWaiters           int           `key:"server.max_waiters"`

	PprofListen      string  `key:"pprof_listen"`
	MemoryLimitRatio float64 `key:"memory_limit_ratio" reload:"live"` // 0: off

	Upstreams []Group `key:"upstreams" reload:"live"`

	SearchEnabled     bool          `key:"search.enabled"`
	ClusterDomains    []string      `key:"search.cluster_domains"`
	SearchNegativeTTL time.Duration `key:"search.negative_ttl"` // 0: its answers are not cached
	SearchExtraZones  []string      `key:"search.extra_zones"`

	// Kube is "auto", "true" or "false": whether to keep a view of the
	// cluster (KubeOn says what auto means here).
	Kube           string   `key:"kube.enabled"`
	Kubeconfig     string   `key:"kube.kubeconfig"`  // "": in-cluster
	NodeName       string   `key:"kube.node_name"`   // "": $NODE_NAME
	KubeDNSService string   `key:"kube.dns_service"` // "": no endpoint discovery
	Autopath       bool     `key:"kube.autopath"`    //
	NodeSearch     []string `key:"kube.node_search"` // nil: resolv.conf's search list

	Lameduck        time.Duration `key:"shutdown.lameduck" reload:"live"`
	ShutdownTimeout time.Duration `key:"shutdown.timeout" reload:"live"`
	// HandoverWait is how long a stopping nodedns waits for a new one to
	// serve its addresses before it stops without handing them over; 0
	// hands over only to one already serving.
	HandoverWait time.Duration `key:"shutdown.handover_wait"`

	// The node's networking (package nodenet); SkipTeardown is read at
	// shutdown, so a reload changes it.
	SetupInterface    bool          `key:"setup.interface"`
	InterfaceName     string        `key:"setup.interface_name"`
	SetupRules        bool          `key:"setup.rules"`
	SetupRulesBackend string        `key:"setup.rules_backend"` // auto, iptables, nftables
	SetupInterval     time.Duration `key:"setup.interval"`      // 0: no re-check
	SkipTeardown      bool          `key:"setup.skip_teardown" reload:"live"`
	// FailOpen is in effect with SetupRules only.
	FailOpen      bool          `key:"setup.fail_open"`
	FailOpenAfter time.Duration `key:"setup.fail_open_after"`

	// ConfigFile is the path given with --config, "" for none.
	ConfigFile string `key:"-"`
}

// Group is one checked upstream group.
type Group struct {
	Name           string
	Zones          []string
	Servers        []string
	ForceTCP       bool
	Timeout        time.Duration
	MaxFails       int
	HealthInterval time.Duration
	MaxInflight    int
	// forceTCPSet says ForceTCP was given; if not, a group serving a
	// cluster domain defaults to TCP (defaultForceTCP).
	forceTCPSet bool
}

// Defaults returns the built-in settings: a resolver that works on a fresh
// machine without root (loopback, port 5353) and forwards to the host's
// resolvers. The DaemonSet overrides listen with the node-local address.
// The server's settings come from resolver.Defaults and the groups' from
// package upstream: each default has one source.
func Defaults() Config {
	r := resolver.Defaults()
	return Config{
		Listen:                []string{"127.0.0.1:5353"},
		HTTPListen:            "127.0.0.1:9253",
		LogLevel:              "info",
		LogFormat:             "json",
		CacheSize:             32 << 20,
		CacheMaxTTL:           time.Hour,
		CacheNegativeTTL:      time.Minute,
		CacheServFailTTL:      2 * time.Second,
		CacheServeStale:       time.Hour,
		MaxUDPSize:            int(r.MaxUDPSize),
		TCPMaxConns:           r.TCPMaxConns,
		TCPMaxConnsPerClient:  r.TCPMaxConnsPerClient,
		TCPIdleTimeout:        r.TCPIdleTimeout,
		MaxInflight:           r.MaxInflight,
		MaxQueueWait:          r.MaxQueueWait,
		RequestTimeout:        r.RequestTimeout,
		StaleAnswerTimeout:    r.StaleAnswerTimeout,
		PrefetchMinHits:       int(r.PrefetchMinHits),
		MaxWaiters:            r.MaxWaiters,
		ShutdownTimeout:       5 * time.Second,
		CacheSnapshotInterval: 5 * time.Minute,
		MemoryLimitRatio:      0.9,
		SearchEnabled:         true,
		ClusterDomains:        []string{"cluster.local"},
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
		if g.forceTCPSet {
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
func defaultGroup() Group {
	return Group{
		Timeout: upstream.DefaultTimeout, MaxFails: upstream.DefaultMaxFails,
		HealthInterval: upstream.DefaultHealthInterval, MaxInflight: upstream.DefaultMaxInflight,
	}
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
		c.Listen = f.Listen
	}
	setStr(&c.HTTPListen, f.HTTPListen)
	setStr(&c.LogLevel, f.LogLevel)
	setStr(&c.LogFormat, f.LogFormat)
	if f.QueryLogSample != nil {
		c.QueryLogSample = *f.QueryLogSample
	}
	if len(f.Allow) > 0 {
		p, err := parsePrefixes(f.Allow)
		if err != nil {
			return fieldErr("allow", err)
		}
		c.Allow = p
	}
	var err error
	if f.Cache.Size != "" {
		if c.CacheSize, err = ParseSize(f.Cache.Size); err != nil {
			return fieldErr("cache.size", err)
		}
	}
	setInt(&c.CacheMaxEntries, f.Cache.MaxEntries)
	setInt(&c.CacheShards, f.Cache.Shards)
	for _, d := range []struct {
		field string
		s     string
		dst   *time.Duration
	}{
		{"cache.min_ttl", f.Cache.MinTTL, &c.CacheMinTTL},
		{"cache.max_ttl", f.Cache.MaxTTL, &c.CacheMaxTTL},
		{"cache.negative_ttl", f.Cache.NegativeTTL, &c.CacheNegativeTTL},
		{"cache.servfail_ttl", f.Cache.ServFailTTL, &c.CacheServFailTTL},
		{"cache.serve_stale", f.Cache.ServeStale, &c.CacheServeStale},
		{"server.stale_answer_timeout", f.Server.StaleAnswerTimeout, &c.StaleAnswerTimeout},
		{"server.tcp_idle_timeout", f.Server.TCPIdleTimeout, &c.TCPIdleTimeout},
		{"server.request_timeout", f.Server.RequestTimeout, &c.RequestTimeout},
		{"server.max_queue_wait", f.Server.MaxQueueWait, &c.MaxQueueWait},
		{"shutdown.lameduck", f.Shutdown.Lameduck, &c.Lameduck},
		{"shutdown.timeout", f.Shutdown.Timeout, &c.ShutdownTimeout},
		{"shutdown.handover_wait", f.Shutdown.HandoverWait, &c.HandoverWait},
		{"cache.snapshot_interval", f.Cache.SnapshotInterval, &c.CacheSnapshotInterval},
		{"search.negative_ttl", f.Search.NegativeTTL, &c.SearchNegativeTTL},
	} {
		if d.s == "" {
			continue
		}
		if *d.dst, err = parseDuration(d.s); err != nil {
			return fieldErr(d.field, err)
		}
	}
	setInt(&c.UDPSockets, f.Server.UDPSockets)
	setInt(&c.MaxUDPSize, f.Server.MaxUDPSize)
	setInt(&c.TCPMaxConns, f.Server.TCPMaxConns)
	setInt(&c.TCPMaxConnsPerClient, f.Server.TCPMaxConnsPerClient)
	setInt(&c.MaxInflight, f.Server.MaxInflight)
	setInt(&c.PrefetchMinHits, f.Server.PrefetchMinHits)
	setInt(&c.MaxWaiters, f.Server.MaxWaiters)
	setStr(&c.PprofListen, f.PprofListen)
	setStr(&c.CacheSnapshot, f.Cache.Snapshot)
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
		c.Upstreams = append(c.Upstreams, grp)
	}
	return nil
}

func group(g GroupFile) (Group, error) {
	out := defaultGroup()
	out.Name, out.Zones, out.Servers = g.Name, g.Zones, g.Servers
	if g.ForceTCP != nil {
		out.ForceTCP, out.forceTCPSet = *g.ForceTCP, true
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
