package bench

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func TestExpandSearch(t *testing.T) {
	k8s := []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}
	tests := []struct {
		name   string
		search []string
		ndots  int
		want   []string
	}{
		{"kubernetes", k8s, 5, []string{
			"kubernetes.default.svc.cluster.local.",
			"kubernetes.svc.cluster.local.",
			"kubernetes.cluster.local.",
			"kubernetes.",
		}},
		{"kubernetes.default", k8s, 5, []string{
			"kubernetes.default.default.svc.cluster.local.",
			"kubernetes.default.svc.cluster.local.",
			"kubernetes.default.cluster.local.",
			"kubernetes.default.",
		}},
		{"www.example.com", k8s, 5, []string{
			"www.example.com.default.svc.cluster.local.",
			"www.example.com.svc.cluster.local.",
			"www.example.com.cluster.local.",
			"www.example.com.",
		}},
		// Four dots < 5: search first.
		{"a.b.c.d.e", k8s, 5, []string{
			"a.b.c.d.e.default.svc.cluster.local.",
			"a.b.c.d.e.svc.cluster.local.",
			"a.b.c.d.e.cluster.local.",
			"a.b.c.d.e.",
		}},
		// Five dots >= 5: as-is first.
		{"web.ns.svc.cluster.local.x", k8s, 5, []string{
			"web.ns.svc.cluster.local.x.",
			"web.ns.svc.cluster.local.x.default.svc.cluster.local.",
			"web.ns.svc.cluster.local.x.svc.cluster.local.",
			"web.ns.svc.cluster.local.x.cluster.local.",
		}},
		{"www.example.com", k8s, 1, []string{
			"www.example.com.",
			"www.example.com.default.svc.cluster.local.",
			"www.example.com.svc.cluster.local.",
			"www.example.com.cluster.local.",
		}},
		// Absolute names are never expanded.
		{"www.example.com.", k8s, 5, []string{"www.example.com."}},
		{"host", nil, 5, []string{"host."}},
		{"host", []string{"", "corp.example.", "."}, 5, []string{"host.corp.example.", "host."}},
		{"", k8s, 5, nil},
	}
	for _, tt := range tests {
		got := ExpandSearch(tt.name, tt.search, tt.ndots)
		if !slices.Equal(got, tt.want) {
			t.Errorf("ExpandSearch(%q, ndots:%d) =\n  %q\nwant\n  %q", tt.name, tt.ndots, got, tt.want)
		}
	}
}

func TestParseQueryFile(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Query
		wantErr string
	}{
		{"basic", "www.example.com A\nexample.com MX\n", []Query{
			{"www.example.com.", dns.TypeA}, {"example.com.", dns.TypeMX},
		}, ""},
		{"comments and blanks", "# header\n\n  \n\tfoo.test.\tAAAA  \n  # indented comment\nbar.test txt\r\n", []Query{
			{"foo.test.", dns.TypeAAAA}, {"bar.test.", dns.TypeTXT},
		}, ""},
		{"default type A", "plain.test\n", []Query{{"plain.test.", dns.TypeA}}, ""},
		{"generic type", "x.test TYPE65\n", []Query{{"x.test.", 65}}, ""},
		{"root", ". NS\n", []Query{{".", dns.TypeNS}}, ""},
		{"no trailing newline", "a.test SRV", []Query{{"a.test.", dns.TypeSRV}}, ""},
		{"empty", "", nil, ""},
		{"unknown type", "ok.test A\nbad.test NOPE\n", nil, "line 2"},
		{"too many fields", "a.test A extra\n", nil, "line 1"},
		{"bad name", "a..test A\n", nil, "line 1"},
		{"label too long", strings.Repeat("a", 64) + ".test A\n", nil, "line 1"},
		{"type out of range", "a.test TYPE70000\n", nil, "line 1"},
	}
	for _, tt := range tests {
		got, err := ParseQueryFile(strings.NewReader(tt.in))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: err = %v, want %q", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
}

func FuzzParseQueryFile(f *testing.F) {
	for _, s := range []string{
		"www.example.com A\n", "# c\n\nx.test AAAA\n", "a..b A", ". NS", "x TYPE65535",
		"\\046.test A", "a\\.b.test TXT", "x.test A B", strings.Repeat("a.", 130) + " A",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		qs, err := ParseQueryFile(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		// Whatever parses must pack into a query whose question we can find.
		for _, q := range qs {
			msg, qend, err := packQuery(q.Name, q.Type, wireOpts{RD: true})
			if err != nil {
				t.Fatalf("parsed %v but cannot pack it: %v", q, err)
			}
			if got := questionEnd(msg); got != qend {
				t.Fatalf("%v: questionEnd = %d, want %d", q, got, qend)
			}
			var m dns.Msg
			if err := m.Unpack(msg); err != nil || len(m.Question) != 1 || m.Question[0].Qtype != q.Type {
				t.Fatalf("%v: packed query does not unpack: %v %v", q, err, m.Question)
			}
		}
	})
}

// The generated query bytes are what miekg/dns would produce.
func TestPackQueryMatchesMiekg(t *testing.T) {
	for _, o := range []wireOpts{{RD: true}, {}, {RD: true, EDNS: 1232}, {EDNS: 4096, DO: true}} {
		msg, _, err := packQuery("www.Example.test", dns.TypeAAAA, o)
		if err != nil {
			t.Fatal(err)
		}
		m := new(dns.Msg)
		m.SetQuestion("www.Example.test.", dns.TypeAAAA)
		m.Id = 0
		m.RecursionDesired = o.RD
		if o.EDNS > 0 || o.DO {
			m.SetEdns0(o.EDNS, o.DO)
		}
		want, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if string(msg) != string(want) {
			t.Errorf("%+v:\n got %x\nwant %x", o, msg, want)
		}
	}
}

