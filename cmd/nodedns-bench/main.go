// Command nodedns-bench is a DNS load generator for nodedns and other
// resolvers on the local host. See package bench for the measurement model.
//
//	nodedns-bench --server 127.0.0.1:53 --names 1000 --concurrency 100 --duration 10s
//	nodedns-bench --server 127.0.0.1:53 --random-zone miss.test --qps 20000 --json
//	nodedns-bench --server 127.0.0.1:53 --ndots-file names.txt --ndots-aaaa
//	nodedns-bench suite             # the nodedns vs CoreDNS suite (bench/README.md)
//	nodedns-bench fake-upstream     # the suite's fake upstream, on its own
//	nodedns-bench suite-render bench/results/DATE.json  # rewrite a report's .md/.svg from its JSON
//
// It sends load only to loopback addresses unless --allow-remote is given.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nodedns/nodedns/bench"
)

// Where run writes; tests replace them.
var (
	stdout io.Writer = os.Stdout
	stderr io.Writer = os.Stderr
	// isTerminal reports whether live progress should be drawn on stderr.
	isTerminal = stderrIsTerminal
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "nodedns-bench:", err)
		var ue *usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError is a bad command line; it names the flag.
type usageError struct {
	flag string
	msg  string
}

func (e *usageError) Error() string {
	if e.flag == "" {
		return e.msg
	}
	return "--" + e.flag + ": " + e.msg
}

func usagef(flag, format string, a ...any) error {
	return &usageError{flag: flag, msg: fmt.Sprintf(format, a...)}
}

type options struct {
	server      string
	allowRemote bool
	tcp         bool
	sources     string

	file       string
	names      int
	randomZone string
	ndotsFile  string
	qtype      string
	namePrefix string
	zone       string
	search     string
	ndots      int
	ndotsAAAA  bool
	lookupRate float64

	qps         float64
	concurrency int
	sockets     int
	duration    time.Duration
	count       int64
	timeout     time.Duration
	warmup      time.Duration

	noRD   bool
	edns   uint
	dnssec bool

	json       bool
	quiet      bool
	cpuProfile string
}

func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("nodedns-bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.server, "server", "", "target `IP:PORT` (loopback only unless --allow-remote)")
	fs.BoolVar(&o.allowRemote, "allow-remote", false, "allow a non-loopback --server")
	fs.BoolVar(&o.tcp, "tcp", false, "use TCP (pipelined, RFC 7766 framing) instead of UDP")
	fs.StringVar(&o.sources, "sources", "", "send from these local `IPs` (comma separated, round-robin over sockets; loopback unless --allow-remote)")

	fs.StringVar(&o.file, "file", "", "query file in dnsperf format (`PATH`: \"name type\" per line)")
	fs.IntVar(&o.names, "names", 0, "cycle `N` generated names <name-prefix><i>.<zone> (cache hits)")
	fs.StringVar(&o.randomZone, "random-zone", "", "unique random names under `ZONE` (cache misses)")
	fs.StringVar(&o.ndotsFile, "ndots-file", "", "emulate glibc stub lookups (search list, ndots) for the names in `PATH`")
	fs.StringVar(&o.qtype, "qtype", "A", "query `TYPE` for --names and --random-zone")
	fs.StringVar(&o.namePrefix, "name-prefix", bench.DefaultNamePrefix, "label prefix for --names")
	fs.StringVar(&o.zone, "zone", bench.DefaultZone, "zone for --names")
	fs.StringVar(&o.search, "search", strings.Join(bench.DefaultSearch, ","), "search `LIST` for --ndots-file (comma separated)")
	fs.IntVar(&o.ndots, "ndots", bench.DefaultNdots, "ndots option for --ndots-file")
	fs.BoolVar(&o.ndotsAAAA, "ndots-aaaa", false, "ask AAAA in parallel with A for --ndots-file")
	fs.Float64Var(&o.lookupRate, "lookup-rate", 0, "pace --ndots-file lookups to at most `N` per second in all (0: as fast as possible)")

	fs.Float64Var(&o.qps, "qps", 0, "open loop at `N` queries/s (latency from intended send time)")
	fs.IntVar(&o.concurrency, "concurrency", 0, "closed loop with `N` outstanding queries (default 100; lookups with --ndots-file)")
	fs.IntVar(&o.sockets, "sockets", 0, "UDP sockets / TCP connections (default min(16, concurrency))")
	fs.DurationVar(&o.duration, "duration", bench.DefaultDuration, "stop sending after `D`")
	fs.Int64Var(&o.count, "count", 0, "stop after `N` queries (lookups with --ndots-file); 0: no limit")
	fs.DurationVar(&o.timeout, "timeout", bench.DefaultTimeout, "per-query timeout `D`; a later reply is lost")
	fs.DurationVar(&o.warmup, "warmup", 0, "run `D` unmeasured before measuring")

	fs.BoolVar(&o.noRD, "no-rd", false, "clear the RD (recursion desired) bit")
	fs.UintVar(&o.edns, "edns", 0, "add an OPT record advertising UDP `SIZE` (0: no EDNS)")
	fs.BoolVar(&o.dnssec, "dnssec", false, "set the DO bit (implies --edns 1232)")

	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	fs.BoolVar(&o.quiet, "quiet", false, "no live progress line")
	fs.StringVar(&o.cpuProfile, "cpu-profile", "", "write a CPU profile of the generator to `PATH`")
	return fs
}

