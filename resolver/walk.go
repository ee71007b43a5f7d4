package resolver

import (
	"net/netip"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/nodedns/nodedns/cache"
	"github.com/nodedns/nodedns/dnswire"
	"github.com/nodedns/nodedns/reply"
)

// A search walk, finished on the node (autopath). A client with ndots:5
// looking up api.example.com asks api.example.com.<first search domain>
// first, then each other search domain, then the name itself: four round
// trips for A and four for AAAA, one after the other. When a Walker knows
// the client's search list (package search does, for a pod of this node,
// from the Kubernetes view), the first of those queries starts the same
// walk here: each name is answered from the cache or a local stage where
// it can be (a denial costs nothing), forwarded where it must be, and the
// first that exists ends the walk. The client gets, for its first query, a
// CNAME from the name it asked to the one that exists, and that name's
// records: it stops there. If none exists it gets the plain NXDOMAIN, and
// its own walk that follows is answered from what the walk here cached.
//
// The answer depends on who asks: it is never cached or shared with
// another client's query (each walk is its own), and a denial in the cache
// is not served to a client that walks by the fast path (miss.go hands
// it here). Queries with DO or CD get plain answers: a CNAME made here
// cannot be signed.

// Walker knows the search lists of some clients.
type Walker interface {
	// Knows reports whether the client's search list is known, so that its
	// queries may start walks. The fast path asks it: it must be cheap.
	Knows(client netip.Addr) bool
	// Walk returns the names the client's stub resolver would ask in turn
	// for qname, qname first; ok is false when it would not walk (qname is
	// not the first name of a walk, or every later name is a sure denial).
	Walk(client netip.Addr, qname string) (names []string, ok bool)
}

// walks reports whether queries from src may start a walk, before the
// query is read in full: the fast path and dispatch ask it.
func (s *Server) walks(src netip.AddrPort) bool {
	return s.cfg.Walker != nil && s.cfg.Walker.Knows(src.Addr())
}

// walk is one search walk on behalf of a client's query.
type walk struct {
	s      *Server
	client *waiter  // the client's query
	req    *dns.Msg // the same, unpacked
	names  []string // what the client would ask, in order; names[0] is what it asked
	i      int      // the name being asked
	plain  Answer   // the answer to names[0] (a denial once i > 0)
	ttl    uint32   // the shortest TTL of the denials walked past
	// deadline ends the walk: the client's query gets the plain answer when
	// a name is still to be asked then. The names forwarded count their
	// time from the client's query, as its own would.
	deadline time.Time
}

// startWalk starts a walk for req when it is the first query of a search
// walk by a client whose search list the Walker knows; false leaves the
// query to the plain path.
func (s *Server) startWalk(imm *waiter, req *dns.Msg) bool {
	if req.CheckingDisabled || len(req.Question) != 1 {
		return false
	}
	if opt := req.IsEdns0(); opt != nil && opt.Do() {
		return false
	}
	q := req.Question[0]
	names, ok := s.cfg.Walker.Walk(imm.src.Addr(), q.Name)
	if !ok || len(names) < 2 {
		return false
	}
	kept, req, ok := keepForWalk(imm.pkt, req)
	if !ok {
		return false
	}
	wk := &walk{
		s:        s,
		client:   &waiter{pkt: kept, src: imm.src, proto: imm.proto, to: imm.to, start: imm.start},
		req:      req,
		names:    names,
		ttl:      ^uint32(0),
		deadline: imm.start.Add(s.tun.Load().requestTimeout),
	}
	// The walk answers from whichever goroutine takes its last step.
	imm.to.now = nil
	wk.next()
	return true
}

// next asks the names in turn from the current one, as long as the node
// can answer them; it returns when the walk is over or waits upstream.
// Steps run one after the other, each resumed by the answer to the last:
// a walk is never touched by two goroutines at once.
func (wk *walk) next() {
	s := wk.s
	for ; wk.i < len(wk.names); wk.i++ {
		if wk.i > 0 && time.Now().After(wk.deadline) {
			wk.finish(walkAborted, Answer{})
			return
		}
		sub, pkt, key, ok := wk.query(wk.names[wk.i])
		if !ok {
			continue // too long a name: the client skips it too
		}
		ans, err := s.local.Resolve(s.ctx, &Request{Msg: sub, Key: key, Client: wk.client.src, Proto: "tcp"})
		if err != nil {
			wk.finish(walkAborted, Answer{})
			return
		}
		if ans.Forward {
			wk.forward(wk.names[wk.i], pkt, key)
			return
		}
		if !wk.take(ans, pkt) {
			return
		}
	}
	wk.finish(walkNone, Answer{})
}

