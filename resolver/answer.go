package resolver

import (
	"errors"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/cache"
	"github.com/nodedns/nodedns/dnswire"
)

// ErrLoop marks an error of ForwardChecker.Check that reports a forwarding
// loop, so that the shed is counted as one.
var ErrLoop = errors.New("forwarding loop")

func isLoop(err error) bool { return errors.Is(err, ErrLoop) }

// shed answers a query at once because it cannot be kept or forwarded:
// stale if an entry is there, SERVFAIL otherwise. SERVFAIL, not REFUSED or
// silence: glibc and musl both move on at once after SERVFAIL (to the next
// server or search domain), while a drop costs the client its whole timeout
// (5 s by default) and musl handles REFUSED like a timeout.
func (s *Server) shed(wt *waiter, reason int, stale *cache.Entry) {
	s.metrics.shed[reason].Inc()
	s.shedTally.add(clientKey(wt.src))
	if stale != nil {
		s.answerStale(wt, stale, reason)
		return
	}
	s.answerError(wt, dns.RcodeServerFailure)
}

// answer writes ans to one waiter, shaped for its own query.
func (s *Server) answer(wt *waiter, ans Answer) {
	var q dnswire.Query
	now := s.now().UnixNano()
	if ans.Entry != nil && dnswire.ParseQuery(wt.pkt, &q) == nil {
		out := ans.Entry.AppendReply(nil, wt.pkt, &q, now, s.replyOptions(&q, wt.proto))
		s.countAndWrite(wt, out, q.QType, ans.Entry.Rcode())
		return
	}
	req := new(dns.Msg)
	if err := req.Unpack(wt.pkt); err != nil {
		s.countAndWrite(wt, appendHeaderOnly(nil, wt.pkt, dns.RcodeFormatError), 0, dns.RcodeFormatError)
		return
	}
	var m *dns.Msg
	switch {
	case ans.Entry != nil:
		var err error
		if m, err = ans.Entry.Msg(now); err != nil {
			s.answerError(wt, dns.RcodeServerFailure)
			return
		}
	case ans.Msg != nil:
		m = ans.Msg.Copy() // packReply changes it, and other waiters share it
	default:
		s.answerError(wt, dns.RcodeServerFailure)
		return
	}
	s.countAndWrite(wt, s.packReply(req, m, wt.proto), req.Question[0].Qtype, m.Rcode)
}

// answerStale writes a stale entry with the stale TTL to one waiter.
func (s *Server) answerStale(wt *waiter, e *cache.Entry, reason int) {
	var q dnswire.Query
	if dnswire.ParseQuery(wt.pkt, &q) != nil {
		s.answerError(wt, dns.RcodeServerFailure)
		return
	}
	s.metrics.staleServed[reason].Inc()
	opts := s.replyOptions(&q, wt.proto)
	opts.StaleTTL = staleTTL
	s.countAndWrite(wt, e.AppendReply(nil, wt.pkt, &q, s.now().UnixNano(), opts), q.QType, e.Rcode())
}

// answerError writes an error answer echoing the waiter's question.
func (s *Server) answerError(wt *waiter, rcode int) {
	var q dnswire.Query
	if dnswire.ParseQuery(wt.pkt, &q) == nil {
		s.countAndWrite(wt, dnswire.AppendError(nil, wt.pkt, &q, rcode), q.QType, rcode)
		return
	}
	req := new(dns.Msg)
	if err := req.Unpack(wt.pkt); err == nil && len(req.Question) == 1 {
		s.countAndWrite(wt, s.packError(req, rcode, wt.proto), req.Question[0].Qtype, rcode)
		return
	}
	s.countAndWrite(wt, appendHeaderOnly(nil, wt.pkt, rcode), 0, rcode)
}

func (s *Server) countAndWrite(wt *waiter, out []byte, qtype uint16, rcode int) {
	if wt.write == nil {
		return
	}
	wt.write(out)
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

// queryForKey rebuilds the query a cache key was made from, packed, for a
// prefetch.
func queryForKey(key []byte, udpSize uint16) ([]byte, bool) {
	name, qtype, qclass, do, cd, ok := dnswire.ParseKey(key)
	if !ok {
		return nil, false
	}
	qname, _, err := dns.UnpackDomainName(name, 0)
	if err != nil {
		return nil, false
	}
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.Question[0].Qclass = qclass
	m.CheckingDisabled = cd
	if do {
		m.SetEdns0(udpSize, true)
	}
	b, err := m.Pack()
	return b, err == nil
}
