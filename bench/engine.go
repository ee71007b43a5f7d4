package bench

import (
	"context"
	"encoding/binary"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// The engine runs one writer and one reader goroutine per UDP socket or TCP
// connection ("worker"). The writer sends (on a schedule in the open loop,
// whenever a credit is free in the closed loop), records each query in the
// worker's in-flight table under its ID and sweeps timeouts; the reader
// matches replies to the table by ID (and question) and records latencies in
// its own histogram. Writer and reader only share the table, whose slots are
// claimed with atomic compare-and-swap so that every query ends exactly once,
// as answered (reader) or lost (writer). Nothing on the send/receive path
// allocates or takes a lock.

// inflight is one slot of a worker's in-flight table, indexed by query ID.
type inflight struct {
	// stamp is 0 (free), -1 (timed out, free) or, while the query is in
	// flight, a per-worker sequence number (unique, so a slot that was freed
	// and reused is never mistaken for the query that had it before).
	stamp atomic.Int64
	// start is when latency is measured from (ns since the engine's base),
	// or -1 for a warmup query that is not measured.
	start atomic.Int64
	qhash atomic.Uint64 // hash of the question, to catch ID collisions
}

// pending is the writer's record of a query in flight, in send order.
type pending struct {
	stamp int64  // the slot's stamp while this query has it
	sent  int64  // actual (last) send time, for the timeout
	key   uint64 // source key, to rebuild the query
	id    uint16
}

// ring is a FIFO of pending queries owned by the writer. It grows (doubling)
// when full; in steady state it does not allocate.
type ring struct {
	buf  []pending
	head int
	n    int
}

func (r *ring) push(p pending) {
	if r.n == len(r.buf) {
		nb := make([]pending, max(2*len(r.buf), 64))
		for i := 0; i < r.n; i++ {
			nb[i] = r.buf[(r.head+i)&(len(r.buf)-1)]
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = p
	r.n++
}

func (r *ring) front() *pending { return &r.buf[r.head] }

func (r *ring) at(i int) *pending { return &r.buf[(r.head+i)&(len(r.buf)-1)] }

func (r *ring) pop() {
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
}

// engine holds what all workers of a run share (read-only while running).
type engine struct {
	cfg        *Config
	target     netip.AddrPort
	base       time.Time
	warmupNs   int64
	endNs      int64 // end of the sending phase
	timeoutNs  int64
	intervalNs float64 // open loop: ns between two queries (all workers)
	nworkers   int
	sources    []netip.Addr // local addresses, by socket index modulo len
	stop       <-chan struct{}
}

// source returns the local address socket i sends from (invalid: any).
func (e *engine) source(i int) netip.Addr {
	if len(e.sources) == 0 {
		return netip.Addr{}
	}
	return e.sources[i%len(e.sources)]
}

// udpLocal and tcpLocal turn a source address into a dialer's local address
// (nil: chosen by the kernel).
func udpLocal(a netip.Addr) *net.UDPAddr {
	if !a.IsValid() {
		return nil
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0))
}

func tcpLocal(a netip.Addr) net.Addr {
	if !a.IsValid() {
		return nil
	}
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, 0))
}

func (e *engine) now() int64 { return int64(time.Since(e.base)) }

// pacer is a precise sleep for the open loop's schedule (nil: use runtime
// timers). interrupt makes the current and every later sleep return at once.
type pacer interface {
	sleep(d time.Duration)
	interrupt()
	close()
}

// conn is a worker's transport.
type conn interface {
	// buf returns the buffer the next query is built in.
	buf() []byte
	// send sends (UDP) or queues (TCP) the query of length n built in buf().
	send(n int) error
	// flush writes queued queries (TCP).
	flush() error
	// readLoop receives replies and hands them to w.handleReply until the
	// connection is closed or interrupted; it reports whether it ended
	// because the connection failed.
	readLoop(w *worker) (broken bool)
	// interrupt makes a running readLoop return; close releases the conn.
	interrupt()
	close()
}

const maxBurst = 64 // queries sent back to back before looking around again

