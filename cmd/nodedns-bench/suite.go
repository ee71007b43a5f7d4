package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nodedns/nodedns/bench/fakeup"
	"github.com/nodedns/nodedns/bench/suite"
)

// runSuite is `nodedns-bench suite`: the side-by-side benchmark of nodedns
// and CoreDNS (see bench/README.md).
func runSuite(ctx context.Context, args []string) error {
	o := suite.DefaultOptions()
	p := &o.Params
	fs := flag.NewFlagSet("nodedns-bench suite", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var scenarios, servers string
	fs.StringVar(&o.Root, "root", ".", "repository root (Makefile, tools/coredns, bench/coredns)")
	fs.StringVar(&o.OutDir, "out", "", "directory for the report (default <root>/bench/results)")
	fs.StringVar(&o.NodeDNS, "nodedns", "", "nodedns binary (default: `make build`, then bin/nodedns)")
	fs.StringVar(&o.CoreDNS, "coredns", "", "CoreDNS binary (default: tools/coredns/build.sh)")
	fs.BoolVar(&o.NoBuild, "no-build", false, "do not run `make build`")
	fs.StringVar(&scenarios, "scenarios", strings.Join(suite.AllScenarios, ","), "scenarios to run, comma separated")
	fs.StringVar(&servers, "servers", "nodedns,coredns", "servers to run, comma separated, in order")
	fs.BoolVar(&o.CPUProfile, "cpu-profile", false, "after the A/B runs, run the hit and storm-delay scenarios once more against nodedns started with --pprof-listen and save CPU profiles next to the report")
	fs.Float64Var(&o.QuietLoad, "quiet-load", o.QuietLoad, "wait for the 1-minute load average to drop below this before starting")
	fs.DurationVar(&o.QuietWait, "quiet-wait", o.QuietWait, "wait at most this long for --quiet-load, then start anyway")
	fs.IntVar(&p.ServerCPU, "server-cpu", p.ServerCPU, "core the servers run on")
	fs.IntVar(&p.LoadCPU, "load-cpu", p.LoadCPU, "core the generator and fake upstream run on")
	fs.DurationVar(&p.Duration, "duration", p.Duration, "measured time of the hit and latency scenarios")
	fs.IntVar(&p.Repeat, "repeat", p.Repeat, "repetitions of the hit and latency scenarios per server (the median is reported)")
	fs.DurationVar(&p.UpstreamRTT, "upstream-rtt", p.UpstreamRTT, "fake upstream's answer delay outside the storm")
	fs.IntVar(&p.HitNames, "hit-names", p.HitNames, "warmed names in the hit and latency scenarios")
	fs.IntVar(&p.HitConcurrency, "hit-concurrency", p.HitConcurrency, "outstanding queries in the hit scenario")
	fs.IntVar(&p.HitSockets, "hit-sockets", p.HitSockets, "UDP sockets in the hit scenario")
	fs.Float64Var(&p.LatencyQPS, "latency-qps", 0, "fixed load of the latency scenario (default: --latency-fraction of CoreDNS's hit qps)")
	fs.Float64Var(&p.LatencyFraction, "latency-fraction", p.LatencyFraction, "fraction of CoreDNS's hit qps for the latency scenario")
	fs.IntVar(&p.LatencySockets, "latency-sockets", p.LatencySockets, "UDP sockets in the latency scenario")
	fs.DurationVar(&p.StormDuration, "storm-duration", p.StormDuration, "length of the storm")
	fs.Float64Var(&p.StormQPS, "storm-qps", p.StormQPS, "storm rate (open loop, unique names)")
	fs.IntVar(&p.StormSockets, "storm-sockets", p.StormSockets, "storm UDP sockets")
	fs.IntVar(&p.StormClients, "storm-clients", p.StormClients, "storm source addresses (127.0.0.16...)")
	fs.DurationVar(&p.StormDelay, "storm-delay", p.StormDelay, "upstream answer delay during the storm")
	fs.DurationVar(&p.StormTimeout, "storm-timeout", p.StormTimeout, "client timeout of storm and bystander queries")
	fs.Float64Var(&p.BystanderQPS, "bystander-qps", p.BystanderQPS, "bystander rate (open loop, cached names)")
	fs.IntVar(&p.BystanderNames, "bystander-names", p.BystanderNames, "bystander names, cached before the storm")
	fs.Float64Var(&p.FairQPS, "fair-qps", p.FairQPS, "fair: the storming client's rate (open loop, unique names, one address)")
	fs.Float64Var(&p.FairQuietQPS, "fair-quiet-qps", p.FairQuietQPS, "fair: the quiet client's rate of misses (open loop)")
	fs.DurationVar(&p.FairDuration, "fair-duration", p.FairDuration, "fair: length of the scenario (the upstream delays every answer by --storm-delay)")
	fs.IntVar(&p.NXNames, "nx-names", p.NXNames, "NXDOMAIN names in the nx scenario")
	fs.Float64Var(&p.NXQPS, "nx-qps", p.NXQPS, "rate of the nx scenario (open loop)")
	fs.DurationVar(&p.NXDuration, "nx-duration", p.NXDuration, "length of the nx scenario")
	fs.IntVar(&p.NXBurstSize, "nx-burst-size", p.NXBurstSize, "identical concurrent queries per burst in the nx-burst scenario")
	fs.IntVar(&p.NXBursts, "nx-bursts", p.NXBursts, "bursts (one new NXDOMAIN name each) in the nx-burst scenario")
	fs.IntVar(&p.NXBurstClients, "nx-burst-clients", p.NXBurstClients, "client addresses (127.0.4.x, a socket each) a burst is spread over")
	fs.DurationVar(&p.NXBurstRTT, "nx-burst-rtt", p.NXBurstRTT, "fake upstream's answer delay in the nx-burst scenario")
	fs.IntVar(&p.BurstNames, "burst-names", p.BurstNames, "burst: distinct names never asked before, sent at once from one address, per burst")
	fs.IntVar(&p.Bursts, "bursts", p.Bursts, "burst: bursts (fresh names each)")
	fs.IntVar(&p.DeadNames, "dead-names", p.DeadNames, "dead-name: names under the dead zone the looping client asks (A and AAAA each)")
	fs.Float64Var(&p.DeadQPS, "dead-qps", p.DeadQPS, "dead-name: the looping client's rate (open loop)")
	fs.Float64Var(&p.DeadMissQPS, "dead-miss-qps", p.DeadMissQPS, "dead-name: the other clients' rate of misses (open loop; their cached names go at --bystander-qps)")
	fs.DurationVar(&p.DeadDuration, "dead-duration", p.DeadDuration, "dead-name: length of the scenario")
	fs.IntVar(&p.NdotsNames, "ndots-names", p.NdotsNames, "external names in the ndots scenario")
	fs.Float64Var(&p.NdotsRate, "ndots-rate", p.NdotsRate, "lookups per second in the ndots scenario (paced)")
	fs.DurationVar(&p.NdotsDuration, "ndots-duration", p.NdotsDuration, "length of the ndots scenario")
	fs.IntVar(&p.NdotsConcurrency, "ndots-concurrency", p.NdotsConcurrency, "concurrent lookups in the ndots scenario")
	fs.IntVar(&p.ScanSetNames, "scan-set-names", p.ScanSetNames, "scan: names of the working set, asked three times first")
	fs.Float64Var(&p.ScanSetQPS, "scan-set-qps", p.ScanSetQPS, "scan: rate of the working set's Zipf load (open loop)")
	fs.IntVar(&p.ScanNames, "scan-names", p.ScanNames, "scan: one-off names the scanning client asks")
	fs.Float64Var(&p.ScanQPS, "scan-qps", p.ScanQPS, "scan: the scanning client's rate (open loop)")
	fs.DurationVar(&p.ScanPhase, "scan-phase", p.ScanPhase, "scan: how long the working set is asked before the scan")
	fs.DurationVar(&p.AttackDuration, "attack-duration", p.AttackDuration, "hostile-*: length of each attack")
	fs.IntVar(&p.MissConcurrency, "miss-concurrency", p.MissConcurrency, "miss: unique names outstanding at once (closed loop)")
	fs.IntVar(&p.MissClients, "miss-clients", p.MissClients, "miss: client addresses (127.0.11.x) the load comes from")
	quiet := fs.Bool("quiet", false, "no progress lines")
	noFloor := fs.Bool("no-floor", false, "skip the generator-floor runs (echo responder) in the latency and storm-delay scenarios")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fmt.Fprintln(stdout, "usage: nodedns-bench suite [flags]\n\nRuns nodedns and CoreDNS side by side (loopback only) and writes bench/results/<date>.{md,json,svg}.")
			fs.PrintDefaults()
			return nil
		}
		return &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("", "unexpected argument %q", fs.Arg(0))
	}
	o.Scenarios = splitList(scenarios)
	o.Servers = splitList(servers)
	if !*quiet {
		o.Log = stderr
	}
	if !*noFloor {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		o.EchoCommand = []string{exe, "suite-echo"}
	}
	res, files, err := suite.Run(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "wrote:")
	for _, f := range files {
		fmt.Fprintln(stdout, " ", f)
	}
	miss := 0
	for _, t := range res.Targets {
		if t.Status == suite.Miss {
			miss++
		}
		fmt.Fprintf(stdout, "  %-4s  %s: %s\n", t.Status, t.Desc, t.Detail)
	}
	if miss > 0 {
		fmt.Fprintf(stdout, "nodedns missed %d of %d targets (see the report)\n", miss, len(res.Targets))
	}
	return nil
}