func TestRandomSourceBuild(t *testing.T) {
	src, err := newRandomSource("Rand.Test", dns.TypeTXT, wireOpts{RD: true, EDNS: 1232}, 3)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, sendBufSize)
	seen := map[string]bool{}
	for range 1000 {
		msg, h := src.build(buf, src.next())
		var m dns.Msg
		if err := m.Unpack(msg); err != nil {
			t.Fatal(err)
		}
		q := m.Question[0]
		if q.Qtype != dns.TypeTXT || !strings.HasSuffix(q.Name, ".Rand.Test.") || dns.CountLabel(q.Name) != 3 || m.IsEdns0() == nil || !m.RecursionDesired {
			t.Fatalf("bad query %v", &m)
		}
		if seen[q.Name] {
			t.Fatalf("duplicate %s", q.Name)
		}
		seen[q.Name] = true
		if h != questionHash(msg[headerLen:questionEnd(msg)]) {
			t.Fatal("hash mismatch")
		}
	}
}

func TestParseNameFile(t *testing.T) {
	got, err := ParseNameFile([]byte("# names\nkubernetes.default\n\nexample.com AAAA\nabs.example.\n"))
	want := []Query{{Name: "kubernetes.default"}, {Name: "example.com", Type: dns.TypeAAAA}, {Name: "abs.example."}}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("got %v, %v; want %v", got, err, want)
	}
	if _, err := ParseNameFile([]byte("ok\nbad..name\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("err = %v, want line 2", err)
	}
}

// An ndots lookup sends the glibc candidates in order and stops at the
// first with an answer.
func TestRunNdots(t *testing.T) {
	exists := map[string]bool{
		"kubernetes.default.svc.cluster.local.": true,
		"example.com.":                          true,
		"web.a.b.c.d.e.":                        true,
	}
	s := startServer(t, serverOpts{recordNames: true, answer: func(q dns.Question, m *dns.Msg) {
		if !exists[q.Name] {
			m.Rcode = dns.RcodeNameError
			return
		}
		addA(q, m) // AAAA: NODATA
	}})
	run := func(name string, aaaa bool) (*Report, []string) {
		t.Helper()
		before := len(s.seen())
		r := mustRun(t, Config{
			Server:      s.addr,
			NdotsNames:  []Query{{Name: name}},
			NdotsAAAA:   aaaa,
			Count:       1,
			Concurrency: 1,
		})
		return r, s.seen()[before:]
	}

	r, seen := run("kubernetes.default", false)
	want := []string{"kubernetes.default.default.svc.cluster.local. A", "kubernetes.default.svc.cluster.local. A"}
	if !slices.Equal(seen, want) {
		t.Errorf("queries %q, want %q", seen, want)
	}
	if l := r.Lookups; l == nil || l.Lookups != 1 || l.Found != 1 || l.QueriesPerLookup != 2 || r.Sent != 2 || r.Mode != "ndots" {
		t.Errorf("report %+v lookups %+v", r, r.Lookups)
	}

	r, seen = run("example.com", true)
	if len(seen) != 8 || seen[6] != "example.com. A" && seen[7] != "example.com. A" {
		t.Errorf("queries %q: want 3 search candidates then example.com, A and AAAA each", seen)
	}
	if r.Lookups.Found != 1 || r.Sent != 8 || r.Rcodes["NXDOMAIN"] != 6 || r.NoData != 1 {
		t.Errorf("report %+v, lookups %+v", r, r.Lookups)
	}

	_, seen = run("web.a.b.c.d.e", false) // 5 dots: as-is first
	if !slices.Equal(seen, []string{"web.a.b.c.d.e. A"}) {
		t.Errorf("queries %q", seen)
	}

	r, seen = run("missing", false)
	if len(seen) != 4 || r.Lookups.NotFound != 1 || r.Lookups.Found != 0 {
		t.Errorf("queries %q, lookups %+v", seen, r.Lookups)
	}
}

// Many concurrent ndots lookups: counts add up for lookups and queries.
func TestRunNdotsConcurrent(t *testing.T) {
	s := startServer(t, serverOpts{dropEvery: 50})
	r, err := Run(context.Background(), Config{
		Server:      s.addr,
		NdotsNames:  []Query{{Name: "svc-a.ns"}, {Name: "nx-b"}, {Name: "www.example.org"}},
		NdotsAAAA:   true,
		Count:       300,
		Concurrency: 6,
		Timeout:     200e6,
	})
	if err != nil {
		t.Fatal(err)
	}
	l := r.Lookups
	if l.Lookups != 300 || l.Found+l.NotFound+l.Failed != 300 {
		t.Errorf("lookups %+v", l)
	}
	if r.Sent != r.Answered+r.Lost || r.Sent != uint64(s.queries.Load()) {
		t.Errorf("sent %d answered %d lost %d; server saw %d", r.Sent, r.Answered, r.Lost, s.queries.Load())
	}
	if r.Lost != uint64(s.dropped.Load()) || l.Failed == 0 {
		t.Errorf("lost %d, server dropped %d, failed lookups %d", r.Lost, s.dropped.Load(), l.Failed)
	}
}
