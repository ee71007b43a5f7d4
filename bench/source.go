package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/miekg/dns"
)

// Query is one question: a domain name and a query type (class IN).
type Query struct {
	Name string
	Type uint16
}

func (q Query) String() string { return dns.Fqdn(q.Name) + " " + dns.TypeToString[q.Type] }

// maxQueryFileLine bounds one line of a query file.
const maxQueryFileLine = 4096

// ParseQueryFile reads queries in dnsperf's data file format: one query per
// line, "NAME [TYPE]" separated by white space, TYPE defaulting to A;
// empty lines and lines starting with '#' (after leading white space) are
// skipped. Names are taken as absolute. Errors name the offending line.
func ParseQueryFile(r io.Reader) ([]Query, error) {
	var qs []Query
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1024), maxQueryFileLine)
	line := 0
	for sc.Scan() {
		line++
		q, ok, err := parseQueryLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if ok {
			qs = append(qs, q)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d: longer than %d bytes", line+1, maxQueryFileLine)
		}
		return nil, err
	}
	return qs, nil
}

// ReadQueryFile is ParseQueryFile on a file; it fails if the file has no
// queries.
func ReadQueryFile(path string) ([]Query, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	qs, err := ParseQueryFile(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(qs) == 0 {
		return nil, fmt.Errorf("%s: no queries", path)
	}
	return qs, nil
}

func parseQueryLine(s string) (Query, bool, error) {
	s = strings.TrimSpace(s)
	if s == "" || s[0] == '#' {
		return Query{}, false, nil
	}
	f := strings.Fields(s)
	if len(f) > 2 {
		return Query{}, false, fmt.Errorf("want \"NAME [TYPE]\", got %d fields", len(f))
	}
	name := f[0]
	if err := CheckName(name); err != nil {
		return Query{}, false, err
	}
	qt := dns.TypeA
	if len(f) == 2 {
		t, err := ParseType(f[1])
		if err != nil {
			return Query{}, false, err
		}
		qt = t
	}
	return Query{Name: dns.Fqdn(name), Type: qt}, true, nil
}

// CheckName returns an error unless name is a valid presentation-format
// domain name that packs into a query.
func CheckName(name string) error {
	if _, ok := dns.IsDomainName(name); !ok {
		return fmt.Errorf("invalid domain name %q", name)
	}
	buf := make([]byte, 512)
	n, err := dns.PackDomainName(dns.Fqdn(name), buf, 0, nil, false)
	if err != nil {
		return fmt.Errorf("invalid domain name %q: %v", name, err)
	}
	if n > maxNameWire {
		return fmt.Errorf("domain name %q longer than %d octets", name, maxNameWire)
	}
	return nil
}

// querySource produces the queries one worker sends. Each worker has its own
// instance (no sharing, no locks). A query is identified by a key so that it
// can be rebuilt (to resend it over a new TCP connection).
type querySource interface {
	// next returns the key of the next query.
	next() uint64
	// build writes the query for key into dst (ID 0) and returns it with
	// the hash of its question section. dst has room for any query.
	build(dst []byte, key uint64) (msg []byte, qhash uint64)
}

// packedQuery is a prebuilt query.
type packedQuery struct {
	msg   []byte
	qhash uint64
}

func packAll(qs []Query, o wireOpts) ([]packedQuery, error) {
	out := make([]packedQuery, len(qs))
	for i, q := range qs {
		msg, qend, err := packQuery(q.Name, q.Type, o)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", q, err)
		}
		out[i] = packedQuery{msg: msg, qhash: questionHash(msg[headerLen:qend])}
	}
	return out, nil
}

// listSource cycles through a shared, read-only list of prebuilt queries.
type listSource struct {
	qs  []packedQuery
	pos int
}

func (s *listSource) next() uint64 {
	k := s.pos
	s.pos++
	if s.pos == len(s.qs) {
		s.pos = 0
	}
	return uint64(k)
}

func (s *listSource) build(dst []byte, key uint64) ([]byte, uint64) {
	q := &s.qs[key]
	n := copy(dst, q.msg)
	return dst[:n], q.qhash
}

// generatedNames returns n names "<prefix><i>.<zone>".
func generatedNames(n int, prefix, zone string, qtype uint16) []Query {
	zone = dns.Fqdn(zone)
	qs := make([]Query, n)
	for i := range qs {
		qs[i] = Query{Name: prefix + itoa(i) + "." + zone, Type: qtype}
	}
	return qs
}

// randomSource generates unique pseudo-random names "<13 chars>.<zone>": the
// key is a bijective mix of (worker, counter), spelled in base 36, so names
// never repeat within a run.
type randomSource struct {
	zoneWire []byte // packed zone name, including the root label
	qtype    uint16
	opt      []byte
	o        wireOpts
	worker   uint64
	n        uint64
}

const randomLabelLen = 13 // 36^13 > 2^64: every uint64 has its own label

func newRandomSource(zone string, qtype uint16, o wireOpts, worker int) (*randomSource, error) {
	zone = dns.Fqdn(zone)
	buf := make([]byte, 512)
	off, err := dns.PackDomainName(zone, buf, 0, nil, false)
	if err != nil {
		return nil, fmt.Errorf("zone %q: %v", zone, err)
	}
	if off+1+randomLabelLen > maxNameWire {
		return nil, fmt.Errorf("zone %q too long for random names", zone)
	}
	return &randomSource{zoneWire: buf[:off], qtype: qtype, opt: o.optRR(), o: o, worker: uint64(worker)}, nil
}

func (s *randomSource) next() uint64 {
	s.n++
	return mix64(s.worker<<40 | s.n)
}

// mix64 is the splitmix64 finalizer, a bijection on uint64.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

const base36 = "0123456789abcdefghijklmnopqrstuvwxyz"

func (s *randomSource) build(dst []byte, key uint64) ([]byte, uint64) {
	s.o.header(dst, s.opt != nil)
	i := headerLen
	dst[i] = randomLabelLen
	for j := randomLabelLen; j > 0; j-- {
		dst[i+j] = base36[key%36]
		key /= 36
	}
	i += 1 + randomLabelLen
	i += copy(dst[i:], s.zoneWire)
	dst[i] = byte(s.qtype >> 8)
	dst[i+1] = byte(s.qtype)
	dst[i+2] = 0
	dst[i+3] = byte(dns.ClassINET)
	i += 4
	h := questionHash(dst[headerLen:i])
	i += copy(dst[i:], s.opt)
	return dst[:i], h
}
