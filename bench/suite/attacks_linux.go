package suite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/bench"
	"github.com/nodedns/nodedns/bench/attack"
)

// The scan scenario's zones, client addresses and working-set shape.
const (
	wsZone   = "ws.bench.test."   // the working set; the fake upstream counts its queries
	scanZone = "scan.bench.test." // the scan's one-off names
	scanAddr = "127.0.0.6"        // the scanning pod
	// zipfS is the working set's skew: the i-th most asked name is asked
	// about 1/i^1.1 as often as the first.
	zipfS = 1.1
	// scanCacheEntries bounds nodedns's cache in the scan scenario to the
	// entries CoreDNS's default cache holds, so that the comparison is
	// between policies, not sizes.
	scanCacheEntries = "9984"
)

// The hostile-* attacks: sizes, and the new client's probes.
const (
	idleConns, idleSources     = 15000, 60
	headerConns, headerSources = 600, 100
	tcpHolders, tcpPerHolder   = 5, 64
	tcpBusyEvery               = 50 * time.Millisecond
	probeEvery                 = 100 * time.Millisecond
	probeAddr                  = "127.0.0.7" // the new TCP client of hostile-tcp
	attackBlock                = 64          // attacking connections come from 127.64.0.x and up
	// attackDialRate bounds the attack's dials per second: the attack
	// shares its core with the bystanders' load generator, which a
	// server that closes connections would otherwise starve of CPU
	// through the attacker's reconnections.
	attackDialRate = 5000
)

// serverArgs are extra nodedns flags of a scenario.
var serverArgs = map[string][]string{
	ScScan: {"--cache-max-entries", scanCacheEntries},
}

// zipfQueries returns n queries for the working set's names, drawn with
// the Zipf distribution from a fixed seed: every run asks the same
// sequence.
func zipfQueries(names, n int) []bench.Query {
	z := rand.NewZipf(rand.New(rand.NewPCG(1, 2)), zipfS, 1, uint64(names-1))
	qs := make([]bench.Query, n)
	for i := range qs {
		qs[i] = bench.Query{Name: fmt.Sprintf("%s%d.%s", bench.DefaultNamePrefix, z.Uint64(), wsZone), Type: dns.TypeA}
	}
	return qs
}

func (r *runner) scanScenario(sc *Scenario) scenarioFunc {
	o := r.o.Params
	scanFor := time.Duration(float64(o.ScanNames) / o.ScanQPS * float64(time.Second))
	sc.Setup = fmt.Sprintf("A working set of %d names (`%s`) is asked three times from one address; then other clients (127.0.10.1-4) ask it "+
		"with a Zipf distribution (s = %.1f, the same sequence for both servers) as an open loop at %.0f qps, for %v before and for the whole scan, "+
		"while one pod (%s) asks **%d one-off names** at %.0f qps (%v). Right after the scan, every working-set name is asked once more: "+
		"the share answered without a query to the upstream is what the scan left of the working set. "+
		"The hit ratio of a phase is 1 − (working-set queries the upstream received / working-set queries sent). "+
		"nodedns runs with `--cache-max-entries %s`, the entries of CoreDNS's default cache, so that the comparison is of policies, not sizes; "+
		"everything fits in CoreDNS's 30 s TTL cap, so no working-set answer expires.",
		o.ScanSetNames, wsZone, zipfS, o.ScanSetQPS, o.ScanPhase, scanAddr, o.ScanNames, o.ScanQPS, scanFor, scanCacheEntries)
	return func(ctx context.Context, p *proc, run *ServerRun, prof *profileReq) error {
		w, err := warm(ctx, p.dns, o.ScanSetNames, wsZone, true)
		if err != nil {
			return err
		}
		if _, err := bench.Run(ctx, bench.Config{ // the third time
			Server: p.dns, Names: o.ScanSetNames, Zone: wsZone, Count: int64(o.ScanSetNames),
			Concurrency: warmRepairConcurrency, Sources: []string{warmSource}, Timeout: 2 * time.Second,
		}); err != nil {
			return err
		}
		run.Warmup = w + " Then once more."
		zipf := func(d time.Duration) bench.Config {
			return bench.Config{
				Server: p.dns, Queries: zipfQueries(o.ScanSetNames, max(1, int(o.ScanSetQPS*d.Seconds()))), QPS: o.ScanSetQPS,
				Sockets: 4, Sources: addrs(10, 4), Duration: d, Timeout: 2 * time.Second, Curve: true,
			}
		}
		phase := func(name string, cfg bench.Config, during func() error) error {
			up0 := r.up.Stats()
			var wg sync.WaitGroup
			var derr error
			if during != nil {
				wg.Go(func() { derr = during() })
			}
			rep, err := bench.Run(ctx, cfg)
			wg.Wait()
			if err := errors.Join(err, derr); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			run.Phases = append(run.Phases, Phase{Name: name, Load: rep, Upstream: r.up.Stats().Sub(up0).Watched})
			return nil
		}
		return r.measure(p, run, 0, prof, func() error {
			if err := phase("before the scan", zipf(o.ScanPhase), nil); err != nil {
				return err
			}
			err := phase("during the scan", zipf(scanFor), func() (err error) {
				run.Load, err = bench.Run(ctx, bench.Config{
					Server: p.dns, RandomZone: scanZone, QPS: o.ScanQPS, Count: int64(o.ScanNames), Sockets: 4,
					Sources: []string{scanAddr}, Duration: scanFor + 5*time.Second, Timeout: 2 * time.Second,
				})
				return err
			})
			if err != nil {
				return err
			}
			return phase("after the scan, each name once", bench.Config{
				Server: p.dns, Names: o.ScanSetNames, Zone: wsZone, Count: int64(o.ScanSetNames),
				Concurrency: warmRepairConcurrency, Sockets: 4, Sources: addrs(10, 4), Timeout: 2 * time.Second,
			}, nil)
		})
	}
}

