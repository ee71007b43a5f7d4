package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/upstream"
)

// flagDef is one command-line flag: its name, what it sets, and how.
// Flags are kept as strings until applied, so that a bad value is reported
// with the flag's name and nothing else.
type flagDef struct {
	name, usage string
	isBool      bool
	apply       func(c *Config, v string) error
}

func durationFlag(dst func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) (err error) {
		*dst(c), err = parseDuration(v)
		return err
	}
}

func intFlag(dst func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%q is not an integer", v)
		}
		*dst(c) = n
		return nil
	}
}

func floatFlag(dst func(*Config) *float64) func(*Config, string) error {
	return func(c *Config, v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", v)
		}
		*dst(c) = f
		return nil
	}
}

// forRootGroups applies a --upstream-* flag to the group that serves ".".
func forRootGroups(c *Config, f func(g *upstream.GroupConfig, i int)) {
	for i := range c.Upstreams {
		if hasRoot(c.Upstreams[i].Zones) {
			f(&c.Upstreams[i], i)
		}
	}
}

// ResolvConf is the file read for upstream servers when no group serves ".".
var ResolvConf = "/etc/resolv.conf"

var flagDefs = []flagDef{
	{name: "listen", usage: "IP:port[,IP:port...] to serve DNS on, over UDP and TCP (default 127.0.0.1:5353)",
		apply: func(c *Config, v string) error { c.Server.Listen = splitList(v); return nil }},
	{name: "upstream", usage: "servers for the default zone \".\", IP[:port][,...] (default: the nameservers of /etc/resolv.conf)",
		apply: func(c *Config, v string) error { return setDefaultUpstream(c, splitList(v)) }},
	{name: "upstream-force-tcp", isBool: true, usage: "talk TCP, over reused connections, to the default zone's servers",
		apply: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q is not a boolean", v)
			}
			forRootGroups(c, func(g *upstream.GroupConfig, i int) { g.ForceTCP, c.forceTCPSet[i] = b, true })
			return nil
		}},
	{name: "upstream-timeout", usage: "per-try timeout of the default zone's servers (default 1.5s)",
		apply: func(c *Config, v string) error {
			d, err := parseDuration(v)
			forRootGroups(c, func(g *upstream.GroupConfig, _ int) { g.Timeout = d })
			return err
		}},
	{name: "http-listen", usage: "IP:port for /metrics, /health and /ready; empty to disable (default 127.0.0.1:9253)",
		apply: func(c *Config, v string) error { c.HTTPListen = v; return nil }},
	{name: "allow", usage: "client networks answered, CIDR[,CIDR...]; others get REFUSED (default: loopback, RFC 1918, link-local, ULA)",
		apply: func(c *Config, v string) (err error) { c.Server.Allow, err = parsePrefixes(splitList(v)); return err }},
	{name: "log-level", usage: "debug, info, warn or error (default info)",
		apply: func(c *Config, v string) error { c.LogLevel = v; return nil }},
	{name: "log-format", usage: "json or console (default json)",
		apply: func(c *Config, v string) error { c.LogFormat = v; return nil }},
	{name: "query-log-sample", usage: "fraction of queries to log at info level, 0 to 1 (default 0)",
		apply: floatFlag(func(c *Config) *float64 { return &c.Server.QueryLogSample })},
	{name: "cache-size", usage: "cache memory bound, e.g. 32MiB (default 32MiB)",
		apply: func(c *Config, v string) (err error) { c.Cache.MaxBytes, err = ParseSize(v); return err }},
	{name: "cache-max-entries", usage: "cache entry bound (default: cache-size / 160)",
		apply: intFlag(func(c *Config) *int { return &c.Cache.MaxEntries })},
	{name: "cache-shards", usage: "independently locked cache shards, a power of two (default 256)",
		apply: intFlag(func(c *Config) *int { return &c.Cache.Shards })},
	{name: "cache-min-ttl", usage: "lower bound on the TTL of cached positive answers (default 0s)",
		apply: durationFlag(func(c *Config) *time.Duration { return &c.Cache.Policy.MinTTL })},
	{name: "cache-max-ttl", usage: "upper bound on the TTL of cached positive answers (default 1h)",
		apply: durationFlag(func(c *Config) *time.Duration { return &c.Cache.Policy.MaxTTL })},
	{name: "cache-negative-ttl", usage: "upper bound on caching NXDOMAIN and NODATA (default 1m)",
		apply: durationFlag(func(c *Config) *time.Duration { return &c.Cache.Policy.NegativeTTL })},
	{name: "cache-servfail-ttl", usage: "how long an upstream SERVFAIL is cached, 0 to never (default 2s)",
		apply: durationFlag(func(c *Config) *time.Duration { return &c.Cache.Policy.ServFailTTL })},
	{name: "serve-stale", usage: "keep expired entries this long to answer when upstreams fail or are slow, 0 to never (default 1h)",
		apply: durationFlag(func(c *Config) *time.Duration { return &c.Cache.Policy.ServeStale })},
	{name: "stale-answer-timeout", usage: "how long a client waits for the upstream before getting a stale answer (default 1.8s)",
		apply: func(c *Config, v string) error {
			d, err := parseDuration(v)
			c.Server.StaleAnswerTimeout = staleAnswerTimeout(d)
			return err
		}},
	{name: "prefetch-min-hits", usage: "hits an entry needs before it is refreshed shortly before it expires, 0 to never (default 2)",
		apply: func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%q is not an integer", v)
			}
			c.Server.PrefetchMinHits, err = hits(n)
			return err
		}},
	{name: "max-waiters", usage: "cap on queries waiting for an upstream answer (for a slot or an identical resolution), shared fairly between clients (default 10000)",
		apply: intFlag(func(c *Config) *int { return &c.Server.MaxWaiters })},
	{name: "max-queue-wait", usage: "how long a miss may wait for a resolution slot before it is answered stale or SERVFAIL (default 1s)",
		apply: durationFlag(func(c *Config) *time.Duration { return &c.Server.MaxQueueWait })},
	{name: "upstream-max-inflight", usage: "cap on queries in flight to each server of the default zone (default 500)",
		apply: func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%q is not an integer", v)
			}
			forRootGroups(c, func(g *upstream.GroupConfig, _ int) { g.MaxInflight = n })
			return nil
		}},
	{name: "memory-limit-ratio", usage: "share of the cgroup memory limit given to the Go runtime when GOMEMLIMIT is unset (default 0.9)",
		apply: floatFlag(func(c *Config) *float64 { return &c.MemoryLimitRatio })},
	{name: "pprof-listen", usage: "IP:port serving net/http/pprof for profiling; empty disables it (default empty)",
		apply: func(c *Config, v string) error { c.PprofListen = v; return nil }},
	{name: "udp-sockets", usage: "SO_REUSEPORT UDP sockets (and readers) per listen address (default GOMAXPROCS)",
		apply: intFlag(func(c *Config) *int { return &c.Server.UDPSockets })},
	{name: "max-udp-size", usage: "EDNS UDP payload size advertised and largest UDP reply (default 1232)",
		apply: func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%q is not an integer", v)
			}
			c.Server.MaxUDPSize, err = udpSize(n)
			return err
		}},
	{name: "tcp-max-conns", usage: "cap on open client TCP connections (default 250)",
		apply: intFlag(func(c *Config) *int { return &c.Server.TCPMaxConns })},
	{name: "tcp-max-conns-per-client", usage: "cap on open TCP connections of one client address; at the cap its idlest one makes room (default 8)",
		apply: intFlag(func(c *Config) *int { return &c.Server.TCPMaxConnsPerClient })},
	{name: "tcp-idle-timeout", usage: "close client TCP connections idle this long (default 10s)",
		apply: durationFlag(func(c *Config) *time.Duration { return &c.Server.TCPIdleTimeout })},
	{name: "max-inflight", usage: "cap on resolutions in flight to the upstreams; beyond it misses wait for a slot, served round-robin between clients (default 500)",
		apply: intFlag(func(c *Config) *int { return &c.Server.MaxInflight })},
	{name: "request-timeout", usage: "overall deadline for resolving a miss from its arrival, across the wait for a slot and upstream tries (default 4s)",
		apply: durationFlag(func(c *Config) *time.Duration { return &c.Server.RequestTimeout })},
	{name: "search", isBool: true, usage: "answer on the node the names under the cluster domains that cannot exist (default true)",
		apply: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q is not a boolean", v)
			}
			c.SearchEnabled = b
			return nil
		}},
	{name: "cluster-domain", usage: "the cluster's DNS domains, DOMAIN[,DOMAIN...] (default cluster.local)",
		apply: func(c *Config, v string) error { c.ClusterDomains = splitList(v); return nil }},
	{name: "kube", isBool: true, usage: "keep a view of the cluster from the Kubernetes API: true, false or auto (on inside a cluster or with --kubeconfig; default auto)",
		apply: func(c *Config, v string) error {
			if v != "auto" {
				b, err := strconv.ParseBool(v)
				if err != nil {
					return fmt.Errorf("%q is not true, false or auto", v)
				}
				v = strconv.FormatBool(b)
			}
			c.Kube = v
			return nil
		}},
	{name: "kubeconfig", usage: "kubeconfig file for the Kubernetes API (default: the in-cluster service account)",
		apply: func(c *Config, v string) error { c.Kubeconfig = v; return nil }},
	{name: "node-name", usage: "this node's name, whose pods autopath serves (default $NODE_NAME)",
		apply: func(c *Config, v string) error { c.NodeName = v; return nil }},
	{name: "kube-dns-service", usage: "the cluster DNS Service, NAMESPACE/NAME, whose ready endpoints the cluster domain's group uses; empty to use the configured servers only (default kube-system/kube-dns)",
		apply: func(c *Config, v string) error { c.KubeDNSService = v; return nil }},
	{name: "autopath", isBool: true, usage: "finish a known pod's search walk on the node and answer its first query with a CNAME (default true; needs the Kubernetes view)",
		apply: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q is not a boolean", v)
			}
			c.Autopath = b
			return nil
		}},
	{name: "cache-snapshot", usage: "file the cache is saved to (at shutdown, periodically, and when a new process asks) and loaded from at start, so that restarts and upgrades keep it; empty for none (default empty)",
		apply: func(c *Config, v string) error { c.Snapshot = v; return nil }},
	{name: "cache-snapshot-interval", usage: "also save the cache snapshot this often, 0 for only at shutdown and on request (default 5m)",
		apply: durationFlag(func(c *Config) *time.Duration { return &c.SnapshotInterval })},
	{name: "handover-wait", usage: "on SIGTERM, how long to wait for a new process to serve the listen addresses before stopping without handing them over (default 0s: hand over only to one already serving)",
		apply: durationFlag(func(c *Config) *time.Duration { return &c.Server.HandOverWait })},
	{name: "setup-interface", isBool: true, usage: "create the interface holding the listen addresses: a dummy link, or the addresses on lo where the kernel has none (default false)",
		apply: boolFlag(func(c *Config) *bool { return &c.SetupInterface })},
	{name: "interface-name", usage: "name of the dummy link --setup-interface creates; lo puts the addresses on lo (default nodedns0)",
		apply: func(c *Config, v string) error { c.InterfaceName = v; return nil }},
	{name: "setup-rules", isBool: true, usage: "install the rules that keep DNS to and from the listen addresses out of conntrack, as NodeLocal DNSCache does (default false)",
		apply: boolFlag(func(c *Config) *bool { return &c.SetupRules })},
	{name: "setup-rules-backend", usage: "auto, iptables or nftables: what the rules go through; auto follows kube-proxy (default auto)",
		apply: func(c *Config, v string) error { c.SetupRulesBackend = v; return nil }},
	{name: "setup-interval", usage: "how often the interface and the rules are checked and restored, 0 for never (default 10s)",
		apply: durationFlag(func(c *Config) *time.Duration { return &c.SetupInterval })},
	{name: "fail-open", isBool: true, usage: "with --setup-rules, send the pods' queries to the cluster DNS whenever nodedns does not answer (killed, hung, not started yet) and take them back once it does (default true)",
		apply: boolFlag(func(c *Config) *bool { return &c.FailOpen })},
	{name: "fail-open-after", usage: "how long after nodedns last proved it answers the node fails open (default 1s)",
		apply: durationFlag(func(c *Config) *time.Duration { return &c.FailOpenAfter })},
	{name: "skip-teardown", isBool: true, usage: "leave the interface and the rules in place at shutdown, for the process that takes over (default false)",
		apply: boolFlag(func(c *Config) *bool { return &c.SkipTeardown })},
	{name: "lameduck", usage: "on SIGTERM, report not ready and keep serving this long before stopping (default 0s)",
		apply: durationFlag(func(c *Config) *time.Duration { return &c.Lameduck })},
	{name: "shutdown-timeout", usage: "on SIGTERM, how long queries in flight may take to finish (default 5s)",
		apply: durationFlag(func(c *Config) *time.Duration { return &c.ShutdownTimeout })},
}

