package suite

import (
	"bufio"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Metrics is a scrape of a Prometheus text exposition: series (name plus
// label set exactly as exposed, e.g. `nodedns_shed_total{reason="inflight"}`)
// to value. Histogram and summary series are kept like any other.
type Metrics map[string]float64

// ParseMetrics parses the Prometheus text format (comments and blank lines
// skipped; a timestamp after the value is ignored).
func ParseMetrics(text string) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || s[0] == '#' {
			continue
		}
		var series, rest string
		if i := strings.IndexAny(s, "{ \t"); i >= 0 && s[i] == '{' {
			j := closingBrace(s, i)
			if j < 0 {
				return nil, fmt.Errorf("metrics line %d: unterminated labels", line)
			}
			series, rest = s[:j+1], s[j+1:]
		} else {
			k := strings.IndexAny(s, " \t")
			if k < 0 {
				return nil, fmt.Errorf("metrics line %d: no value", line)
			}
			series, rest = s[:k], s[k:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("metrics line %d: no value", line)
		}
		v, err := parseValue(f[0])
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: %v", line, err)
		}
		m[series] = v
	}
	return m, sc.Err()
}

// closingBrace finds the '}' closing the label set opened at s[open],
// skipping quoted label values (which may contain '}' and escaped quotes).
func closingBrace(s string, open int) int {
	inQuote := false
	for i := open + 1; i < len(s); i++ {
		switch c := s[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '}':
			return i
		}
	}
	return -1
}

func parseValue(s string) (float64, error) {
	switch s {
	case "+Inf":
		return math.Inf(1), nil
	case "-Inf":
		return math.Inf(-1), nil
	case "NaN":
		return math.NaN(), nil
	}
	return strconv.ParseFloat(s, 64)
}

// seriesName returns the metric name of a series.
func seriesName(series string) string {
	if i := strings.IndexByte(series, '{'); i >= 0 {
		return series[:i]
	}
	return series
}

// Label returns the value of label key in series ("" if absent).
func Label(series, key string) string {
	i := strings.IndexByte(series, '{')
	if i < 0 {
		return ""
	}
	s := series[i+1:]
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return ""
		}
		k := strings.TrimSpace(strings.TrimLeft(s[:eq], ","))
		var b strings.Builder
		j := eq + 2
		for ; j < len(s) && s[j] != '"'; j++ {
			if s[j] == '\\' && j+1 < len(s) {
				j++
				switch s[j] {
				case 'n':
					b.WriteByte('\n')
				default:
					b.WriteByte(s[j])
				}
				continue
			}
			b.WriteByte(s[j])
		}
		if k == key {
			return b.String()
		}
		if j+1 >= len(s) {
			return ""
		}
		s = s[j+1:]
	}
	return ""
}

// Sum adds every series of metric name (all label sets).
func (m Metrics) Sum(name string) float64 {
	var t float64
	for k, v := range m {
		if seriesName(k) == name {
			t += v
		}
	}
	return t
}

// Has reports whether metric name has at least one series.
func (m Metrics) Has(name string) bool {
	for k := range m {
		if seriesName(k) == name {
			return true
		}
	}
	return false
}

// By sums metric name's series grouped by the value of label key.
func (m Metrics) By(name, key string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if seriesName(k) == name {
			out[Label(k, key)] += v
		}
	}
	return out
}

// Delta returns, for the series of the named metrics, m - before (a series
// missing before counts from 0). Series not of those metrics are left out.
func (m Metrics) Delta(before Metrics, names ...string) Metrics {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := Metrics{}
	for k, v := range m {
		if want[seriesName(k)] {
			out[k] = v - before[k]
		}
	}
	return out
}

// Sorted returns the series names in order.
func (m Metrics) Sorted() []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Health is what scrapes of an upstream-health gauge (1: in rotation, 0:
// marked down; one series per upstream) saw during a run.
type Health struct {
	Gauge     string `json:"gauge"`             // e.g. nodedns_upstream_healthy
	Samples   int    `json:"samples"`           // scrapes that had the gauge
	Unhealthy int    `json:"unhealthy_samples"` // scrapes with some series at 0
	// Flaps counts the times a series was seen at 0 after being seen
	// non-zero (or at 0 the first time it was seen): an upstream taken
	// out of rotation.
	Flaps int `json:"flaps"`
}

// healthWatch follows a health gauge across scrapes.
type healthWatch struct {
	h    Health
	last map[string]float64 // series -> last value seen
}

func newHealthWatch(gauge string) *healthWatch {
	return &healthWatch{h: Health{Gauge: gauge}, last: map[string]float64{}}
}

// observe takes one scrape (nil: a failed one, ignored).
func (w *healthWatch) observe(m Metrics) {
	if w == nil || !m.Has(w.h.Gauge) {
		return
	}
	w.h.Samples++
	down := false
	for _, k := range m.Sorted() {
		if seriesName(k) != w.h.Gauge {
			continue
		}
		v := m[k]
		prev, seen := w.last[k]
		if v == 0 {
			down = true
			if !seen || prev != 0 {
				w.h.Flaps++
			}
		}
		w.last[k] = v
	}
	if down {
		w.h.Unhealthy++
	}
}

// result is what was seen, nil if the gauge never was.
func (w *healthWatch) result() *Health {
	if w == nil || w.h.Samples == 0 {
		return nil
	}
	h := w.h
	return &h
}
