package suite

import (
	"context"
	"fmt"
	"time"

	"github.com/nodedns/nodedns/bench"
	"github.com/nodedns/nodedns/internal/echo"
)

// missZoneRate is the miss scenario's zone: every name in it is new.
const missZoneRate = "missrate.bench.test."

// missUpstream is the miss scenario's upstream: the echo responder, which
// answers every query at once without allocating, so that the server under
// test, not the upstream, is what runs out of CPU.
func (r *runner) missUpstream() (string, error) {
	if r.echoUp == nil {
		up, err := echo.Listen("127.0.0.1:0", echo.Options{})
		if err != nil {
			return "", fmt.Errorf("miss upstream: %w", err)
		}
		r.echoUp = up
	}
	return r.echoUp.Addr(), nil
}

func (r *runner) missScenario(sc *Scenario) scenarioFunc {
	o := r.o.Params
	sc.Setup = fmt.Sprintf("Unique random names under `%s` (every query a cache miss the server forwards) in a closed loop with %d queries "+
		"outstanding from %d client addresses (127.0.11.x, a UDP socket each) for %v, as fast as the server answers; the upstream is the echo "+
		"responder (`internal/echo`), which answers at once, on the load's core. qps per core = answered qps / the server's cores used, its "+
		"utime+stime over the run: what a miss costs the server's CPU. Unbound (`num-threads: 1`, iterator only, forwarding everything "+
		"to the same upstream) runs too where it is installed. %d repetitions per server, the median shown.",
		missZoneRate, o.MissConcurrency, o.MissClients, o.Duration, o.Repeat)
	return func(ctx context.Context, p *proc, run *ServerRun, prof *profileReq) error {
		return r.measure(p, run, 0, prof, func() error {
			rep, err := bench.Run(ctx, bench.Config{
				Server: p.dns, RandomZone: missZoneRate, Concurrency: o.MissConcurrency, Sockets: o.MissClients,
				Sources: addrs(11, o.MissClients), Duration: o.Duration, Timeout: 2 * time.Second, Curve: true,
			})
			run.Load = rep
			return err
		})
	}
}

// unboundConfig is Unbound as a forwarder of everything to host:port, on
// one thread, with nothing but the iterator, as the conformance test runs
// it; "test." is forwarded too, not answered as one of Unbound's default
// local zones.
func unboundConfig(dir string, port int, host, upPort string) string {
	return fmt.Sprintf(`server:
    verbosity: 0
    interface: 127.0.0.1
    port: %[2]d
    do-ip6: no
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "%[1]s"
    pidfile: ""
    logfile: ""
    use-syslog: no
    num-threads: 1
    so-reuseport: no
    module-config: "iterator"
    do-not-query-localhost: no
    qname-minimisation: no
    access-control: 127.0.0.0/8 allow
    local-zone: "test." nodefault
remote-control:
    control-enable: no
forward-zone:
    name: "."
    forward-addr: %[3]s@%[4]s
`, dir, port, host, upPort)
}
