package testutil

import (
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Daemon is nodedns, built from this module's cmd/nodedns (Binary), run
// by a test on loopback.
type Daemon struct {
	*Process
	DNS  string // the --listen address
	HTTP string // the --http-listen address
}

// StartDaemon starts nodedns with DNS and HTTP on free ports of 127.0.0.1
// and the extra flags args.
func StartDaemon(t testing.TB, args ...string) *Daemon {
	t.Helper()
	return StartDaemonAt(t, FreeAddr(t), args...)
}

// StartDaemonAt starts nodedns serving DNS on dnsAddr, HTTP on a free port
// of 127.0.0.1 (args may name another: a later --http-listen wins), with
// the extra flags args. It returns once nodedns logs that it has started,
// its listeners bound; it fails the test if nodedns exits before, or has
// not started within 20 s.
func StartDaemonAt(t testing.TB, dnsAddr string, args ...string) *Daemon {
	t.Helper()
	d := &Daemon{DNS: dnsAddr, HTTP: FreeAddr(t)}
	all := append([]string{"--listen", d.DNS, "--http-listen", d.HTTP}, args...)
	d.Process = StartProcess(t, "nodedns", exec.Command(Binary(t, "./cmd/nodedns"), all...))
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(d.Out.String(), "nodedns started") {
		select {
		case <-d.Done():
			t.Fatalf("nodedns exited at start: %v\n%s", d.err, d.Out)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nodedns did not start in 20 s\n%s", d.Out)
		}
	}
	return d
}

// WaitHTTP waits up to timeout for url to answer 200 OK, and fails the
// test when it has not.
func WaitHTTP(t testing.TB, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var last string
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer 200 in %v (last: %s)", url, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