func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
}

// runSuiteEcho is `nodedns-bench suite-echo`, the suite's generator-floor
// responder (internal: the suite starts it).
func runSuiteEcho(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("nodedns-bench suite-echo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	listen := fs.String("listen", "127.0.0.1:15300", "loopback IP:PORT")
	maxTime := fs.Duration("max-time", 10*time.Minute, "exit after this long")
	if err := fs.Parse(args); err != nil {
		return &usageError{msg: err.Error()}
	}
	return suite.ServeEcho(ctx, *listen, *maxTime)
}

// runFakeUpstream is `nodedns-bench fake-upstream`: the suite's fake
// upstream on its own, for manual runs. It stops after --duration.
func runFakeUpstream(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("nodedns-bench fake-upstream", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	listen := fs.String("listen", "127.0.0.1:15300", "loopback `IP:PORT` (UDP and TCP)")
	delay := fs.Duration("delay", 0, "delay every answer by `D`")
	drop := fs.Bool("drop", false, "drop every query")
	ttl := fs.Uint("ttl", 3600, "TTL of A/AAAA answers")
	nx := fs.String("nx", "cluster.local:5", "zones answered NXDOMAIN, `ZONE:NEGTTL`[,...]")
	dead := fs.String("dead", "", "zones whose queries are counted and never answered, `ZONE`[,...]")
	duration := fs.Duration("duration", 10*time.Minute, "stop after `D`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fmt.Fprintln(stdout, "usage: nodedns-bench fake-upstream [flags]")
			fs.PrintDefaults()
			return nil
		}
		return &usageError{msg: err.Error()}
	}
	if *duration <= 0 {
		return usagef("duration", "must be > 0")
	}
	o := fakeup.Options{Addr: *listen, TTL: uint32(*ttl), Delay: *delay, Dead: splitList(*dead)}
	for _, z := range splitList(*nx) {
		name, t, ok := strings.Cut(z, ":")
		n, err := strconv.ParseUint(t, 10, 32)
		if !ok || err != nil {
			return usagef("nx", "%q: want ZONE:NEGTTL", z)
		}
		o.NX = append(o.NX, fakeup.Zone{Name: name, NegTTL: uint32(n)})
	}
	s, err := fakeup.Listen(o)
	if err != nil {
		return err
	}
	s.SetDrop(*drop)
	fmt.Fprintf(stderr, "fake upstream on %s for %v\n", s.Addr(), *duration)
	select {
	case <-ctx.Done():
	case <-time.After(*duration):
	}
	s.Close()
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(s.Stats())
}

// runSuiteRender is `nodedns-bench suite-render FILE.json`: it rewrites a
// suite report's .md and .svg from its JSON with this version of the suite
// (targets evaluated again), without measuring anything.
func runSuiteRender(args []string) error {
	if len(args) != 1 || strings.HasPrefix(args[0], "-") {
		return usagef("", "usage: nodedns-bench suite-render RESULTS.json")
	}
	files, err := suite.Rerender(args[0])
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "wrote:")
	for _, f := range files {
		fmt.Fprintln(stdout, " ", f)
	}
	return nil
}
