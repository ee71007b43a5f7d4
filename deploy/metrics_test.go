package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/nodedns/nodedns/internal/kubetest"
	"github.com/nodedns/nodedns/internal/testutil"
)

// The monitoring files.
var (
	dashboardFile = filepath.Join("monitoring", "nodedns-dashboard.json")
	alertsFile    = filepath.Join("monitoring", "nodedns-alerts.yaml")
)

// targetLabels are the labels Prometheus adds to every series it scrapes
// (instance, job) or that Kubernetes service discovery commonly adds; the
// binary does not export them.
var targetLabels = map[string]bool{"instance": true, "job": true, "namespace": true, "pod": true, "node": true, "service": true, "endpoint": true, "container": true}

// ruleFile is a Prometheus rule file, decoded strictly (Prometheus's own
// rulefmt rejects unknown fields too).
type ruleFile struct {
	Groups []struct {
		Name     string `json:"name"`
		Interval string `json:"interval,omitempty"`
		Rules    []struct {
			Alert       string            `json:"alert,omitempty"`
			Record      string            `json:"record,omitempty"`
			Expr        string            `json:"expr"`
			For         string            `json:"for,omitempty"`
			Labels      map[string]string `json:"labels,omitempty"`
			Annotations map[string]string `json:"annotations,omitempty"`
		} `json:"rules"`
	} `json:"groups"`
}

// promExpr is one PromQL expression and where it comes from.
type promExpr struct{ where, expr string }

// alertExprs returns the alert rules' expressions, checking the file's
// shape on the way.
func alertExprs(t *testing.T) []promExpr {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := sigsyaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	var out []promExpr
	names := map[string]bool{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Record != "" {
				t.Errorf("%s: group %s: a rule that is not an alert: %+v", alertsFile, g.Name, r)
				continue
			}
			if names[r.Alert] {
				t.Errorf("%s: alert %s twice", alertsFile, r.Alert)
			}
			names[r.Alert] = true
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: alert %s: severity %q, want warning or critical", alertsFile, r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: alert %s: want a summary and a description", alertsFile, r.Alert)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: alert %s: for %q: %v", alertsFile, r.Alert, r.For, err)
				}
			}
			out = append(out, promExpr{alertsFile + ": " + r.Alert, r.Expr})
		}
	}
	// The alerts the design asks for, by what they watch.
	for _, want := range []struct{ what, metric string }{
		{"upstream down", "nodedns_upstream_healthy"},
		{"shedding", "nodedns_shed_total"},
		{"cache thrash", "nodedns_cache_evictions_total"},
		{"view stale", "nodedns_kube_view_age_seconds"},
		{"loop detected", "nodedns_upstream_loop_detected"},
	} {
		if !slices.ContainsFunc(out, func(e promExpr) bool { return strings.Contains(e.expr, want.metric) }) {
			t.Errorf("%s: no alert on %s (%s)", alertsFile, want.what, want.metric)
		}
	}
	return out
}