// hostileScenario: one attack on a server with cached names, while
// bystanders ask them over UDP and a prober asks what the attack aims at.
func (r *runner) hostileScenario(id string, sc *Scenario) scenarioFunc {
	o := r.o.Params
	var what, probe string
	switch id {
	case ScHostileIdle:
		what = fmt.Sprintf("**%d HTTP connections** from %d addresses (127.%d.0.x), each asking `/health` once with keep-alive and then holding the connection idle",
			idleConns, idleSources, attackBlock)
	case ScHostileHeaders:
		what = fmt.Sprintf("**%d HTTP connections** from %d addresses (127.%d.0.x), each sending a request line for `/health` and then a header that never ends, 64 bytes every 10 ms",
			headerConns, headerSources, attackBlock)
	case ScHostileTCP:
		what = fmt.Sprintf("**%d addresses holding %d DNS-over-TCP connections each** (127.%d.0.x), each connection asking a cached name every %v, so that none is idle",
			tcpHolders, tcpPerHolder, attackBlock, tcpBusyEvery)
	}
	if id == ScHostileTCP {
		probe = fmt.Sprintf("A new client (%s) opens a fresh TCP connection every %v and asks a cached name on it (2 s timeout): TCP is what clients fall back to after a truncated answer.",
			probeAddr, probeEvery)
	} else {
		probe = fmt.Sprintf("The liveness endpoint kubelet probes (`/health`: nodedns's HTTP port, CoreDNS's health plugin, the port attacked) is asked every %v from 127.0.0.1 with a 2 s timeout.",
			probeEvery)
	}
	sc.Setup = fmt.Sprintf("A pod's attack on the node's DNS server through its ports, for %v: %s; connections the server closes are opened again after 0.5 s, at most %d dials per second in all (the attacker shares its core with the bystanders' load generator). "+
		"%d names are cached first, and bystanders (127.0.0.3) ask them over UDP at %.0f qps (open loop) throughout. %s "+
		"Memory growth is the largest RSS sampled every 100 ms during the attack minus the RSS before it.",
		o.AttackDuration, what, attackDialRate, o.BystanderNames, o.BystanderQPS, probe)
	return func(ctx context.Context, p *proc, run *ServerRun, prof *profileReq) error {
		w, err := warm(ctx, p.dns, o.BystanderNames, byZone, true)
		if err != nil {
			return err
		}
		run.Warmup = w
		cached := new(dns.Msg)
		cached.SetQuestion(bench.DefaultNamePrefix+"0."+byZone, dns.TypeA)
		return r.measure(p, run, 0, prof, func() error {
			actx, cancel := context.WithTimeout(ctx, o.AttackDuration)
			defer cancel()
			a := &attack.Attacker{DialRate: attackDialRate}
			var wg sync.WaitGroup
			wg.Go(func() {
				switch id {
				case ScHostileIdle:
					a.Sources = attack.Sources(attackBlock, idleSources)
					a.IdleHTTP(actx, p.healthAddr, "/health", idleConns)
				case ScHostileHeaders:
					a.Sources = attack.Sources(attackBlock, headerSources)
					a.SlowHeaders(actx, p.healthAddr, "/health", headerConns)
				case ScHostileTCP:
					a.Sources = attack.Sources(attackBlock, tcpHolders)
					a.BusyTCP(actx, p.dns, cached, tcpPerHolder, tcpBusyEvery)
				}
			})
			var pr Probe
			wg.Go(func() {
				if id == ScHostileTCP {
					pr = probeTCP(actx, p.dns, cached)
				} else {
					pr = probeHTTP(actx, "http://"+p.healthAddr+"/health")
				}
			})
			var berr error
			run.Load, berr = bench.Run(ctx, bench.Config{
				Server: p.dns, Names: o.BystanderNames, Zone: byZone, QPS: o.BystanderQPS, Sockets: o.BystanderSockets,
				Sources: []string{"127.0.0.3"}, Duration: o.AttackDuration, Timeout: 2 * time.Second, Curve: true,
			})
			cancel()
			wg.Wait()
			run.Probe = &pr
			run.Attack = &AttackCount{Opened: a.Opened.Load(), Ended: a.Closed.Load(), Failed: a.Failed.Load()}
			return berr
		})
	}
}

// probeTCP asks q on a fresh TCP connection from probeAddr every
// probeEvery until ctx is done.
func probeTCP(ctx context.Context, server string, q *dns.Msg) Probe {
	c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second,
		Dialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(probeAddr)}, Timeout: 2 * time.Second}}
	return probeLoop(ctx, func() bool {
		r, _, err := c.Exchange(q, server)
		return err == nil && r.Rcode == dns.RcodeSuccess
	})
}

// probeHTTP gets url on a fresh connection every probeEvery until ctx is
// done; a 200 within 2 s counts as answered.
func probeHTTP(ctx context.Context, url string) Probe {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	return probeLoop(ctx, func() bool {
		resp, err := hc.Get(url)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func probeLoop(ctx context.Context, ask func() bool) Probe {
	var pr Probe
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return pr
		case <-t.C:
		}
		start := time.Now()
		ok := ask()
		pr.Sent++
		if ok {
			pr.Answered++
			pr.MaxMs = max(pr.MaxMs, float64(time.Since(start))/1e6)
		}
	}
}
