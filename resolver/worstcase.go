package resolver

import "fmt"

// Memory beyond the cache, in the worst case every bound allows. The
// per-item figures are measured (TestWorstCaseMemoryIsWhatWorstCaseSays
// fills every bound and checks the total), rounded up.
const (
	// slotBytes is one resolution in flight through the real forwarder:
	// the goroutines' stacks, the unpacked query and its copy, an upstream
	// socket and its read buffer, timers (measured: 16 KiB), and a share of
	// the extra tries a lightly loaded server may get when the per-try
	// timeout passes (at most a quarter of its cap, so a quarter of a try
	// per slot).
	slotBytes = 24 << 10
	// waiterBytes is one waiting query at its largest: the record, the
	// query's copy (at most maxKeptQuery) and, for a query that is neither
	// cached nor coalesced, a queued flight of its own (measured: 0.9 KiB).
	waiterBytes = 1 << 10
	// tcpConnBytes is one client TCP connection with a query outstanding:
	// its goroutine's stack, read and reply buffers (measured: 7.5 KiB).
	tcpConnBytes = 10 << 10
	// walkBytes is one search walk (walk.go): the client's query (at most
	// maxKeptQuery, without padding) and its unpacked form, the names to
	// walk and the answer to the first one, beyond the waiting query or
	// slot its current step takes. A walk lives only while a step waits
	// or runs, so there are at most as many as waiting queries and slots.
	walkBytes = 2 << 10
)

// Memory is a breakdown of the memory a resolver's bounds allow, in bytes.
type Memory struct {
	Slots, Waiting, TCP, UDP, Walks int64
}

// Total is the sum.
func (m Memory) Total() int64 { return m.Slots + m.Waiting + m.TCP + m.UDP + m.Walks }

func (m Memory) String() string {
	mib := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	out := fmt.Sprintf("slots %s, waiting queries %s, TCP connections %s, UDP buffers %s",
		mib(m.Slots), mib(m.Waiting), mib(m.TCP), mib(m.UDP))
	if m.Walks > 0 {
		out += ", autopath walks " + mib(m.Walks)
	}
	return out
}

// WorstCase is the most memory the resolver's bounds allow beyond the cache
// (which cache.size bounds on its own): every slot in flight, the room to
// wait full of maximal queries, every TCP connection open with a query
// outstanding.
func WorstCase(cfg Config) Memory {
	cfg.setDefaults()
	m := Memory{
		Slots:   int64(cfg.MaxInflight) * slotBytes,
		Waiting: int64(cfg.MaxWaiters) * waiterBytes,
		TCP:     int64(cfg.TCPMaxConns) * tcpConnBytes,
		UDP:     int64(len(cfg.Listen)*cfg.UDPSockets) * udpSocketBytes,
	}
	if cfg.Walker != nil {
		m.Walks = int64(cfg.MaxWaiters+cfg.MaxInflight) * walkBytes
	}
	return m
}

// waitingCount returns the queries waiting for an upstream answer.
func (s *Server) waitingCount() int {
	s.flightMu.Lock()
	defer s.unlockFlights()
	return s.fair.records
}

// tcpCount returns the open client TCP connections.
func (s *Server) tcpCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tcpConns)
}