// dashboardExprs returns every PromQL expression of the dashboard: the
// panels' targets (rows' nested panels included) and the template
// variables' queries, checking the dashboard's shape on the way.
func dashboardExprs(t *testing.T) []promExpr {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	}
	type panel struct {
		ID      int                      `json:"id"`
		Title   string                   `json:"title"`
		Type    string                   `json:"type"`
		Targets []target                 `json:"targets"`
		Panels  []panel                  `json:"panels"`
		GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	}
	var d struct {
		UID        string  `json:"uid"`
		Title      string  `json:"title"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("%s: want a uid and a title", dashboardFile)
	}
	var out []promExpr
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d twice", dashboardFile, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.W < 1 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: panel %q: gridPos %+v outside the 24 columns", dashboardFile, p.Title, p.GridPos)
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", dashboardFile, p.Title)
			}
			for _, tg := range p.Targets {
				out = append(out, promExpr{fmt.Sprintf("%s: panel %q %s", dashboardFile, p.Title, tg.RefID), tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\(\s*([^,]+?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var s string
			if err := json.Unmarshal(v.Query, &s); err != nil {
				t.Fatalf("%s: variable %s: query %s", dashboardFile, v.Name, v.Query)
			}
			q.Query = s
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("%s: variable %s: %q is not label_values(selector, label)", dashboardFile, v.Name, q.Query)
			continue
		}
		// The same question as PromQL: the label must be the metric's, or a
		// target label.
		out = append(out, promExpr{fmt.Sprintf("%s: variable %s", dashboardFile, v.Name), `count by (` + m[2] + `) (` + m[1] + `)`})
	}
	return out
}

// TestMonitoringQueries parses every expression of the dashboard and the
// alerts (the check against a running nodedns is in TestNodednsWithTheManifests).
func TestMonitoringQueries(t *testing.T) {
	for _, e := range append(dashboardExprs(t), alertExprs(t)...) {
		if _, err := parsePromQL(e.expr); err != nil {
			t.Errorf("%s: %v\n%s", e.where, err, e.expr)
		}
	}
}

// series are the samples of a /metrics page: metric name -> label sets.
type series map[string][]map[string]string

// parseExposition reads the Prometheus text format.
func parseExposition(t *testing.T, b []byte) series {
	t.Helper()
	out := series{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		labels := map[string]string{}
		if strings.HasPrefix(rest, "{") {
			r := rest[1:]
			for len(r) > 0 && r[0] != '}' {
				eq := strings.IndexByte(r, '=')
				if eq < 0 || len(r) < eq+2 || r[eq+1] != '"' {
					t.Fatalf("/metrics: bad labels in %q", line)
				}
				key := r[:eq]
				r = r[eq+2:]
				var v strings.Builder
				for len(r) > 0 && r[0] != '"' {
					if r[0] == '\\' && len(r) > 1 {
						r = r[1:]
					}
					v.WriteByte(r[0])
					r = r[1:]
				}
				if len(r) == 0 {
					t.Fatalf("/metrics: an unclosed label value in %q", line)
				}
				labels[key] = v.String()
				r = strings.TrimPrefix(r[1:], ",")
			}
		}
		out[name] = append(out[name], labels)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkAgainst checks an expression's selectors against the series a
// running nodedns exports: each metric exists, each label it matches or
// groups by exists on it (target labels aside), and each plain value it
// matches (a word, or words joined by |) is one the metric has.
func checkAgainst(t *testing.T, s series, e promExpr) {
	t.Helper()
	q, err := parsePromQL(e.expr)
	if err != nil {
		t.Errorf("%s: %v", e.where, err)
		return
	}
	labelsOf := func(name string) map[string]map[string]bool {
		out := map[string]map[string]bool{}
		for _, ls := range s[name] {
			for k, v := range ls {
				if out[k] == nil {
					out[k] = map[string]bool{}
				}
				out[k][v] = true
			}
		}
		return out
	}
	all := map[string]bool{"le": true}
	for _, sel := range q.selectors {
		if _, ok := s[sel.name]; !ok {
			t.Errorf("%s: metric %s is not in nodedns's /metrics", e.where, sel.name)
			continue
		}
		have := labelsOf(sel.name)
		for l := range have {
			all[l] = true
		}
		for _, m := range sel.matchers {
			if targetLabels[m.label] {
				continue
			}
			vals, ok := have[m.label]
			if !ok {
				t.Errorf("%s: %s has no label %s", e.where, sel.name, m.label)
				continue
			}
			var want []string
			switch m.op {
			case "=", "!=":
				if !strings.Contains(m.value, "$") {
					want = []string{m.value}
				}
			default:
				want = literalAlternatives(m.value)
			}
			for _, v := range want {
				if !vals[v] {
					t.Errorf("%s: %s{%s=%q} is not a series nodedns exports (it has %v)", e.where, sel.name, m.label, v, keys(vals))
				}
			}
		}
	}
	for _, l := range q.grouping {
		if !all[l] && !targetLabels[l] {
			t.Errorf("%s: grouping by %s, a label none of its metrics has", e.where, l)
		}
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// upstreamServer is a DNS server on loopback for nodedns to forward to:
// SERVFAIL for servfail.test., an A record for any other A question, an
// empty NOERROR otherwise.
func upstreamServer(t *testing.T) string {
	t.Helper()
	return testutil.StartUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		switch {
		case len(r.Question) == 0:
		case r.Question[0].Name == "servfail.test.":
			m.Rcode = dns.RcodeServerFailure
		case r.Question[0].Qtype == dns.TypeA:
			rr, _ := dns.NewRR(r.Question[0].Name + " 300 IN A 192.0.2.1")
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	}).Addr
}

// daemon is a nodedns process the test started.
type daemon struct{ *testutil.Daemon }

// startDaemon runs nodedns on loopback ports with args, and waits until it
// serves HTTP /health.
func startDaemon(t *testing.T, args ...string) daemon {
	t.Helper()
	d := testutil.StartDaemon(t, args...)
	testutil.WaitHTTP(t, "http://"+d.HTTP+"/health", 30*time.Second)
	return daemon{d}
}

// scrape returns the daemon's /metrics.
func (d daemon) scrape(t *testing.T) series {
	t.Helper()
	resp, err := http.Get("http://" + d.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return parseExposition(t, b)
}

// value returns the value of the one sample of name with the labels.
func (d daemon) value(t *testing.T, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + d.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ls []string
	for k, v := range labels {
		ls = append(ls, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(ls)
	prefix := name
	if len(ls) > 0 {
		prefix += "{" + strings.Join(ls, ",") + "}"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, prefix+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// query asks the daemon name (type A) and returns the rcode.
func (d daemon) query(t *testing.T, name string) int {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	c := &dns.Client{Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, d.DNS)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	return r.Rcode
}

// viewResources are what the Kubernetes view lists and watches.
var viewResources = []string{"namespaces", "services", "pods", "endpointslices"}

// TestNodednsWithTheManifests runs the real nodedns binary against a real
// API server as the manifests' ServiceAccount (its RBAC applied for real),
// and checks that (1) the Kubernetes view lists and watches everything it
// needs with exactly those grants, and (2) every metric, label and label
// value the dashboard and the alert rules query is in its /metrics.
func TestNodednsWithTheManifests(t *testing.T) {
	c := kubetest.Shared(t)
	kc := applyRBAC(t, c)
	up := upstreamServer(t)
	d := startDaemon(t, "--upstream="+up, "--kube=true", "--kubeconfig="+kc, "--node-name="+testNode, "--log-level=debug",
		"--cache-snapshot="+filepath.Join(t.TempDir(), "cache.snapshot"))

	t.Run("the view syncs with the ClusterRole's grants", func(t *testing.T) {
		deadline := time.Now().Add(60 * time.Second)
		for _, r := range viewResources {
			for {
				v, ok := d.value(t, "nodedns_kube_view_synced", map[string]string{"resource": r})
				if ok && v == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("nodedns_kube_view_synced{resource=%q} is %v after 60 s: the ClusterRole does not grant what the view needs", r, v)
				}
				time.Sleep(200 * time.Millisecond)
			}
			if v, _ := d.value(t, "nodedns_kube_view_api_errors_total", map[string]string{"resource": r}); v != 0 {
				t.Errorf("nodedns_kube_view_api_errors_total{resource=%q} = %v", r, v)
			}
		}
		if strings.Contains(d.Out.String(), "forbidden") {
			t.Errorf("the API server refused something:\n%s", d.Out.String())
		}
	})

	t.Run("every metric the dashboard and the alerts query is exported", func(t *testing.T) {
		// Series that exist once there is traffic: an answer and a SERVFAIL.
		if rc := d.query(t, "example.org."); rc != dns.RcodeSuccess {
			t.Fatalf("example.org: rcode %s", dns.RcodeToString[rc])
		}
		if rc := d.query(t, "servfail.test."); rc != dns.RcodeServerFailure {
			t.Fatalf("servfail.test: rcode %s", dns.RcodeToString[rc])
		}
		// Counters may be folded in after the answer is written: wait for
		// the SERVFAIL to show.
		var s series
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			s = d.scrape(t)
			if slices.ContainsFunc(s["nodedns_requests_total"], func(l map[string]string) bool { return l["rcode"] == "SERVFAIL" }) ||
				time.Now().After(deadline) {
				break
			}
		}
		// The node set-up's series, from nodedns with --setup-interface and
		// --setup-rules in a namespace of the test's own.
		setup := setupSeries(t)
		for k, v := range setup {
			s[k] = append(s[k], v...)
		}
		exprs := append(dashboardExprs(t), alertExprs(t)...)
		for _, e := range exprs {
			if setup == nil && strings.Contains(e.expr, "nodedns_setup_") {
				t.Logf("%s: not checked (no nodedns with the node set-up ran)", e.where)
				continue
			}
			checkAgainst(t, s, e)
		}
		t.Logf("%d expressions checked against %d metrics", len(exprs), len(s))
	})
}
