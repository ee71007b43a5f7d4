package deploy

import (
	le "encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodedns/nodedns/internal/testutil"
)

// Capability numbers (linux/capability.h).
var capNumbers = map[corev1.Capability]uint{"NET_BIND_SERVICE": 10, "NET_ADMIN": 12}

// secContext is how a container runtime starts the container's process,
// reduced to what decides its capabilities.
type secContext struct {
	uid        int64
	caps       []corev1.Capability // capabilities.add, with drop [ALL]
	noNewPrivs bool                // allowPrivilegeEscalation: false
}

// fromManifest is the security context of the DaemonSet's container.
func fromManifest(t *testing.T, d *deployment) secContext {
	t.Helper()
	sc := d.c.SecurityContext
	if sc == nil || sc.Capabilities == nil || sc.RunAsUser == nil {
		t.Fatal("the container has no securityContext with runAsUser and capabilities")
	}
	return secContext{uid: *sc.RunAsUser, caps: sc.Capabilities.Add,
		noNewPrivs: sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation}
}

// setprivArgs start a program the way runc starts a container's process
// for such a context: the bounding set is the added capabilities (drop
// ALL), no inheritable and no ambient capabilities (containerd and CRI-O
// set none; Kubernetes has no field for them), the user switched, and
// no_new_privs set when privilege escalation is not allowed. runc also puts
// the capabilities in the permitted and effective sets before execve; for
// root execve gives them back from the bounding set, for any other user it
// clears them unless the binary has file capabilities, which is what the
// cases below show.
func (s secContext) setprivArgs() []string {
	bound := "-all"
	for _, c := range s.caps {
		bound += ",+" + strings.ToLower(string(c))
	}
	args := []string{"setpriv", "--reuid=" + strconv.FormatInt(s.uid, 10), "--regid=" + strconv.FormatInt(s.uid, 10), "--clear-groups",
		"--bounding-set=" + bound, "--inh-caps=-all", "--ambient-caps=-all"}
	if s.noNewPrivs {
		args = append(args, "--no-new-privs")
	}
	return append(args, "--")
}

// netnsDaemon is nodedns in a network namespace of the test's own.
type netnsDaemon struct {
	*testutil.Process
	ns   *testutil.Netns
	http string
}

// startInNetns starts nodedns in a new network namespace with the
// security context s, serving 169.254.20.10:53 with the DaemonSet's node
// set-up (the interface and the rules) and HTTP on the namespace's
// loopback. It returns once nodedns serves HTTP, or with the process gone
// (d.Exited reports it).
func startInNetns(t *testing.T, s secContext, bin string, extra ...string) *netnsDaemon {
	t.Helper()
	d := &netnsDaemon{ns: testutil.NewNetns(t, "nodedns-deploy"), http: "127.0.0.1:9253"}
	args := append(s.setprivArgs(), bin, "--listen="+nodeLocalIP+":53", "--http-listen="+d.http,
		"--upstream=127.0.0.1:5399", "--kube=false", "--setup-interface", "--setup-rules", "--setup-interval=1s")
	// ip netns exec and setpriv exec in place: the PID is nodedns's.
	d.Process = d.ns.Start(t, "nodedns", append(args, extra...)...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := d.get("/health"); err == nil {
			return d
		}
		select {
		case <-d.Done():
			return d
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nodedns in %s did not serve /health in 30 s:\n%s", d.ns.Name, d.Out.String())
		}
	}
}

// get fetches an HTTP path from the daemon inside its namespace (with
// curl: a Go dialer's socket would be made on another thread, in the
// test's own namespace).
func (d *netnsDaemon) get(path string) ([]byte, error) {
	return d.ns.Command("curl", "-sf", "--max-time", "5", "http://"+d.http+path).Output()
}

// capEff returns the effective capabilities of the daemon's process.
func (d *netnsDaemon) capEff(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no CapEff in /proc/PID/status")
	return 0
}

// capMask is the mask of the capabilities.
func capMask(t *testing.T, caps []corev1.Capability) uint64 {
	t.Helper()
	var m uint64
	for _, c := range caps {
		n, ok := capNumbers[c]
		if !ok {
			t.Fatalf("capability %s: not one the test knows", c)
		}
		m |= 1 << n
	}
	return m
}

