package resolver

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// drainLimit bounds how long a server that handed its addresses over keeps
// answering what was queued on its sockets.
const drainLimit = time.Second

// handOver hands the listen addresses to another process serving them, if
// one does now or within HandOverWait: the UDP sockets leave their
// reuseport groups (handover_linux.go), and the queries queued on them are
// answered, as usual, before Shutdown stops reading. It reports whether it
// handed over.
func (s *Server) handOver(ctx context.Context) bool {
	if len(s.udp) == 0 {
		return false
	}
	addrs, ours := s.Addrs(), s.ownInodes()
	deadline := time.Now().Add(s.cfg.HandOverWait)
	if s.cfg.HandOverWait > 0 && !peersServe(addrs, ours) {
		s.log.Info("stopping: waiting for a new process to serve the listen addresses", zap.Duration("up_to", s.cfg.HandOverWait))
	}
	for !peersServe(addrs, ours) {
		if !time.Now().Before(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	start := time.Now()
	if err := s.leaveUDP(); err != nil {
		s.log.Warn("hand-over: could not leave the reuseport groups; stopping as usual", zap.Error(err))
		return false
	}
	for s.queuedUDP() && time.Since(start) < drainLimit {
		time.Sleep(5 * time.Millisecond)
	}
	s.metrics.handOvers.Inc()
	s.log.Info("handed the listen addresses over to the new process; the queries queued here were answered",
		zap.Duration("drained_in", time.Since(start)))
	return true
}
