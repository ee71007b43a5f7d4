package dnswire

import "encoding/binary"

// RCODEs AppendError treats apart (RFC 1035 section 4.1.1).
const (
	rcodeFormErr = 1
	rcodeNotImp  = 4
)

// OPTLen is the size of the OPT record AppendOPT writes: root name, type,
// class, TTL and an empty RDATA.
const OPTLen = 11

// AppendOPT appends an OPT pseudo-record (RFC 6891 section 6.1.2) that
// advertises udpSize, carries the upper 8 bits of a 12-bit extended RCODE
// (0 for the 16 header RCODEs) and echoes the DO bit, and increments
// ARCOUNT of the message that starts at msgStart in dst.
func AppendOPT(dst []byte, msgStart int, udpSize uint16, extRcode uint8, do bool) []byte {
	var flags byte
	if do {
		flags = 0x80
	}
	dst = append(dst,
		0,          // root owner name
		0, TypeOPT, // type
		byte(udpSize>>8), byte(udpSize), // class: requestor's UDP payload size
		extRcode, 0, flags, 0, // TTL: extended RCODE, version 0, DO + zero flags
		0, 0, // RDLENGTH
	)
	ar := binary.BigEndian.Uint16(dst[msgStart+offARCount:])
	binary.BigEndian.PutUint16(dst[msgStart+offARCount:], ar+1)
	return dst
}

// LowerQuestion lower-cases, in place, the name of the single question of
// a message (uncompressed: it is the first name) and returns the offset
// just past the question. It works on the wire form, where a name like
// "A\.B" is three bytes, and not on the presentation form.
func LowerQuestion(msg []byte) (int, error) {
	end, err := scanName(msg, HeaderLen)
	if err != nil {
		return 0, err
	}
	if end+4 > len(msg) {
		return 0, ErrFormat
	}
	for i := HeaderLen; i < end; i++ {
		// Lower-casing label length bytes is harmless: they are < 64.
		msg[i] = lower(msg[i])
	}
	return end + 4, nil
}

// SetID writes the message ID.
func SetID(msg []byte, id uint16) { binary.BigEndian.PutUint16(msg[offID:], id) }

// Flags returns the header flags word.
func Flags(msg []byte) uint16 { return binary.BigEndian.Uint16(msg[offFlags:]) }

// SetFlags writes the header flags word.
func SetFlags(msg []byte, f uint16) { binary.BigEndian.PutUint16(msg[offFlags:], f) }

// Rcode returns the 4-bit header RCODE.
func Rcode(msg []byte) int { return int(Flags(msg) & rcodeMask) }

// TruncateRRsets cuts a reply (header, question ending at qEnd, then the
// answer, authority and additional records, without an OPT record) to at
// most max bytes, as Unbound does: it keeps whole RRsets (an RRset is
// consecutive records of one owner, type and class, with the RRSIGs that
// follow them) while they fit, section by section. When an answer or
// authority RRset does not fit, nothing after it is kept and TC is set, so
// that the client retries over TCP (RFC 2181 section 9); additional RRsets
// that do not fit are left out without TC (they are optional data, like
// the glue of an SRV answer). A reply that fits is returned as it is. msg
// must have been checked by TTLOffsets (it is the packed form of a parsed
// message); a malformed record ends the walk as if it did not fit.
func TruncateRRsets(msg []byte, qEnd, max int) []byte {
	if len(msg) <= max {
		return msg
	}
	counts := [3]int{
		int(binary.BigEndian.Uint16(msg[offANCount:])),
		int(binary.BigEndian.Uint16(msg[offNSCount:])),
		int(binary.BigEndian.Uint16(msg[offARCount:])),
	}
	var kept [3]int
	off, tc := qEnd, false
sections:
	for sec, n := range counts {
		for i := 0; i < n; {
			end, j, ok := rrsetEnd(msg, off, i, n)
			if !ok || end > max {
				tc = sec < 2
				break sections
			}
			kept[sec] += j - i
			off, i = end, j
		}
	}
	msg = msg[:off]
	binary.BigEndian.PutUint16(msg[offANCount:], uint16(kept[0]))
	binary.BigEndian.PutUint16(msg[offNSCount:], uint16(kept[1]))
	binary.BigEndian.PutUint16(msg[offARCount:], uint16(kept[2]))
	if tc {
		SetFlags(msg, Flags(msg)|FlagTC)
	}
	return msg
}

// rrsetEnd walks the RRset that starts with record i of a section of n
// records at off, and returns the offset just past it and the index of the
// next record.
func rrsetEnd(msg []byte, off, i, n int) (end, next int, ok bool) {
	owner := off
	typ, class, end, ok := rrAt(msg, off)
	if !ok {
		return 0, 0, false
	}
	for next = i + 1; next < n; next++ {
		t, c, e, ok := rrAt(msg, end)
		if !ok {
			return 0, 0, false
		}
		if c != class || (t != typ && t != TypeRRSIG) || !namesEqual(msg, owner, end) {
			break
		}
		end = e
	}
	return end, next, true
}

// rrAt reads the type and class of the record at off and returns the
// offset just past it.
func rrAt(msg []byte, off int) (typ, class uint16, end int, ok bool) {
	off, err := skipName(msg, off)
	if err != nil || off+10 > len(msg) {
		return 0, 0, 0, false
	}
	typ = binary.BigEndian.Uint16(msg[off:])
	class = binary.BigEndian.Uint16(msg[off+2:])
	end = off + 10 + int(binary.BigEndian.Uint16(msg[off+8:]))
	return typ, class, end, end <= len(msg)
}

