package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/nodedns/nodedns/cache"
	"github.com/nodedns/nodedns/config"
	"github.com/nodedns/nodedns/memlimit"
	"github.com/nodedns/nodedns/resolver"
	"github.com/nodedns/nodedns/search"
	"github.com/nodedns/nodedns/upstream"
)

// run is the whole daemon; main only maps its error to an exit status.
func run(ctx context.Context, args []string) error {
	cfg, err := config.Parse(args, os.Stderr)
	if err != nil {
		if errors.Is(err, config.ErrHelp) {
			return err
		}
		return &usageError{err}
	}
	level := zap.NewAtomicLevel()
	log, err := newLogger(cfg, level)
	if err != nil {
		return &usageError{err}
	}
	defer func() { _ = log.Sync() }()
	// Before anything allocates: the Go runtime's soft memory limit follows
	// the container's, so the garbage collector works harder before the
	// kernel kills the process (the lesson of resolvers OOM-killed in a storm).
	goLimit := applyMemoryLimit(log, cfg.MemoryLimitRatio)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	c, err := cache.New(cfg.Cache, reg)
	if err != nil {
		return &usageError{err}
	}
	upMetrics := upstream.NewMetrics(reg)
	upCtx, stopUpstreams := context.WithCancel(context.Background())
	defer stopUpstreams()
	loopToken := upstream.NewLoopToken()
	// Its probes start once the server serves: a loop probe sent before
	// would find nobody to come back to, and the loop would go unseen until
	// the next check, minutes later.
	router, err := newRouter(cfg, loopToken, upMetrics, log)
	if err != nil {
		return &usageError{err}
	}
	var current atomic.Pointer[upstream.Router]
	current.Store(router)
	fwd := upstream.NewForwarder(&current, loopToken)

	kube, err := startKube(upCtx, cfg, c, &current, reg, log)
	if err != nil {
		return &usageError{err}
	}
	srvCfg := cfg.Server
	srvCfg.Local, srvCfg.Walker = kube.stages(cfg, reg, log)
	srv, err := resolver.New(srvCfg, c, fwd, log, reg)
	if err != nil {
		return &usageError{err}
	}
	logMemoryBounds(log, cfg, goLimit)
	// An upgrade: another nodedns serves the addresses; this one takes its
	// cache (snapshot.go) before serving, and it hands them over when it
	// stops.
	takingOver := resolver.PeersServe(cfg.Server.Listen)
	if takingOver {
		log.Info("another process serves the listen addresses: taking over from it")
	}
	snap := newSnapshotter(cfg.Snapshot, c, cfg.Cache.MaxBytes, cfg.SnapshotInterval, reg, log)
	if snap != nil {
		if takingOver {
			snap.requestFresh()
		}
		snap.load()
	}
	loadedAt := time.Now()
	// The interface before the listeners bind its addresses; the rules
	// once they serve, or, failing open, at once (nodenet.go).
	nn, err := setupInterface(cfg, reg, log)
	if err != nil {
		return err
	}
	if nn.rulesBeforeServing() {
		nn.setupRules(fallbackTargets(cfg), cfg.KubeOn() && cfg.KubeDNSService != "")
	}
	kube.setFallback(nn)
	if err := srv.Start(); err != nil {
		nn.stop(cfg.SkipTeardown, false)
		return err
	}
	if !nn.rulesBeforeServing() {
		nn.setupRules(nil, false)
	}
	// The watchdog proves nodedns answers; only then does the node send
	// its queries here (watchdog.go).
	wd := newWatchdog(srv, nn, reg, log)
	wdCtx, stopWatchdog := context.WithCancel(context.Background())
	defer stopWatchdog()
	wdDone := make(chan struct{})
	go func() { defer close(wdDone); wd.run(wdCtx) }()
	startRouter(upCtx, router)
	snapCtx, stopSnapshots := context.WithCancel(context.Background())
	defer stopSnapshots()
	if snap != nil {
		go snap.serve(snapCtx)
		if takingOver {
			go snap.follow(snapCtx, loadedAt)
		}
	}

	var draining atomic.Bool
	var httpSrv *http.Server
	if cfg.HTTPListen != "" {
		httpSrv, err = startHTTP(cfg.HTTPListen, reg, wd.health, func() error {
			if draining.Load() || !srv.Ready() {
				return errors.New("not serving")
			}
			if err := nn.inPlace(); err != nil {
				return err
			}
			if !current.Load().Route(".").Healthy() {
				return errors.New("no healthy upstream for \".\"")
			}
			return nil
		}, func() any { return readyDetail(current.Load(), kube) }, log)
		if err != nil {
			_ = srv.Shutdown(context.Background())
			return err
		}
	}
	if cfg.PprofListen != "" {
		if err := startPprof(cfg.PprofListen, log); err != nil {
			_ = srv.Shutdown(context.Background())
			return err
		}
	}
	// SIGHUP is caught before "started" is said: its default action would
	// kill the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	log.Info("nodedns started", zap.Strings("listen", cfg.Server.Listen), zap.String("http", cfg.HTTPListen))
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-hup:
			next, err := reload(upCtx, args, cfg, srv, c, level, &current, loopToken, upMetrics, log)
			kube.reapply()
			if err != nil {
				log.Error("config reload rejected; keeping the running configuration", zap.Error(err))
				continue
			}
			cfg = next
			if !cfg.KubeOn() || cfg.KubeDNSService == "" {
				nn.setFallbackTargets(fallbackTargets(cfg))
			}
		}
	}

	log.Info("stopping")
	stopWatchdog()
	<-wdDone
	healthy := wd.answersNow(context.Background())
	draining.Store(true)
	if cfg.Lameduck > 0 {
		time.Sleep(cfg.Lameduck) // keep answering while load balancers notice we are not ready
	}
	stopSnapshots()
	if snap != nil {
		// Before the hand-over: the new process merges it.
		if err := snap.write(); err != nil {
			log.Warn("cache snapshot not written", zap.Error(err))
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout+cfg.Server.HandOverWait)
	defer cancel()
	if httpSrv != nil {
		// The HTTP port is shared with a new process during an upgrade
		// (SO_REUSEPORT, as the DNS ports): from here kubelet's probes of
		// either pod reach the new one.
		_ = httpSrv.Shutdown(sctx)
	}
	shutdownErr := srv.Shutdown(sctx)
	stopUpstreams()
	kube.wait()
	closeRouter(current.Load())
	nn.stop(cfg.SkipTeardown, healthy) // after the DNS server stopped
	if shutdownErr != nil {
		log.Warn("stopped with queries unanswered", zap.Error(shutdownErr))
	} else {
		log.Info("stopped")
	}
	return nil
}

