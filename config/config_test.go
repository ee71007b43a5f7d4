package config

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodedns/nodedns/upstream"
)

func writeConfig(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nodedns.yaml")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func withResolvConf(t *testing.T, content string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	old := ResolvConf
	ResolvConf = p
	t.Cleanup(func() { ResolvConf = old })
}

func TestPrecedenceDefaultsFileFlags(t *testing.T) {
	withResolvConf(t, "nameserver 192.0.2.53\n")
	file := writeConfig(t, `
listen: ["127.0.0.1:1053"]
cache:
  size: 8MiB
  negative_ttl: 30s
upstreams:
  - zones: [cluster.local]
    servers: ["10.96.0.10"]
    force_tcp: true
`)
	c, err := Parse([]string{"--config", file, "--cache-size", "16MiB"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.Listen[0] != "127.0.0.1:1053" {
		t.Errorf("listen %v: the file should win over the default", c.Server.Listen)
	}
	if c.Cache.MaxBytes != 16<<20 {
		t.Errorf("cache size %d: the flag should win over the file", c.Cache.MaxBytes)
	}
	if c.Cache.Policy.NegativeTTL != 30*time.Second || c.Cache.Policy.MaxTTL != time.Hour {
		t.Errorf("negative %v max %v", c.Cache.Policy.NegativeTTL, c.Cache.Policy.MaxTTL)
	}
	if len(c.Upstreams) != 2 {
		t.Fatalf("upstreams %+v: want the cluster group and a default from resolv.conf", c.Upstreams)
	}
	if g := c.Upstreams[0]; !g.ForceTCP || g.Timeout != upstream.DefaultTimeout || g.Name != "cluster.local" {
		t.Errorf("cluster group %+v", g)
	}
	if g := c.Upstreams[1]; g.Addrs[0] != "192.0.2.53:53" || g.Zones[0] != "." {
		t.Errorf("default group %+v", g)
	}
}

func TestUpstreamFlagReplacesTheRootGroupServers(t *testing.T) {
	file := writeConfig(t, "upstreams:\n  - zones: [\".\"]\n    servers: [\"127.0.0.2\"]\n    timeout: 3s\n")
	c, err := Parse([]string{"--config", file, "--upstream", "127.0.0.3:5300,[::1]:53", "--upstream-force-tcp"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	g := c.Upstreams[0]
	if len(c.Upstreams) != 1 || strings.Join(g.Addrs, ",") != "127.0.0.3:5300,[::1]:53" || !g.ForceTCP || g.Timeout != 3*time.Second {
		t.Errorf("got %+v", c.Upstreams)
	}
}

func TestErrorsNameTheField(t *testing.T) {
	withResolvConf(t, "nameserver 192.0.2.53\n")
	tests := []struct {
		name string
		args []string
		file string
		want string
	}{
		{"unknown flag", []string{"--nope"}, "", "nope"},
		{"flag size", []string{"--cache-size", "big"}, "", "flag --cache-size"},
		{"flag int", []string{"--max-inflight", "many"}, "", "flag --max-inflight"},
		{"flag float", []string{"--query-log-sample", "2"}, "", "query_log_sample"},
		{"flag allow", []string{"--allow", "10.0.0.0/33"}, "", "flag --allow"},
		{"listen hostname", []string{"--listen", "localhost:53"}, "", "listen"},
		{"log level", []string{"--log-level", "loud"}, "", "log_level"},
		{"positional", []string{"extra"}, "", "unexpected argument"},
		{"unknown key", nil, "cahce: {}\n", "cahce"},
		{"wrong type", nil, "listen: 5\n", "listen"},
		{"cache size", nil, "cache:\n  size: 1KiB\n", "cache.size"},
		{"shards", nil, "cache:\n  shards: 3\n", "cache.shards"},
		{"ttl order", nil, "cache:\n  min_ttl: 2h\n  max_ttl: 1h\n", "cache.min_ttl"},
		{"udp size", nil, "server:\n  max_udp_size: 100\n", "server.max_udp_size"},
		{"group zones", nil, "upstreams:\n  - servers: [\"127.0.0.1\"]\n", "upstreams[0].zones"},
		{"group timeout", nil, "upstreams:\n  - zones: [a.]\n    servers: [\"127.0.0.1\"]\n    timeout: x\n", "upstreams[0].timeout"},
		{"group max_fails", nil, "upstreams:\n  - zones: [a.]\n    servers: [\"127.0.0.1\"]\n    max_fails: 0\n", "upstreams[0].max_fails"},
		{"bad zone", nil, "upstreams:\n  - zones: [\"a..b\"]\n    servers: [\"127.0.0.1\"]\n", "upstreams[0].zones"},
		{"queue wait", nil, "server:\n  max_queue_wait: 0s\n", "server.max_queue_wait"},
		{"queue wait above the deadline", []string{"--max-queue-wait", "5s"}, "", "server.max_queue_wait"},
		{"upstream is our listen address", []string{"--listen", "127.0.0.1:5353", "--upstream", "127.0.0.1:5353"}, "", "upstreams[0].servers[0]"},
		{"upstream behind a wildcard listen", []string{"--listen", "0.0.0.0:53", "--upstream", "127.0.0.1"}, "", "loop"},
		{"resolv.conf points back at us", []string{"--listen", "192.0.2.53:53"}, "", "loop"},
		{"kube flag", []string{"--kube=maybe"}, "", "flag --kube"},
		{"kube key", nil, "kube:\n  enabled: sometimes\n", "kube.enabled"},
		{"dns service", []string{"--kube-dns-service", "kube-dns"}, "", "kube.dns_service"},
		{"node search", nil, "kube:\n  node_search: [\"a..b\"]\n", "kube.node_search[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append(args, "--config", writeConfig(t, tc.file))
			}
			_, err := Parse(args, io.Discard)
			if err == nil {
				t.Fatal("no error")
			}
			if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line naming %q", msg, tc.want)
			}
		})
	}
}

func TestNoUpstreamAnywhere(t *testing.T) {
	withResolvConf(t, "# nothing\n")
	if _, err := Parse(nil, io.Discard); err == nil || !strings.Contains(err.Error(), "upstream") {
		t.Errorf("err = %v, want one about the missing upstream", err)
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"32MiB", 32 << 20, true}, {"1GiB", 1 << 30, true}, {"512KiB", 512 << 10, true},
		{"100", 100, true}, {"1.5MiB", 3 << 19, true}, {"2M", 2 << 20, true}, {"64 KB", 64 << 10, true},
		{"", 0, false}, {"MiB", 0, false}, {"-1MiB", 0, false}, {"lots", 0, false},
	} {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// TestEveryFlagIsDocumented keeps the reference pages complete: every flag
// in docs/reference/flags.md, every config file key in
// docs/reference/config.md.
func TestEveryFlagIsDocumented(t *testing.T) {
	flags, err := os.ReadFile("../docs/reference/flags.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range FlagNames() {
		if !strings.Contains(string(flags), "`--"+name) {
			t.Errorf("docs/reference/flags.md does not document --%s", name)
		}
	}
	keys, err := os.ReadFile("../docs/reference/config.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range fileKeys(reflect.TypeOf(File{})) {
		if !strings.Contains(string(keys), "`"+key+"`") {
			t.Errorf("docs/reference/config.md does not document config key %s", key)
		}
	}
}

// fileKeys lists the YAML keys of a config file section, recursively.
func fileKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		keys = append(keys, name)
		ft := f.Type
		for ft.Kind() == reflect.Slice || ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			keys = append(keys, fileKeys(ft)...)
		}
	}
	return keys
}

