package resolver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/cache"
	"github.com/nodedns/nodedns/reply"
	"github.com/nodedns/nodedns/upstream"
)

// Request is one client query on its way through the pipeline. It is built
// once at the wire edge; stages read it and never change it.
type Request struct {
	// Msg is the unpacked query. Stages must not modify it.
	Msg *dns.Msg
	// Key is the cache key (dnswire.AppendKey), or nil when the query must
	// neither be answered from the cache nor stored in it.
	Key []byte
	// Client is the source address and port of the query.
	Client netip.AddrPort
	// Proto is "udp" or "tcp".
	Proto string
}

// Answer is what a stage produced: a cache entry, which the edge renders
// exactly as it renders a cache hit, or a message for replies that were not
// cached, or, from the local half of the pipeline, Forward: no local stage
// could answer, the query must go upstream.
type Answer struct {
	Entry   *cache.Entry
	Msg     *dns.Msg
	Forward bool
}

// rcode returns the answer's response code, or -1 for an empty answer.
func (a Answer) rcode() int {
	switch {
	case a.Entry != nil:
		return a.Entry.Rcode()
	case a.Msg != nil:
		return a.Msg.Rcode
	}
	return -1
}

// Handler is one stage of the pipeline that answers cache misses.
type Handler interface {
	Resolve(ctx context.Context, req *Request) (Answer, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request) (Answer, error)

// Resolve calls f.
func (f HandlerFunc) Resolve(ctx context.Context, req *Request) (Answer, error) { return f(ctx, req) }

// Middleware wraps a stage around the next one.
type Middleware func(next Handler) Handler

// Forwarder sends a query to the upstream that serves its name;
// upstream.Forwarder is the one nodedns uses.
type Forwarder interface {
	Forward(ctx context.Context, req *dns.Msg) (*dns.Msg, error)
}

// ForwarderFunc adapts a function to Forwarder.
type ForwarderFunc func(ctx context.Context, req *dns.Msg) (*dns.Msg, error)

// Forward calls f.
func (f ForwarderFunc) Forward(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
	return f(ctx, req)
}

// ErrLoop marks an error of ForwardChecker.Check that reports a forwarding
// loop, so that the shed is counted as one. It is package upstream's: its
// groups report their loops with it.
var ErrLoop = upstream.ErrLoop

// ForwardChecker is implemented by forwarders that know, before a query is
// admitted, that forwarding it would fail at once. forward then answers on
// the reader's goroutine, within its batch, without taking a slot.
type ForwardChecker interface {
	// Check returns an error when forwarding qname would fail at once:
	// every upstream of its group is down, or the group forwards in a loop
	// (an error wrapping ErrLoop).
	Check(qname string) error
	// IsLoopProbe reports whether qname, asked by src, is one of nodedns's
	// own loop probes that came back to it, and records the loop.
	IsLoopProbe(qname string, src netip.Addr) bool
}

// chain builds the two halves of the miss pipeline once.
//
// The local half runs on the reader's goroutine for every query the fast
// path could not answer; its stages never block and never leave the node:
//
//  1. cacheStage: another query may have filled the entry since the fast
//     path looked; answers a later stage synthesizes are stored here, so
//     that the next identical query is a fast-path hit.
//  2. the local stages of Config.Local, in order (package search's: names
//     under a cluster domain that cannot exist get NXDOMAIN, empty
//     non-terminals NODATA, from the node). After the cache stage, which
//     stores their answers; before admission, so that a name answered
//     here is never queued or shed.
//  3. upstreamNeeded: nothing local answered; the query goes to admission
//     (fair.go) and, on a slot, to the remote half.
//
// The remote half runs on a leader goroutine holding a slot:
//
//  1. storeStage: stores the upstream's reply; the stored entry (clamped
//     TTLs, no AA, our OPT) is what every waiting client gets.
//  2. minimalANY: one RRset of an answer to ANY (RFC 8482); before the
//     store, though ANY is never cached, so that the rule has one place.
//  3. forwardStage: the query goes to the upstream group for its zone.
func chain(c *cache.Cache, fwd Forwarder, now func() time.Time, locals []Middleware) (local, remote Handler) {
	build := func(stages []Middleware, last Handler) Handler {
		h := last
		for i := len(stages) - 1; i >= 0; i-- {
			h = stages[i](h)
		}
		return h
	}
	stages := append([]Middleware{cacheStage(c, now)}, locals...)
	local = build(stages, upstreamNeeded)
	remote = build([]Middleware{storeStage(c, now), minimalANY}, forwardStage(fwd))
	return local, remote
}

// upstreamNeeded ends the local half: no stage could answer.
var upstreamNeeded = HandlerFunc(func(context.Context, *Request) (Answer, error) {
	return Answer{Forward: true}, nil
})

// minimalANY keeps one RRset of an upstream's answer to ANY
// (reply.OneRRset, RFC 8482): ANY is a diagnostic at best and an
// amplification vector at worst, and no stub needs the whole set.
func minimalANY(next Handler) Handler {
	return HandlerFunc(func(ctx context.Context, req *Request) (Answer, error) {
		a, err := next.Resolve(ctx, req)
		if err != nil || a.Msg == nil || req.Msg.Question[0].Qtype != dns.TypeANY {
			return a, err
		}
		return Answer{Msg: reply.OneRRset(a.Msg)}, nil
	})
}

func cacheStage(c *cache.Cache, now func() time.Time) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, req *Request) (Answer, error) {
			if req.Key != nil {
				if e, ok := c.Get(req.Key); ok && e.Fresh(now().UnixNano()) {
					return Answer{Entry: e}, nil
				}
			}
			a, err := next.Resolve(ctx, req)
			if err != nil || a.Msg == nil || req.Key == nil {
				return a, err
			}
			return store(c, req.Key, a, now)
		})
	}
}

