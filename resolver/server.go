// Package resolver serves DNS to clients: it owns the sockets, reads and
// writes every packet, answers cache hits on the spot and hands misses to a
// bounded pipeline that forwards them upstream.
//
// The hot path is a cache hit over UDP: one read, a parse of the header and
// question without unpacking (package dnswire), a lookup, a copy of the
// stored packet with the ID, question case and TTLs patched, one write. It
// allocates nothing. Everything else (misses, odd queries) takes the full
// miekg/dns path on a bounded number of goroutines.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/nodedns/nodedns/cache"
)

// Config holds the server's settings. Zero values take the defaults noted.
type Config struct {
	// Listen lists the IP:port addresses served over both UDP and TCP.
	Listen []string
	// Allow lists the client networks that get answers; others get REFUSED.
	// Empty means DefaultAllow.
	Allow []netip.Prefix
	// UDPSockets is the number of SO_REUSEPORT sockets per listen address,
	// each with its own reader; 0 means GOMAXPROCS.
	UDPSockets int
	// MaxUDPSize is the EDNS payload size advertised and the largest UDP
	// reply sent; 0 means 1232 (the DNS flag day 2020 value, which avoids IP
	// fragmentation on any usual path).
	MaxUDPSize uint16
	// TCPMaxConns caps open client TCP connections; 0 means 250. Stub
	// resolvers use TCP only after a truncated reply, so few are needed.
	// When nine tenths are open, a new connection closes the one idle
	// longest (RFC 7766 section 6.2.3).
	TCPMaxConns int
	// TCPMaxConnsPerClient caps the connections of one client address; a
	// client at its cap that opens another closes its own idlest one. 0
	// means 8: TCP follows a truncated answer, one query a connection for
	// a stub, so a few suffice, and many clients fit in TCPMaxConns.
	TCPMaxConnsPerClient int
	// TCPIdleTimeout closes a client TCP connection with no query for this
	// long (RFC 7766 section 6.2.3); 0 means 10s.
	TCPIdleTimeout time.Duration
	// MaxInflight caps resolutions in flight to the upstreams (slots); a
	// miss that finds none free waits for one in its client's queue
	// (fair.go). 0 means 500, the default cap of one upstream server.
	MaxInflight int
	// MaxQueueWait is how long a miss may wait for a slot before it is
	// answered (stale or SERVFAIL); 0 means 1s.
	MaxQueueWait time.Duration
	// RequestTimeout is the overall deadline for resolving a miss, counted
	// from its arrival, across the wait for a slot and every upstream try;
	// 0 means 4s, under glibc's 5 s resolver timeout.
	RequestTimeout time.Duration
	// QueryLogSample is the fraction of queries logged at Info (0 = none).
	QueryLogSample float64
	// MaxWaiters caps the queries waiting for an answer from upstream,
	// whether for a slot or for a resolution already in flight for the same
	// name (coalesced); shared max-min between clients (fair.go). 0 means
	// 10000.
	MaxWaiters int
	// StaleAnswerTimeout is how long a client waits for the upstream before
	// it gets a stale answer, when there is one (RFC 8767 suggests 1.8 s);
	// the resolution goes on in the background. 0 means 1.8s; negative
	// waits for the upstream's answer or failure.
	StaleAnswerTimeout time.Duration
	// Local are stages that answer some queries on the node, after the
	// cache stage (which stores what they answer) and before admission, in
	// order: package search's stage answers the names a cluster cannot
	// have. They must not block.
	Local []Middleware
	// Walker, when not nil, turns on search walks (walk.go): for a client
	// whose search list it knows, the first query of a walk runs the whole
	// walk on the node.
	Walker Walker
	// PrefetchMinHits is how many hits an entry needs before a hit in the
	// last tenth of its TTL refreshes it in the background; 0 disables
	// prefetching.
	PrefetchMinHits uint32
	// HandOverWait is how long Shutdown waits for another process to serve
	// the listen addresses before it stops without handing them over; 0
	// hands over only to a process already serving.
	HandOverWait time.Duration
}

