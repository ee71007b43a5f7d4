package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// ndots mode: each of Concurrency workers behaves like a glibc stub resolver
// doing one getaddrinfo at a time: for the next name it walks the search-list
// candidates (ExpandSearch), sending the candidate's queries (A, or A and
// AAAA in parallel) on its own socket and waiting for their replies, and
// stops at the first candidate with an answer, as res_search does: it goes
// on after NXDOMAIN, NODATA or SERVFAIL, and gives up on a timeout or any
// other rcode. Retries and nameserver rotation are not modelled.

type lookupStats struct {
	lookups, found, notFound, failed uint64
	queries                          uint64 // queries sent by measured lookups
	lastNs                           int64
	hist                             *hdrhistogram.Histogram
}

// syncConn is a blocking stub-resolver socket.
type syncConn interface {
	queue(msg []byte) error
	flush() error
	recv(deadline time.Time) ([]byte, error)
	close()
}

type syncUDP struct {
	c    *net.UDPConn
	rbuf []byte
}

func (u *syncUDP) queue(msg []byte) error {
	_, err := u.c.Write(msg)
	return err
}
func (u *syncUDP) flush() error { return nil }
func (u *syncUDP) recv(deadline time.Time) ([]byte, error) {
	if err := u.c.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	for {
		n, err := u.c.Read(u.rbuf)
		if errors.Is(err, syscall.ECONNREFUSED) {
			continue // stale ICMP error from an earlier query; keep waiting
		}
		return u.rbuf[:n], err
	}
}
func (u *syncUDP) close() { _ = u.c.Close() }

type syncTCP struct {
	c    net.Conn
	bw   *bufio.Writer
	br   *bufio.Reader
	hdr  [2]byte
	rbuf []byte
}

