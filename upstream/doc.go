// Package upstream forwards cache misses to upstream DNS servers.
//
// A node-local cache is only as available as the servers it forwards to, so
// this package is built around failure: every query has a hard deadline, a
// member that stops answering is taken out of rotation once a probe confirms
// it (failures of queries only raise a suspicion: a dead name says nothing
// about the server that recurses for it), is put back by a background probe
// as soon as it answers again, and a group whose members are all down fails at once
// instead of making every client wait for a timeout. Load is bounded the same
// way: each member has a cap on exchanges in flight, a member at its cap is
// skipped, and a group whose healthy members are all at their caps fails at
// once with [ErrOverloaded] rather than queueing a retry storm onto a slow
// upstream.
//
// The pieces are:
//
//   - [Remote]: one upstream server. UDP with a
//     fresh socket and random ID per query and strict reply matching
//     (anti-spoofing), falling back to TCP on truncation; or pooled persistent
//     TCP connections when forced.
//   - [Group]: a set of equivalent servers for some zones, with round-robin,
//     failover and health tracking.
//   - [Router]: picks the group for a query name by longest zone suffix.
//   - [Metrics]: Prometheus instruments shared by all of the above.
package upstream
