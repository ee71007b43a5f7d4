// Package admission decides which clients may send work upstream.
//
// In a retry storm a handful of pods (a crash-looping job, a misconfigured
// search path) can produce most of a node's cache misses. Every miss costs an
// upstream exchange, and the upstream's capacity is shared by every pod on
// the node, so without per-client fairness the noisiest pod decides how
// everyone else's queries fare. [ClientLimiter] gives each client address a
// token bucket for upstream-bound work: the resolver asks it only on the
// miss path (cache hits are cheap and are never limited), and a denied
// client is answered from what the node already has (stale data) or refused,
// while quiet clients keep their full share.
//
// Memory is bounded regardless of traffic: the limiter tracks at most
// MaxClients addresses, because UDP source addresses can be spoofed and a
// flood of distinct sources must not grow the table. Eviction is a
// two-segment LRU (new addresses enter a probation segment and only a second
// query promotes them), so a flood of one-off spoofed sources churns the
// probation segment and does not evict the real, repeatedly querying clients
// whose buckets matter; an evicted client simply starts again with a full
// bucket, which errs towards serving. Per-client denial counts live in the
// same bounded table, which is why the top-N metric can never have more than
// TopN series or count more than MaxClients clients.
package admission