// worker is one socket/connection with its writer and reader goroutines.
type worker struct {
	e      *engine
	idx    int
	src    querySource
	closed bool // closed loop
	tcp    bool

	c            conn
	up           bool
	broken       bool          // TCP connection failed; reconnect and resend
	dead         chan struct{} // closed by the reader when the connection fails
	readerDone   chan struct{}
	redialAt     int64
	drainRedials int

	table  []inflight
	mask   uint32
	nextID uint32
	ring   ring

	// closed loop: credits returned by the reader, one per answered query.
	credits chan struct{}
	avail   int
	window  int
	// open loop: nudges the writer while it drains the last replies.
	notify   chan struct{}
	draining atomic.Bool

	quota        int64 // closed loop: measured queries to send; < 0: no limit
	sentMeasured int64
	lastStamp    int64

	ss   sendStats
	rs   *replyStats
	prog progress
}

func newWorker(e *engine, idx int, src querySource, window int, quota int64) *worker {
	w := &worker{
		e:      e,
		idx:    idx,
		src:    src,
		closed: e.cfg.QPS == 0,
		tcp:    e.cfg.TCP,
		window: window,
		quota:  quota,
		rs:     newReplyStats(),
		notify: make(chan struct{}, 1),
	}
	// Size the ID table to comfortably exceed the queries that can be in
	// flight (including those waiting for their timeout).
	need := 4 * window
	if !w.closed {
		perWorker := e.cfg.QPS / float64(e.nworkers)
		need = int(2*perWorker*e.cfg.Timeout.Seconds()) + 64
	}
	size := 256
	for size < need && size < 65536 {
		size <<= 1
	}
	w.table = make([]inflight, size)
	w.mask = uint32(size - 1)
	w.nextID = uint32(idx*7919) & w.mask // spread IDs between sockets
	w.ring.buf = make([]pending, size)
	if w.closed {
		w.credits = make(chan struct{}, window)
		w.avail = window
	} else {
		w.ss.lag = newHist()
	}
	return w
}

// allocID returns a free ID, preferring the next in sequence.
func (w *worker) allocID() (uint32, bool) {
	for range len(w.table) {
		id := w.nextID & w.mask
		w.nextID++
		if w.table[id].stamp.Load() <= 0 {
			return id, true
		}
	}
	return 0, false
}

// handleReply is called by the reader for each received message.
func (w *worker) handleReply(msg []byte, now int64) {
	rs := w.rs
	if len(msg) < headerLen || msg[2]&flagQR == 0 {
		rs.garbage++
		return
	}
	id := uint32(binary.BigEndian.Uint16(msg))
	if id > w.mask {
		rs.unexpected++
		return
	}
	s := &w.table[id]
	v := s.stamp.Load()
	if v <= 0 {
		if v < 0 {
			rs.late++
		} else {
			rs.unexpected++
		}
		return
	}
	// A reply may omit the question (e.g. FORMERR); then the ID must do.
	if binary.BigEndian.Uint16(msg[4:]) != 0 {
		qend := questionEnd(msg)
		if qend < 0 {
			rs.garbage++
			return
		}
		if questionHash(msg[headerLen:qend]) != s.qhash.Load() {
			rs.mismatched++
			return
		}
	}
	start := s.start.Load()
	if !s.stamp.CompareAndSwap(v, 0) {
		rs.late++ // timed out just now
		return
	}
	if w.closed {
		w.credits <- struct{}{} // never blocks: cap == window
	} else if w.draining.Load() {
		select {
		case w.notify <- struct{}{}:
		default:
		}
	}
	if start >= 0 {
		rs.answer(msg, now, now-start)
		w.prog.answered.Add(1)
	}
}

