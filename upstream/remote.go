package upstream

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

const (
	// DefaultTimeout bounds one exchange with one upstream. It is short
	// because a group fails over to the next member after it and clients
	// typically give up after 2-5 s.
	DefaultTimeout = 1500 * time.Millisecond
	// EDNSUDPSize is the EDNS0 UDP payload size advertised upstream: the
	// DNS Flag Day 2020 value, which avoids IP fragmentation (and the
	// spoofing and loss that come with it) on practically every path.
	EDNSUDPSize = 1232
	// maxDroppedReplies bounds how many bogus replies one exchange reads
	// before giving up, so a flood cannot keep a query busy.
	maxDroppedReplies = 64
	// dnsHeaderLen is the size of the fixed DNS header.
	dnsHeaderLen = 12
	flagQR       = 1 << 15
	flagTC       = 1 << 9
)

// errTooManyDropped ends an exchange that received only bogus replies.
var errTooManyDropped = errors.New("too many mismatched or malformed replies")

// aLongTimeAgo is a deadline in the past, used to interrupt blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// udpReadSize is the read buffer of one UDP exchange, held while it waits
// for the reply. Servers must stay within the EDNSUDPSize we advertise; the
// margin takes servers that ignore it up to the common 4096. A datagram
// larger still is read truncated and handled like a reply with TC set: the
// query is retried over TCP. (A 64 KiB buffer per exchange would make 500
// slow exchanges hold 32 MiB.)
const udpReadSize = 4096

var udpBufPool = sync.Pool{New: func() any { b := make([]byte, udpReadSize); return &b }}

// RemoteConfig configures a [Remote].
type RemoteConfig struct {
	Addr        string        // "IP", "IP:port" or "[v6]:port"; see [ParseAddr]
	ForceTCP    bool          // always use pooled TCP connections
	Timeout     time.Duration // per exchange; default [DefaultTimeout]
	IdleTimeout time.Duration // idle pooled connection lifetime; default [DefaultIdleTimeout]
}

// Remote is one upstream DNS server. It is safe for concurrent use, and
// Exchange never modifies the request, which the caller may retry against
// another server.
//
// Over UDP every query uses a fresh socket (a random source port from the
// kernel) and a fresh random ID, and only a reply matching both the ID and
// the question is accepted: together these give the ~32 bits of entropy that
// make off-path cache poisoning impractical, which matters because our
// answers are cached for the whole node. Truncated replies are retried over
// TCP. With ForceTCP, persistent connections are pooled per upstream.
type Remote struct {
	addr     string
	forceTCP bool
	timeout  time.Duration
	m        *Metrics
	pool     *tcpPool
}