func TestDiff(t *testing.T) {
	withResolvConf(t, "nameserver 192.0.2.53\n")
	old, err := Parse(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if live, restart := Diff(old, old); len(live)+len(restart) != 0 {
		t.Errorf("no change reported as %v / %v", live, restart)
	}
	changed, err := Parse([]string{"--request-timeout", "3s", "--log-format", "console", "--cache-size", "8MiB",
		"--allow", "10.0.0.0/8", "--upstream-timeout", "1s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	live, restart := Diff(old, changed)
	if want := []string{"allow", "server.request_timeout", "upstreams"}; !slices.Equal(live, want) {
		t.Errorf("live %v, want %v", live, want)
	}
	if want := []string{"cache.size", "log_format"}; !slices.Equal(restart, want) {
		t.Errorf("restart %v, want %v", restart, want)
	}
}

// Every field of Config, down to the fields of the packages' own types,
// is a setting with a key, once: none can change unseen by Diff, and none
// is left out of Applied.
func TestEverySettingHasAKey(t *testing.T) {
	type field struct {
		addr uintptr
		typ  reflect.Type
	}
	var c Config
	keyed := map[field]string{}
	for _, s := range settings {
		v := reflect.ValueOf(s.at(&c))
		f := field{v.Pointer(), v.Elem().Type()}
		if other, dup := keyed[f]; dup {
			t.Errorf("%s and %s are the same field", s.key, other)
		}
		keyed[f] = s.key
	}
	// Not settings: set by the daemon, or what Parse keeps for itself.
	skip := map[string]bool{"Local": true, "Walker": true, "ConfigFile": true, "forceTCPSet": true}
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		for i := range v.NumField() {
			sf, fv := v.Type().Field(i), v.Field(i)
			if skip[sf.Name] {
				continue
			}
			if sf.Type.Kind() == reflect.Struct {
				walk(fv, path+sf.Name+".")
				continue
			}
			if _, ok := keyed[field{fv.Addr().Pointer(), sf.Type}]; !ok {
				t.Errorf("Config.%s%s has no key in settings", path, sf.Name)
			}
		}
	}
	walk(reflect.ValueOf(&c).Elem(), "")
	// And every key is one the file has.
	fk := map[string]bool{}
	for _, k := range fileKeysDotted(reflect.TypeOf(File{}), "") {
		fk[k] = true
	}
	for _, s := range settings {
		if !fk[s.key] {
			t.Errorf("setting %s is not a config file key", s.key)
		}
	}
}

// fileKeysDotted lists the config file's keys as settings name them
// (cache.size), not descending into the upstream groups.
func fileKeysDotted(t reflect.Type, prefix string) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			keys = append(keys, fileKeysDotted(f.Type, prefix+name+".")...)
			continue
		}
		keys = append(keys, prefix+name)
	}
	return keys
}