// logMemoryBounds states at start how much memory the bounds allow, and
// warns when that is more than the Go runtime's limit: the process would
// then be collecting hard, or killed, before a bound is reached.
func logMemoryBounds(log *zap.Logger, cfg config.Config, goLimit int64) {
	sc := cfg.Server
	if cfg.Autopath && cfg.KubeOn() {
		sc.Walker = search.Autopath{} // counted as it may be on
	}
	worst := resolver.WorstCase(sc)
	cacheBytes := cfg.Cache.MaxBytes + cache.Overhead(cfg.Cache)
	total := cacheBytes + worst.Total()
	fields := []zap.Field{zap.Int64("cache_bytes", cacheBytes), zap.Int64("worst_case_bytes", total),
		zap.Stringer("beyond_the_cache", worst)}
	if goLimit > 0 && total > goLimit {
		log.Warn("the cache and the bounds on work in flight allow more memory than the Go memory limit; lower cache.size or the server caps",
			append(fields, zap.Int64("go_memory_limit_bytes", goLimit))...)
		return
	}
	log.Info("memory bounds", fields...)
}

func newLogger(cfg config.Config, level zap.AtomicLevel) (*zap.Logger, error) {
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("log_level: %w", err)
	}
	zc := zap.NewProductionConfig()
	zc.Level = level
	zc.DisableStacktrace = true // panics log their own stack; other errors need none
	zc.Sampling = nil           // query logs are sampled by --query-log-sample, not dropped silently
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	if cfg.LogFormat == "console" {
		zc.Encoding = "console"
	}
	return zc.Build()
}

