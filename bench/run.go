// Package bench is a DNS load generator for benchmarking nodedns and other
// resolvers on the local machine.
//
// Run sends queries over UDP (many sockets) or TCP (pipelined connections),
// either as an open loop at a target rate, with latency measured from each
// query's intended send time (so a stalled server cannot hide queueing:
// no coordinated omission), or as a closed loop keeping a number of queries
// outstanding. A third mode emulates glibc stub resolvers with ndots:5 and a
// Kubernetes search list. Latencies go to per-goroutine HDR histograms that
// are merged at the end. Every run is bounded by duration and, optionally,
// count, and waits at most the query timeout after its last send.
//
// Only loopback targets are accepted unless Config.AllowRemote is set.
package bench

import (
	"context"
	"fmt"
	"runtime"
	"time"
)

// Run performs one load run as described by cfg and reports its results.
// It returns early, with the results so far, when ctx is cancelled.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	target, err := ResolveTarget(cfg.Server, cfg.AllowRemote)
	if err != nil {
		return nil, err
	}
	if len(cfg.NdotsNames) > 0 {
		return runNdots(ctx, &cfg, target)
	}

	e := &engine{
		cfg:       &cfg,
		target:    target,
		warmupNs:  int64(cfg.Warmup),
		endNs:     int64(cfg.Warmup + cfg.Duration),
		timeoutNs: int64(cfg.Timeout),
		nworkers:  cfg.Sockets,
	}
	e.sources, _ = parseSources(cfg.Sources, cfg.AllowRemote) // checked by normalize
	if cfg.Count > 0 && int64(e.nworkers) > cfg.Count {
		e.nworkers = int(cfg.Count)
	}
	nw := e.nworkers
	if cfg.QPS > 0 {
		e.intervalNs = 1e9 / cfg.QPS
	}

	o := cfg.wireOpts()
	var list []packedQuery
	switch {
	case len(cfg.Queries) > 0:
		list, err = packAll(cfg.Queries, o)
	case cfg.Names > 0:
		list, err = packAll(generatedNames(cfg.Names, cfg.NamePrefix, cfg.Zone, cfg.QType), o)
	}
	if err != nil {
		return nil, err
	}

	ws := make([]*worker, nw)
	for i := range ws {
		var src querySource
		if list != nil {
			// Start the workers at different points of the list. With a
			// Count, worker i starts where the quotas of the workers before
			// it end, so that together they walk the list once in order: a
			// run whose Count is the list's length asks every query exactly
			// once (one pass of a warm-up caches every name).
			pos := i * len(list) / nw
			if cfg.Count > 0 {
				before := int64(i)*(cfg.Count/int64(nw)) + min(int64(i), cfg.Count%int64(nw))
				pos = int(before % int64(len(list)))
			}
			src = &listSource{qs: list, pos: pos}
		} else {
			rs, err := newRandomSource(cfg.RandomZone, cfg.QType, o, i)
			if err != nil {
				return nil, err
			}
			src = rs
		}
		window := 0
		if cfg.QPS == 0 {
			window = share(int64(cfg.Concurrency), nw, i)
		}
		quota := int64(-1)
		if cfg.Count > 0 {
			quota = int64(share(cfg.Count, nw, i))
		}
		ws[i] = newWorker(e, i, src, window, quota)
	}

	dial := dialUDP
	if cfg.TCP {
		dial = dialTCP
	}
	// Open every socket before the clock starts, so that setup errors are
	// reported as such rather than as lost queries.
	for _, w := range ws {
		if err := w.connect(dial); err != nil {
			for _, w := range ws {
				if w.c != nil {
					w.c.close()
				}
			}
			return nil, fmt.Errorf("connect to %s: %w", target, err)
		}
	}

	// Open loop: one sender per core, each pacing a group of sockets.
	var senders []*openSender
	if cfg.QPS > 0 {
		np := min(nw, max(runtime.GOMAXPROCS(0), 1))
		for p := range np {
			o := &openSender{e: e, offset: float64(p) * e.intervalNs, pacer: newPacer()}
			for i := p; i < nw; i += np {
				o.ws = append(o.ws, ws[i])
				if cfg.Count > 0 {
					o.quota += int64(share(cfg.Count, nw, i))
				}
			}
			if cfg.Count == 0 {
				o.quota = -1
			}
			o.interval = e.intervalNs * float64(nw) / float64(len(o.ws))
			senders = append(senders, o)
		}
	}

	e.base = time.Now()
	runWorkers(ctx, e, ws, senders, dial)
	wall := time.Since(e.base)

	ss := sendStats{}
	rs := newReplyStats()
	for _, w := range ws {
		ss.merge(&w.ss)
		rs.merge(w.rs)
	}
	r := newReport(&cfg, nw, &ss, rs, wall)
	if cfg.QPS > 0 {
		lag := newHist()
		for _, w := range ws {
			lag.Merge(w.ss.lag)
		}
		if ctx.Err() == nil {
			for _, o := range senders {
				r.Unsent += o.unsent()
			}
		}
		l := latencyOf(lag, ss.maxLagNs)
		r.SendLag = &l
	}
	return r, ctx.Err()
}

// share splits total over n parts and returns part i's share.
func share(total int64, n, i int) int {
	s := total / int64(n)
	if int64(i) < total%int64(n) {
		s++
	}
	return int(s)
}