// The --upstream-* flags apply to the default group, also when it comes
// from resolv.conf.
func TestUpstreamFlagsApplyToTheGroupFromResolvConf(t *testing.T) {
	withResolvConf(t, "nameserver 192.0.2.53\n")
	c, err := Parse([]string{"--upstream-timeout", "700ms", "--upstream-force-tcp", "--upstream-max-inflight", "42"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	g := c.Upstreams[0]
	if g.Addrs[0] != "192.0.2.53:53" || g.Timeout != 700*time.Millisecond || !g.ForceTCP || g.MaxInflight != 42 {
		t.Errorf("default group %+v", g)
	}
}

func TestZeroMeansOffOrIsRefused(t *testing.T) {
	withResolvConf(t, "nameserver 192.0.2.53\n")
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--cache-servfail-ttl", "0s"}, true},
		{[]string{"--serve-stale", "0s"}, true},
		{[]string{"--stale-answer-timeout", "0s"}, true},
		{[]string{"--prefetch-min-hits", "0"}, true},
		{[]string{"--memory-limit-ratio", "0"}, true},
		{[]string{"--udp-sockets", "0"}, true},
		{[]string{"--max-inflight", "0"}, false},
		{[]string{"--max-waiters", "0"}, false},
		{[]string{"--tcp-max-conns", "0"}, false},
		{[]string{"--tcp-idle-timeout", "0s"}, false},
		{[]string{"--request-timeout", "0s"}, false},
	} {
		_, err := Parse(tc.args, io.Discard)
		if (err == nil) != tc.ok {
			t.Errorf("%v: err %v, want ok=%v", tc.args, err, tc.ok)
		}
	}
}

// The Kubernetes view: on inside a cluster or with a kubeconfig, never by
// picking up a kubeconfig of the shell's; the node's name and search
// domains come from the downward API and resolv.conf.
func TestKubeSettings(t *testing.T) {
	withResolvConf(t, "nameserver 192.0.2.53\nsearch c.example.internal example.internal\n")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBECONFIG", "/somewhere/config")
	t.Setenv("NODE_NAME", "node-7")
	c, err := Parse(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.KubeOn() || c.NodeName != "node-7" || !slices.Equal(c.NodeSearch, []string{"c.example.internal", "example.internal"}) ||
		c.KubeDNSService != "kube-system/kube-dns" || !c.Autopath {
		t.Errorf("defaults: on %v, node %q, node search %q, DNS service %q, autopath %v", c.KubeOn(), c.NodeName, c.NodeSearch, c.KubeDNSService, c.Autopath)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
	if c, _ := Parse(nil, io.Discard); !c.KubeOn() {
		t.Error("auto is off inside a cluster")
	}
	if c, _ := Parse([]string{"--kube=false"}, io.Discard); c.KubeOn() {
		t.Error("--kube=false is on")
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	c, err = Parse([]string{"--kubeconfig", "/etc/kube.yaml", "--node-name", "n1", "--autopath=false", "--kube-dns-service", ""}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.KubeOn() || c.NodeName != "n1" || c.Autopath || c.KubeDNSService != "" {
		t.Errorf("flags: on %v, node %q, autopath %v, DNS service %q", c.KubeOn(), c.NodeName, c.Autopath, c.KubeDNSService)
	}
}

// A group serving a cluster domain talks TCP over reused connections unless
// told otherwise; other groups UDP.
func TestClusterGroupsDefaultToTCP(t *testing.T) {
	withResolvConf(t, "nameserver 192.0.2.53\n")
	p := writeConfig(t, `
upstreams:
  - zones: [cluster.local, in-addr.arpa]
    servers: ["10.96.0.10"]
  - zones: [other.cluster]
    servers: ["10.96.0.11"]
    force_tcp: false
  - zones: ["."]
    servers: ["192.0.2.53"]
`)
	c, err := Parse([]string{"--config", p, "--cluster-domain", "cluster.local,other.cluster"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false, false} {
		if c.Upstreams[i].ForceTCP != want {
			t.Errorf("group %v: force_tcp %v, want %v", c.Upstreams[i].Zones, c.Upstreams[i].ForceTCP, want)
		}
	}
}