// The resolver forwards through upstream.Forwarder and finds its checks
// by a type assertion at run time: this keeps their signatures those of
// resolver.ForwardChecker.
var _ resolver.ForwardChecker = (*upstream.Forwarder)(nil)

// buildRouter builds and starts the upstream groups of cfg.
func buildRouter(ctx context.Context, cfg config.Config, loopToken string, m *upstream.Metrics, log *zap.Logger) (*upstream.Router, error) {
	r, err := newRouter(cfg, loopToken, m, log)
	if err != nil {
		return nil, err
	}
	startRouter(ctx, r)
	return r, nil
}

// startRouter starts the health probes and loop checks of r's groups.
func startRouter(ctx context.Context, r *upstream.Router) {
	for _, g := range r.Groups() {
		g.Start(ctx)
	}
}

// newRouter builds the upstream groups of cfg, not started.
func newRouter(cfg config.Config, loopToken string, m *upstream.Metrics, log *zap.Logger) (*upstream.Router, error) {
	var groups []*upstream.Group
	closeAll := func() {
		for _, g := range groups {
			_ = g.Close()
		}
	}
	for _, gc := range cfg.Upstreams {
		gc.LoopToken = loopToken
		g, err := upstream.NewGroup(gc, m, log)
		if err != nil {
			closeAll()
			return nil, err
		}
		groups = append(groups, g)
	}
	r, err := upstream.NewRouter(groups)
	if err != nil {
		closeAll()
		return nil, err
	}
	return r, nil
}

// reload re-reads the configuration for SIGHUP and applies every setting
// that can change while serving (config.Diff tells which): the upstream
// groups (rebuilt only when they changed; the old ones close once queries
// in flight are done with them), the allow list, the cache's TTL rules, the
// server's timeouts and prefetching, the log level and query log sample,
// the memory limit ratio, and the shutdown timings. The cache keeps its
// entries. Every other change is logged by name as needing a restart. It
// returns the configuration now in effect; on error nothing changed.
func reload(ctx context.Context, args []string, running config.Config, srv *resolver.Server, c *cache.Cache, level zap.AtomicLevel,
	current *atomic.Pointer[upstream.Router], loopToken string, m *upstream.Metrics, log *zap.Logger) (config.Config, error) {
	cfg, err := config.Reload(args)
	if err != nil {
		return running, err
	}
	lvl := zap.NewAtomicLevel()
	if err := lvl.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return running, err
	}
	live, restart := config.Diff(running, cfg)
	if slices.Contains(live, "upstreams") {
		r, err := buildRouter(ctx, cfg, loopToken, m, log)
		if err != nil {
			return running, err
		}
		old := current.Swap(r)
		// Queries in flight may still use the old groups: close them once
		// every such query has reached its deadline.
		time.AfterFunc(running.Server.RequestTimeout, func() { closeRouter(old) })
	}
	level.SetLevel(lvl.Level())
	c.SetPolicy(cfg.Cache.Policy)
	srv.Reconfigure(cfg.Server)
	if slices.Contains(live, "memory_limit_ratio") {
		applyMemoryLimit(log, cfg.MemoryLimitRatio)
	}
	log.Info("config reloaded", zap.Strings("applied", live))
	if len(restart) > 0 {
		log.Warn("settings changed in the config that take effect only after a restart", zap.Strings("settings", restart))
	}
	return config.Applied(running, cfg), nil
}

