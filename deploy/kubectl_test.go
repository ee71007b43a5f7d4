package deploy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodedns/nodedns/internal/kubetest"
)

// kubectlPath returns the kubectl the test harness builds (tools/kube), or
// "" when it is not built (a failure under CI, where it must be).
func kubectlPath(t *testing.T) string {
	t.Helper()
	p := filepath.Join(kubetest.BinDir(), "kubectl")
	if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		msg := "kubectl not found in " + filepath.Dir(p) + ": build it with tools/kube/build.sh (`make tools`); the check against kubectl is skipped"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Log(msg)
		return ""
	}
	return p
}

// runKubectl runs kubectl without a cluster (kubectl kustomize) and
// returns its standard output.
func runKubectl(t *testing.T, kubectl string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kubectl, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}