// NewRemote validates cfg and returns a Remote. m may be nil (metrics are then
// collected but not registered anywhere).
func NewRemote(cfg RemoteConfig, m *Metrics) (*Remote, error) {
	addr, err := ParseAddr(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("upstream address %q: %w", cfg.Addr, err)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("upstream %s: timeout %v is negative", addr, cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	m.initUpstream(addr)
	return &Remote{addr: addr, forceTCP: cfg.ForceTCP, timeout: cfg.Timeout, m: m, pool: newTCPPool(cfg.IdleTimeout)}, nil
}

// Address returns the normalised host:port.
func (r *Remote) Address() string { return r.addr }

// Close closes pooled connections. Exchanges still in flight finish normally
// and close their connection afterwards.
func (r *Remote) Close() error {
	r.pool.close()
	return nil
}

// Exchange sends req to the server and waits until the earlier of ctx's
// deadline and the configured timeout. The returned message carries req's
// ID and question (as asked, including case), so it answers the caller's own
// request. Its OPT record is the server's own (nodedns always asks with
// EDNS0): a caller that answers a client renders its own (resolver does,
// for every reply).
func (r *Remote) Exchange(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
	return r.exchange(ctx, req, r.timeout, false)
}

// exchangeWithin is Exchange with a per-try timeout other than the
// configured one (still cut by ctx's deadline).
func (r *Remote) exchangeWithin(ctx context.Context, req *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	return r.exchange(ctx, req, timeout, false)
}

// probe sends a health probe asking q. It accepts any reply whose header is
// readable and whose ID matches, and records no request metrics.
func (r *Remote) probe(ctx context.Context, q dns.Question) error {
	m := new(dns.Msg)
	m.SetQuestion(q.Name, q.Qtype)
	_, err := r.exchange(ctx, m, 2*r.timeout, true) // see Group.probe
	return err
}

func (r *Remote) exchange(ctx context.Context, req *dns.Msg, timeout time.Duration, probe bool) (*dns.Msg, error) {
	proto := "udp"
	if r.forceTCP {
		proto = "tcp"
	}
	if req == nil {
		return nil, r.failed(ctx, proto, &badRequestError{errors.New("nil request")}, false, probe)
	}
	start := time.Now()
	deadline := start.Add(timeout)
	ctxDeadline := false // whether the caller's deadline is the binding one
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, ctxDeadline = d, true
	}

	q := req.Copy() // never touch the caller's message
	q.Id = dns.Id()
	if opt := q.IsEdns0(); opt != nil {
		opt.SetUDPSize(EDNSUDPSize) // keeps the client's DO bit and options
	} else {
		q.SetEdns0(EDNSUDPSize, false)
	}
	packed, err := q.Pack()
	if err != nil {
		return nil, r.failed(ctx, proto, &badRequestError{fmt.Errorf("packing request: %w", err)}, false, probe)
	}

	var resp *dns.Msg
	if r.forceTCP {
		resp, err = r.exchangeTCP(ctx, q, packed, deadline, probe)
	} else {
		resp, err = r.exchangeUDP(ctx, q, packed, deadline, probe)
		if err == nil && resp.Truncated {
			proto = "tcp"
			resp, err = r.exchangeTCP(ctx, q, packed, deadline, probe)
		}
	}
	if !probe {
		r.m.duration.WithLabelValues(r.addr).Observe(time.Since(start).Seconds())
	}
	if err != nil {
		return nil, r.failed(ctx, proto, err, ctxDeadline, probe)
	}
	if !probe {
		r.m.requests.WithLabelValues(r.addr, rcodeLabel(resp.Rcode)).Inc()
	}

	resp.Id = req.Id
	resp.Question = slices.Clone(req.Question)
	return resp, nil
}

// badRequestError marks a request that cannot be sent at all.
type badRequestError struct{ err error }

func (e *badRequestError) Error() string { return "bad request: " + e.err.Error() }
func (e *badRequestError) Unwrap() error { return e.err }

// failed classifies err, records it and wraps it in an *ExchangeError.
// ctxDeadline says the socket deadline was the caller's: a timeout then
// wraps context.DeadlineExceeded even if ctx's own timer has not fired yet.
func (r *Remote) failed(ctx context.Context, proto string, err error, ctxDeadline, probe bool) error {
	var bre *badRequestError
	reason := ReasonNetwork
	switch {
	case errors.As(err, &bre):
		reason = ReasonBadRequest
	case errors.Is(ctx.Err(), context.Canceled):
		reason, err = ReasonCanceled, ctx.Err()
	case errors.Is(err, errTooManyDropped):
		reason = ReasonMismatch
	case ctx.Err() != nil || (ctxDeadline && isTimeout(err)):
		reason, err = ReasonTimeout, fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	case isTimeout(err):
		reason = ReasonTimeout
	}
	if !probe {
		r.m.requests.WithLabelValues(r.addr, rcodeNone).Inc()
		r.m.errors.WithLabelValues(r.addr, reason).Inc()
	}
	return &ExchangeError{Upstream: r.addr, Network: proto, Reason: reason, Err: err}
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// dropped counts a reply that was read and thrown away.
func (r *Remote) dropped(v verdict) {
	switch v {
	case replyMismatch:
		r.m.mismatched.WithLabelValues(r.addr).Inc()
		r.m.errors.WithLabelValues(r.addr, ReasonMismatch).Inc()
	case replyMalformed:
		r.m.errors.WithLabelValues(r.addr, ReasonMalformed).Inc()
	}
}

func (r *Remote) exchangeUDP(ctx context.Context, q *dns.Msg, packed []byte, deadline time.Time, headerOnly bool) (*dns.Msg, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", r.addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, err
	}
	// Set after the deadline so that an already canceled ctx wins.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(aLongTimeAgo) })
	defer stop()
	if _, err := conn.Write(packed); err != nil {
		return nil, err
	}
	bufp := udpBufPool.Get().(*[]byte)
	defer udpBufPool.Put(bufp)
	buf := *bufp
	// The socket is connected, so the kernel only delivers datagrams from
	// the upstream's address and port; we still check ID and question.
	uc, _ := conn.(*net.UDPConn)
	for range maxDroppedReplies {
		var n, flags int
		if uc != nil {
			n, _, flags, _, err = uc.ReadMsgUDP(buf, nil)
		} else {
			n, err = conn.Read(buf)
		}
		if err != nil {
			return nil, err
		}
		if flags&msgTrunc != 0 && n >= dnsHeaderLen {
			// Too large for the buffer: set TC so that the caller asks
			// again over TCP, as it would after a truncated reply.
			buf[2] |= flagTC >> 8
		}
		resp, v := checkReply(bytes.Clone(buf[:n]), q, headerOnly)
		if v == replyOK {
			return resp, nil
		}
		r.dropped(v)
	}
	return nil, errTooManyDropped
}

func (r *Remote) exchangeTCP(ctx context.Context, q *dns.Msg, packed []byte, deadline time.Time, headerOnly bool) (*dns.Msg, error) {
	frame := make([]byte, 2+len(packed))
	binary.BigEndian.PutUint16(frame, uint16(len(packed)))
	copy(frame[2:], packed)
	var err error
	for attempt := range 2 {
		var conn net.Conn
		if attempt == 0 {
			conn = r.pool.get()
		}
		reused := conn != nil
		if conn == nil {
			dctx, cancel := context.WithDeadline(ctx, deadline)
			var d net.Dialer
			conn, err = d.DialContext(dctx, "tcp", r.addr)
			cancel()
			if err != nil {
				return nil, err
			}
		}
		var resp *dns.Msg
		var reusable bool
		resp, reusable, err = r.roundTripTCP(ctx, conn, frame, q, deadline, headerOnly)
		if err == nil {
			if reusable {
				r.pool.put(conn)
			} else {
				_ = conn.Close()
			}
			return resp, nil
		}
		_ = conn.Close()
		// Only a pooled connection that broke (typically closed by the
		// server while idle) earns a retry, and only on a fresh connection.
		if !reused || ctx.Err() != nil || isTimeout(err) || errors.Is(err, errTooManyDropped) || !time.Now().Before(deadline) {
			return nil, err
		}
	}
	return nil, err
}

func (r *Remote) roundTripTCP(ctx context.Context, conn net.Conn, frame []byte, q *dns.Msg, deadline time.Time, headerOnly bool) (resp *dns.Msg, reusable bool, err error) {
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, false, err
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(aLongTimeAgo) })
	defer func() {
		if !stop() {
			// The cancel func ran or is running: the connection's deadline
			// may be in the past, so it must not go back to the pool.
			reusable = false
		}
	}()
	if _, err := conn.Write(frame); err != nil {
		return nil, false, err
	}
	var hdr [2]byte
	for range maxDroppedReplies {
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return nil, false, err
		}
		body := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(conn, body); err != nil {
			return nil, false, err
		}
		resp, v := checkReply(body, q, headerOnly)
		if v == replyOK {
			return resp, true, nil
		}
		r.dropped(v)
	}
	return nil, false, errTooManyDropped
}

