package conformance

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/internal/testutil"
)

// Environment of TestDifferential (the flags override the variables):
//
//	NODEDNS_CONFORMANCE_OUT=DIR   where summary.txt and differences-*.txt go
//	                              (default testdata/out, ignored by git)
//	NODEDNS_CONFORMANCE_STRICT=0  report the differences of nodedns from
//	                              Unbound that known-differences.txt does not
//	                              accept without failing (by default they fail)
//	NODEDNS_CONFORMANCE_REQUIRE=1 fail instead of skipping when Knot DNS or
//	                              Unbound is not installed
//	NODEDNS_CONFORMANCE_BIN=FILE  test this nodedns binary instead of building
//	                              ./cmd/nodedns from the work tree
//	NODEDNS_CONFORMANCE_ALL=1     also write answers.txt: every answer of every
//	                              server, in short form
var (
	strictFlag  = flag.Bool("conformance.strict", os.Getenv("NODEDNS_CONFORMANCE_STRICT") != "0", "fail on differences not in known-differences.txt")
	outFlag     = flag.String("conformance.out", os.Getenv("NODEDNS_CONFORMANCE_OUT"), "directory for the summary and the differences (default testdata/out)")
	requireFlag = flag.Bool("conformance.require", os.Getenv("NODEDNS_CONFORMANCE_REQUIRE") == "1", "fail instead of skipping when knotd, keymgr or unbound is missing")
)

const (
	// queryTimeout is how long one ask waits for its reply.
	queryTimeout = 2 * time.Second
	// workers per server; the servers are asked at the same time.
	workers = 32
	// tcpPerClient lets the workers, all from one address, keep a
	// connection each open at once, as Unbound's incoming-num-tcp does.
	tcpPerClient = "64"
	// corednsRel is where tools/coredns/build.sh puts CoreDNS, under the
	// user's cache directory ($XDG_CACHE_HOME or ~/.cache).
	corednsRel = "nodedns/coredns-v1.15.0-k8s/coredns"
)

// ready is the question that tells a server is up; it is in no test zone,
// so it leaves nothing in the caches that the corpus asks for.
var ready = Query{Name: "conformance-ready.invalid.", Type: dns.TypeA, Class: dns.ClassINET, Mode: Mode{}}

