package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// RequireRoot skips the test unless it runs as root with every one of
// tools installed; under CI (CI set), where a skip would hide a missing
// proof, it fails instead. make tools installs the tools the tests use.
func RequireRoot(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	for _, c := range tools {
		if LookBin(c) == "" {
			missing = append(missing, c)
		}
	}
	if os.Geteuid() == 0 && len(missing) == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("CI must run this test: it needs root and %v (missing: %v; make tools installs them)", tools, missing)
	}
	t.Skipf("needs root and %v (missing: %v)", tools, missing)
}

// LookBin finds a program in PATH or in the sbin directories, which a
// non-root PATH often lacks; "" when it is not installed.
func LookBin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}
