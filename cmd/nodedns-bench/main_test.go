package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/internal/testutil"
)

func TestParseErrorsNameTheFlag(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.txt")
	if err := os.WriteFile(empty, []byte("# nothing\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(bad, []byte("ok.test A\nbad.test BOGUS\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string // substring of the error, naming the flag
	}{
		{[]string{"--names", "1"}, "--server"},
		{[]string{"--server", "192.0.2.1:53", "--names", "1"}, "--server"},
		{[]string{"--server", "8.8.8.8:53", "--names", "1"}, "non-loopback"},
		{[]string{"--server", "resolver.example:53", "--names", "1"}, "--server"},
		{[]string{"--server", "127.0.0.1:53"}, "query source"},
		{[]string{"--server", "127.0.0.1:53", "--names", "1", "--random-zone", "x.test"}, "--random-zone"},
		{[]string{"--server", "127.0.0.1:53", "--names", "1", "--qps", "10", "--concurrency", "2"}, "--qps"},
		{[]string{"--server", "127.0.0.1:53", "--names", "1", "--qps", "0"}, "--qps"},
		{[]string{"--server", "127.0.0.1:53", "--names", "1", "--qps", "abc"}, "-qps"},
		{[]string{"--server", "127.0.0.1:53", "--names", "0"}, "--names"},
		{[]string{"--server", "127.0.0.1:53", "--names", "1", "--concurrency", "-1"}, "--concurrency"},
		{[]string{"--server", "127.0.0.1:53", "--names", "1", "--concurrency", "2", "--sockets", "3"}, "--sockets"},
		{[]string{"--server", "127.0.0.1:53", "--names", "1", "--duration", "0s"}, "--duration"},
		{[]string{"--server", "127.0.0.1:53", "--names", "1", "--timeout", "0s"}, "--timeout"},
		{[]string{"--server", "127.0.0.1:53", "--names", "1", "--count", "-5"}, "--count"},
		{[]string{"--server", "127.0.0.1:53", "--names", "1", "--qtype", "NOPE"}, "--qtype"},
		{[]string{"--server", "127.0.0.1:53", "--names", "1", "--zone", "a..b"}, "--zone"},
		{[]string{"--server", "127.0.0.1:53", "--random-zone", "a..b"}, "--random-zone"},
		{[]string{"--server", "127.0.0.1:53", "--file", filepath.Join(dir, "missing")}, "--file"},
		{[]string{"--server", "127.0.0.1:53", "--file", empty}, "--file"},
		{[]string{"--server", "127.0.0.1:53", "--file", bad}, "line 2"},
		{[]string{"--server", "127.0.0.1:53", "--ndots-file", empty}, "--ndots-file"},
		{[]string{"--server", "127.0.0.1:53", "--ndots-file", bad, "--qps", "5"}, "--qps"},
		{[]string{"--server", "127.0.0.1:53", "--names", "1", "--ndots", "0"}, "--ndots"},
		{[]string{"--server", "127.0.0.1:53", "--names", "1", "--edns", "70000"}, "--edns"},
		{[]string{"--server", "127.0.0.1:53", "--names", "1", "--bogus"}, "-bogus"},
		{[]string{"--server", "127.0.0.1:53", "--names", "1", "extra"}, "extra"},
	}
	for _, tt := range tests {
		err := run(context.Background(), tt.args)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: err = %v, want a usage error", tt.args, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
			t.Errorf("%q: error %q does not name %q on one line", tt.args, msg, tt.want)
		}
	}
}

// startServer starts a DNS server on loopback that answers NXDOMAIN for
// names starting with "nx", NOERROR with no answer for the others.
func startServer(t *testing.T) string {
	t.Helper()
	return testutil.StartUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if strings.HasPrefix(r.Question[0].Name, "nx") {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	}).Addr
}

func TestRunJSON(t *testing.T) {
	addr := startServer(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "q.txt")
	if err := os.WriteFile(file, []byte("# test\nwww.test A\nnx.test AAAA\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	stdout = &out
	defer func() { stdout = os.Stdout }()
	err := run(context.Background(), []string{"--server", addr, "--file", file, "--count", "100", "--concurrency", "4", "--json", "--cpu-profile", filepath.Join(dir, "cpu.out")})
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		QPS       float64           `json:"qps"`
		Sent      uint64            `json:"sent"`
		Answered  uint64            `json:"answered"`
		Lost      uint64            `json:"lost"`
		Rcodes    map[string]uint64 `json:"rcodes"`
		LatencyMs map[string]float64
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(out.Bytes(), &raw); err != nil {
		t.Fatalf("bad JSON %q: %v", out.String(), err)
	}
	for _, k := range []string{"qps", "sent", "answered", "lost", "rcodes", "latency_ms"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	_ = json.Unmarshal(out.Bytes(), &rep)
	_ = json.Unmarshal(raw["latency_ms"], &rep.LatencyMs)
	if rep.Sent != 100 || rep.Answered != 100 || rep.Lost != 0 || rep.Rcodes["NOERROR"] != 50 || rep.Rcodes["NXDOMAIN"] != 50 || rep.QPS <= 0 {
		t.Errorf("report %+v", rep)
	}
	for _, k := range []string{"p50", "p90", "p99", "p999", "max"} {
		if _, ok := rep.LatencyMs[k]; !ok {
			t.Errorf("latency_ms lacks %q", k)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "cpu.out")); err != nil || fi.Size() == 0 {
		t.Errorf("cpu profile not written: %v", err)
	}
}

func TestRunText(t *testing.T) {
	addr := startServer(t)
	var out bytes.Buffer
	stdout = &out
	defer func() { stdout = os.Stdout }()
	if err := run(context.Background(), []string{"--server", addr, "--names", "5", "--qps", "500", "--count", "50"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"UDP open loop", "sent         50", "NOERROR 50", "latency", "send lag"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
