package conformance

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// Known is one accepted difference of nodedns from Unbound, from
// known-differences.txt. Each line there is
//
//	CATEGORY  PATTERN  REASON...
//
// CATEGORY is a category (see Categories) or a glob of them (flag:*).
// PATTERN is a glob over the query's Key followed by "@fresh" (the first
// ask) or "@cached" (the second): * matches any run of characters, so
// udp+e1232*/IN/ANY/*@* matches every ANY over UDP with EDNS size 1232.
// Both globs ignore case, as domain names do.
// REASON says why nodedns differs, and is required.
//
// A line [GLOB] makes the lines after it apply only to the columns whose
// server name matches GLOB: [nodedns] is nodedns forwarding to Knot,
// [nodedns-via-unbound] nodedns forwarding to a second Unbound, [nodedns*]
// (the default) both.
type Known struct {
	Server   string // glob over the column's server name
	Category string
	Pattern  string
	Reason   string
	Line     int
	Used     int // differences it matched in this run
}

// ParseKnown reads known-differences.txt.
func ParseKnown(r io.Reader) ([]*Known, error) {
	var ks []*Known
	sc := bufio.NewScanner(r)
	ln := 0
	server := "nodedns*"
	for sc.Scan() {
		ln++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			server = strings.TrimSpace(line[1 : len(line)-1])
			if server == "" {
				return nil, fmt.Errorf("known differences line %d: empty [ ]", ln)
			}
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			return nil, fmt.Errorf("known differences line %d: want CATEGORY PATTERN REASON", ln)
		}
		if !globMatchesAny(strings.ToLower(f[0]), lowerCategories()) {
			return nil, fmt.Errorf("known differences line %d: %q matches no category", ln, f[0])
		}
		ks = append(ks, &Known{Server: server, Category: f[0], Pattern: f[1], Reason: strings.Join(f[2:], " "), Line: ln})
	}
	return ks, sc.Err()
}

// Match returns the first entry that accepts category cat in the column of
// server for the query key at ask ("fresh" or "cached"), or nil.
func Match(ks []*Known, server, cat, key, ask string) *Known {
	s := strings.ToLower(key + "@" + ask)
	cat = strings.ToLower(cat)
	for _, k := range ks {
		if Glob(k.Server, server) && Glob(strings.ToLower(k.Category), cat) && Glob(strings.ToLower(k.Pattern), s) {
			return k
		}
	}
	return nil
}

func lowerCategories() []string {
	l := make([]string, len(Categories))
	for i, c := range Categories {
		l[i] = strings.ToLower(c)
	}
	return l
}

func globMatchesAny(pattern string, ss []string) bool {
	for _, s := range ss {
		if Glob(pattern, s) {
			return true
		}
	}
	return false
}

// Glob reports whether s matches pattern, where * matches any run of
// characters (including none) and every other character itself.
func Glob(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, last)
}
