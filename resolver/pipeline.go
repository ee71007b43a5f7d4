package resolver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/cache"
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
	// Refresh asks for a fresh answer even when the cache has one: a
	// prefetch.
	Refresh bool
}

// Answer is what the pipeline produced: a cache entry, which the edge
// renders exactly as it renders a cache hit, or a message for replies that
// were not cached.
type Answer struct {
	Entry *cache.Entry
	Msg   *dns.Msg
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

// Forwarder sends a query to the upstream that serves its name.
// upstream.Router satisfies it through ForwarderFunc in cmd/nodedns.
type Forwarder interface {
	Forward(ctx context.Context, req *dns.Msg) (*dns.Msg, error)
}

// ForwarderFunc adapts a function to Forwarder.
type ForwarderFunc func(ctx context.Context, req *dns.Msg) (*dns.Msg, error)

// Forward calls f.
func (f ForwarderFunc) Forward(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
	return f(ctx, req)
}

// chain builds the miss pipeline once. The stages, in order:
//
//  1. cacheStage: a miss may have been filled by another query since the
//     fast path looked; replies from upstream are stored here, and the
//     stored entry (clamped TTLs, no AA, our OPT) is what the client gets.
//  2. forwardStage: the query goes to the upstream group for its zone.
func chain(c *cache.Cache, fwd Forwarder, now func() time.Time) Handler {
	stages := []Middleware{
		cacheStage(c, now),
	}
	var h Handler = forwardStage(fwd)
	for i := len(stages) - 1; i >= 0; i-- {
		h = stages[i](h)
	}
	return h
}

func cacheStage(c *cache.Cache, now func() time.Time) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, req *Request) (Answer, error) {
			if req.Key == nil {
				return next.Resolve(ctx, req)
			}
			if e, ok := c.Get(req.Key); ok && e.Fresh(now().UnixNano()) && !req.Refresh {
				return Answer{Entry: e}, nil
			}
			a, err := next.Resolve(ctx, req)
			if err != nil || a.Msg == nil {
				return a, err
			}
			if a.Msg.Rcode == dns.RcodeServerFailure {
				// A failure must not replace an answer still good to serve,
				// fresh (a failed prefetch) or stale (RFC 8767).
				t := now().UnixNano()
				if old, ok := c.Get(req.Key); ok && (old.Fresh(t) || c.StaleUsable(old, t)) {
					return a, nil
				}
			}
			e, err := c.Store(req.Key, a.Msg, now())
			if err != nil {
				return a, fmt.Errorf("cache: %w", err)
			}
			if e != nil {
				return Answer{Entry: e}, nil
			}
			return a, nil
		})
	}
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
		return Answer{Msg: resp}, nil
	})
}
