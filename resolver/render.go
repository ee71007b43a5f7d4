package resolver

import (
	"errors"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/cache"
	"github.com/nodedns/nodedns/dnswire"
)

// Every reply nodedns sends is rendered here, from the query's state as
// dnswire.Query holds it (ID, flags, question as asked, EDNS), in one of two
// ways: an answer with records is a cache entry, stored or transient,
// rendered by cache.Entry.AppendReply (TTLs counted down, whole RRsets cut
// to the client's size, our OPT); an error is dnswire.AppendError (the
// question echoed, an OPT when the query had one). Stages never pack
// messages for clients.

// replyOptions is the size limit for q's reply: 65535 over TCP; over UDP
// the client's EDNS size (at least 512) capped by ours, or 512 without EDNS
// (RFC 6891 section 6.2.5).
func (s *Server) replyOptions(q *dnswire.Query, proto int) cache.ReplyOptions {
	o := cache.ReplyOptions{MaxSize: dns.MaxMsgSize, UDPSize: s.cfg.MaxUDPSize}
	if proto == protoUDP {
		o.MaxSize = 512
		if q.EDNS {
			o.MaxSize = int(min(max(q.UDPSize, 512), s.cfg.MaxUDPSize))
		}
	}
	return o
}

// appendError appends an error reply to q to dst.
func (s *Server) appendError(dst []byte, q *dnswire.Query, rcode int) []byte {
	return dnswire.AppendError(dst, q, rcode, s.cfg.MaxUDPSize)
}

// queryOf reads what rendering needs from a query: the fast parser's view,
// or, for a query it leaves to the full parser, the same built from
// miekg/dns's; a query whose question cannot be read gives its header alone
// (Name nil). ok is false when not even the header can be read.
func queryOf(pkt []byte) (q dnswire.Query, ok bool) {
	err := dnswire.ParseQuery(pkt, &q)
	switch {
	case err == nil:
		return q, true
	case errors.Is(err, dnswire.ErrShort):
		return q, false
	case errors.Is(err, dnswire.ErrSlowPath):
		m := new(dns.Msg)
		if m.Unpack(pkt) == nil && len(m.Question) == 1 {
			if full, ok := queryFromMsg(m, q.Flags); ok {
				return full, true
			}
		}
	}
	return dnswire.Query{ID: q.ID, Flags: q.Flags}, true
}

// queryFromMsg builds the rendering state of a query the full parser read;
// flags are its header flags as sent.
func queryFromMsg(m *dns.Msg, flags uint16) (dnswire.Query, bool) {
	qq := m.Question[0]
	name := make([]byte, dnswire.MaxNameLen+1)
	n, err := dns.PackDomainName(dns.Fqdn(qq.Name), name, 0, nil, false)
	if err != nil {
		return dnswire.Query{}, false
	}
	q := dnswire.Query{ID: m.Id, Flags: flags, Name: name[:n], QType: qq.Qtype, QClass: qq.Qclass}
	q.QEnd = dnswire.HeaderLen + n + 4
	if opt := m.IsEdns0(); opt != nil {
		q.EDNS, q.UDPSize, q.DO, q.EDNSVersion = true, opt.UDPSize(), opt.Do(), opt.Version()
	}
	return q, true
}

// entryOf is the entry that renders ans: the stored one, or a transient one
// for an answer that was not cached.
func (s *Server) entryOf(ans Answer) (*cache.Entry, error) {
	if ans.Entry != nil {
		return ans.Entry, nil
	}
	if ans.Msg == nil {
		return nil, errNoAnswer
	}
	return cache.NewTransient(ans.Msg, s.now())
}
