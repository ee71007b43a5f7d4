package conformance

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Finding is one answer of a server that differs from the reference's
// answer to the same ask of the same query.
type Finding struct {
	Query      Query
	Ask        int
	Categories []string
	Got, Ref   Reply
	VGot, VRef []string // per-reply violations
	Known      []*Known // per category, nil where not accepted
}

// Unexpected lists the categories no known difference accepts.
func (f Finding) Unexpected() []string {
	var u []string
	for i, c := range f.Categories {
		if f.Known == nil || f.Known[i] == nil {
			u = append(u, c)
		}
	}
	return u
}

// Column is the comparison of one server with the reference.
type Column struct {
	Server    string
	Reference string
	Findings  []Finding
	Answers   int                  // asks compared
	Checks    map[string][2]int    // violation kind -> [server, reference] answers breaking it
	ByCat     map[string]*catCount // category -> counts
}

type catCount struct {
	fresh, cached, known int
	first                *Finding
	firstAccepted        bool
}

// Analyse compares server ti with reference ri over every ask of every
// query. known may be nil (no difference is accepted).
func Analyse(qs []Query, res [][Asks][]Reply, names []string, ti, ri int, b Bounds, known []*Known) *Column {
	col := &Column{Server: names[ti], Reference: names[ri], Checks: map[string][2]int{}, ByCat: map[string]*catCount{}}
	for qi, q := range qs {
		for a := 0; a < Asks; a++ {
			got, ref := res[qi][a][ti], res[qi][a][ri]
			vg, vr := Checks(q, got, b), Checks(q, ref, b)
			col.Answers++
			for side, v := range [][]string{vg, vr} {
				kinds := map[string]bool{}
				for _, s := range v {
					kinds[strings.SplitN(s, ":", 2)[0]] = true
				}
				r := []Reply{got, ref}[side]
				if r.NoReply() {
					kinds["no reply"] = true
				}
				for k := range kinds {
					c := col.Checks[k]
					c[side]++
					col.Checks[k] = c
				}
			}
			cats := Compare(got, ref, vg, vr)
			if len(cats) == 0 {
				continue
			}
			f := Finding{Query: q, Ask: a, Categories: cats, Got: got, Ref: ref, VGot: vg, VRef: vr}
			if known != nil {
				f.Known = make([]*Known, len(cats))
				for i, c := range cats {
					if k := Match(known, col.Server, c, q.Key(), AskName(a)); k != nil {
						k.Used++
						f.Known[i] = k
					}
				}
			}
			col.Findings = append(col.Findings, f)
			for i, c := range cats {
				cc := col.ByCat[c]
				if cc == nil {
					cc = &catCount{}
					col.ByCat[c] = cc
				}
				if a == 0 {
					cc.fresh++
				} else {
					cc.cached++
				}
				if f.Known != nil && f.Known[i] != nil {
					cc.known++
				}
			}
		}
	}
	// The examples: the first finding of each category in corpus order
	// that no known difference accepts in it, else the first.
	for i := range col.Findings {
		f := &col.Findings[i]
		for j, c := range f.Categories {
			cc := col.ByCat[c]
			accepted := f.Known != nil && f.Known[j] != nil
			if cc.first == nil || (!accepted && cc.firstAccepted) {
				cc.first, cc.firstAccepted = f, accepted
			}
		}
	}
	return col
}

// Summary writes the table of differences of each column (queries,
// identical answers, answers differing per category, fresh and cached),
// the per-reply checks, and one example per category.
func Summary(w io.Writer, title string, queries int, cols []*Column) {
	fmt.Fprintf(w, "%s\n\n", title)
	if len(cols) == 0 {
		return
	}
	fmt.Fprintf(w, "queries: %d, each asked %d times (fresh, then cached): %d answers per server\n\n", queries, Asks, queries*Asks)
	// Differences.
	head := fmt.Sprintf("%-14s", "")
	for _, c := range cols {
		head += fmt.Sprintf(" | %-30s", c.Server+" vs "+c.Reference)
	}
	fmt.Fprintln(w, head)
	sub := fmt.Sprintf("%-14s", "")
	for range cols {
		sub += fmt.Sprintf(" | %8s %8s %12s", "fresh", "cached", "accepted")
	}
	fmt.Fprintln(w, sub)
	fmt.Fprintln(w, strings.Repeat("-", len(sub)))
	row := func(name string, cell func(c *Column) (int, int, string)) {
		line := fmt.Sprintf("%-14s", name)
		for _, c := range cols {
			f, k, acc := cell(c)
			line += fmt.Sprintf(" | %8d %8d %12s", f, k, acc)
		}
		fmt.Fprintln(w, line)
	}
	row("identical", func(c *Column) (int, int, string) {
		var diff [Asks]int
		for _, f := range c.Findings {
			diff[f.Ask]++
		}
		return queries - diff[0], queries - diff[1], ""
	})
	row("differing", func(c *Column) (int, int, string) {
		var diff [Asks]int
		acc := 0
		for _, f := range c.Findings {
			diff[f.Ask]++
			if f.Known != nil && len(f.Unexpected()) == 0 {
				acc++
			}
		}
		return diff[0], diff[1], accepted(c, acc)
	})
	for _, cat := range Categories {
		any := false
		for _, c := range cols {
			if c.ByCat[cat] != nil {
				any = true
			}
		}
		if !any {
			continue
		}
		row("  "+cat, func(c *Column) (int, int, string) {
			cc := c.ByCat[cat]
			if cc == nil {
				return 0, 0, ""
			}
			return cc.fresh, cc.cached, accepted(c, cc.known)
		})
	}
	fmt.Fprintf(w, "accepted: answers (fresh and cached together) that known-differences.txt accepts, in every category they differ in (on the differing line) or in that category\n")
	// Per-reply checks.
	fmt.Fprintf(w, "\nanswers breaking a rule of their own (any server; see the normaliser):\n")
	servers := []string{cols[0].Reference}
	for _, c := range cols {
		servers = append(servers, c.Server)
	}
	line := fmt.Sprintf("%-14s", "")
	for _, s := range servers {
		line += fmt.Sprintf(" | %10s", s)
	}
	fmt.Fprintln(w, line)
	for _, kind := range []string{"no reply", "ttl", "size", "header", "question"} {
		line := fmt.Sprintf("%-14s", kind)
		line += fmt.Sprintf(" | %10d", cols[0].Checks[kind][1])
		for _, c := range cols {
			line += fmt.Sprintf(" | %10d", c.Checks[kind][0])
		}
		fmt.Fprintln(w, line)
	}
	// Examples.
	for _, c := range cols {
		fmt.Fprintf(w, "\n%s vs %s, examples per category (the first in corpus order of up to three query types, not accepted by known-differences.txt if there are such), and where the differences not accepted are:\n", c.Server, c.Reference)
		for _, cat := range Categories {
			cc := c.ByCat[cat]
			if cc == nil {
				continue
			}
			fmt.Fprintf(w, "\n[%s] %d fresh + %d cached", cat, cc.fresh, cc.cached)
			if cc.known > 0 {
				fmt.Fprintf(w, ", %d accepted", cc.known)
			}
			fmt.Fprintf(w, "\n  where: %s\n", spread(c, cat))
			for i, f := range examples(c, cat, cc, 3) {
				lead := "e.g."
				if i > 0 {
					lead = "and"
				}
				fmt.Fprintf(w, "  %s %s@%s (differs in %s)\n", lead, f.Query.Key(), AskName(f.Ask), strings.Join(f.Categories, " "))
				fmt.Fprintf(w, "    %-8s %s\n", c.Server+":", Short(f.Got))
				fmt.Fprintf(w, "    %-8s %s\n", c.Reference+":", Short(f.Ref))
				for _, v := range f.VGot {
					fmt.Fprintf(w, "    %s breaks %s\n", c.Server, v)
				}
				for _, v := range f.VRef {
					fmt.Fprintf(w, "    %s breaks %s\n", c.Reference, v)
				}
			}
		}
	}
}