// Defaults returns the settings the resolver uses for whatever is not
// given. Package config starts from them, so that each default has one
// source. UDPSockets 0 means GOMAXPROCS, chosen at start.
func Defaults() Config {
	return Config{
		Allow:                DefaultAllow,
		MaxUDPSize:           1232,
		TCPMaxConns:          250,
		TCPMaxConnsPerClient: 8,
		TCPIdleTimeout:       10 * time.Second,
		MaxInflight:          500,
		MaxQueueWait:         time.Second,
		RequestTimeout:       4 * time.Second,
		MaxWaiters:           10000,
		StaleAnswerTimeout:   1800 * time.Millisecond,
		PrefetchMinHits:      2,
	}
}

// setDefaults fills the zero fields that cannot mean "off" from Defaults.
// PrefetchMinHits 0 turns prefetching off; a negative StaleAnswerTimeout
// waits for the upstream.
func (c *Config) setDefaults() {
	d := Defaults()
	if len(c.Allow) == 0 {
		c.Allow = d.Allow
	}
	if c.UDPSockets <= 0 {
		c.UDPSockets = runtime.GOMAXPROCS(0)
	}
	if c.MaxUDPSize == 0 {
		c.MaxUDPSize = d.MaxUDPSize
	}
	c.MaxUDPSize = max(c.MaxUDPSize, 512)
	setIfZero(&c.TCPMaxConns, d.TCPMaxConns)
	setIfZero(&c.TCPMaxConnsPerClient, d.TCPMaxConnsPerClient)
	setIfZero(&c.TCPIdleTimeout, d.TCPIdleTimeout)
	setIfZero(&c.MaxInflight, d.MaxInflight)
	setIfZero(&c.MaxQueueWait, d.MaxQueueWait)
	setIfZero(&c.RequestTimeout, d.RequestTimeout)
	setIfZero(&c.MaxWaiters, d.MaxWaiters)
	if c.StaleAnswerTimeout == 0 {
		c.StaleAnswerTimeout = d.StaleAnswerTimeout
	}
}

// setIfZero sets a setting that cannot be off (or negative) to its default.
func setIfZero[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Server answers DNS queries on UDP and TCP.
type Server struct {
	cfg   Config
	allow atomic.Pointer[allowList] // swapped by Reconfigure
	// queryLogSample holds math.Float64bits of the fraction of queries logged.
	queryLogSample atomic.Uint64
	tun            atomic.Pointer[tunables] // swapped by Reconfigure
	cache          *cache.Cache
	local, remote  Handler        // the two halves of the miss pipeline (chain)
	checker        ForwardChecker // nil when the forwarder has no checks
	log            *zap.Logger
	// crash ends the process after a panic with flightMu held (flights.go).
	crash     func(any)
	metrics   *metrics
	shedTally *shedTally
	now       func() time.Time

	// flightMu guards flights and fair.
	flightMu sync.Mutex
	flights  map[string]*flight // resolutions queued or running, by cache key
	fair     *fair              // slots, waiting queries and queues per client
	// misses tracks leader goroutines, for a graceful stop.
	misses sync.WaitGroup
	// readers tracks the UDP reader, TCP accept and sweeper goroutines.
	readers   sync.WaitGroup
	stopSweep chan struct{}

	ctx    context.Context // cancelled when Shutdown gives up waiting
	cancel context.CancelFunc

	mu           sync.Mutex
	udp          []*net.UDPConn
	tcp          []net.Listener
	tcpConns     map[net.Conn]*tcpConn // guarded by mu
	tcpPerClient map[netip.Addr]int    // guarded by mu
	closing      atomic.Bool
	started      atomic.Bool

	// listenIPs are the IPs of the listen addresses: a liveness probe
	// comes from one of them (probe.go).
	listenIPs  []netip.Addr
	udpReaders readerList
}

// New builds a server that answers from c and forwards misses with fwd.
// Metrics are registered with reg (nil to skip).
func New(cfg Config, c *cache.Cache, fwd Forwarder, log *zap.Logger, reg prometheus.Registerer) (*Server, error) {
	cfg.setDefaults()
	if len(cfg.Listen) == 0 {
		return nil, errors.New("listen: no address to serve on")
	}
	var ips []netip.Addr
	for _, a := range cfg.Listen {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			return nil, fmt.Errorf("listen: %q is not IP:port: %v", a, err)
		}
		ips = append(ips, ap.Addr().Unmap())
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:          cfg,
		cache:        c,
		log:          log.Named("resolver"),
		metrics:      newMetrics(reg),
		now:          time.Now,
		flights:      make(map[string]*flight),
		fair:         newFair(cfg.MaxInflight, cfg.MaxWaiters),
		ctx:          ctx,
		cancel:       cancel,
		tcpConns:     make(map[net.Conn]*tcpConn),
		tcpPerClient: make(map[netip.Addr]int),
		stopSweep:    make(chan struct{}),
		listenIPs:    ips,
	}
	s.crash = crashProcess(s.log)
	s.shedTally = newShedTally(s.now)
	if reg != nil {
		reg.MustRegister(s.shedTally)
	}
	s.allow.Store(&allowList{prefixes: cfg.Allow})
	s.queryLogSample.Store(math.Float64bits(cfg.QueryLogSample))
	s.tun.Store(&tunables{tcpIdleTimeout: cfg.TCPIdleTimeout, maxQueueWait: cfg.MaxQueueWait,
		requestTimeout: cfg.RequestTimeout, staleAnswerTimeout: cfg.StaleAnswerTimeout, prefetchMinHits: cfg.PrefetchMinHits})
	s.setForwarder(fwd)
	return s, nil
}