// parse turns the command line into a bench.Config.
func parse(args []string) (*options, *bench.Config, error) {
	var o options
	fs := newFlagSet(&o)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, err
		}
		return nil, nil, &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return nil, nil, usagef("", "unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	if o.server == "" {
		return nil, nil, usagef("server", "required (IP:PORT)")
	}
	if _, err := bench.ResolveTarget(o.server, o.allowRemote); err != nil {
		return nil, nil, usagef("server", "%v", err)
	}
	var srcs []string
	for _, f := range []string{"file", "names", "random-zone", "ndots-file"} {
		if set[f] {
			srcs = append(srcs, "--"+f)
		}
	}
	switch len(srcs) {
	case 0:
		return nil, nil, usagef("", "need a query source: --file, --names, --random-zone or --ndots-file")
	case 1:
	default:
		return nil, nil, usagef(strings.TrimPrefix(srcs[1], "--"), "conflicts with %s (one query source)", srcs[0])
	}
	if set["qps"] && set["concurrency"] {
		return nil, nil, usagef("qps", "conflicts with --concurrency (open or closed loop)")
	}
	switch {
	case set["qps"] && o.qps <= 0:
		return nil, nil, usagef("qps", "must be > 0")
	case set["concurrency"] && o.concurrency <= 0:
		return nil, nil, usagef("concurrency", "must be > 0")
	case set["sockets"] && o.sockets <= 0:
		return nil, nil, usagef("sockets", "must be > 0")
	case o.duration <= 0:
		return nil, nil, usagef("duration", "must be > 0")
	case o.count < 0:
		return nil, nil, usagef("count", "must be >= 0")
	case o.timeout <= 0:
		return nil, nil, usagef("timeout", "must be > 0")
	case o.warmup < 0:
		return nil, nil, usagef("warmup", "must be >= 0")
	case set["names"] && o.names <= 0:
		return nil, nil, usagef("names", "must be > 0")
	case o.edns > 65535:
		return nil, nil, usagef("edns", "must be <= 65535")
	case o.ndots < 1 || o.ndots > 15:
		return nil, nil, usagef("ndots", "must be between 1 and 15")
	}
	if set["lookup-rate"] && (!set["ndots-file"] || o.lookupRate < 0) {
		return nil, nil, usagef("lookup-rate", "needs --ndots-file and a rate >= 0")
	}
	if set["ndots-file"] && set["qps"] {
		return nil, nil, usagef("qps", "--ndots-file is closed-loop per lookup; use --concurrency")
	}
	if o.sockets > 0 && o.concurrency > 0 && o.sockets > o.concurrency {
		return nil, nil, usagef("sockets", "must not exceed --concurrency (%d)", o.concurrency)
	}
	if o.sockets > 0 && !set["concurrency"] && !set["qps"] && o.sockets > bench.DefaultConcurrency {
		return nil, nil, usagef("sockets", "must not exceed the default --concurrency (%d)", bench.DefaultConcurrency)
	}

	sources := strings.FieldsFunc(o.sources, func(r rune) bool { return r == ',' || r == ' ' })
	cfg := &bench.Config{
		Sources:     sources,
		Server:      o.server,
		AllowRemote: o.allowRemote,
		TCP:         o.tcp,
		Names:       o.names,
		NamePrefix:  o.namePrefix,
		Zone:        o.zone,
		RandomZone:  o.randomZone,
		QPS:         o.qps,
		Concurrency: o.concurrency,
		Sockets:     o.sockets,
		Duration:    o.duration,
		Count:       o.count,
		Timeout:     o.timeout,
		Warmup:      o.warmup,
		NoRD:        o.noRD,
		EDNS:        uint16(o.edns),
		DNSSEC:      o.dnssec,
		Ndots:       o.ndots,
		NdotsAAAA:   o.ndotsAAAA,
		LookupRate:  o.lookupRate,
	}
	if err := cfg.CheckSources(); err != nil {
		return nil, nil, usagef("sources", "%v", err)
	}
	qt, err := bench.ParseType(o.qtype)
	if err != nil {
		return nil, nil, usagef("qtype", "%v", err)
	}
	cfg.QType = qt
	if set["names"] {
		if err := bench.CheckName(o.namePrefix + "0." + o.zone); err != nil {
			return nil, nil, usagef("zone", "%v", err)
		}
	}
	if set["random-zone"] {
		if err := bench.CheckName(o.randomZone); err != nil {
			return nil, nil, usagef("random-zone", "%v", err)
		}
	}
	if o.file != "" {
		qs, err := bench.ReadQueryFile(o.file)
		if err != nil {
			return nil, nil, usagef("file", "%v", err)
		}
		cfg.Queries = qs
	}
	if o.ndotsFile != "" {
		data, err := os.ReadFile(o.ndotsFile)
		if err != nil {
			return nil, nil, usagef("ndots-file", "%v", err)
		}
		qs, err := bench.ParseNameFile(data)
		if err == nil && len(qs) == 0 {
			err = errors.New("no names")
		}
		if err != nil {
			return nil, nil, usagef("ndots-file", "%s: %v", o.ndotsFile, err)
		}
		cfg.NdotsNames = qs
		cfg.Search = []string{}
		for _, s := range strings.FieldsFunc(o.search, func(r rune) bool { return r == ',' || r == ' ' }) {
			if err := bench.CheckName(s); err != nil {
				return nil, nil, usagef("search", "%v", err)
			}
			cfg.Search = append(cfg.Search, s)
		}
	}
	return &o, cfg, nil
}