// send builds and sends one query intended for time intended (ns). Its
// latency is measured from the earlier of the intended and the actual send
// time: queueing in the generator is included (open loop), and a query the
// pacer sent a little early is not credited with a shorter round trip.
func (w *worker) send(intended, now int64) {
	measured := intended >= w.e.warmupNs
	if measured {
		w.sentMeasured++
		w.ss.lastNs = now
		if !w.closed {
			lag := max(now-intended, 0)
			w.ss.maxLagNs = max(w.ss.maxLagNs, lag)
			recordUs(w.ss.lag, lag)
		}
	}
	if !w.up {
		// TCP and no connection: the query fails at once.
		if measured {
			w.ss.sent++
			w.ss.sendErrors++
			w.ss.lost++
			w.prog.sent.Add(1)
			w.prog.lost.Add(1)
		}
		if w.closed {
			w.avail++
		}
		return
	}
	id, ok := w.allocID()
	if !ok {
		if measured {
			w.ss.skipped++
			w.sentMeasured--
		}
		if w.closed {
			w.avail++
		}
		return
	}
	key := w.src.next()
	msg, h := w.src.build(w.c.buf(), key)
	setID(msg, uint16(id))
	s := &w.table[id]
	w.lastStamp++
	stamp := w.lastStamp
	start := int64(-1)
	if measured {
		// Late (the generator fell behind): from the intended time, so the
		// queueing is counted. Early (the pacer woke a little ahead): from
		// the actual send, so the round trip is not understated.
		start = min(intended, now)
	}
	s.qhash.Store(h)
	s.start.Store(start)
	s.stamp.Store(stamp)
	w.ring.push(pending{stamp: stamp, sent: now, key: key, id: uint16(id)})
	if measured {
		w.ss.sent++
		w.prog.sent.Add(1)
	}
	if err := w.c.send(len(msg)); err != nil {
		if w.tcp {
			w.broken = true // resent on the next connection
			return
		}
		w.ss.sendErrors++
		w.fail(s, stamp)
	}
}

// fail ends an in-flight query as lost, unless a reply beat us to it.
func (w *worker) fail(s *inflight, stamp int64) {
	if !s.stamp.CompareAndSwap(stamp, -1) {
		return
	}
	if s.start.Load() >= 0 { // only this goroutine writes start
		w.ss.lost++
		w.prog.lost.Add(1)
	}
	if w.closed {
		w.avail++
	}
}

// sweep drops answered queries from the front of the ring and fails those
// older than the timeout.
func (w *worker) sweep(now int64) {
	for w.ring.n > 0 {
		p := w.ring.front()
		s := &w.table[p.id]
		if s.stamp.Load() == p.stamp && now-p.sent < w.e.timeoutNs {
			return
		}
		w.fail(s, p.stamp) // no-op when answered
		w.ring.pop()
	}
}

// drainCredits collects credits returned by the reader.
func (w *worker) drainCredits() {
	for {
		select {
		case <-w.credits:
			w.avail++
		default:
			return
		}
	}
}

func (w *worker) isDead() bool {
	if w.dead == nil {
		return false
	}
	select {
	case <-w.dead:
		return true
	default:
		return false
	}
}

// startReader starts the reader goroutine for the current connection.
func (w *worker) startReader() {
	w.readerDone = make(chan struct{})
	dead := make(chan struct{})
	w.dead = dead
	c, done := w.c, w.readerDone
	go func() {
		defer close(done)
		if c.readLoop(w) {
			close(dead)
		}
	}()
}

// stopReader stops the reader and closes the connection.
func (w *worker) stopReader() {
	if w.c == nil {
		return
	}
	w.c.interrupt()
	<-w.readerDone
	w.c.close()
	w.c = nil
	w.up = false
}

// dialer opens worker connections; set per transport.
type dialer func(w *worker) (conn, error)

// connect opens a connection; the caller starts its reader.
func (w *worker) connect(dial dialer) error {
	c, err := dial(w)
	if err != nil {
		return err
	}
	w.c = c
	w.up = true
	w.broken = false
	if w.tcp {
		w.ss.conns++
	}
	return nil
}

// reconnect replaces a failed TCP connection and resends what was in
// flight on it, keeping IDs and intended send times.
func (w *worker) reconnect(dial dialer, now int64) {
	w.stopReader()
	if err := w.connect(dial); err != nil {
		w.redialAt = now + int64(100*time.Millisecond)
		return
	}
	w.startReader()
	for i := 0; i < w.ring.n; i++ {
		p := w.ring.at(i)
		if w.table[p.id].stamp.Load() != p.stamp {
			continue
		}
		msg, _ := w.src.build(w.c.buf(), p.key)
		setID(msg, p.id)
		p.sent = now
		w.ss.resent++
		if err := w.c.send(len(msg)); err != nil {
			w.broken = true
			return
		}
	}
	if err := w.c.flush(); err != nil {
		w.broken = true
	}
}

// wait blocks until wake (ns since base), a credit, a dead connection or
// the run is stopped.
func (w *worker) wait(t *time.Timer, now, wake int64) {
	d := time.Duration(wake - now)
	if d <= 0 {
		return
	}
	t.Reset(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-w.credits:
		w.avail++
	case <-w.notify:
	case <-w.dead:
		w.broken = true
	case <-w.e.stop:
	}
}

