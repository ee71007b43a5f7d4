package bench

import (
	"context"
	"testing"
	"time"

	"github.com/nodedns/nodedns/internal/echo"
)

// loopConn is an in-memory conn: send hands the query to the responder and
// keeps the reply for the test to deliver.
type loopConn struct {
	wbuf  []byte
	reply []byte
	n     int
}

func (l *loopConn) buf() []byte { return l.wbuf }
func (l *loopConn) send(n int) error {
	copy(l.reply, l.wbuf[:n])
	l.n = echo.Respond(l.reply, n, true)
	return nil
}
func (l *loopConn) flush() error          { return nil }
func (l *loopConn) readLoop(*worker) bool { return false }
func (l *loopConn) interrupt()            {}
func (l *loopConn) close()                {}
func (l *loopConn) last() []byte          { return l.reply[:l.n] }
func newLoopConn() *loopConn {
	return &loopConn{wbuf: make([]byte, sendBufSize), reply: make([]byte, maxMsg)}
}
func (l *loopConn) deliver(w *worker, now int64) { w.handleReply(l.last(), now) }

// newTestWorker builds a closed-loop worker on an in-memory conn.
func newTestWorker(t testing.TB, cfg Config) (*worker, *loopConn) {
	t.Helper()
	cfg.Server = "127.0.0.1:53"
	if err := cfg.normalize(); err != nil {
		t.Fatal(err)
	}
	e := &engine{cfg: &cfg, endNs: 1 << 62, timeoutNs: int64(time.Second), nworkers: 1, base: time.Now()}
	var src querySource
	if cfg.RandomZone != "" {
		rs, err := newRandomSource(cfg.RandomZone, cfg.QType, cfg.wireOpts(), 0)
		if err != nil {
			t.Fatal(err)
		}
		src = rs
	} else {
		list, err := packAll(generatedNames(cfg.Names, cfg.NamePrefix, cfg.Zone, cfg.QType), cfg.wireOpts())
		if err != nil {
			t.Fatal(err)
		}
		src = &listSource{qs: list}
	}
	w := newWorker(e, 0, src, 8, -1)
	c := newLoopConn()
	w.c, w.up = c, true
	return w, c
}

// roundTrip is the per-query work of the writer and reader goroutines:
// build and send, match the reply and record it, return the credit and
// sweep.
func roundTrip(w *worker, c *loopConn, now int64) {
	w.avail--
	w.send(now, now)
	c.deliver(w, now+50_000)
	w.drainCredits()
	w.sweep(now + 60_000)
}

// The send/receive path allocates nothing once warm.
func TestHotPathAllocs(t *testing.T) {
	for _, cfg := range []Config{{Names: 100}, {RandomZone: "miss.test"}, {Names: 10, EDNS: 1232}} {
		w, c := newTestWorker(t, cfg)
		now := int64(1)
		for range 100 { // warm up: let the ring reach its size
			roundTrip(w, c, now)
			now += 1000
		}
		allocs := testing.AllocsPerRun(1000, func() {
			roundTrip(w, c, now)
			now += 1000
		})
		if allocs != 0 {
			t.Errorf("%+v: %.1f allocs per query, want 0", cfg, allocs)
		}
		// (AllocsPerRun makes one extra, unmeasured call.)
		if w.rs.answered != 1101 || w.ss.sent != 1101 || w.avail != w.window {
			t.Errorf("answered %d sent %d avail %d", w.rs.answered, w.ss.sent, w.avail)
		}
	}
}

// BenchmarkQueryPath measures the generator's own per-query CPU cost
// (build, ID patch, in-flight bookkeeping, reply matching, histogram),
// without the system calls.
func BenchmarkQueryPath(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  Config
	}{{"names", Config{Names: 1000}}, {"random", Config{RandomZone: "miss.test"}}} {
		b.Run(bc.name, func(b *testing.B) {
			w, c := newTestWorker(b, bc.cfg)
			b.ReportAllocs()
			now := int64(1)
			for b.Loop() {
				roundTrip(w, c, now)
				now += 1000
			}
		})
	}
}

// BenchmarkRun measures whole round trips through the kernel against the
// in-process echo responder (b.N queries in one closed-loop run; setup is
// amortised over b.N, so allocs/op tends to 0 for the hot path).
func BenchmarkRun(b *testing.B) {
	for _, tcp := range []bool{false, true} {
		name := "udp"
		if tcp {
			name = "tcp"
		}
		b.Run(name, func(b *testing.B) {
			s, err := echo.Listen("127.0.0.1:0", echo.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.ReportAllocs()
			b.ResetTimer()
			r, err := Run(context.Background(), Config{
				Server: s.Addr(), TCP: tcp, Names: 1000, Count: int64(b.N),
				Concurrency: 64, Duration: time.Minute,
			})
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			if r.Answered+r.Lost != uint64(b.N) {
				b.Fatalf("answered %d + lost %d != %d", r.Answered, r.Lost, b.N)
			}
			b.ReportMetric(r.QPS, "qps")
		})
	}
}
