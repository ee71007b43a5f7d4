package conformance

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/internal/testutil"
)

// StartServer starts bin with args in dir as the Process name; it dies
// with the test. Unlike testutil.StartProcess it may run on any goroutine:
// it returns the error of a failed start.
func StartServer(t testing.TB, name, dir, bin string, args ...string) (*testutil.Process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	// Its own process group, so that a ^C to the test does not reach it
	// before Process.Stop does; Stop signals the PID only.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return testutil.Launch(t, name, cmd)
}

// WaitReady asks addr for q until any reply comes back, the process p
// exits or timeout passes.
func WaitReady(p *testutil.Process, addr string, q Query, timeout time.Duration) error {
	end := time.Now().Add(timeout)
	for time.Now().Before(end) {
		if p.Exited() {
			return fmt.Errorf("%s exited at start (%v):\n%s", p.Name, p.Wait(), p.Out)
		}
		if r := Exchange(addr, q, 200*time.Millisecond); r.Msg != nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not answering on %s after %v:\n%s", p.Name, addr, timeout, p.Out)
}

// Zone is a zone file of testdata/zones: NAME.zone. A zone file with a
// line "; sign: nsec" or "; sign: nsec3" is signed by Knot at start with
// a key made by keymgr, and its DS record goes into its parent's file.
type Zone struct {
	Name string // fully qualified, lower case
	File string
	Sign string // "", "nsec" or "nsec3"
}

// ReadZones lists the zones of dir.
func ReadZones(dir string) ([]Zone, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.zone"))
	if err != nil {
		return nil, err
	}
	var zs []Zone
	for _, f := range files {
		z := Zone{Name: dns.Fqdn(strings.ToLower(strings.TrimSuffix(filepath.Base(f), ".zone"))), File: f}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "; sign: "); ok {
				z.Sign = strings.TrimSpace(v)
			}
		}
		if z.Sign != "" && z.Sign != "nsec" && z.Sign != "nsec3" {
			return nil, fmt.Errorf("%s: sign: %q, want nsec or nsec3", f, z.Sign)
		}
		zs = append(zs, z)
	}
	if len(zs) == 0 {
		return nil, fmt.Errorf("no zone files in %s", dir)
	}
	sort.Slice(zs, func(i, j int) bool { return zs[i].Name < zs[j].Name })
	return zs, nil
}

// parent returns the zone of zs that is the closest ancestor of z, if any.
func parent(zs []Zone, z Zone) (Zone, bool) {
	var best Zone
	found := false
	for _, c := range zs {
		if c.Name != z.Name && dns.IsSubDomain(c.Name, z.Name) && (!found || len(c.Name) > len(best.Name)) {
			best, found = c, true
		}
	}
	return best, found
}

// KnotConfig is the knotd configuration serving zs from dir/zones on
// 127.0.0.1:port, keeping its state in dir. Signed zones use keys made
// beforehand (manual policy) so their DS records can go into the parent.
func KnotConfig(dir string, port int, zs []Zone) string {
	var b strings.Builder
	fmt.Fprintf(&b, `server:
    rundir: "%[1]s/run"
    listen: 127.0.0.1@%[2]d
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: notice
database:
    storage: "%[1]s/db"
policy:
  - id: nsec
    algorithm: ecdsap256sha256
    single-type-signing: on
    manual: on
  - id: nsec3
    algorithm: ecdsap256sha256
    single-type-signing: on
    manual: on
    nsec3: on
    nsec3-iterations: 0
    nsec3-salt-length: 0
template:
  - id: default
    storage: "%[1]s/zones"
    file: "%%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
`, dir, port)
	for _, z := range zs {
		fmt.Fprintf(&b, "  - domain: %s\n", z.Name)
		if z.Sign != "" {
			fmt.Fprintf(&b, "    dnssec-signing: on\n    dnssec-policy: %s\n", z.Sign)
		}
	}
	return b.String()
}

