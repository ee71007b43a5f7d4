// Package suite is the side-by-side benchmark of nodedns and CoreDNS (the
// NodeLocal DNSCache configuration) that `make bench` runs: both servers
// forward to a fake upstream the suite controls (package fakeup), are pinned
// to one core with GOMAXPROCS=1, and get the same load from the generator
// (package bench) on the other core, one server after the other, in each
// scenario. See bench/README.md.
package suite

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Options configure a suite run. Zero values take the defaults of
// DefaultOptions (Run fills them).
type Options struct {
	Root      string // repository root (Makefile, tools/coredns, bench/coredns)
	OutDir    string // default <Root>/bench/results
	NodeDNS   string // nodedns binary; default <Root>/bin/nodedns after `make build`
	CoreDNS   string // CoreDNS binary; default from tools/coredns/build.sh
	NoBuild   bool   // do not run `make build` (use NodeDNS or bin/nodedns as is)
	Scenarios []string
	Servers   []string // default both, nodedns first

	Params

	CPUProfile bool // save pprof CPU profiles of nodedns (needs --pprof-listen)
	// EchoCommand starts the echo responder (ServeEcho) as a process; it is
	// given "--listen IP:PORT". Empty: no generator-floor runs.
	EchoCommand []string

	// Before the first scenario, wait up to QuietWait for the 1-minute load
	// average to drop below QuietLoad (then go on anyway, and say so).
	QuietLoad float64
	QuietWait time.Duration

	Log io.Writer // progress lines (default: discarded)
	Now func() time.Time
}