// namesEqual compares, case-insensitively, the possibly compressed names at
// offsets a and b of msg.
func namesEqual(msg []byte, a, b int) bool {
	for range MaxNameLen { // each step consumes a label: bounded
		var ok bool
		if a, ok = follow(msg, a); !ok {
			return false
		}
		if b, ok = follow(msg, b); !ok {
			return false
		}
		la, lb := int(msg[a]), int(msg[b])
		if la != lb || a+1+la > len(msg) || b+1+lb > len(msg) {
			return false
		}
		if la == 0 {
			return true
		}
		for k := 1; k <= la; k++ {
			if lower(msg[a+k]) != lower(msg[b+k]) {
				return false
			}
		}
		a, b = a+1+la, b+1+lb
	}
	return false
}

// follow resolves compression pointers at off to the offset of a label,
// never following more pointers than a message can hold without a loop.
func follow(msg []byte, off int) (int, bool) {
	for range 128 {
		if off >= len(msg) {
			return 0, false
		}
		if msg[off]&0xC0 != 0xC0 {
			return off, msg[off] <= maxLabelLen
		}
		if off+1 >= len(msg) {
			return 0, false
		}
		next := int(binary.BigEndian.Uint16(msg[off:]) & 0x3FFF)
		if next >= off {
			return 0, false // pointers point backwards
		}
		off = next
	}
	return 0, false
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// AppendError appends an error answer to q: the query's ID, opcode, RD and
// CD bits and its question as asked, QR set, the RCODE, and no records but
// an OPT record when the query had one (RFC 6891 section 6.1.1: a
// responder answers EDNS with EDNS, whatever the RCODE) or when the RCODE
// needs the extended bits (BADVERS). RA is set, as on every answer of a
// recursive service, except on FORMERR and NOTIMP: answers to a query
// that was not understood (as Unbound). q.Name may be nil for a query
// whose question could not be read: the answer then has none.
func AppendError(dst []byte, q *Query, rcode int, udpSize uint16) []byte {
	start := len(dst)
	qd := byte(0)
	if q.Name != nil {
		qd = 1
	}
	f := q.Flags&(opcodeMask|FlagRD|FlagCD) | FlagQR | uint16(rcode&rcodeMask)
	if rcode != rcodeFormErr && rcode != rcodeNotImp {
		f |= FlagRA
	}
	dst = append(dst, byte(q.ID>>8), byte(q.ID), byte(f>>8), byte(f), 0, qd, 0, 0, 0, 0, 0, 0)
	if q.Name != nil {
		dst = append(dst, q.Name...)
		dst = binary.BigEndian.AppendUint16(dst, q.QType)
		dst = binary.BigEndian.AppendUint16(dst, q.QClass)
	}
	if q.EDNS || rcode > rcodeMask {
		dst = AppendOPT(dst, start, udpSize, uint8(rcode>>4), q.DO)
	}
	return dst
}

// TTLOffsets appends to dst the offset of the TTL field of every resource
// record in msg except OPT records, in message order. It walks compressed
// names without following pointers, so it cannot loop.
func TTLOffsets(msg []byte, dst []uint16) ([]uint16, error) {
	if len(msg) < HeaderLen {
		return dst, ErrShort
	}
	if len(msg) > 0xFFFF {
		return dst, ErrFormat
	}
	qd := int(binary.BigEndian.Uint16(msg[offQDCount:]))
	rrs := int(binary.BigEndian.Uint16(msg[offANCount:])) +
		int(binary.BigEndian.Uint16(msg[offNSCount:])) +
		int(binary.BigEndian.Uint16(msg[offARCount:]))
	off := HeaderLen
	var err error
	for i := 0; i < qd; i++ {
		if off, err = skipName(msg, off); err != nil {
			return dst, err
		}
		off += 4
	}
	for i := 0; i < rrs; i++ {
		if off, err = skipName(msg, off); err != nil {
			return dst, err
		}
		if off+10 > len(msg) {
			return dst, ErrFormat
		}
		typ := binary.BigEndian.Uint16(msg[off:])
		if typ != TypeOPT {
			dst = append(dst, uint16(off+4))
		}
		off += 10 + int(binary.BigEndian.Uint16(msg[off+8:]))
	}
	if off > len(msg) {
		return dst, ErrFormat
	}
	return dst, nil
}

// skipName returns the offset just past a possibly compressed name.
func skipName(msg []byte, off int) (int, error) {
	for n := 0; n < MaxNameLen; n++ {
		if off >= len(msg) {
			return 0, ErrFormat
		}
		l := int(msg[off])
		switch {
		case l == 0:
			return off + 1, nil
		case l&0xC0 == 0xC0:
			if off+2 > len(msg) {
				return 0, ErrFormat
			}
			return off + 2, nil
		case l > maxLabelLen:
			return 0, ErrFormat
		}
		off += 1 + l
	}
	return 0, ErrFormat
}

// MaxUDPReply is the largest UDP reply nodedns ever writes: the largest
// EDNS payload size a configuration may advertise.
const MaxUDPReply = 65535