// applyMemoryLimit gives the Go runtime ratio of the container's memory
// limit as its soft limit; ratio 0 turns that off. It returns the limit in
// effect (0 for none).
func applyMemoryLimit(log *zap.Logger, ratio float64) int64 {
	if ratio == 0 {
		if os.Getenv("GOMEMLIMIT") == "" {
			debug.SetMemoryLimit(math.MaxInt64)
		}
		log.Info("Go memory limit not set from the container's (memory_limit_ratio 0)")
		return 0
	}
	limit, _ := memlimit.Apply(log, ratio)
	return limit
}

// startHTTP serves /metrics, /health (liveness: the query path answers,
// as the watchdog proves), and /ready (readiness: serving DNS with the
// node's set-up in place and a healthy default upstream; with ?verbose,
// asked from the node itself, the state of every upstream server and of
// the Kubernetes view as JSON) on its own mux, never the global one,
// within the bounds of httpguard.go.
func startHTTP(addr string, reg *prometheus.Registry, health, ready func() error, detail func() any, log *zap.Logger) (*http.Server, error) {
	rejected := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nodedns_http_connections_rejected_total",
		Help: "HTTP connections closed to keep within the caps (per source address, in all): at accept, or an idle or slow one evicted for a new one.",
	})
	reg.MustRegister(rejected)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg,
		MaxRequestsInFlight: httpMaxScrapes, Timeout: httpWriteTimeout / 2}))
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
		if err := health(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		err := ready()
		// The detail names upstream addresses and API errors: for the
		// node's own eyes only (kubectl exec, or a shell on the node).
		if _, verbose := r.URL.Query()["verbose"]; verbose && fromNode(r) {
			w.Header().Set("Content-Type", "application/json")
			status := map[string]any{"ready": err == nil, "detail": detail()}
			if err != nil {
				status["reason"] = err.Error()
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(status)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	// SO_REUSEPORT: during an upgrade the new process binds the same port
	// (the DaemonSet's pods share the node's network) before the old one
	// lets it go.
	lc := net.ListenConfig{Control: reusePort}
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http_listen: %w", err)
	}
	guard := newConnGuard(l, httpMaxConns, httpPerSource, httpNodeConns, rejected)
	srv := &http.Server{Handler: mux, ConnState: guard.connState,
		ReadHeaderTimeout: httpHeaderTimeout, ReadTimeout: httpReadTimeout, WriteTimeout: httpWriteTimeout,
		IdleTimeout: httpIdleTimeout, MaxHeaderBytes: httpMaxHeaderBytes,
		ErrorLog: zap.NewStdLog(log.Named("http").WithOptions(zap.IncreaseLevel(zap.ErrorLevel)))}
	go func() {
		if err := srv.Serve(guard); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server stopped", zap.Error(err))
		}
	}()
	return srv, nil
}

// reusePort sets SO_REUSEPORT on a listening socket.
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

// closeRouter stops the groups of a router that is no longer in use.
func closeRouter(r *upstream.Router) {
	for _, g := range r.Groups() {
		_ = g.Close()
	}
}

// startPprof serves the Go profiler on its own listener, apart from the
// metrics port, so that it can stay off in production and be bound to
// loopback when it is on.
func startPprof(addr string, log *zap.Logger) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("pprof_listen: %w", err)
	}
	// A CPU profile or a trace takes as long as asked: no write timeout,
	// and room for a couple of them.
	guard := newConnGuard(l, 4, 2, 4, prometheus.NewCounter(prometheus.CounterOpts{Name: "pprof_rejected"}))
	srv := &http.Server{Handler: mux, ConnState: guard.connState, ReadHeaderTimeout: httpHeaderTimeout,
		IdleTimeout: httpIdleTimeout, MaxHeaderBytes: httpMaxHeaderBytes}
	go func() {
		if err := srv.Serve(guard); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("pprof server stopped", zap.Error(err))
		}
	}()
	return nil
}