// publicBinary copies the built binary to a directory any user can read,
// optionally with file capabilities (security.capability, revision 2:
// permitted and effective, as `setcap cap_...+ep` writes it).
func publicBinary(t *testing.T, caps []corev1.Capability) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nodedns-deploy-bin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "nodedns")
	src, err := os.Open(testutil.Binary(t, "./cmd/nodedns"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, src); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if caps != nil {
		const revision2, effective = 0x02000000, 0x000001
		m := capMask(t, caps)
		b := make([]byte, 20)
		le.LittleEndian.PutUint32(b[0:], revision2|effective)
		le.LittleEndian.PutUint32(b[4:], uint32(m))      // permitted, low word
		le.LittleEndian.PutUint32(b[12:], uint32(m>>32)) // permitted, high word
		if err := unix.Setxattr(dst, "security.capability", b, 0); err != nil {
			t.Skipf("file capabilities on %s: %v", dst, err)
		}
	}
	return dst
}

// TestCapabilities runs nodedns in a network namespace the way a container
// runtime would start it under the DaemonSet's security context, and under
// the alternatives, to show which give it what it needs: port 53 (the
// NET_BIND_SERVICE capability) and the interface and conntrack rules
// (NET_ADMIN).
func TestCapabilities(t *testing.T) {
	testutil.RequireRoot(t, "ip", "setpriv", "curl")
	d := load(t, "base", render(t, "base"))
	manifest := fromManifest(t, d)
	want := capMask(t, manifest.caps)

	t.Run("as the DaemonSet runs it: root, only the two capabilities", func(t *testing.T) {
		nd := startInNetns(t, manifest, publicBinary(t, nil))
		if nd.Exited() {
			t.Fatalf("nodedns exited:\n%s", nd.Out.String())
		}
		if got := nd.capEff(t); got != want {
			t.Errorf("effective capabilities %#x, want exactly %#x (%v)", got, want, manifest.caps)
		}
		// The address and the rules are in place: NET_ADMIN was enough.
		for _, m := range []string{"nodedns_setup_interface_in_place", "nodedns_setup_rules_in_place"} {
			waitMetric(t, nd, m, 1)
		}
	})

	t.Run("non-root with capabilities.add alone: nothing", func(t *testing.T) {
		s := manifest
		s.uid = 65532
		nd := startInNetns(t, s, publicBinary(t, nil))
		if !nd.Exited() {
			t.Fatalf("nodedns runs as a non-root user with no file capabilities (effective %#x): the claim in the DaemonSet's comment is wrong", nd.capEff(t))
		}
		if !strings.Contains(nd.Out.String(), "not permitted") && !strings.Contains(nd.Out.String(), "permission denied") {
			t.Errorf("nodedns failed for another reason than a missing capability:\n%s", nd.Out.String())
		}
		t.Logf("as uid 65532: %s", lastLine(nd.Out.String()))
	})

	t.Run("non-root with file capabilities on the binary: the alternative", func(t *testing.T) {
		s := manifest
		s.uid = 65532
		nd := startInNetns(t, s, publicBinary(t, manifest.caps))
		if nd.Exited() {
			t.Fatalf("nodedns exited:\n%s", nd.Out.String())
		}
		if got := nd.capEff(t); got != want {
			t.Errorf("effective capabilities %#x, want %#x", got, want)
		}
		for _, m := range []string{"nodedns_setup_interface_in_place", "nodedns_setup_rules_in_place"} {
			waitMetric(t, nd, m, 1)
		}
	})
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// waitMetric waits up to 10 s for the unlabelled metric to have the value.
func waitMetric(t *testing.T, nd *netnsDaemon, name string, want float64) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		b, err := nd.get("/metrics")
		if err != nil {
			last = err.Error()
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				last = v
				if f, err := strconv.ParseFloat(v, 64); err == nil && f == want {
					return
				}
			}
		}
	}
	t.Errorf("%s is %s, want %v", name, last, want)
}

// setupSeries returns the /metrics of nodedns running as the DaemonSet
// runs it, node set-up on, in a namespace of the test's own (the series of
// package nodenet exist only then); nil when not root.
func setupSeries(t *testing.T) series {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root, as CI has")
		}
		return nil
	}
	d := load(t, "base", render(t, "base"))
	nd := startInNetns(t, fromManifest(t, d), publicBinary(t, nil))
	if nd.Exited() {
		t.Fatalf("nodedns exited:\n%s", nd.Out.String())
	}
	waitMetric(t, nd, "nodedns_setup_rules_in_place", 1)
	b, err := nd.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return parseExposition(t, b)
}