// SetUpKnot lays out dir for knotd serving the zones of zoneDir on port:
// the configuration, the zone files, and for each signed zone a key (made
// with keymgr) whose DS record is appended to its parent's copy. It
// returns the configuration's path.
func SetUpKnot(dir, zoneDir string, port int) (string, error) {
	zs, err := ReadZones(zoneDir)
	if err != nil {
		return "", err
	}
	for _, d := range []string{"zones", "db", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return "", err
		}
	}
	for _, z := range zs {
		b, err := os.ReadFile(z.File)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, "zones", z.Name+"zone"), b, 0o644); err != nil {
			return "", err
		}
	}
	conf := filepath.Join(dir, "knot.conf")
	if err := os.WriteFile(conf, []byte(KnotConfig(dir, port, zs)), 0o644); err != nil {
		return "", err
	}
	keymgr := testutil.LookBin("keymgr")
	for _, z := range zs {
		if z.Sign == "" {
			continue
		}
		if keymgr == "" {
			return "", errors.New("keymgr (package knot) not found")
		}
		if out, err := exec.Command(keymgr, "-c", conf, z.Name, "generate", "algorithm=ecdsap256sha256", "ksk=yes", "zsk=yes").CombinedOutput(); err != nil {
			return "", fmt.Errorf("keymgr generate %s: %v\n%s", z.Name, err, out)
		}
		out, err := exec.Command(keymgr, "-c", conf, z.Name, "ds").Output()
		if err != nil {
			return "", fmt.Errorf("keymgr ds %s: %v", z.Name, err)
		}
		p, ok := parent(zs, z)
		if !ok {
			continue
		}
		var ds strings.Builder
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			// SHA-256 digests only (type 2), as most zones publish.
			if f := strings.Fields(line); len(f) == 6 && f[1] == "DS" && f[4] == "2" {
				fmt.Fprintf(&ds, "%s 3600 IN DS %s\n", f[0], strings.Join(f[2:], " "))
			}
		}
		pf := filepath.Join(dir, "zones", p.Name+"zone")
		f, err := os.OpenFile(pf, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return "", err
		}
		_, err = f.WriteString("\n; DS of " + z.Name + ", from keymgr\n" + ds.String())
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", err
		}
	}
	return conf, nil
}

// UnboundConfig is the unbound configuration: a caching resolver on
// 127.0.0.1:port that forwards every name to the authoritative server on
// 127.0.0.1:authPort and nowhere else. It validates nothing (module
// iterator only, no trust anchor), has an empty root hints file (the
// forward zone for "." means it never primes), serves the special-use
// names the test zones use (test., TEST-NET-1's reverse zone) instead of
// its built-in empty zones, returns the additional data it has
// (minimal-responses: no) as nodedns and CoreDNS pass it on, and answers
// queries with RD=0 from its cache (allow_snoop) rather than REFUSED, as
// nodedns answers them, and takes as many TCP connections at once as the
// test opens (its default, 10, resets the others). Everything else is
// Unbound's default.
func UnboundConfig(dir string, port, authPort int) string {
	return fmt.Sprintf(`server:
    verbosity: 1
    interface: 127.0.0.1
    port: %[2]d
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "%[1]s"
    pidfile: "%[1]s/unbound.pid"
    logfile: ""
    use-syslog: no
    num-threads: 1
    so-reuseport: no
    incoming-num-tcp: 128
    module-config: "iterator"
    do-not-query-localhost: no
    qname-minimisation: no
    minimal-responses: no
    root-hints: "%[1]s/root.hints"
    access-control: 127.0.0.0/8 allow_snoop
    local-zone: "test." nodefault
    local-zone: "2.0.192.in-addr.arpa." nodefault
remote-control:
    control-enable: no
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@%[3]d
`, dir, port, authPort)
}

// Corefile is the CoreDNS configuration: cache, forwarding everything to
// the authoritative server, as NodeLocal DNSCache does to the cluster DNS.
func Corefile(port, authPort int) string {
	return fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    errors
    cache
    forward . 127.0.0.1:%d
}
`, port, authPort)
}