// Params are the load parameters, recorded in the results.
type Params struct {
	ServerCPU int `json:"server_cpu"`
	LoadCPU   int `json:"load_cpu"`

	Duration time.Duration `json:"duration"` // hit and latency scenarios
	// Repeat runs the hit and latency scenarios this many times per server
	// (alternating servers) and reports the median run.
	Repeat int `json:"repeat"`
	// UpstreamRTT is the fake upstream's answer delay outside the storm
	// (warm-ups, nx, ndots).
	UpstreamRTT time.Duration `json:"upstream_rtt"`
	AnswerTTL   uint32        `json:"answer_ttl"` // TTL of the upstream's A/AAAA answers

	HitNames       int `json:"hit_names"`
	HitConcurrency int `json:"hit_concurrency"`
	HitSockets     int `json:"hit_sockets"`

	// LatencyQPS is the fixed load; 0: LatencyFraction of CoreDNS's cache-hit
	// qps (of nodedns's if CoreDNS did not run).
	LatencyQPS      float64 `json:"latency_qps"`
	LatencyFraction float64 `json:"latency_fraction"`
	LatencySockets  int     `json:"latency_sockets"`

	StormDuration    time.Duration `json:"storm_duration"`
	StormQPS         float64       `json:"storm_qps"`
	StormSockets     int           `json:"storm_sockets"`
	StormClients     int           `json:"storm_clients"` // source addresses 127.0.0.16...
	StormDelay       time.Duration `json:"storm_delay"`
	StormTimeout     time.Duration `json:"storm_timeout"` // client timeout, storm and bystanders
	BystanderQPS     float64       `json:"bystander_qps"`
	BystanderNames   int           `json:"bystander_names"`
	BystanderSockets int           `json:"bystander_sockets"`

	// fair: one client address (127.0.0.16) storms the upstream, which
	// delays every answer by StormDelay, with unique names at FairQPS (open
	// loop) while a quiet client (127.0.0.4) asks unique names at
	// FairQuietQPS, from fairQuietDelay after the storm's start to its end.
	FairQPS      float64       `json:"fair_qps"`
	FairQuietQPS float64       `json:"fair_quiet_qps"`
	FairDuration time.Duration `json:"fair_duration"`

	NXNames    int           `json:"nx_names"`
	NXQPS      float64       `json:"nx_qps"`
	NXDuration time.Duration `json:"nx_duration"`
	NXTTL      uint32        `json:"nx_ttl"` // SOA TTL/MINIMUM of the nx zone

	// nx-burst: NXBursts bursts, each of NXBurstSize identical queries for
	// a new NXDOMAIN name sent at once from NXBurstClients addresses
	// (127.0.4.x, a socket each), the upstream answering after NXBurstRTT.
	NXBurstSize    int           `json:"nx_burst_size"`
	NXBursts       int           `json:"nx_bursts"`
	NXBurstClients int           `json:"nx_burst_clients"`
	NXBurstRTT     time.Duration `json:"nx_burst_rtt"`

	// burst: Bursts bursts, each of BurstNames distinct names never asked
	// before, all sent at once from one client address (burstAddr), the
	// upstream answering after UpstreamRTT.
	BurstNames int `json:"burst_names"`
	Bursts     int `json:"bursts"`

	// dead-name: for DeadDuration one client (deadAddr) asks DeadNames
	// names under a zone the upstream never answers (A and AAAA each) at
	// DeadQPS, open loop, while other clients ask the BystanderNames cached
	// names at BystanderQPS and unique names (misses) at DeadMissQPS.
	DeadNames    int           `json:"dead_names"`
	DeadQPS      float64       `json:"dead_qps"`
	DeadMissQPS  float64       `json:"dead_miss_qps"`
	DeadDuration time.Duration `json:"dead_duration"`

	NdotsNames       int           `json:"ndots_names"`
	NdotsRate        float64       `json:"ndots_rate"` // lookups per second, paced
	NdotsConcurrency int           `json:"ndots_concurrency"`
	NdotsDuration    time.Duration `json:"ndots_duration"`
	ClusterNegTTL    uint32        `json:"cluster_neg_ttl"` // SOA TTL/MINIMUM of cluster.local

	// scan: a working set of ScanSetNames names, asked three times first,
	// is asked with a Zipf distribution at ScanSetQPS (open loop) for
	// ScanPhase and then during the scan: one client asking ScanNames
	// one-off names at ScanQPS.
	ScanSetNames int           `json:"scan_set_names"`
	ScanSetQPS   float64       `json:"scan_set_qps"`
	ScanNames    int           `json:"scan_names"`
	ScanQPS      float64       `json:"scan_qps"`
	ScanPhase    time.Duration `json:"scan_phase"`

	// hostile-*: how long each attack lasts; bystanders ask the
	// BystanderNames cached names at BystanderQPS meanwhile.
	AttackDuration time.Duration `json:"attack_duration"`

	// miss: a closed loop of unique names (every one a miss) with
	// MissConcurrency outstanding from MissClients addresses, for
	// Duration, against an upstream that answers at once.
	MissConcurrency int `json:"miss_concurrency"`
	MissClients     int `json:"miss_clients"`
}

// nx-burst: client timeout of a burst's queries, and the pause between
// bursts (late upstream traffic of one burst must not count in the next).
const (
	burstTimeout = 2 * time.Second
	burstPause   = 300 * time.Millisecond
)

// burst: the client's sockets (one address).
const burstSockets = 16

// fair: the storm client's sockets, and how long after the storm's start
// the quiet client begins (so that it asks while the storm holds the slots).
const (
	fairSockets    = 16
	fairQuietDelay = time.Second
)

