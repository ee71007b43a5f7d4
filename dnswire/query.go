// Package dnswire reads and patches DNS messages in their wire form without
// unpacking them. It is the part of the hot path that touches untrusted bytes
// before anything else does, so every function here is bounds-checked, never
// allocates and is covered by a fuzz target.
//
// Only the common case is handled here: one question, an optional OPT record,
// nothing else. Everything unusual is reported as ErrSlowPath and left to the
// full parser of github.com/miekg/dns, which is slower but complete.
package dnswire

import (
	"encoding/binary"
	"errors"
)

// Header sizes and field offsets (RFC 1035 section 4.1.1).
const (
	HeaderLen = 12

	offID      = 0
	offFlags   = 2
	offQDCount = 4
	offANCount = 6
	offNSCount = 8
	offARCount = 10
)

// Header flag bits (RFC 1035 section 4.1.1, RFC 4035 section 3.2 for AD/CD).
const (
	FlagQR = 1 << 15
	FlagAA = 1 << 10
	FlagTC = 1 << 9
	FlagRD = 1 << 8
	FlagRA = 1 << 7
	FlagAD = 1 << 5
	FlagCD = 1 << 4

	opcodeMask = 0xF << 11
	rcodeMask  = 0xF
)

// Types and classes the fast path needs to recognise.
const (
	TypeOPT   = 41
	TypeRRSIG = 46
	TypeAXFR  = 252
	TypeIXFR  = 251
	TypeANY   = 255
	ClassIN   = 1

	// optionECS is the EDNS Client Subnet option (RFC 7871): a query that
	// carries it asks for an answer tailored to a subnet, so the answer must
	// not come from, or go into, a cache shared by every client.
	optionECS = 8

	// EDNS options whose contents no parser checks (RFC 5001, 7873, 7830):
	// the fast path accepts them as they are.
	optionNSID    = 3
	optionCookie  = 10
	optionPadding = 12
	// optionKeepalive is edns-tcp-keepalive (RFC 7828), empty in queries.
	optionKeepalive = 11
)

// Maximum lengths from RFC 1035 section 2.3.4.
const (
	MaxNameLen  = 255
	maxLabelLen = 63
)

// MaxKeyLen is the largest key AppendKey can produce.
const MaxKeyLen = MaxNameLen + 5

// Errors returned by ParseQuery. ErrShort and ErrFormat mean the packet is
// malformed; ErrSlowPath means it may be fine but needs the full parser.
var (
	ErrShort    = errors.New("dnswire: packet shorter than a DNS header")
	ErrFormat   = errors.New("dnswire: malformed question")
	ErrSlowPath = errors.New("dnswire: query needs the full parser")
)

// Query is what the hot path needs to know about a request. The byte slices
// point into the packet that was parsed: they are valid only as long as it is.
type Query struct {
	ID     uint16
	Flags  uint16
	Name   []byte // question name in wire form, exactly as asked (case kept)
	QType  uint16
	QClass uint16
	// QEnd is the offset just past the question section.
	QEnd int

	// EDNS is true when the query carried an OPT record (RFC 6891).
	EDNS        bool
	EDNSVersion uint8
	UDPSize     uint16 // as advertised by the client; 0 without EDNS
	DO          bool   // DNSSEC OK (RFC 3225)
	ECS         bool   // an EDNS Client Subnet option was present
}

// Opcode returns the query's opcode.
func (q *Query) Opcode() int { return int(q.Flags&opcodeMask) >> 11 }

// CD reports whether the client set Checking Disabled.
func (q *Query) CD() bool { return q.Flags&FlagCD != 0 }

// RD reports whether the client asked for recursion.
func (q *Query) RD() bool { return q.Flags&FlagRD != 0 }

// ReadHeaderID returns the ID of a packet long enough to have a header.
func ReadHeaderID(pkt []byte) (uint16, bool) {
	if len(pkt) < HeaderLen {
		return 0, false
	}
	return binary.BigEndian.Uint16(pkt[offID:]), true
}

// ParseQuery reads the header, the single question and an optional OPT
// record of a request. It returns ErrSlowPath for anything outside the
// common case (responses, other opcodes, several questions, records in the
// answer or authority sections, compression in the question, extra
// additional records, EDNS versions other than 0, EDNS options other than
// NSID, COOKIE, PADDING, keepalive and ECS, bytes after the last record),
// so that the caller can hand the packet to the full parser, which gives the
// precise answer (FORMERR, NOTIMP, BADVERS...).
func ParseQuery(pkt []byte, q *Query) error {
	if len(pkt) < HeaderLen {
		return ErrShort
	}
	q.ID = binary.BigEndian.Uint16(pkt[offID:])
	q.Flags = binary.BigEndian.Uint16(pkt[offFlags:])
	if q.Flags&FlagQR != 0 || q.Opcode() != 0 {
		return ErrSlowPath
	}
	if binary.BigEndian.Uint16(pkt[offQDCount:]) != 1 ||
		binary.BigEndian.Uint16(pkt[offANCount:]) != 0 ||
		binary.BigEndian.Uint16(pkt[offNSCount:]) != 0 {
		return ErrSlowPath
	}
	arcount := binary.BigEndian.Uint16(pkt[offARCount:])
	if arcount > 1 {
		return ErrSlowPath
	}
	end, err := scanName(pkt, HeaderLen)
	if err != nil {
		return err
	}
	if end+4 > len(pkt) {
		return ErrFormat
	}
	q.Name = pkt[HeaderLen:end]
	q.QType = binary.BigEndian.Uint16(pkt[end:])
	q.QClass = binary.BigEndian.Uint16(pkt[end+2:])
	q.QEnd = end + 4
	q.EDNS, q.EDNSVersion, q.UDPSize, q.DO, q.ECS = false, 0, 0, false, false
	if arcount == 0 {
		if q.QEnd != len(pkt) {
			return ErrSlowPath // trailing bytes: let the full parser judge, as parseOPT does
		}
		return nil
	}
	return parseOPT(pkt, q.QEnd, q)
}

