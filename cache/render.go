package cache

import (
	"encoding/binary"

	"github.com/nodedns/nodedns/dnswire"
)

// ReplyOptions says how to shape a reply for one client.
type ReplyOptions struct {
	// MaxSize is the largest reply the transport takes: the client's EDNS
	// UDP size (capped by ours) or 512 over UDP, 65535 over TCP.
	MaxSize int
	// UDPSize is the payload size nodedns advertises in its OPT record.
	UDPSize uint16
	// StaleTTL, when not zero, replaces every TTL of the reply: a stale
	// answer goes out with a short TTL (RFC 8767 section 4 suggests 30 s)
	// so that clients come back soon for a fresh one.
	StaleTTL uint32
}

// AppendReply appends the reply to the query q to dst: the stored packet
// with the query's ID, RD and CD bits and question name (so the case the
// client used comes back), AD only when the query set AD or DO (RFC 6840
// section 5.8; the key does not tell AD apart), TTLs counted down to now
// (UnixNano), an OPT record when the query had one, and cut to whole RRsets
// that fit opts.MaxSize, with TC when answer or authority data had to go
// (dnswire.TruncateRRsets). It does not allocate when dst has room.
func (e *Entry) AppendReply(dst []byte, q *dnswire.Query, now int64, opts ReplyOptions) []byte {
	start := len(dst)
	dst = append(dst, e.msg()...)
	r := dst[start:]
	dnswire.SetID(r, q.ID)
	f := dnswire.Flags(r)&^(dnswire.FlagRD|dnswire.FlagCD) | q.Flags&(dnswire.FlagRD|dnswire.FlagCD)
	if !q.DO && q.Flags&dnswire.FlagAD == 0 {
		f &^= dnswire.FlagAD
	}
	dnswire.SetFlags(r, f)
	copy(r[dnswire.HeaderLen:], q.Name) // same length: the key matched

	elapsed := e.elapsed(now)
	refs := e.ttlRefs()
	for p := 0; p < len(refs); p += ttlRefLen {
		off, ttl := ttlRef(refs, p)
		v := int64(ttl) - elapsed
		if v < 0 {
			v = 0
		}
		if opts.StaleTTL != 0 {
			v = int64(opts.StaleTTL)
		}
		binary.BigEndian.PutUint32(r[off:], uint32(v))
	}
	optLen := 0
	if q.EDNS {
		optLen = dnswire.OPTLen
	}
	dst = dst[:start+len(dnswire.TruncateRRsets(r, e.qEnd(), opts.MaxSize-optLen))]
	if q.EDNS {
		dst = dnswire.AppendOPT(dst, start, opts.UDPSize, 0, q.DO)
	}
	return dst
}