// Start binds every listen address and starts serving. On error nothing is
// left bound.
func (s *Server) Start() error {
	for _, a := range s.cfg.Listen {
		if err := s.bind(netip.MustParseAddrPort(a)); err != nil {
			s.closeAll()
			return err
		}
	}
	for _, c := range s.udp {
		s.readers.Add(1)
		go s.serveUDP(c)
	}
	for _, l := range s.tcp {
		s.readers.Add(1)
		go s.serveTCP(l)
	}
	s.readers.Add(1)
	go s.sweep()
	s.started.Store(true)
	s.log.Info("serving", zap.Strings("listen", s.cfg.Listen), zap.Int("udp_sockets_per_address", s.cfg.UDPSockets))
	return nil
}

// bind opens the UDP sockets and the TCP listener of one address. With port
// 0 the kernel picks the port of the first socket and the others follow it.
func (s *Server) bind(ap netip.AddrPort) error {
	lc := net.ListenConfig{Control: reusePort}
	network := "udp4"
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		network = "udp6"
	}
	for i := 0; i < s.cfg.UDPSockets; i++ {
		pc, err := lc.ListenPacket(context.Background(), network, ap.String())
		if err != nil {
			return fmt.Errorf("listen: udp %s: %w", ap, err)
		}
		conn := pc.(*net.UDPConn)
		sizeSocket(conn)
		if ap.Port() == 0 {
			ap = netip.AddrPortFrom(ap.Addr(), conn.LocalAddr().(*net.UDPAddr).AddrPort().Port())
		}
		s.udp = append(s.udp, conn)
	}
	tcpNet := "tcp4"
	if network == "udp6" {
		tcpNet = "tcp6"
	}
	l, err := lc.Listen(context.Background(), tcpNet, ap.String())
	if err != nil {
		return fmt.Errorf("listen: tcp %s: %w", ap, err)
	}
	s.tcp = append(s.tcp, l)
	return nil
}

// reusePort sets SO_REUSEPORT so that several sockets (and, during a
// hand-over, a new process) share one address, the kernel spreading
// datagrams between them by flow hash.
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// Addrs returns the bound UDP addresses, one per listen address, with the
// port the kernel chose for port 0.
func (s *Server) Addrs() []netip.AddrPort {
	var out []netip.AddrPort
	seen := map[netip.AddrPort]bool{}
	for _, c := range s.udp {
		ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
		if !seen[ap] {
			seen[ap] = true
			out = append(out, ap)
		}
	}
	return out
}