// verdict is the outcome of checking one reply.
type verdict int

const (
	replyOK verdict = iota
	replyMismatch
	replyMalformed
)

// checkReply decides whether buf is the reply to q. buf must not be reused by
// the caller afterwards (the returned message may alias it). A reply is
// accepted only if it is a response (QR set) with q's ID and, unless
// headerOnly, q's question (name case-insensitively, type, class). A
// truncated reply whose body does not parse is accepted as a header-only
// message with TC set, since all it triggers is a retry over TCP. With
// headerOnly (health probes) any response with the right ID is accepted,
// because even SERVFAIL proves that the server is alive.
func checkReply(buf []byte, q *dns.Msg, headerOnly bool) (*dns.Msg, verdict) {
	if len(buf) < dnsHeaderLen {
		return nil, replyMalformed
	}
	if binary.BigEndian.Uint16(buf) != q.Id {
		return nil, replyMismatch
	}
	flags := binary.BigEndian.Uint16(buf[2:])
	if flags&flagQR == 0 {
		return nil, replyMismatch // our own query reflected back, or garbage
	}
	headerMsg := func() *dns.Msg {
		m := new(dns.Msg)
		m.Id = q.Id
		m.Response = true
		m.Truncated = flags&flagTC != 0
		m.Rcode = int(flags & 0xF)
		return m
	}
	if headerOnly {
		return headerMsg(), replyOK
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf); err != nil {
		if flags&flagTC != 0 {
			return headerMsg(), replyOK
		}
		return nil, replyMalformed
	}
	if !sameQuestion(m.Question, q.Question) {
		return nil, replyMismatch
	}
	return m, replyOK
}

func sameQuestion(a, b []dns.Question) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Qtype != b[i].Qtype || a[i].Qclass != b[i].Qclass || !strings.EqualFold(a[i].Name, b[i].Name) {
			return false
		}
	}
	return true
}