func storeStage(c *cache.Cache, now func() time.Time) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, req *Request) (Answer, error) {
			a, err := next.Resolve(ctx, req)
			if err != nil || a.Msg == nil || req.Key == nil {
				return a, err
			}
			if a.Msg.Rcode == dns.RcodeServerFailure && keepsOnFailure(c, req.Key, now().UnixNano()) {
				return a, nil
			}
			return store(c, req.Key, a, now)
		})
	}
}

// store caches a.Msg under key and returns the stored entry as the answer,
// or a as it is when the policy does not cache it.
func store(c *cache.Cache, key []byte, a Answer, now func() time.Time) (Answer, error) {
	e, err := c.Store(key, a.Msg, now())
	if err != nil {
		return a, fmt.Errorf("cache: %w", err)
	}
	if e != nil {
		return Answer{Entry: e}, nil
	}
	return a, nil
}

// errNoAnswer is returned when an upstream exchange produced neither a
// reply nor an error; it should not happen and is answered with SERVFAIL.
var errNoAnswer = errors.New("upstream returned no reply")

func forwardStage(fwd Forwarder) Handler {
	return HandlerFunc(func(ctx context.Context, req *Request) (Answer, error) {
		resp, err := fwd.Forward(ctx, req.Msg)
		if err != nil {
			return Answer{}, fmt.Errorf("forward: %w", err)
		}
		if resp == nil {
			return Answer{}, fmt.Errorf("forward: %w", errNoAnswer)
		}
		if resp.Rcode == dns.RcodeRefused {
			// An upstream that refuses is failing us, whatever its reason
			// (CoreDNS's max_concurrent answers REFUSED under overload):
			// SERVFAIL, so that the stale answer, the short SERVFAIL cache
			// and the client's next server all apply. musl treats a
			// REFUSED passed through like a timeout.
			return Answer{Msg: reply.Error(req.Msg, dns.RcodeServerFailure)}, nil
		}
		return Answer{Msg: resp}, nil
	})
}