// examples returns the category's first example and up to n-1 more, each
// the first of another class and type, all not accepted when the first is
// not.
func examples(c *Column, cat string, cc *catCount, n int) []*Finding {
	out := []*Finding{cc.first}
	seen := map[string]bool{classString(cc.first.Query.Class) + typeString(cc.first.Query.Type): true}
	for i := range c.Findings {
		if len(out) == n {
			break
		}
		f := &c.Findings[i]
		for j, fc := range f.Categories {
			accepted := f.Known != nil && f.Known[j] != nil
			k := classString(f.Query.Class) + typeString(f.Query.Type)
			if fc == cat && !seen[k] && (cc.firstAccepted || !accepted) {
				seen[k] = true
				out = append(out, f)
			}
		}
	}
	return out
}

func accepted(c *Column, n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprint(n)
}

// spread says which types, classes and modes the differences of a
// category fall on, most frequent first.
func spread(c *Column, cat string) string {
	types, modes := map[string]int{}, map[string]int{}
	// Only the answers not accepted, when there are any.
	all := c.ByCat[cat].known == c.ByCat[cat].fresh+c.ByCat[cat].cached
	for _, f := range c.Findings {
		for i, fc := range f.Categories {
			if fc == cat && (all || f.Known == nil || f.Known[i] == nil) {
				types[classString(f.Query.Class)+"/"+typeString(f.Query.Type)]++
				modes[f.Query.Mode.String()]++
			}
		}
	}
	return "types " + top(types, 6) + "; modes " + top(modes, 6)
}

func top(m map[string]int, n int) string {
	type kv struct {
		k string
		v int
	}
	var s []kv
	for k, v := range m {
		s = append(s, kv{k, v})
	}
	sort.Slice(s, func(i, j int) bool {
		if s[i].v != s[j].v {
			return s[i].v > s[j].v
		}
		return s[i].k < s[j].k
	})
	var out []string
	for i, e := range s {
		if i == n {
			out = append(out, fmt.Sprintf("… %d more", len(s)-n))
			break
		}
		out = append(out, fmt.Sprintf("%s %d", e.k, e.v))
	}
	return strings.Join(out, ", ")
}

// Details writes every finding of a column, in corpus order.
func Details(w io.Writer, c *Column) {
	fmt.Fprintf(w, "%s vs %s: %d differing answers\n", c.Server, c.Reference, len(c.Findings))
	for _, f := range c.Findings {
		fmt.Fprintf(w, "\n%s@%s: %s", f.Query.Key(), AskName(f.Ask), strings.Join(f.Categories, " "))
		if f.Known != nil {
			var acc []string
			for i, k := range f.Known {
				if k != nil {
					acc = append(acc, fmt.Sprintf("%s (known-differences.txt:%d)", f.Categories[i], k.Line))
				}
			}
			if len(acc) > 0 {
				fmt.Fprintf(w, "; accepted: %s", strings.Join(acc, ", "))
			}
		}
		fmt.Fprintf(w, "\n  %-8s %s\n  %-8s %s\n", c.Server+":", Short(f.Got), c.Reference+":", Short(f.Ref))
		for _, v := range f.VGot {
			fmt.Fprintf(w, "  %s breaks %s\n", c.Server, v)
		}
		for _, v := range f.VRef {
			fmt.Fprintf(w, "  %s breaks %s\n", c.Reference, v)
		}
	}
}
