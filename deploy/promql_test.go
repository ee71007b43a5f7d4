package deploy

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// selector is a vector selector of a PromQL expression: a metric name and
// its label matchers.
type selector struct {
	name     string
	matchers []matcher
}

type matcher struct{ label, op, value string }

// query is what an expression asks of the metrics: its selectors, and the
// labels it groups or matches by (by, without, on, ignoring, group_left,
// group_right).
type query struct {
	selectors []selector
	grouping  []string
}

// labelLists are the PromQL keywords followed by a list of label names.
var labelLists = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

// keywords are the other PromQL words that are not metric names.
var keywords = map[string]bool{"bool": true, "offset": true, "and": true, "or": true, "unless": true, "atan2": true, "inf": true, "nan": true}

// aggregations are PromQL's aggregation operators, which may be followed by
// by or without before their "(".
var aggregations = map[string]bool{"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true}

// grafanaVars are Grafana's interval variables, replaced by a duration
// before parsing; any other variable must be inside a string (a label
// matcher's value).
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "${__rate_interval}", "5m", "$__interval", "1m", "${__interval}", "1m", "$__range", "1h", "${__range}", "1h")

// parsePromQL finds the selectors of a PromQL expression. It is a lexer,
// not the PromQL grammar (the Prometheus module would pull half of
// Kubernetes' dependencies into go.mod at other versions): a name followed
// by "(", or an aggregation's, is not a metric, a name after by, without, on,
// ignoring, group_left or group_right starts a list of label names, any
// other name is a metric. It checks that brackets balance and that every
// selector has a metric name.
func parsePromQL(expr string) (query, error) {
	s := grafanaVars.Replace(expr)
	var q query
	var stack []byte
	i := 0
	skipSpace := func() {
		for i < len(s) && strings.ContainsRune(" \t\r\n", rune(s[i])) {
			i++
		}
	}
	ident := func() string {
		j := i
		for i < len(s) && (isIdentByte(s[i]) || (i > j && s[i] >= '0' && s[i] <= '9')) {
			i++
		}
		return s[j:i]
	}
	str := func() (string, error) {
		quote := s[i]
		var b strings.Builder
		for i++; i < len(s); i++ {
			switch {
			case s[i] == '\\' && quote != '`' && i+1 < len(s):
				i++
				b.WriteByte(s[i])
			case s[i] == quote:
				i++
				return b.String(), nil
			default:
				b.WriteByte(s[i])
			}
		}
		return "", fmt.Errorf("an unclosed string")
	}
	matchers := func() ([]matcher, error) { // at '{'
		i++
		var ms []matcher
		for {
			skipSpace()
			if i < len(s) && s[i] == '}' {
				i++
				return ms, nil
			}
			l := ident()
			if l == "" {
				return nil, fmt.Errorf("a label name expected at %q", s[i:])
			}
			skipSpace()
			var op string
			for _, o := range []string{"=~", "!~", "!=", "="} {
				if strings.HasPrefix(s[i:], o) {
					op = o
					break
				}
			}
			if op == "" {
				return nil, fmt.Errorf("a matcher's operator expected after %q", l)
			}
			i += len(op)
			skipSpace()
			if i >= len(s) || !strings.ContainsRune("\"'`", rune(s[i])) {
				return nil, fmt.Errorf("a string expected after %s%s", l, op)
			}
			v, err := str()
			if err != nil {
				return nil, err
			}
			ms = append(ms, matcher{l, op, v})
			skipSpace()
			if i < len(s) && s[i] == ',' {
				i++
			}
		}
	}
	closing := map[byte]byte{')': '(', ']': '[', '}': '{'}
	for {
		skipSpace()
		if i >= len(s) {
			break
		}
		c := s[i]
		switch {
		case isIdentByte(c):
			name := ident()
			skipSpace()
			next := byte(0)
			if i < len(s) {
				next = s[i]
			}
			switch {
			case labelLists[strings.ToLower(name)]:
				if next != '(' {
					continue // group_left without labels
				}
				end := strings.IndexByte(s[i:], ')')
				if end < 0 {
					return q, fmt.Errorf("%s: an unclosed label list", name)
				}
				for _, l := range strings.Split(s[i+1:i+end], ",") {
					if l = strings.TrimSpace(l); l != "" {
						q.grouping = append(q.grouping, l)
					}
				}
				i += end + 1
			case keywords[strings.ToLower(name)] || aggregations[strings.ToLower(name)] || next == '(':
				// an operator, or a function or aggregation
			default:
				sel := selector{name: name}
				if next == '{' {
					ms, err := matchers()
					if err != nil {
						return q, fmt.Errorf("%s: %w", name, err)
					}
					sel.matchers = ms
				}
				q.selectors = append(q.selectors, sel)
			}
		case c == '{':
			return q, fmt.Errorf("a selector without a metric name at %q", s[i:])
		case c == '"' || c == '\'' || c == '`':
			if _, err := str(); err != nil {
				return q, err
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(s) && (isIdentByte(s[i]) || s[i] >= '0' && s[i] <= '9' || s[i] == '.' || ((s[i] == '+' || s[i] == '-') && (s[i-1] == 'e' || s[i-1] == 'E'))) {
				i++
			}
		case c == '(' || c == '[':
			stack = append(stack, c)
			i++
		case c == ')' || c == ']':
			if len(stack) == 0 || stack[len(stack)-1] != closing[c] {
				return q, fmt.Errorf("an unbalanced %q at %q", c, s[i:])
			}
			stack = stack[:len(stack)-1]
			i++
		case c == '$':
			return q, fmt.Errorf("a variable outside a string at %q", s[i:])
		case strings.ContainsRune("+-*/%^=!<>,:@", rune(c)):
			i++
		default:
			return q, fmt.Errorf("an unexpected %q at %q", c, s[i:])
		}
	}
	if len(stack) > 0 {
		return q, fmt.Errorf("%d unclosed brackets", len(stack))
	}
	if len(q.selectors) == 0 {
		return q, fmt.Errorf("no metric")
	}
	return q, nil
}

func isIdentByte(c byte) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// literalAlternatives returns the values a regular expression matcher
// lists when it is only an alternation of plain words ("a|b|c"), else nil.
func literalAlternatives(re string) []string {
	if !regexp.MustCompile(`^[A-Za-z0-9_]+(\|[A-Za-z0-9_]+)*$`).MatchString(re) {
		return nil
	}
	return strings.Split(re, "|")
}

func TestParsePromQL(t *testing.T) {
	for _, c := range []struct {
		expr     string
		want     string // selectors as name{label op value,...} joined by " "
		grouping string
	}{
		{`nodedns_upstream_healthy == 0`, `nodedns_upstream_healthy`, ``},
		{`sum by (job, instance) (rate(nodedns_shed_total{reason="upstream_down"}[5m])) > 0`,
			`nodedns_shed_total{reason="upstream_down"}`, `job,instance`},
		{`histogram_quantile(0.99, sum by (le) (rate(x_bucket{instance=~"$instance"}[$__rate_interval])))`,
			`x_bucket{instance=~"$instance"}`, `le`},
		{`count((a{i=~"$i"}) == 0) or vector(0)`, `a{i=~"$i"}`, ``},
		{"sum(rate(a[5m])) / ignoring(x) group_left sum(b offset 1h) and on() c", `a b c`, `x`},
		{`max by (job, instance, group) (nodedns_upstream_loop_detected) > 0`, `nodedns_upstream_loop_detected`, `job,instance,group`},
		{`a{r!~"w|p", s!="x"} * 1e3 + 2.5e-1`, `a{r!~"w|p",s!="x"}`, ``},
		{`rate(a[5m:1m])`, `a`, ``},
	} {
		q, err := parsePromQL(c.expr)
		if err != nil {
			t.Errorf("%s: %v", c.expr, err)
			continue
		}
		var got []string
		for _, s := range q.selectors {
			var ms []string
			for _, m := range s.matchers {
				ms = append(ms, fmt.Sprintf("%s%s%q", m.label, m.op, m.value))
			}
			if len(ms) > 0 {
				got = append(got, s.name+"{"+strings.Join(ms, ",")+"}")
			} else {
				got = append(got, s.name)
			}
		}
		if g := strings.Join(got, " "); g != c.want {
			t.Errorf("%s: selectors %s, want %s", c.expr, g, c.want)
		}
		if g := strings.Join(q.grouping, ","); g != c.grouping {
			t.Errorf("%s: grouping %s, want %s", c.expr, g, c.grouping)
		}
	}
	for _, bad := range []string{
		`sum(rate(a[5m])`, `a{b="c"`, `{__name__="a"}`, `rate(a[$interval])`, `a{b=c}`, `sum by (x) (1)`, `a)`,
	} {
		if q, err := parsePromQL(bad); err == nil {
			t.Errorf("%s: parsed as %+v", bad, q)
		}
	}
}