// DefaultOptions returns the defaults `make bench` uses.
func DefaultOptions() Options {
	return Options{
		Scenarios: slices.Clone(AllScenarios),
		Servers:   []string{NodeDNS, CoreDNS},
		QuietLoad: 1.0,
		QuietWait: 5 * time.Minute,
		Params: Params{
			ServerCPU:   0,
			LoadCPU:     1,
			Duration:    10 * time.Second,
			Repeat:      3,
			UpstreamRTT: 10 * time.Millisecond,
			AnswerTTL:   3600,

			HitNames:       5000,
			HitConcurrency: 200,
			HitSockets:     16,

			LatencyFraction: 0.5,
			LatencySockets:  4,

			StormDuration:    20 * time.Second,
			StormQPS:         20000,
			StormSockets:     64,
			StormClients:     16,
			StormDelay:       2 * time.Second,
			StormTimeout:     5 * time.Second,
			BystanderQPS:     2000,
			BystanderNames:   1000,
			BystanderSockets: 8,

			FairQPS:      5000,
			FairQuietQPS: 20,
			FairDuration: 20 * time.Second,

			NXNames:    200,
			NXQPS:      10000,
			NXDuration: 10 * time.Second,
			NXTTL:      300,

			NXBurstSize:    500,
			NXBursts:       20,
			NXBurstClients: 50,
			NXBurstRTT:     50 * time.Millisecond,

			BurstNames: 1000,
			Bursts:     5,

			DeadNames:    5,
			DeadQPS:      50,
			DeadMissQPS:  200,
			DeadDuration: 20 * time.Second,

			NdotsNames:       200,
			NdotsRate:        1000,
			NdotsConcurrency: 20,
			NdotsDuration:    20 * time.Second,
			ClusterNegTTL:    5,

			ScanSetNames: 2000,
			ScanSetQPS:   2000,
			ScanNames:    50000,
			ScanQPS:      5000,
			ScanPhase:    5 * time.Second,

			AttackDuration: 10 * time.Second,

			MissConcurrency: 200,
			MissClients:     16,
		},
	}
}