func (e *engine) stopped() bool {
	select {
	case <-e.stop:
		return true
	default:
		return false
	}
}

// maintain sweeps timeouts and, for TCP, replaces a failed connection. It
// reports whether it reconnected.
func (w *worker) maintain(dial dialer, now int64) bool {
	w.sweep(now)
	if w.tcp && (!w.up || w.broken || w.isDead()) && now >= w.redialAt {
		w.reconnect(dial, now)
		return true
	}
	return false
}

// runClosed is a closed-loop writer: it keeps window queries outstanding
// on its socket until a bound is reached, then drains.
func (w *worker) runClosed(dial dialer) {
	e := w.e
	t := time.NewTimer(time.Hour)
	t.Stop()
	if w.up {
		w.startReader()
	}
	defer w.stopReader()
	for {
		now := e.now()
		if w.maintain(dial, now) {
			continue
		}
		if now >= e.endNs || (w.quota >= 0 && w.sentMeasured >= w.quota) || e.stopped() {
			break
		}
		w.drainCredits()
		if w.avail > 0 && w.up {
			for range min(w.avail, maxBurst) {
				if w.quota >= 0 && w.sentMeasured >= w.quota {
					break
				}
				w.avail--
				w.send(now, now)
				now = e.now()
			}
			if err := w.c.flush(); err != nil {
				w.broken = true
			}
			continue
		}
		wake := e.endNs
		if w.ring.n > 0 {
			wake = min(wake, w.ring.front().sent+e.timeoutNs)
		}
		if w.tcp && !w.up {
			wake = min(wake, w.redialAt)
		}
		w.wait(t, now, wake)
	}
	w.drain(dial, t)
}

// drain waits for the replies still due: at most the timeout after the
// last send (plus TCP re-sends after a connection closed under them).
func (w *worker) drain(dial dialer, t *time.Timer) {
	e := w.e
	w.draining.Store(true)
	for {
		now := e.now()
		w.sweep(now)
		if w.ring.n == 0 {
			return
		}
		if w.tcp && (w.broken || w.isDead()) {
			if w.drainRedials < 3 {
				w.drainRedials++
				w.reconnect(dial, now)
				continue
			}
			for w.ring.n > 0 { // give up on the rest
				p := w.ring.front()
				w.fail(&w.table[p.id], p.stamp)
				w.ring.pop()
			}
			return
		}
		w.drainCredits()
		w.wait(t, now, w.ring.front().sent+e.timeoutNs)
	}
}

// openSender runs (part of) the open loop: one goroutine sends on a
// schedule for a group of sockets, round robin, so the whole run needs one
// precise timer per core rather than one per socket. Each socket still has
// its own reader; the sender is the only writer of their in-flight tables.
type openSender struct {
	e        *engine
	ws       []*worker
	interval float64 // ns between this sender's queries
	offset   float64 // ns: phase of this sender's schedule
	quota    int64   // measured queries; < 0: no limit
	sent     int64   // measured queries sent (or skipped)
	seq      int64   // next query in the schedule
	pacer    pacer
	early    int64 // ns: how early to wake, learnt from the timer's lateness
	dirty    []bool
}

// minPark is the shortest pacer sleep. The sender must really block (the
// timer must not have expired before the read that waits for it), or, with
// one core, the runtime would not poll the network and the readers would
// starve until the sender is preempted (~10 ms), turning into fake latency.
const minPark = 25 * time.Microsecond

func (o *openSender) due(seq int64) int64 {
	return int64(o.offset + float64(seq)*o.interval)
}