func run(ctx context.Context, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "suite":
			return runSuite(ctx, args[1:])
		case "fake-upstream":
			return runFakeUpstream(ctx, args[1:])
		case "suite-echo":
			return runSuiteEcho(ctx, args[1:])
		case "suite-render":
			return runSuiteRender(args[1:])
		}
	}
	o, cfg, err := parse(args)
	if errors.Is(err, flag.ErrHelp) {
		var o options
		fs := newFlagSet(&o)
		fs.SetOutput(stdout)
		fmt.Fprintln(stdout, "usage: nodedns-bench suite [flags]   (see nodedns-bench suite --help)")
		fmt.Fprintln(stdout, "       nodedns-bench fake-upstream [flags]")
		fmt.Fprintln(stdout, "       nodedns-bench suite-render RESULTS.json")
		fmt.Fprintln(stdout, "       nodedns-bench --server IP:PORT [--tcp] [--file PATH | --names N | --random-zone ZONE | --ndots-file PATH] [--qps N | --concurrency N] [--duration D] [--count N] [--timeout D] [--json]")
		fs.PrintDefaults()
		return nil
	}
	if err != nil {
		return err
	}

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return usagef("cpu-profile", "%v", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	var pmu sync.Mutex
	drew := false
	if !o.quiet && isTerminal() {
		cfg.Progress = func(p bench.Progress) {
			pmu.Lock()
			defer pmu.Unlock()
			drew = true
			fmt.Fprintf(stderr, "\r\x1b[K%5.0fs  sent %d  answered %d  lost %d  %.0f qps",
				p.Elapsed.Seconds(), p.Sent, p.Answered, p.Lost, p.QPS)
		}
	}
	rep, err := bench.Run(ctx, *cfg)
	pmu.Lock()
	if drew {
		fmt.Fprint(stderr, "\r\x1b[K")
	}
	pmu.Unlock()
	if rep == nil {
		return err
	}
	if err != nil {
		fmt.Fprintln(stderr, "nodedns-bench: interrupted; partial results:")
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.WriteText(stdout)
}