// scanName checks an uncompressed name starting at off and returns the offset
// just past it. Compression pointers are legal in a question but no stub
// resolver sends them, so they go to the slow path.
func scanName(pkt []byte, off int) (int, error) {
	start := off
	for {
		if off >= len(pkt) {
			return 0, ErrFormat
		}
		l := int(pkt[off])
		switch {
		case l == 0:
			off++
			if off-start > MaxNameLen {
				return 0, ErrFormat
			}
			return off, nil
		case l&0xC0 == 0xC0:
			return 0, ErrSlowPath
		case l > maxLabelLen:
			return 0, ErrFormat
		}
		off += 1 + l
		if off-start > MaxNameLen {
			return 0, ErrFormat
		}
	}
}

// parseOPT reads the single additional record, which must be an OPT record
// owned by the root (RFC 6891 section 6.1.2), and its options. Only options
// whose contents the full parser accepts as they are (NSID, COOKIE,
// PADDING), an empty TCP keepalive and a well-formed ECS option stay on the
// fast path: the full parser checks the contents of others and answers
// FORMERR for bad ones, so a query the fast path accepts is always one the
// full parser accepts.
func parseOPT(pkt []byte, off int, q *Query) error {
	// root name (1) + type (2) + class (2) + ttl (4) + rdlength (2)
	if off+11 > len(pkt) || pkt[off] != 0 {
		return ErrSlowPath
	}
	if binary.BigEndian.Uint16(pkt[off+1:]) != TypeOPT {
		return ErrSlowPath
	}
	q.EDNS = true
	q.UDPSize = binary.BigEndian.Uint16(pkt[off+3:])
	// The TTL field holds extended RCODE (8 bits), version (8) and flags (16).
	q.EDNSVersion = pkt[off+6]
	q.DO = pkt[off+7]&0x80 != 0
	if q.EDNSVersion != 0 {
		return ErrSlowPath // the full path answers BADVERS (RFC 6891 section 6.1.3)
	}
	rdlen := int(binary.BigEndian.Uint16(pkt[off+9:]))
	off += 11
	if off+rdlen != len(pkt) {
		return ErrSlowPath // trailing or missing bytes: let the full parser judge
	}
	for end := off + rdlen; off < end; {
		if off+4 > end {
			return ErrSlowPath
		}
		code := binary.BigEndian.Uint16(pkt[off:])
		olen := int(binary.BigEndian.Uint16(pkt[off+2:]))
		data := off + 4
		off = data + olen
		if off > end {
			return ErrSlowPath
		}
		switch code {
		case optionECS:
			if !validECS(pkt[data:off]) {
				return ErrSlowPath
			}
			q.ECS = true
		case optionNSID, optionCookie, optionPadding:
		case optionKeepalive:
			if olen != 0 {
				return ErrSlowPath
			}
		default:
			return ErrSlowPath // the full parser checks it, or it is unusual in a query
		}
	}
	return nil
}

// validECS reports whether b is the data of an ECS option as a query must
// send it (RFC 7871 section 6): family IPv4 or IPv6, a source prefix no
// longer than the address, scope 0 and exactly the address bytes the
// prefix covers.
func validECS(b []byte) bool {
	if len(b) < 4 {
		return false
	}
	var bits int
	switch binary.BigEndian.Uint16(b) {
	case 1:
		bits = 32
	case 2:
		bits = 128
	default:
		return false
	}
	src := int(b[2])
	return src <= bits && b[3] == 0 && len(b)-4 == (src+7)/8
}

// Key flag bits appended to a cache key.
const (
	keyFlagDO = 1 << 0
	keyFlagCD = 1 << 1
)

// AppendKey appends the cache key of a question to dst: the name in wire
// form lower-cased, then qtype, qclass and one byte holding the DO and CD
// bits, the two request flags that change what an answer contains.
func AppendKey(dst, name []byte, qtype, qclass uint16, do, cd bool) []byte {
	for _, c := range name {
		// Lower-casing label length bytes is harmless: they are < 64, below 'A'.
		dst = append(dst, lower(c))
	}
	dst = binary.BigEndian.AppendUint16(dst, qtype)
	dst = binary.BigEndian.AppendUint16(dst, qclass)
	var f byte
	if do {
		f |= keyFlagDO
	}
	if cd {
		f |= keyFlagCD
	}
	return append(dst, f)
}

// ParseKey splits a key built by AppendKey back into its parts, for the
// paths that must rebuild a query from a cache entry (prefetch). ok is false
// for a key AppendKey could not have built.
func ParseKey(key []byte) (name []byte, qtype, qclass uint16, do, cd, ok bool) {
	end, err := scanName(key, 0)
	if err != nil || len(key) != end+5 {
		return nil, 0, 0, false, false, false
	}
	f := key[end+4]
	return key[:end], binary.BigEndian.Uint16(key[end:]), binary.BigEndian.Uint16(key[end+2:]),
		f&keyFlagDO != 0, f&keyFlagCD != 0, true
}

// InZone reports whether name is zone or a name under it; both are
// uncompressed wire-form names in the same case (cache keys are lower
// case).
func InZone(name, zone []byte) bool {
	for off := 0; off < len(name); off += 1 + int(name[off]) {
		if len(name)-off == len(zone) && string(name[off:]) == string(zone) {
			return true
		}
		if name[off] == 0 {
			break
		}
	}
	return false
}
