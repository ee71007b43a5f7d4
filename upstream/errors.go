package upstream

import (
	"errors"
	"fmt"
)

// ErrNoHealthyUpstream is returned by [Group.Exchange] when every member of the
// group is marked down. It is returned without touching the network so the
// caller can answer SERVFAIL at once rather than after a timeout per member.
var ErrNoHealthyUpstream = errors.New("no healthy upstream")

// ErrOverloaded is returned by [Group.Exchange] when every healthy member
// already has MaxInflight exchanges in flight. It is returned at once, without
// queueing, so that a retry storm against a slow upstream costs a bounded
// number of sockets and goroutines and the caller can fall back (serve stale,
// SERVFAIL) immediately. It says nothing about the members' health, which is
// why they are not marked down.
var ErrOverloaded = errors.New("all healthy upstreams at their in-flight limit")

// ErrClosed is returned by [Group.Exchange] after [Group.Close], so that a
// request racing with a configuration reload fails clearly instead of quietly
// opening connections that nobody will close.
var ErrClosed = errors.New("upstream group closed")

// Reasons used in [ExchangeError.Reason] and in the `reason` label of
// nodedns_upstream_errors_total. The set is closed so that the metric has a
// bounded number of series.
const (
	// ReasonTimeout: no acceptable reply before the deadline.
	ReasonTimeout = "timeout"
	// ReasonNetwork: dial, write or read failed (refused, reset, unreachable...).
	ReasonNetwork = "network"
	// ReasonMismatch: a reply whose ID or question did not match the query.
	// As a per-exchange reason it means too many such replies were received.
	ReasonMismatch = "mismatch"
	// ReasonMalformed: a reply that could not be parsed.
	ReasonMalformed = "malformed"
	// ReasonCanceled: the caller canceled the context.
	ReasonCanceled = "canceled"
	// ReasonBadRequest: the request itself could not be sent (e.g. unpackable).
	ReasonBadRequest = "bad_request"
)

var allReasons = []string{ReasonTimeout, ReasonNetwork, ReasonMismatch, ReasonMalformed, ReasonCanceled, ReasonBadRequest}

// ExchangeError describes one failed exchange with one upstream. It is typed
// so that callers (and [Group]) can decide with errors.As whether the failure
// says something about the upstream's health (timeouts, network errors) or not
// (a canceled client, a bad request).
type ExchangeError struct {
	Upstream string // host:port of the upstream
	Network  string // "udp" or "tcp"
	Reason   string // one of the Reason* constants
	Err      error  // underlying error
}

// Error implements error in the form `exchanging with ADDR over NET: ERR`.
func (e *ExchangeError) Error() string {
	return fmt.Sprintf("exchanging with %s over %s: %v", e.Upstream, e.Network, e.Err)
}

// Unwrap exposes the underlying error to errors.Is/As (e.g. context.Canceled).
func (e *ExchangeError) Unwrap() error { return e.Err }

// Timeout reports whether the exchange failed because no acceptable reply
// arrived in time, mirroring net.Error so generic timeout checks work.
func (e *ExchangeError) Timeout() bool { return e.Reason == ReasonTimeout }

// upstreamFault reports whether the error is evidence that the upstream is
// unhealthy, as opposed to a caller-side problem.
func (e *ExchangeError) upstreamFault() bool {
	switch e.Reason {
	case ReasonTimeout, ReasonNetwork, ReasonMismatch, ReasonMalformed:
		return true
	}
	return false
}