// TestDifferential runs the corpus against nodedns and Unbound (and CoreDNS
// when it has been built), all forwarding to one Knot DNS serving
// testdata/zones, and reports how nodedns's answers differ from Unbound's.
// It fails on every difference that known-differences.txt does not list,
// unless -conformance.strict=false (or NODEDNS_CONFORMANCE_STRICT=0) asks
// for a report only.
func TestDifferential(t *testing.T) {
	bins := map[string]string{}
	var missing []string
	for _, b := range []string{"knotd", "keymgr", "unbound"} {
		if bins[b] = testutil.LookBin(b); bins[b] == "" {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("%s not installed: run .ci/install-tools (Debian packages knot and unbound)", strings.Join(missing, ", "))
		if *requireFlag {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	start := time.Now()

	f, err := os.Open("testdata/corpus.txt")
	if err != nil {
		t.Fatal(err)
	}
	corpus, err := ParseCorpus(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	kf, err := os.ReadFile("known-differences.txt")
	if err != nil {
		t.Fatal(err)
	}
	known, err := ParseKnown(bytes.NewReader(kf))
	if err != nil {
		t.Fatal(err)
	}
	out := *outFlag
	if out == "" {
		out = filepath.Join("testdata", "out")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	ports := map[string]int{}
	for _, name := range []string{"knot", "unbound", "unbound-upstream", "nodedns", "nodedns-http", "nodedns-via-unbound", "nodedns-via-unbound-http", "coredns"} {
		ports[name] = testutil.FreePort(t) // distinct within the process
	}
	addr := func(name string) string { return fmt.Sprintf("127.0.0.1:%d", ports[name]) }

	nodednsBin := os.Getenv("NODEDNS_CONFORMANCE_BIN")
	if nodednsBin == "" {
		nodednsBin = testutil.Binary(t, "./cmd/nodedns")
	}

	// The servers, stopped in the reverse order of their start: by
	// stopAll once the answers are in, or, when the test ends before,
	// killed by their Process.
	var procs []*testutil.Process
	var procsMu sync.Mutex
	stopAll := func() {
		procsMu.Lock()
		defer procsMu.Unlock()
		for i := len(procs) - 1; i >= 0; i-- {
			if err := procs[i].Stop(5 * time.Second); err != nil {
				t.Log(err)
			}
		}
		procs = nil
	}
	startProc := func(name, bin string, args ...string) (*testutil.Process, error) {
		p, err := StartServer(t, name, dir, bin, args...)
		if err != nil {
			return nil, err
		}
		procsMu.Lock()
		procs = append(procs, p)
		procsMu.Unlock()
		return p, WaitReady(p, addr(name), ready, 15*time.Second)
	}

	knotDir := filepath.Join(dir, "knot")
	conf, err := SetUpKnot(knotDir, filepath.Join("testdata", "zones"), ports["knot"])
	if err != nil {
		t.Fatal(err)
	}
	knot, err := startProc("knot", bins["knotd"], "-c", conf)
	if err != nil {
		t.Fatal(err)
	}

	// The TTL bounds: Knot's answer to every question of the corpus.
	bounds := NewAuthBounds(addr("knot"), queryTimeout)
	learn := make(chan Query)
	var lw sync.WaitGroup
	for i := 0; i < 8; i++ {
		lw.Add(1)
		go func() {
			defer lw.Done()
			for q := range learn {
				bounds.Learn(q.Name, q.Type)
			}
		}()
	}

	// Unbound, nodedns and CoreDNS.
	// Two Unbounds: the reference, and the upstream of the second nodedns.
	ubConf := map[string]string{}
	for _, name := range []string{"unbound", "unbound-upstream"} {
		ubDir := filepath.Join(dir, name)
		if err := os.MkdirAll(ubDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ubDir, "root.hints"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		ubConf[name] = filepath.Join(ubDir, "unbound.conf")
		if err := os.WriteFile(ubConf[name], []byte(UnboundConfig(ubDir, ports[name], ports["knot"])), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	targets := []Target{{"unbound", addr("unbound")}, {"nodedns", addr("nodedns")}, {"nodedns-via-unbound", addr("nodedns-via-unbound")}}
	corednsBin := ""
	if cache, err := os.UserCacheDir(); err == nil {
		if st, err := os.Stat(filepath.Join(cache, corednsRel)); err == nil && st.Mode()&0o111 != 0 {
			corednsBin = filepath.Join(cache, corednsRel)
		}
	}
	if corednsBin != "" {
		targets = append(targets, Target{"coredns", addr("coredns")})
	} else {
		t.Logf("CoreDNS not built (~/.cache/%s), no CoreDNS column: tools/coredns/build.sh builds it", corednsRel)
	}
	var sw sync.WaitGroup
	startErrs := make([]error, 5)
	starts := []func() error{
		func() error {
			_, err := startProc("unbound", bins["unbound"], "-d", "-c", ubConf["unbound"])
			return err
		},
		func() error {
			_, err := startProc("nodedns", nodednsBin,
				"--listen", addr("nodedns"), "--http-listen", addr("nodedns-http"),
				"--upstream", addr("knot"), "--log-level", "warn", "--tcp-max-conns-per-client", tcpPerClient)
			return err
		},
		func() error {
			if _, err := startProc("unbound-upstream", bins["unbound"], "-d", "-c", ubConf["unbound-upstream"]); err != nil {
				return err
			}
			_, err := startProc("nodedns-via-unbound", nodednsBin,
				"--listen", addr("nodedns-via-unbound"), "--http-listen", addr("nodedns-via-unbound-http"),
				"--upstream", addr("unbound-upstream"), "--log-level", "warn", "--tcp-max-conns-per-client", tcpPerClient)
			return err
		},
	}
	if corednsBin != "" {
		starts = append(starts, func() error {
			cf := filepath.Join(dir, "Corefile")
			if err := os.WriteFile(cf, []byte(Corefile(ports["coredns"], ports["knot"])), 0o644); err != nil {
				return err
			}
			_, err := startProc("coredns", corednsBin, "-conf", cf)
			return err
		})
	}
	for i, start := range starts {
		sw.Add(1)
		go func() {
			defer sw.Done()
			startErrs[i] = start()
		}()
	}
	seen := map[string]bool{}
	for _, q := range corpus.Queries {
		k := strings.ToLower(q.Name) + "/" + typeString(q.Type)
		if q.Class != dns.ClassINET || seen[k] || q.Type == dns.TypeANY || q.Type == dns.TypeAXFR || q.Type == dns.TypeIXFR {
			continue
		}
		seen[k] = true
		learn <- q
	}
	close(learn)
	lw.Wait()
	sw.Wait()
	for _, err := range startErrs {
		if err != nil {
			t.Fatal(err)
		}
	}
	setup := time.Since(start)

	res := Run(corpus.Queries, targets, workers, queryTimeout)
	ran := time.Since(start) - setup

	names := make([]string, len(targets))
	for i, tg := range targets {
		names[i] = tg.Name
	}
	// known-differences.txt is about nodedns, in both set-ups.
	var cols []*Column
	for ti := 1; ti < len(targets); ti++ {
		k := known
		if !strings.HasPrefix(names[ti], "nodedns") {
			k = nil
		}
		cols = append(cols, Analyse(corpus.Queries, res, names, ti, 0, bounds, k))
	}
	if knot.Exited() {
		t.Errorf("knotd exited during the run:\n%s", knot.Out.String())
	}
	logs := map[string]string{}
	procsMu.Lock()
	for _, p := range procs {
		logs[p.Name] = p.Out.String()
	}
	procsMu.Unlock()
	stopAll()

	var sum bytes.Buffer
	title := fmt.Sprintf("Differential conformance: %s against Unbound (%s), all forwarding to Knot DNS (%s) serving testdata/zones",
		strings.Join(names[1:], " and "), version(bins["unbound"], "-V"), version(bins["knotd"], "--version"))
	Summary(&sum, title, len(corpus.Queries), cols)
	fmt.Fprintf(&sum, "\ncorpus: %d lines, %d queries; TTL bounds from %d questions to Knot; set-up %v, queries %v on %d CPUs\n",
		corpus.Lines, len(corpus.Queries), bounds.Lookup, setup.Round(100*time.Millisecond), ran.Round(100*time.Millisecond), runtime.NumCPU())
	var unused []string
	for _, k := range known {
		if k.Used == 0 {
			unused = append(unused, fmt.Sprintf("line %d (%s %s)", k.Line, k.Category, k.Pattern))
		}
	}
	if len(unused) > 0 {
		fmt.Fprintf(&sum, "known differences that matched nothing (fixed? remove them): %s\n", strings.Join(unused, ", "))
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
			t.Error(err)
		}
	}
	write("summary.txt", sum.Bytes())
	for _, c := range cols {
		var d bytes.Buffer
		Details(&d, c)
		write("differences-"+c.Server+".txt", d.Bytes())
	}
	for name, l := range logs {
		write(name+".log", []byte(l))
	}
	if os.Getenv("NODEDNS_CONFORMANCE_ALL") == "1" {
		var all bytes.Buffer
		for qi, q := range corpus.Queries {
			for a := 0; a < Asks; a++ {
				fmt.Fprintf(&all, "%s@%s\n", q.Key(), AskName(a))
				for ti, name := range names {
					fmt.Fprintf(&all, "  %-8s %s\n", name+":", Short(res[qi][a][ti]))
				}
			}
		}
		write("answers.txt", all.Bytes())
	}
	t.Logf("\n%s", sum.String())
	t.Logf("written to %s: summary.txt, differences-*.txt (every differing answer), the servers' logs", out)

	var unexpected []string
	for _, c := range cols {
		if !strings.HasPrefix(c.Server, "nodedns") {
			continue
		}
		for _, f := range c.Findings {
			if u := f.Unexpected(); len(u) > 0 {
				unexpected = append(unexpected, fmt.Sprintf("%s: %s@%s: %s", c.Server, f.Query.Key(), AskName(f.Ask), strings.Join(u, " ")))
			}
		}
	}
	if len(unexpected) > 0 {
		msg := fmt.Sprintf("%d answers of nodedns (both set-ups) differ from Unbound's in ways known-differences.txt does not accept", len(unexpected))
		if *strictFlag {
			if len(unexpected) > 20 {
				unexpected = append(unexpected[:20], "…")
			}
			t.Errorf("%s:\n%s", msg, strings.Join(unexpected, "\n"))
		} else {
			t.Logf("%s (not failing: -conformance.strict=false or NODEDNS_CONFORMANCE_STRICT=0)", msg)
		}
	}
}

// version is the first line of a program's version output.
func version(bin, flag string) string {
	out, _ := exec.Command(bin, flag).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(line)
}