// fill sets every zero field of o to its default and checks the rest.
func (o *Options) fill() error {
	d := DefaultOptions()
	if len(o.Scenarios) == 0 {
		o.Scenarios = d.Scenarios
	}
	for _, s := range o.Scenarios {
		if !slices.Contains(AllScenarios, s) {
			return fmt.Errorf("unknown scenario %q (have %s)", s, strings.Join(AllScenarios, ", "))
		}
	}
	if len(o.Servers) == 0 {
		o.Servers = d.Servers
	}
	for _, s := range o.Servers {
		if s != NodeDNS && s != CoreDNS {
			return fmt.Errorf("unknown server %q (have nodedns, coredns)", s)
		}
	}
	if o.QuietLoad == 0 {
		o.QuietLoad = d.QuietLoad
	}
	p, dp := &o.Params, d.Params
	setDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setF := func(v *float64, def float64) {
		if *v == 0 {
			*v = def
		}
	}
	if p.ServerCPU == p.LoadCPU && p.ServerCPU == 0 {
		p.LoadCPU = dp.LoadCPU
	}
	if p.ServerCPU == p.LoadCPU {
		return fmt.Errorf("server and load must be on different cores (both %d)", p.ServerCPU)
	}
	setDur(&p.Duration, dp.Duration)
	setInt(&p.Repeat, dp.Repeat)
	setDur(&p.UpstreamRTT, dp.UpstreamRTT)
	if p.AnswerTTL == 0 {
		p.AnswerTTL = dp.AnswerTTL
	}
	setInt(&p.HitNames, dp.HitNames)
	setInt(&p.HitConcurrency, dp.HitConcurrency)
	setInt(&p.HitSockets, dp.HitSockets)
	setF(&p.LatencyFraction, dp.LatencyFraction)
	setInt(&p.LatencySockets, dp.LatencySockets)
	setDur(&p.StormDuration, dp.StormDuration)
	setF(&p.StormQPS, dp.StormQPS)
	setInt(&p.StormSockets, dp.StormSockets)
	setInt(&p.StormClients, dp.StormClients)
	setDur(&p.StormDelay, dp.StormDelay)
	setDur(&p.StormTimeout, dp.StormTimeout)
	setF(&p.BystanderQPS, dp.BystanderQPS)
	setInt(&p.BystanderNames, dp.BystanderNames)
	setInt(&p.BystanderSockets, dp.BystanderSockets)
	setF(&p.FairQPS, dp.FairQPS)
	setF(&p.FairQuietQPS, dp.FairQuietQPS)
	setDur(&p.FairDuration, dp.FairDuration)
	setInt(&p.NXNames, dp.NXNames)
	setF(&p.NXQPS, dp.NXQPS)
	setDur(&p.NXDuration, dp.NXDuration)
	if p.NXTTL == 0 {
		p.NXTTL = dp.NXTTL
	}
	setInt(&p.NXBurstSize, dp.NXBurstSize)
	setInt(&p.NXBursts, dp.NXBursts)
	setInt(&p.NXBurstClients, dp.NXBurstClients)
	setDur(&p.NXBurstRTT, dp.NXBurstRTT)
	setInt(&p.BurstNames, dp.BurstNames)
	setInt(&p.Bursts, dp.Bursts)
	setInt(&p.DeadNames, dp.DeadNames)
	setF(&p.DeadQPS, dp.DeadQPS)
	setF(&p.DeadMissQPS, dp.DeadMissQPS)
	setDur(&p.DeadDuration, dp.DeadDuration)
	setInt(&p.NdotsNames, dp.NdotsNames)
	setF(&p.NdotsRate, dp.NdotsRate)
	setInt(&p.NdotsConcurrency, dp.NdotsConcurrency)
	setDur(&p.NdotsDuration, dp.NdotsDuration)
	if p.ClusterNegTTL == 0 {
		p.ClusterNegTTL = dp.ClusterNegTTL
	}
	setInt(&p.ScanSetNames, dp.ScanSetNames)
	setF(&p.ScanSetQPS, dp.ScanSetQPS)
	setInt(&p.ScanNames, dp.ScanNames)
	setF(&p.ScanQPS, dp.ScanQPS)
	setDur(&p.ScanPhase, dp.ScanPhase)
	setDur(&p.AttackDuration, dp.AttackDuration)
	setInt(&p.MissConcurrency, dp.MissConcurrency)
	setInt(&p.MissClients, dp.MissClients)
	if p.MissClients < 1 || p.MissClients > 254 || p.MissConcurrency < p.MissClients {
		return fmt.Errorf("miss: 1 to 254 clients (127.0.11.x), at least one query outstanding each")
	}
	if p.ScanSetNames < 2 || p.ScanSetQPS < 0 || p.ScanNames < 1 || p.ScanQPS < 0 || p.ScanPhase < 0 {
		return fmt.Errorf("scan: at least 2 working-set names and 1 scan name, rates and phase > 0")
	}
	if p.AttackDuration < 0 {
		return fmt.Errorf("hostile: attack duration > 0")
	}
	if p.StormClients > 200 {
		return fmt.Errorf("storm clients: at most 200 (127.0.0.16-215)")
	}
	if p.NdotsConcurrency > 254 {
		return fmt.Errorf("ndots concurrency: at most 254 (one client address each)")
	}
	if p.NXBurstClients > 254 || p.NXBurstClients < 1 {
		return fmt.Errorf("nx burst clients: 1 to 254 (127.0.4.1-254)")
	}
	if p.NXBurstSize < p.NXBurstClients {
		return fmt.Errorf("nx burst size (%d) below its client addresses (%d)", p.NXBurstSize, p.NXBurstClients)
	}
	if p.NXBursts < 1 || p.NXBurstSize < 1 || p.NXBurstRTT < 0 {
		return fmt.Errorf("nx bursts and burst size must be > 0, burst RTT >= 0")
	}
	if p.FairDuration < 2*fairQuietDelay || p.FairQPS < 0 || p.FairQuietQPS < 0 {
		return fmt.Errorf("fair: duration at least %v, rates > 0", 2*fairQuietDelay)
	}
	if p.BurstNames < 1 || p.BurstNames > 20000 || p.Bursts < 1 {
		return fmt.Errorf("burst: 1 to 20000 names per burst, at least 1 burst")
	}
	if p.DeadNames < 1 || p.DeadQPS < 0 || p.DeadMissQPS < 0 || p.DeadDuration < 0 {
		return fmt.Errorf("dead-name: at least 1 name, rates and duration > 0")
	}
	if p.HitSockets > p.HitConcurrency {
		return fmt.Errorf("hit sockets (%d) exceed hit concurrency (%d)", p.HitSockets, p.HitConcurrency)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return nil
}
