package conformance

import (
	"hash/fnv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Asks is how often each query is asked of each server, one right after
// the other: the first answer is resolved, the second comes from the cache.
const Asks = 2

// AskName names an ask in keys and reports.
func AskName(i int) string {
	if i == 0 {
		return "fresh"
	}
	return "cached"
}

// Target is a server under comparison.
type Target struct {
	Name string
	Addr string // IP:port
}

// Run asks every query Asks times of every target and returns the replies
// as [query][ask][target]. The targets are asked at the same time, each by
// workers goroutines; the queries of one question (name without case,
// type, class) go to one worker, in corpus order, so that how a server's
// cache is filled for a question is the same from run to run.
func Run(qs []Query, targets []Target, workers int, timeout time.Duration) [][Asks][]Reply {
	res := make([][Asks][]Reply, len(qs))
	for i := range res {
		for a := range res[i] {
			res[i][a] = make([]Reply, len(targets))
		}
	}
	queues := make([][]int, workers)
	for i, q := range qs {
		h := fnv.New32a()
		h.Write([]byte(strings.ToLower(q.Name) + "/" + typeString(q.Type) + "/" + classString(q.Class)))
		w := int(h.Sum32() % uint32(workers))
		queues[w] = append(queues[w], i)
	}
	var wg sync.WaitGroup
	for ti, t := range targets {
		for _, queue := range queues {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, i := range queue {
					for a := 0; a < Asks; a++ {
						res[i][a][ti] = Exchange(t.Addr, qs[i], timeout)
					}
				}
			}()
		}
	}
	wg.Wait()
	return res
}

// AuthBounds knows the TTLs the authoritative server gives each RRset: it
// asks the server (over TCP, with DO) for the RRset's name and type the
// first time one is needed, and remembers every RRset of every reply.
type AuthBounds struct {
	Addr    string
	Timeout time.Duration

	mu     sync.Mutex
	ttl    map[string]uint32 // name without case / type (RRSIGs: RRSIG(covered))
	asked  map[string]bool
	Lookup int // questions asked
}

// NewAuthBounds returns bounds from the authoritative server at addr.
func NewAuthBounds(addr string, timeout time.Duration) *AuthBounds {
	return &AuthBounds{Addr: addr, Timeout: timeout, ttl: map[string]uint32{}, asked: map[string]bool{}}
}

func boundKey(rr dns.RR) string {
	return strings.ToLower(rr.Header().Name) + "/" + rrType(rr)
}

// Learn asks the server for name and type (class IN) unless it was
// asked before, and records the TTLs of every RRset in the reply.
func (b *AuthBounds) Learn(name string, t uint16) {
	k := strings.ToLower(dns.Fqdn(name)) + "/" + typeString(t)
	b.mu.Lock()
	if b.asked[k] {
		b.mu.Unlock()
		return
	}
	b.asked[k] = true
	b.Lookup++
	b.mu.Unlock()
	q := Query{Name: dns.Fqdn(name), Type: t, Class: dns.ClassINET, Mode: Mode{TCP: true, EDNS: true, UDPSize: 4096, DO: true}}
	r := Exchange(b.Addr, q, b.Timeout)
	if r.Msg == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range sections(r.Msg) {
		for _, rr := range s.rrs {
			k := boundKey(rr)
			if old, ok := b.ttl[k]; !ok || rr.Header().Ttl > old {
				b.ttl[k] = rr.Header().Ttl
			}
		}
	}
}

// TTL implements Bounds.
func (b *AuthBounds) TTL(rr dns.RR) (uint32, bool) {
	k := boundKey(rr)
	b.mu.Lock()
	v, ok := b.ttl[k]
	b.mu.Unlock()
	if ok {
		return v, true
	}
	t := rr.Header().Rrtype
	if sig, isSig := rr.(*dns.RRSIG); isSig {
		t = sig.TypeCovered
	}
	if t == dns.TypeOPT || rr.Header().Class != dns.ClassINET {
		return 0, false
	}
	b.Learn(rr.Header().Name, t)
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok = b.ttl[k]
	return v, ok
}
