package resolver

import "time"

// sweep expires queued flights until the server stops.
func (s *Server) sweep() {
	defer s.readers.Done()
	// Every 10 ms: a queued query waits at most max_queue_wait plus that.
	period := 10 * time.Millisecond
	t := time.NewTicker(period)
	defer t.Stop()
	var buf []*flight
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.stopSweep:
			return
		case <-t.C:
			buf = s.expireQueued(time.Now(), buf)
		}
	}
}