func (o *openSender) run(dial dialer) {
	e := o.e
	t := time.NewTimer(time.Hour)
	t.Stop()
	if o.pacer != nil {
		defer o.pacer.close()
	}
	for _, w := range o.ws {
		if w.up {
			w.startReader()
		}
		defer w.stopReader()
	}
	o.dirty = make([]bool, len(o.ws))
	for {
		now := e.now()
		for _, w := range o.ws {
			w.maintain(dial, now)
		}
		if now >= e.endNs || (o.quota >= 0 && o.sent >= o.quota) || e.stopped() {
			break
		}
		// Send what is due, a little early rather than late: the pacer's
		// wake-ups run late by a few tens of microseconds.
		due := o.due(o.seq)
		if due <= now+o.early {
			for range maxBurst {
				if due > now+o.early || due >= e.endNs || (o.quota >= 0 && o.sent >= o.quota) {
					break
				}
				i := int(o.seq % int64(len(o.ws)))
				w := o.ws[i]
				before := w.sentMeasured
				w.send(due, now)
				o.sent += w.sentMeasured - before
				o.dirty[i] = true
				o.seq++
				due = o.due(o.seq)
				now = e.now()
			}
			for i, w := range o.ws {
				if o.dirty[i] {
					o.dirty[i] = false
					if w.up {
						if err := w.c.flush(); err != nil {
							w.broken = true
						}
					}
				}
			}
			if due > now+o.early {
				continue // caught up: sleep until the next one is due
			}
			// Still behind: park briefly anyway, or the readers sharing
			// this core would not run (see minPark).
			wake := now + int64(minPark)
			if o.pacer == nil {
				o.ws[0].wait(t, now, wake)
			} else {
				o.pacer.sleep(minPark)
			}
			continue
		}
		wake := min(due-o.early, e.endNs)
		for _, w := range o.ws {
			if w.ring.n > 0 {
				wake = min(wake, w.ring.front().sent+e.timeoutNs)
			}
			if w.tcp && !w.up {
				wake = min(wake, w.redialAt)
			}
		}
		if o.pacer == nil {
			o.ws[0].wait(t, now, wake)
			continue
		}
		d := max(time.Duration(wake-now), minPark)
		o.pacer.sleep(d)
		if late := e.now() - (now + int64(d)); late >= 0 {
			// Learn the typical lateness (EWMA, capped).
			o.early += (min(late, int64(200*time.Microsecond)) - o.early) / 8
		}
	}
	for _, w := range o.ws {
		w.drain(dial, t)
	}
}

// unsent returns how many measured queries of the schedule were due before
// the end of the run but not sent (the generator fell behind).
func (o *openSender) unsent() uint64 {
	e := o.e
	// Count seq >= from with offset + seq*interval < t.
	upTo := func(t int64) int64 {
		x := (float64(t) - o.offset) / o.interval
		if x <= 0 {
			return 0
		}
		return int64(math.Ceil(x))
	}
	n := upTo(e.endNs) - max(o.seq, upTo(e.warmupNs))
	if o.quota >= 0 {
		n = min(n, o.quota-o.sent)
	}
	return uint64(max(n, 0))
}

// runWorkers runs the closed-loop writers, or the open-loop senders, to
// completion; readers run beside them.
func runWorkers(ctx context.Context, e *engine, ws []*worker, senders []*openSender, dial dialer) {
	stop := make(chan struct{})
	e.stop = stop
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			close(stop)
			for _, o := range senders {
				if o.pacer != nil {
					o.pacer.interrupt()
				}
			}
		case <-done:
		}
	}()
	defer close(done)

	var wg sync.WaitGroup
	if len(senders) > 0 {
		for _, o := range senders {
			wg.Go(func() { o.run(dial) })
		}
	} else {
		for _, w := range ws {
			wg.Go(func() { w.runClosed(dial) })
		}
	}
	if e.cfg.Progress != nil {
		ps := make([]*progress, len(ws))
		for i, w := range ws {
			ps[i] = &w.prog
		}
		pdone, pexit := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(pexit)
			progressLoop(e, ps, pdone)
		}()
		wg.Wait()
		close(pdone)
		<-pexit
		return
	}
	wg.Wait()
}

// progressLoop calls cfg.Progress once a second until done is closed.
func progressLoop(e *engine, ps []*progress, done <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var prev uint64
	prevT := time.Duration(0)
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		var p Progress
		for _, c := range ps {
			p.Sent += c.sent.Load()
			p.Answered += c.answered.Load()
			p.Lost += c.lost.Load()
		}
		p.Elapsed = time.Duration(e.now())
		if dt := (p.Elapsed - prevT).Seconds(); dt > 0 {
			p.QPS = float64(p.Answered-prev) / dt
		}
		prev, prevT = p.Answered, p.Elapsed
		e.cfg.Progress(p)
	}
}
