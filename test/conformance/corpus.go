package conformance

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// A corpus description (testdata/corpus.txt) is a few dozen lines that
// expand into thousands of queries:
//
//	# a comment
//	set NAME item item @OTHER item ...   a named list; @OTHER includes a set
//	cross NAMES TYPES MODES CLASSES      every combination of the four lists
//
// Each argument of cross is a set name or a literal comma-separated list
// (A,AAAA). Names are domain names as asked (case kept; a trailing dot is
// added). Types and classes are written as dig writes them (A, TYPE65280,
// CLASS42, NONE). A mode is a transport followed by '+'-joined options, see
// ParseMode. A query that several cross lines produce is kept once, at its
// first place.

// Query is one question with the header bits, EDNS state and transport it
// is asked with.
type Query struct {
	Name  string // as asked, case kept, fully qualified
	Type  uint16
	Class uint16
	Mode  Mode
}

// Mode is how a query is asked.
type Mode struct {
	TCP     bool
	EDNS    bool   // an OPT record
	UDPSize uint16 // its UDP payload size
	DO      bool
	Version uint8    // EDNS version
	TwoOPT  bool     // a second, identical OPT record (FORMERR per RFC 6891 6.1.1)
	Options []string // EDNS options, sorted: nsid, cookie, ecs, unknown
	CD      bool
	AD      bool
	NoRD    bool
	QR      bool // the query claims to be a response (must be dropped)
	Opcode  int
}

// ParseMode reads a mode token: "udp" or "tcp", then options joined by
// '+': eN (EDNS with UDP size N), do, cd, ad, nord, v1 (EDNS version 1),
// opt2 (two OPT records), nsid, cookie, ecs, unknown (an unassigned EDNS
// option), qr, opN (opcode N). do, v1, opt2 and the EDNS options need eN.
func ParseMode(s string) (Mode, error) {
	parts := strings.Split(s, "+")
	var m Mode
	switch parts[0] {
	case "udp":
	case "tcp":
		m.TCP = true
	default:
		return m, fmt.Errorf("mode %q: must start with udp or tcp", s)
	}
	seen := map[string]bool{}
	for _, p := range parts[1:] {
		if seen[p] {
			return m, fmt.Errorf("mode %q: %s twice", s, p)
		}
		seen[p] = true
		switch {
		case p == "do":
			m.DO = true
		case p == "cd":
			m.CD = true
		case p == "ad":
			m.AD = true
		case p == "nord":
			m.NoRD = true
		case p == "qr":
			m.QR = true
		case p == "opt2":
			m.TwoOPT = true
		case p == "v1":
			m.Version = 1
		case p == "nsid" || p == "cookie" || p == "ecs" || p == "unknown":
			m.Options = append(m.Options, p)
		case strings.HasPrefix(p, "op"):
			n, err := strconv.Atoi(p[2:])
			if err != nil || n < 0 || n > 15 {
				return m, fmt.Errorf("mode %q: bad opcode %q", s, p)
			}
			m.Opcode = n
		case strings.HasPrefix(p, "e"):
			n, err := strconv.Atoi(p[1:])
			if err != nil || n < 0 || n > 65535 {
				return m, fmt.Errorf("mode %q: bad EDNS size %q", s, p)
			}
			m.EDNS, m.UDPSize = true, uint16(n)
		default:
			return m, fmt.Errorf("mode %q: unknown option %q", s, p)
		}
	}
	if !m.EDNS && (m.DO || m.Version != 0 || m.TwoOPT || len(m.Options) > 0) {
		return m, fmt.Errorf("mode %q: do, v1, opt2 and EDNS options need eN", s)
	}
	sort.Strings(m.Options)
	return m, nil
}

// String is the canonical form of the mode, as ParseMode reads it.
func (m Mode) String() string {
	var b strings.Builder
	if m.TCP {
		b.WriteString("tcp")
	} else {
		b.WriteString("udp")
	}
	if m.EDNS {
		fmt.Fprintf(&b, "+e%d", m.UDPSize)
	}
	for _, f := range []struct {
		on   bool
		name string
	}{{m.DO, "do"}, {m.Version == 1, "v1"}, {m.TwoOPT, "opt2"}} {
		if f.on {
			b.WriteString("+" + f.name)
		}
	}
	for _, o := range m.Options {
		b.WriteString("+" + o)
	}
	for _, f := range []struct {
		on   bool
		name string
	}{{m.CD, "cd"}, {m.AD, "ad"}, {m.NoRD, "nord"}, {m.QR, "qr"}} {
		if f.on {
			b.WriteString("+" + f.name)
		}
	}
	if m.Opcode != 0 {
		fmt.Fprintf(&b, "+op%d", m.Opcode)
	}
	return b.String()
}

