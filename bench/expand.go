package bench

import (
	"strings"

	"github.com/miekg/dns"
)

// ExpandSearch returns the fully qualified names a glibc stub resolver
// (res_search) queries, in order, for name with the given search list and
// ndots option:
//
//   - a name ending in '.' is absolute: only the name itself;
//   - a name with at least ndots dots: the name as given first, then the name
//     with each search domain appended;
//   - otherwise: the name with each search domain appended first, then the
//     name as given (glibc tries a single-label name as-is last too, unless
//     the no-tld-query option is set, which is not modelled).
//
// The resolver stops at the first candidate with an answer (and after an
// error other than NXDOMAIN, NODATA or SERVFAIL); ExpandSearch only lists the
// candidates. Empty search entries are skipped.
func ExpandSearch(name string, search []string, ndots int) []string {
	if name == "" {
		return nil
	}
	if strings.HasSuffix(name, ".") {
		return []string{name}
	}
	dots := strings.Count(name, ".")
	out := make([]string, 0, len(search)+1)
	if dots >= ndots {
		out = append(out, name+".")
	}
	for _, s := range search {
		s = strings.Trim(s, ".")
		if s == "" {
			continue
		}
		out = append(out, name+"."+s+".")
	}
	if dots < ndots {
		out = append(out, name+".")
	}
	return out
}

// ndotsLookup is the precomputed query plan of one lookup: for each candidate
// name, the queries sent in parallel (A, or A+AAAA, or the name's own type).
type ndotsLookup struct {
	cands [][]packedQuery
}

func planLookups(names []Query, search []string, ndots int, aaaa bool, o wireOpts) ([]ndotsLookup, error) {
	out := make([]ndotsLookup, len(names))
	for i, n := range names {
		types := []uint16{dns.TypeA}
		if aaaa {
			types = append(types, dns.TypeAAAA)
		}
		if n.Type != 0 {
			types = []uint16{n.Type}
		}
		for _, c := range ExpandSearch(n.Name, search, ndots) {
			qs := make([]Query, len(types))
			for j, t := range types {
				qs[j] = Query{Name: c, Type: t}
			}
			p, err := packAll(qs, o)
			if err != nil {
				return nil, err
			}
			out[i].cands = append(out[i].cands, p)
		}
	}
	return out, nil
}

// ParseNameFile parses an ndots name list: one "NAME [TYPE]" per line, '#'
// comments. Names are kept relative (no trailing dot is added), since the
// number of dots decides the search order.
func ParseNameFile(data []byte) ([]Query, error) {
	var out []Query
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) > 2 {
			return nil, lineErr(i+1, "want \"NAME [TYPE]\"")
		}
		if err := CheckName(f[0]); err != nil {
			return nil, lineErr(i+1, err.Error())
		}
		q := Query{Name: f[0]}
		if len(f) == 2 {
			t, err := ParseType(f[1])
			if err != nil {
				return nil, lineErr(i+1, err.Error())
			}
			q.Type = t
		}
		out = append(out, q)
	}
	return out, nil
}

type lineError struct {
	line int
	msg  string
}

func (e *lineError) Error() string { return "line " + itoa(e.line) + ": " + e.msg }

func lineErr(line int, msg string) error { return &lineError{line, msg} }
