package bench

import (
	"encoding/binary"
	"errors"
	"hash/maphash"
	"strings"

	"github.com/miekg/dns"
)

// Minimal DNS wire helpers for the hot path. Queries are built once (or
// generated into a reused buffer) and only the 2-byte ID is patched per send;
// replies are inspected in place without unpacking.

const (
	headerLen   = 12
	maxNameWire = 255  // RFC 1035 limit on a name in wire format
	flagQR      = 0x80 // in byte 2
	flagTC      = 0x02 // in byte 2
	flagRD      = 0x01 // in byte 2
)

// hashSeed is the seed for question hashes; one per process is enough, the
// hashes never leave it.
var hashSeed = maphash.MakeSeed()

func questionHash(q []byte) uint64 { return maphash.Bytes(hashSeed, q) }

// setID writes id into the first two bytes of msg.
func setID(msg []byte, id uint16) { binary.BigEndian.PutUint16(msg, id) }

// questionEnd returns the offset just past the first question of msg (name,
// type, class), or -1 if msg does not hold one uncompressed question.
func questionEnd(msg []byte) int {
	if len(msg) < headerLen || binary.BigEndian.Uint16(msg[4:]) == 0 {
		return -1
	}
	i := headerLen
	for {
		if i >= len(msg) {
			return -1
		}
		l := int(msg[i])
		if l == 0 {
			i++
			break
		}
		if l&0xC0 != 0 { // compression pointer or reserved label type
			return -1
		}
		i += l + 1
	}
	i += 4
	if i > len(msg) {
		return -1
	}
	return i
}

// wireOpts are the header/EDNS options shared by every generated query.
type wireOpts struct {
	RD   bool   // recursion desired
	EDNS uint16 // advertised UDP payload size; 0 = no OPT record
	DO   bool   // DNSSEC OK (implies EDNS)
}

// optRR is the packed OPT pseudo-RR appended when EDNS is on.
func (o wireOpts) optRR() []byte {
	if o.EDNS == 0 && !o.DO {
		return nil
	}
	size := o.EDNS
	if size == 0 {
		size = 1232
	}
	b := make([]byte, 11)
	// name = root (0), type OPT, class = UDP size, TTL = ext-rcode/version/flags, rdlen 0
	binary.BigEndian.PutUint16(b[1:], dns.TypeOPT)
	binary.BigEndian.PutUint16(b[3:], size)
	if o.DO {
		b[7] = 0x80
	}
	return b
}

// header writes a query header into dst[:12] (ID 0).
func (o wireOpts) header(dst []byte, arcount bool) {
	clear(dst[:headerLen])
	if o.RD {
		dst[2] = flagRD
	}
	dst[5] = 1 // QDCOUNT
	if arcount {
		dst[11] = 1
	}
}

// packQuery builds a query for name/qtype (class IN) with ID 0.
// It returns the message and the offset just past the question.
func packQuery(name string, qtype uint16, o wireOpts) ([]byte, int, error) {
	name = dns.Fqdn(name)
	if _, ok := dns.IsDomainName(name); !ok {
		return nil, 0, errors.New("invalid domain name")
	}
	buf := make([]byte, 512)
	off, err := dns.PackDomainName(name, buf, headerLen, nil, false)
	if err != nil {
		return nil, 0, err
	}
	if off-headerLen > maxNameWire {
		return nil, 0, errors.New("domain name longer than 255 octets")
	}
	opt := o.optRR()
	if off+4+len(opt) > len(buf) {
		return nil, 0, errors.New("query too long")
	}
	o.header(buf, opt != nil)
	binary.BigEndian.PutUint16(buf[off:], qtype)
	binary.BigEndian.PutUint16(buf[off+2:], dns.ClassINET)
	qend := off + 4
	n := copy(buf[qend:], opt)
	msg := buf[: qend+n : qend+n]
	return msg, qend, nil
}

// rcodeName returns the mnemonic for rcode (e.g. "NXDOMAIN").
func rcodeName(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return "RCODE" + itoa(rc)
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

// ParseType parses a query type mnemonic ("A", "aaaa", "TYPE65").
func ParseType(s string) (uint16, error) {
	u := strings.ToUpper(s)
	if t, ok := dns.StringToType[u]; ok {
		return t, nil
	}
	if rest, ok := strings.CutPrefix(u, "TYPE"); ok && rest != "" && len(rest) <= 5 {
		n := 0
		for _, c := range rest {
			if c < '0' || c > '9' {
				return 0, errors.New("unknown query type " + s)
			}
			n = n*10 + int(c-'0')
		}
		if n <= 0xFFFF {
			return uint16(n), nil
		}
	}
	return 0, errors.New("unknown query type " + s)
}
