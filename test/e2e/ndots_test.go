package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodedns/nodedns/internal/testutil"
)

// lookupC is a getaddrinfo(AF_UNSPEC) client, built with musl-gcc: what a
// pod built on Alpine runs. It prints one address per line.
const lookupC = `#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
	struct addrinfo hints, *res, *p;
	char buf[INET6_ADDRSTRLEN];
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	int rc = getaddrinfo(argv[1], NULL, &hints, &res);
	if (rc != 0) {
		fprintf(stderr, "%s: %s\n", argv[1], gai_strerror(rc));
		return 2;
	}
	for (p = res; p; p = p->ai_next) {
		void *a = p->ai_family == AF_INET ? (void *)&((struct sockaddr_in *)p->ai_addr)->sin_addr
		                                  : (void *)&((struct sockaddr_in6 *)p->ai_addr)->sin6_addr;
		printf("%s\n", inet_ntop(p->ai_family, a, buf, sizeof buf));
	}
	freeaddrinfo(res);
	return 0;
}
`

// buildMuslLookup compiles lookupC statically with musl-gcc.
func buildMuslLookup(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("musl-gcc"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("CI must run the musl client: install musl-tools (make tools does)")
		}
		t.Skip("needs musl-gcc (Debian's musl-tools)")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "lookup.c")
	if err := os.WriteFile(src, []byte(lookupC), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "musl-lookup")
	testutil.Run(t, "musl-gcc", "-static", "-O1", "-o", bin, src)
	return bin
}

// The ndots:5 amplification, measured with the two C libraries pods use:
// each looks up external names with the Kubernetes search list, through
// nodedns to a cluster DNS (CoreDNS) that answers NXDOMAIN for what the
// cluster zone does not hold. Without the search stage every search-list
// expansion goes upstream; with it, those that cannot exist are answered on
// the node. The figures are in docs/kubernetes.md.
func TestNdotsExpansionsWithGlibcAndMusl(t *testing.T) {
	requireRoot(t)
	coredns := buildCoreDNS(t)
	nodedns := testutil.Binary(t, "./cmd/nodedns")
	musl := buildMuslLookup(t)
	// Every name under test. exists: each lookup can be of a new one.
	corefile := writeClusterDNS(t, `$ORIGIN test.
@      3600 IN SOA ns.test. hostmaster.test. 1 7200 1800 86400 60
*      300 IN A 192.0.2.20
*      300 IN AAAA 2001:db8::20
`)
	// What kubelet writes for a pod in namespace shop (ClusterFirst).
	n := newNetns(t, "nameserver 127.0.0.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n")
	n.Start(t, "coredns", coredns, "-conf", corefile)
	n.WaitDNS(t, "127.0.0.1", "1053")

	// External names of 1, 2 and 3 dots, each below ndots:5 so that every
	// search expansion is tried first.
	shapes := []struct {
		label, format string
		want          float64 // upstream queries per lookup with the stage, at most
	}{
		// host-N.test.<ns>.svc.<cd> could be endpoint host-N of Service
		// test, and host-N.test.svc.<cd> Service host-N in namespace test:
		// only the Kubernetes view can deny those.
		{"1 dot (host-N.test)", "host-%s-%d.test", 6},
		{"2 dots (api.host-N.test)", "api.host-%s-%d.test", 4},
		{"3 dots (www.api.host-N.test)", "www.api.host-%s-%d.test", 2},
	}
	type result struct {
		perLookup float64
		latency   time.Duration // per lookup, less the client's own start-up
	}
	clients := map[string][]string{"glibc": {"getent", "ahosts"}, "musl": {musl}}
	// What a client process costs without DNS: localhost comes from
	// /etc/hosts in both libcs.
	startup := map[string]time.Duration{}
	for libc, argv := range clients {
		const runs = 20
		start := time.Now()
		for range runs {
			n.Exec(t, append(argv, "localhost")...)
		}
		startup[libc] = time.Since(start) / runs
	}
	measure := func(t *testing.T, searchStage bool) map[string]map[string]result {
		// A fresh nodedns each time, so that nothing is cached.
		p := n.Start(t, "nodedns", nodedns, "--listen", "127.0.0.1:53", "--http-listen", "127.0.0.1:9253",
			"--upstream", "127.0.0.1:1053", "--log-level", "warn", fmt.Sprintf("--search=%v", searchStage))
		defer p.Kill()
		n.WaitDNS(t, "127.0.0.1", "53")
		upstream := func() float64 {
			var sum float64
			for _, rc := range []string{"NOERROR", "NXDOMAIN"} {
				sum += metric(t, n, fmt.Sprintf(`nodedns_upstream_requests_total{rcode=%q,upstream="127.0.0.1:1053"}`, rc))
			}
			return sum
		}
		res := map[string]map[string]result{}
		for _, libc := range []string{"glibc", "musl"} {
			res[libc] = map[string]result{}
			for _, shape := range shapes {
				const lookups = 20
				before := upstream()
				start := time.Now()
				for i := range lookups {
					name := fmt.Sprintf(shape.format, libc, i) // a new name each time: nothing cached
					got := n.Exec(t, append(clients[libc], name)...)
					if !strings.Contains(got, "192.0.2.") {
						t.Fatalf("%s lookup of %s: %q", libc, name, got)
					}
				}
				res[libc][shape.label] = result{(upstream() - before) / lookups, time.Since(start)/lookups - startup[libc]}
			}
		}
		return res
	}
	before := measure(t, false)
	after := measure(t, true)
	for _, libc := range []string{"glibc", "musl"} {
		for _, shape := range shapes {
			b, a := before[libc][shape.label], after[libc][shape.label]
			t.Logf("%-5s %-34s upstream queries per lookup: %.1f without the search stage, %.1f with it; lookup (client start-up of %v subtracted) %v -> %v",
				libc, shape.label, b.perLookup, a.perLookup, startup[libc].Round(100*time.Microsecond), b.latency.Round(100*time.Microsecond), a.latency.Round(100*time.Microsecond))
			if a.perLookup > shape.want {
				t.Errorf("%s, %s: %.1f upstream queries per lookup with the search stage, want at most %.0f", libc, shape.label, a.perLookup, shape.want)
			}
			if b.perLookup < 8 {
				t.Errorf("%s, %s: %.1f upstream queries per lookup without the search stage, want 8: the measurement is not seeing the expansions", libc, shape.label, b.perLookup)
			}
		}
	}
}
