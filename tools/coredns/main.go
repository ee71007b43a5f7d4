// Command coredns is a trimmed CoreDNS v1.15.0 build used by the nodedns
// benchmark suite as the reference node-local cache (the same software that
// Kubernetes NodeLocal DNSCache ships, configured by a Corefile).
//
// It is also the cluster DNS of the end-to-end tests: its kubernetes plugin
// serves cluster.local from the API server internal/kubetest starts, as in a
// real cluster.
//
// Only the plugins a NodeLocal DNSCache-like setup and the benchmark/tests
// need are compiled in; everything else (cloud backends, ...) is left out to
// keep the build small and fast. Build it with ./build.sh.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// Plugins, registered by their init functions (see coredns
	// core/plugin/zplugin.go for the full upstream list).
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/debug"
	_ "github.com/coredns/coredns/plugin/erratic"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/file"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics" // directive "prometheus"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/template"
	_ "github.com/coredns/coredns/plugin/whoami"
)

// directives is the plugin execution order: the subsequence of upstream
// core/dnsserver/zdirectives.go (v1.15.0) for the plugins imported above
// and the ones they pull in themselves (metadata, dnstap, transfer).
// Order matters: a plugin sees the effects of every plugin after it.
var directives = []string{
	"metadata",
	"reload",
	"bind",
	"debug",
	"ready",
	"health",
	"prometheus",
	"errors",
	"log",
	"dnstap",
	"loadbalance",
	"cache",
	"template",
	"transfer",
	"hosts",
	"kubernetes",
	"file",
	"loop",
	"forward",
	"erratic",
	"whoami",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
