package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nodedns/nodedns/cache"
)

// The cache snapshot keeps the cache across restarts and upgrades (a
// hostPath in the DaemonSet). During an upgrade two processes share the
// node's addresses for a moment (hand-over, resolver/handover.go), and the
// snapshot moves the cache between them through the file and a request
// file beside it:
//
//  1. The new process finds the addresses served already: it creates
//     PATH.request and waits (at most snapshotRequestWait) for a snapshot
//     written after it, which the old process writes when it sees the
//     request; it loads that, then starts serving, warm.
//  2. On SIGTERM the old process writes a last snapshot, then hands the
//     addresses over; the new one merges that snapshot too (what the old
//     one cached meanwhile), keeping its own newer entries.
//
// Without a peer, the process loads the snapshot at start and writes it at
// shutdown and every cache.snapshot_interval. Every write goes to a
// temporary file renamed over the snapshot, so a reader never sees half a
// file; a snapshot that does not load (foreign, corrupt, too old) is
// ignored with a log line.

const (
	snapshotRequestWait = 2 * time.Second
	snapshotPoll        = 100 * time.Millisecond
	// snapshotFollow bounds how long a new process watches for the old
	// one's last snapshot.
	snapshotFollow = 5 * time.Minute
)

type snapshotter struct {
	path string
	c    *cache.Cache
	// limit is the largest snapshot read: a snapshot holds at most what
	// the cache does (each entry's accounted size is larger than its
	// record), so the cache's size and a margin. Loading holds the file
	// and the entries made from it at once, twice the cache at most,
	// before anything is served (the deploy tests count it).
	limit    int64
	interval time.Duration
	log      *zap.Logger
	loaded   prometheus.Counter
	writes   *prometheus.CounterVec
}

func newSnapshotter(path string, c *cache.Cache, cacheSize int64, interval time.Duration, reg prometheus.Registerer, log *zap.Logger) *snapshotter {
	if path == "" {
		return nil
	}
	s := &snapshotter{
		path: path, c: c, limit: cacheSize + 1<<20, interval: interval, log: log.Named("snapshot"),
		loaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodedns_cache_snapshot_loaded_entries_total",
			Help: "Cache entries loaded from snapshots (at start, and from the process this one took over from).",
		}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodedns_cache_snapshot_writes_total",
			Help: "Cache snapshots written, by result (ok, error).",
		}, []string{"result"}),
	}
	s.writes.WithLabelValues("ok")
	s.writes.WithLabelValues("error")
	reg.MustRegister(s.loaded, s.writes)
	return s
}

// openRegular opens path for reading if it is a regular file, without
// following a symbolic link (the hostPath is writable by more than this
// process) and without blocking on a FIFO.
func openRegular(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// load merges the snapshot into the cache; a missing file is no error.
func (s *snapshotter) load() {
	f, err := openRegular(s.path)
	if errors.Is(err, os.ErrNotExist) {
		s.log.Info("no cache snapshot to load", zap.String("path", s.path))
		return
	}
	if err != nil {
		s.log.Warn("cache snapshot not loaded", zap.Error(err))
		return
	}
	defer f.Close()
	start := time.Now()
	n, err := s.c.LoadSnapshot(f, time.Now(), s.limit)
	if err != nil {
		s.log.Warn("cache snapshot ignored", zap.String("path", s.path), zap.Error(err))
		return
	}
	s.loaded.Add(float64(n))
	s.log.Info("cache snapshot loaded", zap.String("path", s.path), zap.Int("entries", n),
		zap.Duration("took", time.Since(start)))
}

// write saves the cache.
func (s *snapshotter) write() error {
	start := time.Now()
	tmp, err := os.CreateTemp(filepath.Dir(s.path), filepath.Base(s.path)+".tmp-*")
	if err != nil {
		s.writes.WithLabelValues("error").Inc()
		return fmt.Errorf("cache snapshot: %w", err)
	}
	n, err := s.c.WriteSnapshot(tmp, time.Now())
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		s.writes.WithLabelValues("error").Inc()
		return fmt.Errorf("cache snapshot: %w", err)
	}
	s.writes.WithLabelValues("ok").Inc()
	s.log.Info("cache snapshot written", zap.String("path", s.path), zap.Int("entries", n), zap.Duration("took", time.Since(start)))
	return nil
}

func (s *snapshotter) requestPath() string { return s.path + ".request" }

// requestFresh asks the process serving now for a snapshot and waits for
// it, at most snapshotRequestWait; the caller loads whatever is there then.
func (s *snapshotter) requestFresh() {
	asked := time.Now()
	f, err := os.OpenFile(s.requestPath(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o644)
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		s.log.Warn("cannot ask the running nodedns for a snapshot", zap.Error(err))
		return
	}
	for time.Since(asked) < snapshotRequestWait {
		if fi, err := os.Stat(s.path); err == nil && fi.ModTime().After(asked) {
			return
		}
		time.Sleep(snapshotPoll)
	}
	s.log.Warn("the running nodedns wrote no snapshot in time; starting with what there is", zap.Duration("waited", snapshotRequestWait))
}

// serve writes a snapshot when a new process asks for one, and every
// interval (if not 0), until ctx is done.
func (s *snapshotter) serve(ctx context.Context) {
	poll := time.NewTicker(snapshotPoll)
	defer poll.Stop()
	var periodic <-chan time.Time
	if s.interval > 0 {
		t := time.NewTicker(s.interval)
		defer t.Stop()
		periodic = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-periodic:
		case <-poll.C:
			if _, err := os.Stat(s.requestPath()); err != nil {
				continue
			}
			s.log.Info("a new nodedns asks for the cache")
			_ = os.Remove(s.requestPath())
		}
		if err := s.write(); err != nil {
			s.log.Warn("cache snapshot not written", zap.Error(err))
		}
	}
}

// follow merges the next snapshot written after since: the last one of
// the process this one takes over from.
func (s *snapshotter) follow(ctx context.Context, since time.Time) {
	t := time.NewTicker(snapshotPoll)
	defer t.Stop()
	end := time.Now().Add(snapshotFollow)
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if fi, err := os.Stat(s.path); err == nil && fi.ModTime().After(since) {
			s.load()
			return
		}
	}
}