// UDPLimit is the largest UDP reply the query allows: 512 without EDNS,
// otherwise its UDP size but at least 512 (RFC 6891 6.2.5). 0 for TCP.
func (m Mode) UDPLimit() int {
	switch {
	case m.TCP:
		return 0
	case !m.EDNS || m.UDPSize < 512:
		return 512
	default:
		return int(m.UDPSize)
	}
}

// Key names the query in reports and in known-differences.txt:
// mode/CLASS/TYPE/name, e.g. udp+e1232+do/IN/TXT/txt-big.example.test.
func (q Query) Key() string {
	return q.Mode.String() + "/" + classString(q.Class) + "/" + typeString(q.Type) + "/" + q.Name
}

func classString(c uint16) string {
	if s, ok := dns.ClassToString[c]; ok {
		return s
	}
	return "CLASS" + strconv.Itoa(int(c))
}

func typeString(t uint16) string {
	if s, ok := dns.TypeToString[t]; ok && t != 0 { // miekg/dns names type 0 "None"
		return s
	}
	return "TYPE" + strconv.Itoa(int(t))
}

// Corpus is the expanded query list, in description order.
type Corpus struct {
	Queries []Query
	Lines   int // non-comment lines of the description
}

// ParseCorpus expands a corpus description.
func ParseCorpus(r io.Reader) (*Corpus, error) {
	sets := map[string][]string{}
	c := &Corpus{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	ln := 0
	for sc.Scan() {
		ln++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		c.Lines++
		errf := func(format string, a ...any) error {
			return fmt.Errorf("corpus line %d: %s", ln, fmt.Sprintf(format, a...))
		}
		switch f[0] {
		case "set":
			if len(f) < 3 {
				return nil, errf("set needs a name and items")
			}
			if _, dup := sets[f[1]]; dup {
				return nil, errf("set %s defined twice", f[1])
			}
			var items []string
			for _, it := range f[2:] {
				if strings.HasPrefix(it, "@") {
					inc, ok := sets[it[1:]]
					if !ok {
						return nil, errf("unknown set %s", it)
					}
					items = append(items, inc...)
					continue
				}
				items = append(items, it)
			}
			sets[f[1]] = items
		case "cross":
			if len(f) != 5 {
				return nil, errf("cross needs NAMES TYPES MODES CLASSES")
			}
			var lists [4][]string
			for i, arg := range f[1:] {
				if s, ok := sets[arg]; ok {
					lists[i] = s
				} else if strings.Contains(arg, ",") || !isIdent(arg) {
					lists[i] = strings.Split(arg, ",")
				} else {
					return nil, errf("unknown set %s (a one-item literal list needs a trailing comma)", arg)
				}
			}
			for _, name := range lists[0] {
				if name == "" {
					continue
				}
				for _, ts := range lists[1] {
					if ts == "" {
						continue
					}
					t, ok := parseType(ts)
					if !ok {
						return nil, errf("unknown type %q", ts)
					}
					for _, ms := range lists[2] {
						if ms == "" {
							continue
						}
						m, err := ParseMode(ms)
						if err != nil {
							return nil, errf("%v", err)
						}
						for _, cs := range lists[3] {
							if cs == "" {
								continue
							}
							cl, ok := parseClass(cs)
							if !ok {
								return nil, errf("unknown class %q", cs)
							}
							q := Query{Name: dns.Fqdn(name), Type: t, Class: cl, Mode: m}
							if _, ok := dns.IsDomainName(q.Name); !ok {
								return nil, errf("bad name %q", name)
							}
							if k := q.Key(); !seen[k] {
								seen[k] = true
								c.Queries = append(c.Queries, q)
							}
						}
					}
				}
			}
		default:
			return nil, errf("unknown directive %q", f[0])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

// isIdent reports whether s looks like a set name (lower-case letters,
// digits, '-' and '_'), as opposed to a one-item literal such as A or udp.
func isIdent(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return s != "" && s != "udp" && s != "tcp" && !strings.Contains(s, ".")
}

func parseType(s string) (uint16, bool) {
	if t, ok := dns.StringToType[strings.ToUpper(s)]; ok {
		return t, true
	}
	if n, ok := strings.CutPrefix(strings.ToUpper(s), "TYPE"); ok {
		v, err := strconv.ParseUint(n, 10, 16)
		return uint16(v), err == nil
	}
	return 0, false
}

func parseClass(s string) (uint16, bool) {
	if c, ok := dns.StringToClass[strings.ToUpper(s)]; ok {
		return c, true
	}
	if n, ok := strings.CutPrefix(strings.ToUpper(s), "CLASS"); ok {
		v, err := strconv.ParseUint(n, 10, 16)
		return uint16(v), err == nil
	}
	return 0, false
}