func (t *syncTCP) queue(msg []byte) error {
	binary.BigEndian.PutUint16(t.hdr[:], uint16(len(msg)))
	if _, err := t.bw.Write(t.hdr[:]); err != nil {
		return err
	}
	_, err := t.bw.Write(msg)
	return err
}
func (t *syncTCP) flush() error { return t.bw.Flush() }
func (t *syncTCP) recv(deadline time.Time) ([]byte, error) {
	if err := t.c.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	var h [2]byte
	if _, err := io.ReadFull(t.br, h[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(h[:]))
	if _, err := io.ReadFull(t.br, t.rbuf[:n]); err != nil {
		return nil, err
	}
	return t.rbuf[:n], nil
}
func (t *syncTCP) close() { _ = t.c.Close() }

func dialSync(target netip.AddrPort, local netip.Addr, tcp bool, timeout time.Duration) (syncConn, error) {
	if tcp {
		d := net.Dialer{Timeout: timeout, LocalAddr: tcpLocal(local)}
		c, err := d.Dial("tcp", target.String())
		if err != nil {
			return nil, err
		}
		return &syncTCP{c: c, bw: bufio.NewWriterSize(c, 4096), br: bufio.NewReaderSize(c, 4096), rbuf: make([]byte, maxMsg)}, nil
	}
	c, err := net.DialUDP("udp", udpLocal(local), net.UDPAddrFromAddrPort(target))
	if err != nil {
		return nil, err
	}
	return &syncUDP{c: c, rbuf: make([]byte, maxMsg)}, nil
}

type ndotsWorker struct {
	e      *engine
	idx    int
	plans  []ndotsLookup
	pos    int
	c      syncConn
	nextID uint16
	quota  int64 // lookups; < 0: no limit
	sbuf   []byte
	lostID [1024]uint64 // bitset of IDs that timed out, to tell late replies

	ss   sendStats
	rs   *replyStats
	ls   lookupStats
	prog progress

	// per exchange
	pend []ndotsPending
}

type ndotsPending struct {
	q     *packedQuery
	id    uint16
	sent  int64
	done  bool
	rcode int
	data  bool // NOERROR with answers
}

func (w *ndotsWorker) markLost(id uint16) { w.lostID[id>>6] |= 1 << (id & 63) }
func (w *ndotsWorker) takeLost(id uint16) bool {
	m := uint64(1) << (id & 63)
	was := w.lostID[id>>6]&m != 0
	w.lostID[id>>6] &^= m
	return was
}

// exchange sends the candidate's queries and waits for their replies (at
// most the timeout); it reports whether the connection had to be given up.
func (w *ndotsWorker) exchange(qs []packedQuery, measured bool) {
	e := w.e
	w.pend = w.pend[:0]
	now := e.now()
	for i := range qs {
		w.nextID++
		w.pend = append(w.pend, ndotsPending{q: &qs[i], id: w.nextID, sent: now})
	}
	sendAll := func() error {
		for i := range w.pend {
			p := &w.pend[i]
			if p.done {
				continue
			}
			n := copy(w.sbuf, p.q.msg)
			setID(w.sbuf, p.id)
			if err := w.c.queue(w.sbuf[:n]); err != nil {
				return err
			}
		}
		return w.c.flush()
	}
	if measured {
		w.ss.sent += uint64(len(qs))
		w.ss.lastNs = now
		w.ls.queries += uint64(len(qs))
		w.prog.sent.Add(uint64(len(qs)))
	}
	err := sendAll()
	deadline := e.base.Add(time.Duration(now + e.timeoutNs))
	left := len(w.pend)
	redials := 0
	for left > 0 {
		if err == nil {
			var msg []byte
			msg, err = w.c.recv(deadline)
			if err == nil {
				if w.match(msg, measured) {
					left--
				}
				continue
			}
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		// Broken connection (TCP) or failed send: redial once and resend
		// what is still unanswered, like a stub resolver would.
		if redials > 0 || e.now() >= now+e.timeoutNs {
			if measured {
				w.ss.sendErrors++
			}
			break
		}
		redials++
		w.c.close()
		w.c, err = dialSync(e.target, e.source(w.idx), e.cfg.TCP, e.cfg.Timeout)
		if err != nil {
			w.c = nil
			break
		}
		err = sendAll()
	}
	for i := range w.pend {
		if p := &w.pend[i]; !p.done {
			w.markLost(p.id)
			if measured {
				w.ss.lost++
				w.prog.lost.Add(1)
			}
		}
	}
}

// match records reply msg if it answers a pending query of this exchange.
func (w *ndotsWorker) match(msg []byte, measured bool) bool {
	now := w.e.now()
	rs := w.rs
	if len(msg) < headerLen || msg[2]&flagQR == 0 {
		rs.garbage++
		return false
	}
	id := binary.BigEndian.Uint16(msg)
	for i := range w.pend {
		p := &w.pend[i]
		if p.id != id || p.done {
			continue
		}
		if binary.BigEndian.Uint16(msg[4:]) != 0 {
			qend := questionEnd(msg)
			if qend < 0 {
				rs.garbage++
				return false
			}
			if questionHash(msg[headerLen:qend]) != p.q.qhash {
				rs.mismatched++
				return false
			}
		}
		p.done = true
		p.rcode = int(msg[3] & 0x0F)
		p.data = p.rcode == 0 && binary.BigEndian.Uint16(msg[6:]) > 0
		if measured {
			rs.answer(msg, now, now-p.sent)
			w.prog.answered.Add(1)
		}
		return true
	}
	if w.takeLost(id) {
		rs.late++
	} else {
		rs.unexpected++
	}
	return false
}

// lookup runs one name's search and records the outcome.
func (w *ndotsWorker) lookup(plan *ndotsLookup, start int64, measured bool) {
	outcome := 1 // 0 found, 1 not found, 2 failed
cands:
	for _, qs := range plan.cands {
		if w.c == nil {
			c, err := dialSync(w.e.target, w.e.source(w.idx), w.e.cfg.TCP, w.e.cfg.Timeout)
			if err != nil {
				if measured {
					w.ss.sent += uint64(len(qs))
					w.ss.sendErrors += uint64(len(qs))
					w.ss.lost += uint64(len(qs))
				}
				outcome = 2
				break
			}
			w.c = c
		}
		w.exchange(qs, measured)
		failed := false
		for _, p := range w.pend {
			switch {
			case p.done && p.data:
				outcome = 0
			case !p.done:
				failed = true
			case p.rcode == 0 || p.rcode == 2 || p.rcode == 3: // NODATA, SERVFAIL, NXDOMAIN
			default:
				failed = true
			}
		}
		if outcome == 0 {
			break cands
		}
		if failed {
			outcome = 2
			break cands
		}
	}
	if !measured {
		return
	}
	end := w.e.now()
	w.ls.lookups++
	w.ls.lastNs = end
	switch outcome {
	case 0:
		w.ls.found++
	case 1:
		w.ls.notFound++
	default:
		w.ls.failed++
	}
	recordUs(w.ls.hist, end-start)
}

func (w *ndotsWorker) run() {
	e := w.e
	defer func() {
		if w.c != nil {
			w.c.close()
		}
	}()
	var done int64
	// Pacing (LookupRate): this worker's share of the rate, staggered.
	var interval, next int64
	var timer *time.Timer
	if e.cfg.LookupRate > 0 {
		interval = int64(float64(e.nworkers) / e.cfg.LookupRate * 1e9)
		next = int64(w.idx) * interval / int64(e.nworkers)
		timer = time.NewTimer(time.Hour)
		defer timer.Stop()
	}
	for {
		if e.now() >= e.endNs || (w.quota >= 0 && done >= w.quota) {
			return
		}
		if interval > 0 {
			if wait := min(next, e.endNs) - e.now(); wait > 0 {
				timer.Reset(time.Duration(wait))
				select {
				case <-e.stop:
					return
				case <-timer.C:
				}
				if e.now() >= e.endNs {
					return
				}
			}
			next = max(next, e.now()) + interval
		}
		select {
		case <-e.stop:
			return
		default:
		}
		start := e.now()
		measured := start >= e.warmupNs
		if measured {
			done++
		}
		w.lookup(&w.plans[w.pos], start, measured)
		w.pos++
		if w.pos == len(w.plans) {
			w.pos = 0
		}
	}
}

func runNdots(ctx context.Context, cfg *Config, target netip.AddrPort) (*Report, error) {
	plans, err := planLookups(cfg.NdotsNames, cfg.Search, cfg.Ndots, cfg.NdotsAAAA, cfg.wireOpts())
	if err != nil {
		return nil, err
	}
	n := cfg.Concurrency
	if cfg.Count > 0 && int64(n) > cfg.Count {
		n = int(cfg.Count)
	}
	e := &engine{
		cfg:       cfg,
		target:    target,
		warmupNs:  int64(cfg.Warmup),
		endNs:     int64(cfg.Warmup + cfg.Duration),
		timeoutNs: int64(cfg.Timeout),
		nworkers:  n,
	}
	e.sources, _ = parseSources(cfg.Sources, cfg.AllowRemote) // checked by normalize
	ws := make([]*ndotsWorker, n)
	for i := range ws {
		quota := int64(-1)
		if cfg.Count > 0 {
			quota = int64(share(cfg.Count, n, i))
		}
		c, err := dialSync(target, e.source(i), cfg.TCP, cfg.Timeout)
		if err != nil {
			for _, w := range ws[:i] {
				w.c.close()
			}
			return nil, err
		}
		ws[i] = &ndotsWorker{
			e: e, idx: i, plans: plans, pos: i * len(plans) / n, c: c, quota: quota,
			nextID: uint16(i * 7919), sbuf: make([]byte, sendBufSize),
			rs: newReplyStats(), ls: lookupStats{hist: newHist()},
		}
	}

	stop := make(chan struct{})
	e.stop = stop
	finished := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			close(stop)
		case <-finished:
		}
	}()
	e.base = time.Now()
	var wg sync.WaitGroup
	pdone, pexit := make(chan struct{}), make(chan struct{})
	if cfg.Progress != nil {
		ps := make([]*progress, len(ws))
		for i, w := range ws {
			ps[i] = &w.prog
		}
		go func() {
			defer close(pexit)
			progressLoop(e, ps, pdone)
		}()
	} else {
		close(pexit)
	}
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run()
		}()
	}
	wg.Wait()
	close(pdone)
	<-pexit
	close(finished)
	wall := time.Since(e.base)

	ss := sendStats{}
	rs := newReplyStats()
	ls := lookupStats{hist: newHist()}
	for _, w := range ws {
		ss.merge(&w.ss)
		rs.merge(w.rs)
		ls.lookups += w.ls.lookups
		ls.found += w.ls.found
		ls.notFound += w.ls.notFound
		ls.failed += w.ls.failed
		ls.queries += w.ls.queries
		ls.lastNs = max(ls.lastNs, w.ls.lastNs)
		ls.hist.Merge(w.ls.hist)
	}
	ss.lastNs = max(ss.lastNs, ls.lastNs)
	r := newReport(cfg, n, &ss, rs, wall)
	r.Mode = "ndots"
	lr := &LookupReport{
		Lookups:  ls.lookups,
		Found:    ls.found,
		NotFound: ls.notFound,
		Failed:   ls.failed,
		Latency:  latencyOf(ls.hist, 0),
	}
	if cfg.Curve {
		lr.Curve = curveOf(ls.hist)
	}
	if ls.lookups > 0 {
		lr.QueriesPerLookup = float64(ls.queries) / float64(ls.lookups)
	}
	if r.Duration > 0 {
		lr.PerSecond = float64(ls.lookups) / r.Duration
	}
	r.Lookups = lr
	return r, ctx.Err()
}
