package suite

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"

	"github.com/nodedns/nodedns/bench"
)

// Chart: one panel per latency distribution, each with a percentile curve
// per server. X is the percentile on a "nines" scale (x = -log10(1 - p),
// so 90, 99, 99.9, 99.99 are evenly spaced; the maximum sits at the right
// edge); Y is latency in ms on a log scale.

// Panel is one chart panel.
type Panel struct {
	Title  string
	Series []Series
}

// Series is one curve.
type Series struct {
	Name   string
	Color  string
	Points []bench.CurvePoint
}

var serverColors = map[string]string{NodeDNS: "#1f77b4", CoreDNS: "#ff7f0e", Echo: "#9a9a9a"}

var legendNames = map[string]string{NodeDNS: "nodedns", CoreDNS: "CoreDNS", Echo: "generator floor (echo)"}

// Panels builds the chart's panels from the results: every load with a
// latency curve, per scenario.
func Panels(res *Results) []Panel {
	var ps []Panel
	add := func(title string, s *Scenario, get func(*ServerRun) []bench.CurvePoint) {
		p := Panel{Title: title}
		for _, r := range s.Runs {
			if !usable(r) {
				continue
			}
			if pts := get(r); len(pts) > 0 {
				p.Series = append(p.Series, Series{Name: r.Server, Color: serverColors[r.Server], Points: pts})
			}
		}
		if len(p.Series) > 0 {
			ps = append(ps, p)
		}
	}
	loadCurve := func(r *ServerRun) []bench.CurvePoint { return r.Load.Curve }
	for _, s := range res.Scenarios {
		switch s.ID {
		case ScHit:
			add("cache hits, closed loop at max rate", s, loadCurve)
		case ScLatency:
			add("cache hits, fixed open-loop load", s, loadCurve)
		case ScStorm, ScStormDrop, ScStormShared:
			v := "upstream delays " + res.Params.StormDelay.String()
			if s.ID == ScStormDrop {
				v = "upstream drops all"
			}
			if s.ID == ScStormShared {
				v += ", shared address"
			}
			add("storm ("+v+"): bystanders", s, func(r *ServerRun) []bench.CurvePoint {
				if r.Bystanders == nil {
					return nil
				}
				return r.Bystanders.Curve
			})
			add("storm ("+v+"): storm queries", s, loadCurve)
		case ScFair:
			add("fair share (upstream delays "+res.Params.StormDelay.String()+"): quiet client's misses", s, func(r *ServerRun) []bench.CurvePoint {
				if r.Quiet == nil {
					return nil
				}
				return r.Quiet.Curve
			})
		case ScDeadName:
			add("dead domain, other clients: cached names", s, func(r *ServerRun) []bench.CurvePoint {
				if r.Bystanders == nil {
					return nil
				}
				return r.Bystanders.Curve
			})
			add("dead domain, other clients: misses", s, func(r *ServerRun) []bench.CurvePoint {
				if r.Misses == nil {
					return nil
				}
				return r.Misses.Curve
			})
		case ScNX:
			add("repeated NXDOMAIN names", s, loadCurve)
		case ScNdots:
			add("ndots:5 lookups (whole search)", s, func(r *ServerRun) []bench.CurvePoint {
				if r.Load.Lookups == nil {
					return nil
				}
				return r.Load.Lookups.Curve
			})
		}
	}
	return ps
}

const (
	panelW, panelH = 460, 280
	padL, padR     = 58, 14
	padT, padB     = 30, 42
	cols           = 2
	xMax           = 4.6 // nines axis: 99.99% at 4, max drawn at xMax
)

// nines maps a percentile to the X scale.
func nines(p float64) float64 {
	if p >= 100 {
		return xMax
	}
	return math.Min(-math.Log10(1-p/100), 4.4)
}

// WriteSVG draws the panels as one SVG image.
func WriteSVG(w io.Writer, title string, panels []Panel) error {
	rows := (len(panels) + cols - 1) / cols
	width, height := cols*panelW, rows*panelH+60
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="15" text-anchor="middle">%s</text>`+"\n", width/2, html.EscapeString(title))
	// Legend.
	lx := width/2 - 230
	for i, name := range []string{NodeDNS, CoreDNS, Echo} {
		x := lx + i*150
		dash := ""
		if name == Echo {
			dash = ` stroke-dasharray="4 3"`
		}
		fmt.Fprintf(&b, `<line x1="%d" y1="38" x2="%d" y2="38" stroke="%s" stroke-width="3"%s/><text x="%d" y="42">%s</text>`+"\n", x, x+24, serverColors[name], dash, x+30, legendNames[name])
	}
	for i, p := range panels {
		ox, oy := (i%cols)*panelW, 50+(i/cols)*panelH
		writePanel(&b, p, ox, oy)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func writePanel(b *strings.Builder, p Panel, ox, oy int) {
	x0, y0 := float64(ox+padL), float64(oy+padT)
	pw, ph := float64(panelW-padL-padR), float64(panelH-padT-padB)
	// Y range: whole decades around the data (latencies below 1 µs are
	// drawn at 1 µs).
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range p.Series {
		for _, pt := range s.Points {
			v := math.Max(pt.Ms, 0.001)
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if math.IsInf(lo, 0) {
		lo, hi = 0.01, 1
	}
	dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dhi <= dlo {
		dhi = dlo + 1
	}
	xs := func(p float64) float64 { return x0 + nines(p)/xMax*pw }
	ys := func(ms float64) float64 {
		v := math.Log10(math.Max(ms, 0.001))
		return y0 + ph - (v-dlo)/(dhi-dlo)*ph
	}
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" font-size="12" text-anchor="middle">%s</text>`+"\n", x0+pw/2, y0-10, html.EscapeString(p.Title))
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#888"/>`+"\n", x0, y0, pw, ph)
	for d := dlo; d <= dhi; d++ {
		y := ys(math.Pow(10, d))
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`, x0, y, x0+pw, y)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-4, y+4, msLabel(math.Pow(10, d)))
	}
	for _, t := range []struct {
		p     float64
		label string
	}{{0, "0"}, {50, "50"}, {90, "90"}, {99, "99"}, {99.9, "99.9"}, {99.99, "99.99"}, {100, "max"}} {
		x := xs(t.p)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`, x, y0, x, y0+ph)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x, y0+ph+14, t.label)
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">percentile</text>`+"\n", x0+pw/2, y0+ph+30)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" transform="rotate(-90 %.1f %.1f)">latency (ms)</text>`+"\n",
		float64(ox+14), y0+ph/2, float64(ox+14), y0+ph/2)
	for _, s := range p.Series {
		var pts []string
		for _, pt := range s.Points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", xs(pt.Percentile), ys(pt.Ms)))
		}
		dash := ""
		if s.Name == Echo {
			dash = ` stroke-dasharray="4 3"`
		}
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"><title>%s</title></polyline>`+"\n",
			s.Color, dash, strings.Join(pts, " "), html.EscapeString(legendNames[s.Name]))
	}
}

func msLabel(ms float64) string {
	switch {
	case ms >= 1000:
		return fmt.Sprintf("%gs", ms/1000)
	case ms >= 1:
		return fmt.Sprintf("%gms", ms)
	}
	return fmt.Sprintf("%gµs", ms*1000)
}