// strFlag records a flag's value as given.
type strFlag struct {
	v      string
	isBool bool
}

func (f *strFlag) String() string     { return f.v }
func (f *strFlag) Set(v string) error { f.v = v; return nil }
func (f *strFlag) IsBoolFlag() bool   { return f.isBool }

// printUsage writes the --help text.
func printUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: nodedns [flags]\n\nnodedns is a node-local caching DNS resolver. Flags override the config file.\n\nFlags:")
	fmt.Fprintf(w, "  --%-20s %s\n", "config FILE", "YAML configuration file (docs/reference/config.md); re-read on SIGHUP")
	for _, d := range flagDefs {
		fmt.Fprintf(w, "  --%-20s %s\n", d.name, d.usage)
	}
}

func newFlagSet() (*flag.FlagSet, *flagValues) {
	fv := &flagValues{}
	fs := flag.NewFlagSet("nodedns", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {} // errors are one line; --help prints printUsage
	fs.StringVar(&fv.configFile, "config", "", "YAML configuration file")
	for _, d := range flagDefs {
		fs.Var(&strFlag{isBool: d.isBool}, d.name, d.usage)
	}
	return fs, fv
}

// FlagNames lists every flag, for the documentation test.
func FlagNames() []string {
	out := []string{"config"}
	for _, d := range flagDefs {
		out = append(out, d.name)
	}
	return out
}

func applyFlags(c *Config, set map[string]string) error {
	// --upstream first: --upstream-timeout and --upstream-force-tcp apply to
	// the group it creates.
	order := make([]flagDef, 0, len(flagDefs))
	for _, d := range flagDefs {
		if d.name == "upstream" {
			order = append([]flagDef{d}, order...)
		} else {
			order = append(order, d)
		}
	}
	for _, d := range order {
		v, ok := set[d.name]
		if !ok {
			continue
		}
		if err := d.apply(c, v); err != nil {
			return fmt.Errorf("flag --%s: %w", d.name, err)
		}
	}
	return nil
}

func hasRoot(zones []string) bool {
	for _, z := range zones {
		if dns.Fqdn(z) == "." {
			return true
		}
	}
	return false
}

func setDefaultUpstream(c *Config, servers []string) error {
	if len(servers) == 0 {
		return errors.New("empty list")
	}
	for i := range c.Upstreams {
		if hasRoot(c.Upstreams[i].Zones) {
			c.Upstreams[i].Addrs = servers
			return nil
		}
	}
	g := defaultGroup()
	g.Name, g.Zones, g.Addrs = "default", []string{"."}, servers
	c.addGroup(g, false)
	return nil
}
