package resolver

import (
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/nodedns/nodedns/cache"
	"github.com/nodedns/nodedns/dnswire"
)

// replyTo is where the answer to a query goes that the fast path did not
// answer. Such a query may be answered from several goroutines: its
// reader's, a flight's leader, the stale answer timer, the sweeper, a step
// of a walk and, after a panic, its reader's recovery. Each sends through
// the query's replyTo, and only the first send is written: every query
// gets one answer, whichever comes first. Every transport makes one for
// each query it dispatches; a cache hit needs none, its reader writes it
// as the last thing it does with the query.
type replyTo struct {
	sent atomic.Bool
	// write writes the answer, from any goroutine. A nil answer ends the
	// query without one (not even its header could be read).
	write func([]byte)
	// now, when not nil, writes an answer given on the reader's goroutine
	// while the reader holds the query: the UDP reader adds it to its batch
	// of replies, so that an answer given at once costs no system call of
	// its own. It is dropped (nil) before the query is handed to another
	// goroutine: when it waits in a flight (addWaiter) or walks (startWalk).
	now func([]byte)
}

// send writes b as the query's answer, unless it has one already.
func (r *replyTo) send(b []byte) {
	if !r.sent.CompareAndSwap(false, true) {
		return
	}
	if r.now != nil {
		r.now(b)
		return
	}
	r.write(b)
}

// answer writes ans to one waiter, shaped for its own query.
func (s *Server) answer(wt *waiter, ans Answer) {
	e, err := s.entryOf(ans)
	if err != nil {
		s.log.Warn("rendering an answer failed", zap.Error(err))
		s.answerError(wt, dns.RcodeServerFailure)
		return
	}
	s.answerEntry(wt, e, 0)
}

// answerEntry writes e to one waiter; staleTTL, when not 0, replaces every
// TTL.
func (s *Server) answerEntry(wt *waiter, e *cache.Entry, staleTTL uint32) {
	q, ok := queryOf(wt.pkt)
	if !ok || q.Name == nil {
		s.answerError(wt, dns.RcodeFormatError)
		return
	}
	opts := s.replyOptions(&q, wt.proto)
	opts.StaleTTL = staleTTL
	s.countAndWrite(wt, e.AppendReply(nil, &q, s.now().UnixNano(), opts), q.QType, e.Rcode())
}

// answerStale writes a stale entry with the stale TTL to one waiter.
func (s *Server) answerStale(wt *waiter, e *cache.Entry, reason int) {
	s.metrics.staleServed[reason].Inc()
	s.answerEntry(wt, e, staleTTL)
}

// answerError writes an error answer echoing the waiter's question.
func (s *Server) answerError(wt *waiter, rcode int) {
	q, ok := queryOf(wt.pkt)
	if !ok {
		return // shorter than a header: nothing to answer to
	}
	s.countAndWrite(wt, s.appendError(nil, &q, rcode), q.QType, rcode)
}

func (s *Server) countAndWrite(wt *waiter, out []byte, qtype uint16, rcode int) {
	if wt.to == nil {
		return
	}
	wt.to.send(out)
	if wt.internal {
		return
	}
	d := time.Since(wt.start)
	s.metrics.countRequest(wt.proto, qtype, rcode)
	s.metrics.duration[wt.proto].Observe(d.Seconds())
	if s.sampleQuery() {
		var q dnswire.Query
		if dnswire.ParseQuery(wt.pkt, &q) == nil {
			s.logQuery(wt.src, wt.proto, q.Name, q.QType, rcode, false, d)
		}
	}
}
