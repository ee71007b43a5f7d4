package dnswire

import "encoding/binary"

// OPTLen is the size of the OPT record AppendOPT writes: root name, type,
// class, TTL and an empty RDATA.
const OPTLen = 11

// AppendOPT appends an OPT pseudo-record (RFC 6891 section 6.1.2) that
// advertises udpSize and echoes the DO bit, and increments ARCOUNT of the
// message that starts at msgStart in dst.
func AppendOPT(dst []byte, msgStart int, udpSize uint16, do bool) []byte {
	var flags byte
	if do {
		flags = 0x80
	}
	dst = append(dst,
		0,          // root owner name
		0, TypeOPT, // type
		byte(udpSize>>8), byte(udpSize), // class: requestor's UDP payload size
		0, 0, flags, 0, // TTL: extended RCODE, version 0, DO + zero flags
		0, 0, // RDLENGTH
	)
	ar := binary.BigEndian.Uint16(dst[msgStart+offARCount:])
	binary.BigEndian.PutUint16(dst[msgStart+offARCount:], ar+1)
	return dst
}

// SetID writes the message ID.
func SetID(msg []byte, id uint16) { binary.BigEndian.PutUint16(msg[offID:], id) }

// Flags returns the header flags word.
func Flags(msg []byte) uint16 { return binary.BigEndian.Uint16(msg[offFlags:]) }

// SetFlags writes the header flags word.
func SetFlags(msg []byte, f uint16) { binary.BigEndian.PutUint16(msg[offFlags:], f) }

// Rcode returns the 4-bit header RCODE.
func Rcode(msg []byte) int { return int(Flags(msg) & rcodeMask) }

// Truncate cuts msg (a reply whose question section ends at qEnd) down to
// its header and question, sets TC and zeroes the record counts, so that a
// client that cannot take the whole answer over UDP retries over TCP
// (RFC 1035 section 4.2.1, RFC 7766 section 5).
func Truncate(msg []byte, qEnd int) []byte {
	msg = msg[:qEnd]
	SetFlags(msg, Flags(msg)|FlagTC)
	binary.BigEndian.PutUint16(msg[offANCount:], 0)
	binary.BigEndian.PutUint16(msg[offNSCount:], 0)
	binary.BigEndian.PutUint16(msg[offARCount:], 0)
	return msg
}

// AppendError appends an answer with the given RCODE to a request whose
// header and question were parsed into q: the request's header and question
// are echoed as asked, with QR and the RCODE set and all other sections
// empty. It is the cheap answer for REFUSED and shed queries.
func AppendError(dst, req []byte, q *Query, rcode int) []byte {
	start := len(dst)
	dst = append(dst, req[:q.QEnd]...)
	m := dst[start:]
	f := q.Flags&(FlagRD|FlagCD) | FlagQR | FlagRA | uint16(rcode&rcodeMask)
	SetFlags(m, f)
	binary.BigEndian.PutUint16(m[offARCount:], 0)
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