// query builds the query for one name of the walk: the client's, with the
// name replaced.
func (wk *walk) query(name string) (*dns.Msg, []byte, []byte, bool) {
	sub := wk.req.Copy()
	sub.Question[0].Name = name
	sub.Id = 0
	pkt, err := sub.Pack()
	if err != nil {
		return nil, nil, nil, false
	}
	var q dnswire.Query
	if dnswire.ParseQuery(pkt, &q) != nil {
		return nil, nil, nil, false
	}
	key := dnswire.AppendKey(nil, q.Name, q.QType, q.QClass, q.DO, q.CD())
	return sub, pkt, key, true
}

// forward sends one name of the walk upstream; its answer resumes the
// walk.
func (wk *walk) forward(name string, pkt, key []byte) {
	wk.s.forwardStep(wk.client, name, pkt, key, &replyTo{write: func(out []byte) { wk.resume(out, pkt) }})
}

// resume takes the upstream's answer to the name asked and goes on.
func (wk *walk) resume(out, pkt []byte) {
	m := new(dns.Msg)
	if err := m.Unpack(out); err != nil {
		wk.finish(walkAborted, Answer{})
		return
	}
	if wk.take(Answer{Msg: m}, pkt) {
		wk.i++
		wk.next()
	}
}

// take judges the answer to names[i]; true goes on to the next name.
func (wk *walk) take(ans Answer, pkt []byte) bool {
	rcode := ans.rcode()
	switch {
	case wk.i == 0 && rcode != dns.RcodeNameError:
		wk.finish(walkExists, ans) // the client's own name: its plain answer
		return false
	case wk.i == 0:
		wk.plain = ans
	case rcode == dns.RcodeSuccess:
		found, err := wk.s.msgOf(ans, pkt)
		if err != nil {
			wk.finish(walkAborted, Answer{})
			return false
		}
		wk.finish(walkFound, Answer{Msg: wk.cname(found)})
		return false
	case rcode != dns.RcodeNameError:
		wk.finish(walkAborted, Answer{}) // the client's own walk will meet it
		return false
	}
	wk.ttl = min(wk.ttl, wk.s.denialTTL(ans))
	return true
}

// cname is the client's answer when names[i] exists: a CNAME from the name
// it asked to that one, then that name's answer. The CNAME lives no longer
// than the denials it stands for.
func (wk *walk) cname(found *dns.Msg) *dns.Msg {
	return reply.CNAME(wk.req, wk.names[wk.i], wk.ttl, found)
}

// finish answers the client: with ans, or with the plain answer to its own
// name when ans is empty.
func (wk *walk) finish(result int, ans Answer) {
	s := wk.s
	s.metrics.autopath[result].Inc()
	if ce := s.log.Check(zap.DebugLevel, "autopath"); ce != nil {
		ce.Write(zap.String("qname", wk.names[0]), zap.Stringer("client", wk.client.src),
			zap.String("result", walkResultNames[result]), zap.String("answered_by", wk.names[min(wk.i, len(wk.names)-1)]))
	}
	if ans.Entry == nil && ans.Msg == nil {
		ans = wk.plain
	}
	if ans.Entry == nil && ans.Msg == nil {
		s.answerError(wk.client, dns.RcodeServerFailure) // aborted before the client's own name was answered
		return
	}
	s.answer(wk.client, ans)
}

// msgOf unpacks an answer to the query pkt, with its TTLs as a client
// would get them now. A cache entry holds only its wire form, which the
// renderer writes; a walk that found a name (once per name and client
// search list, then cached) pays for unpacking it rather than the cache
// keeping a second form of every entry.
func (s *Server) msgOf(ans Answer, pkt []byte) (*dns.Msg, error) {
	if ans.Entry == nil {
		return ans.Msg, nil
	}
	q, ok := queryOf(pkt)
	if !ok || q.Name == nil {
		return nil, errNoAnswer
	}
	out := ans.Entry.AppendReply(nil, &q, s.now().UnixNano(), cache.ReplyOptions{MaxSize: dns.MaxMsgSize, UDPSize: s.cfg.MaxUDPSize})
	m := new(dns.Msg)
	return m, m.Unpack(out)
}

// denialTTL is how long a denial is good for: its entry's remaining life,
// or the TTL of the SOA it carries.
func (s *Server) denialTTL(ans Answer) uint32 {
	if ans.Entry != nil {
		return uint32(max(ans.Entry.TTL(s.now().UnixNano()), 0) / time.Second)
	}
	ttl := ^uint32(0)
	for _, rr := range ans.Msg.Ns {
		ttl = min(ttl, rr.Header().Ttl)
	}
	if ttl == ^uint32(0) {
		return 0 // a denial without an SOA is not to be cached (RFC 2308 section 5)
	}
	return ttl
}
