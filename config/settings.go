package config

import (
	"reflect"
	"slices"
)

// A setting is one entry of the configuration: its config file key, where
// it lives in Config, and whether a reload applies it while serving.
// Every other change waits for a restart, and a reload says so (Diff), so
// that no change is ever ignored silently.
type setting struct {
	key  string
	live bool
	at   func(*Config) any // a pointer to the field
}

// settings lists every field of Config that the file or the flags set;
// TestEverySettingHasAKey keeps it complete.
var settings = []setting{
	{"listen", false, func(c *Config) any { return &c.Server.Listen }},
	{"http_listen", false, func(c *Config) any { return &c.HTTPListen }},
	{"allow", true, func(c *Config) any { return &c.Server.Allow }},
	{"log_level", true, func(c *Config) any { return &c.LogLevel }},
	{"log_format", false, func(c *Config) any { return &c.LogFormat }},
	{"query_log_sample", true, func(c *Config) any { return &c.Server.QueryLogSample }},
	{"pprof_listen", false, func(c *Config) any { return &c.PprofListen }},
	{"memory_limit_ratio", true, func(c *Config) any { return &c.MemoryLimitRatio }},

	{"cache.size", false, func(c *Config) any { return &c.Cache.MaxBytes }},
	{"cache.max_entries", false, func(c *Config) any { return &c.Cache.MaxEntries }},
	{"cache.shards", false, func(c *Config) any { return &c.Cache.Shards }},
	{"cache.min_ttl", true, func(c *Config) any { return &c.Cache.Policy.MinTTL }},
	{"cache.max_ttl", true, func(c *Config) any { return &c.Cache.Policy.MaxTTL }},
	{"cache.negative_ttl", true, func(c *Config) any { return &c.Cache.Policy.NegativeTTL }},
	{"cache.servfail_ttl", true, func(c *Config) any { return &c.Cache.Policy.ServFailTTL }},
	{"cache.serve_stale", true, func(c *Config) any { return &c.Cache.Policy.ServeStale }},
	{"cache.snapshot", false, func(c *Config) any { return &c.Snapshot }},
	{"cache.snapshot_interval", false, func(c *Config) any { return &c.SnapshotInterval }},

	{"server.udp_sockets", false, func(c *Config) any { return &c.Server.UDPSockets }},
	{"server.max_udp_size", false, func(c *Config) any { return &c.Server.MaxUDPSize }},
	{"server.tcp_max_conns", false, func(c *Config) any { return &c.Server.TCPMaxConns }},
	{"server.tcp_max_conns_per_client", false, func(c *Config) any { return &c.Server.TCPMaxConnsPerClient }},
	{"server.tcp_idle_timeout", true, func(c *Config) any { return &c.Server.TCPIdleTimeout }},
	{"server.max_inflight", false, func(c *Config) any { return &c.Server.MaxInflight }},
	{"server.max_queue_wait", true, func(c *Config) any { return &c.Server.MaxQueueWait }},
	{"server.request_timeout", true, func(c *Config) any { return &c.Server.RequestTimeout }},
	{"server.stale_answer_timeout", true, func(c *Config) any { return &c.Server.StaleAnswerTimeout }},
	{"server.prefetch_min_hits", true, func(c *Config) any { return &c.Server.PrefetchMinHits }},
	{"server.max_waiters", false, func(c *Config) any { return &c.Server.MaxWaiters }},

	{"upstreams", true, func(c *Config) any { return &c.Upstreams }},

	{"search.enabled", false, func(c *Config) any { return &c.SearchEnabled }},
	{"search.cluster_domains", false, func(c *Config) any { return &c.ClusterDomains }},
	{"search.negative_ttl", false, func(c *Config) any { return &c.SearchNegativeTTL }},
	{"search.extra_zones", false, func(c *Config) any { return &c.SearchExtraZones }},

	{"kube.enabled", false, func(c *Config) any { return &c.Kube }},
	{"kube.kubeconfig", false, func(c *Config) any { return &c.Kubeconfig }},
	{"kube.node_name", false, func(c *Config) any { return &c.NodeName }},
	{"kube.dns_service", false, func(c *Config) any { return &c.KubeDNSService }},
	{"kube.autopath", false, func(c *Config) any { return &c.Autopath }},
	{"kube.node_search", false, func(c *Config) any { return &c.NodeSearch }},

	{"shutdown.lameduck", true, func(c *Config) any { return &c.Lameduck }},
	{"shutdown.timeout", true, func(c *Config) any { return &c.ShutdownTimeout }},
	{"shutdown.handover_wait", false, func(c *Config) any { return &c.Server.HandOverWait }},

	{"setup.interface", false, func(c *Config) any { return &c.SetupInterface }},
	{"setup.interface_name", false, func(c *Config) any { return &c.InterfaceName }},
	{"setup.rules", false, func(c *Config) any { return &c.SetupRules }},
	{"setup.rules_backend", false, func(c *Config) any { return &c.SetupRulesBackend }},
	{"setup.interval", false, func(c *Config) any { return &c.SetupInterval }},
	// Read at shutdown: a reload changes it.
	{"setup.skip_teardown", true, func(c *Config) any { return &c.SkipTeardown }},
	{"setup.fail_open", false, func(c *Config) any { return &c.FailOpen }},
	{"setup.fail_open_after", false, func(c *Config) any { return &c.FailOpenAfter }},
}

// Diff lists the settings that differ between old and new, by their config
// file key: those a reload applies while serving and those that take
// effect only after a restart.
func Diff(old, new Config) (live, restart []string) {
	for _, s := range settings {
		if reflect.DeepEqual(s.at(&old), s.at(&new)) {
			continue
		}
		if s.live {
			live = append(live, s.key)
		} else {
			restart = append(restart, s.key)
		}
	}
	slices.Sort(live)
	slices.Sort(restart)
	return live, restart
}

// Applied is the configuration in effect after a reload from running to
// new: new's live settings, running's others (they wait for a restart).
func Applied(running, new Config) Config {
	out := running
	for _, s := range settings {
		if s.live {
			reflect.ValueOf(s.at(&out)).Elem().Set(reflect.ValueOf(s.at(&new)).Elem())
		}
	}
	out.forceTCPSet = new.forceTCPSet
	return out
}