// Ready reports whether the server is serving and not shutting down.
func (s *Server) Ready() bool { return s.started.Load() && !s.closing.Load() }

// Shutdown stops reading new queries, lets misses in flight finish and
// answer until ctx is done, then closes every socket. It returns ctx's
// error if misses were still running when it gave up. First, when another
// process serves the same addresses (or does within HandOverWait), it hands
// the addresses over to it and answers every query already queued on its
// sockets: an upgrade loses no query.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.closing.Load() {
		return nil
	}
	// Still serving: a new process may be taking over (handover.go).
	s.handOver(ctx)
	if !s.closing.CompareAndSwap(false, true) {
		return nil
	}
	// Stop the readers but keep the UDP sockets open: misses in flight
	// still write their answers through them.
	for _, c := range s.udp {
		_ = c.SetReadDeadline(time.Now())
	}
	for _, l := range s.tcp {
		_ = l.Close()
	}
	// Wake readers blocked on an idle connection; a query being read now
	// still gets its answer, the next read ends the connection.
	s.eachConn(func(c net.Conn) { _ = c.SetReadDeadline(time.Now()) })
	close(s.stopSweep)
	s.dropQueued()

	done := make(chan struct{})
	go func() {
		s.readers.Wait()
		s.misses.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("shutdown: %w with %d misses in flight", ctx.Err(), s.inflight())
		s.cancel()
		<-done // cancelled misses return promptly: every wait takes s.ctx
	}
	s.cancel()
	s.closeAll()
	return err
}

// setForwarder builds the pipeline around fwd; tests use it to swap the
// clock and the upstream.
func (s *Server) setForwarder(fwd Forwarder) {
	s.local, s.remote = chain(s.cache, fwd, s.now, s.cfg.Local)
	s.checker, _ = fwd.(ForwardChecker)
}

// inflight returns the number of slots in use.
func (s *Server) inflight() int {
	s.flightMu.Lock()
	defer s.unlockFlights()
	return s.fair.slots
}

func (s *Server) closeAll() {
	for _, c := range s.udp {
		_ = c.Close()
	}
	for _, l := range s.tcp {
		_ = l.Close()
	}
	s.eachConn(func(c net.Conn) { _ = c.Close() })
}

// eachConn calls f for every client TCP connection, under mu.
func (s *Server) eachConn(f func(net.Conn)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.tcpConns {
		f(c)
	}
}

// tunables are the live fields of Config that the request path reads, in
// one value that Reconfigure swaps whole, so that a query sees one
// consistent set.
type tunables struct {
	tcpIdleTimeout, maxQueueWait, requestTimeout, staleAnswerTimeout time.Duration
	prefetchMinHits                                                  uint32
}

// Reconfigure applies the settings of l that may change while serving:
// Allow, QueryLogSample, TCPIdleTimeout, MaxQueueWait, RequestTimeout,
// StaleAnswerTimeout and PrefetchMinHits; zero durations keep the current
// value. The others take effect only in a new Server. Queries in flight
// finish under the settings they started with.
func (s *Server) Reconfigure(l Config) {
	if len(l.Allow) == 0 {
		l.Allow = DefaultAllow
	}
	s.allow.Store(&allowList{prefixes: l.Allow})
	s.queryLogSample.Store(math.Float64bits(l.QueryLogSample))
	cur := *s.tun.Load()
	keep := func(v *time.Duration, nv time.Duration) {
		if nv != 0 {
			*v = nv
		}
	}
	keep(&cur.tcpIdleTimeout, l.TCPIdleTimeout)
	keep(&cur.maxQueueWait, l.MaxQueueWait)
	keep(&cur.requestTimeout, l.RequestTimeout)
	keep(&cur.staleAnswerTimeout, l.StaleAnswerTimeout)
	cur.prefetchMinHits = l.PrefetchMinHits
	s.tun.Store(&cur)
}
