package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nodedns/nodedns/internal/testutil"
)

// TestMakefileFuzzesEveryTarget keeps `make fuzz` (part of `make test`)
// running every fuzz target in the repository.
func TestMakefileFuzzesEveryTarget(t *testing.T) {
	mk, err := os.ReadFile(testutil.Path(t, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	fuzzFunc := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(`)
	found := 0
	root := testutil.Path(t, ".")
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "tools" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		pkg := "./" + filepath.ToSlash(rel)
		for _, m := range fuzzFunc.FindAllStringSubmatch(string(src), -1) {
			found++
			if want := pkg + ":" + m[1]; !strings.Contains(string(mk), want) {
				t.Errorf("Makefile FUZZ_TARGETS lacks %s", want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found == 0 {
		t.Fatal("found no fuzz targets: the walk is broken")
	}
}

// TestToolModulesShareVersions keeps the modules that nodedns, the
// control plane of the tests (tools/kube) and CoreDNS (tools/coredns)
// compile in common at one version each: the Makefile builds all three
// the same way (static, -trimpath) so that the Go build cache compiles
// each shared package once. A version apart costs a cold make test
// minutes: every package above it is compiled again.
func TestToolModulesShareVersions(t *testing.T) {
	if testing.Short() {
		t.Skip("loads the packages of three modules")
	}
	modules := func(dir string, pkgs ...string) map[string]string {
		args := append([]string{"list", "-mod=readonly", "-deps", "-f", "{{with .Module}}{{.Path}} {{.Version}}{{with .Replace}} {{.Version}}{{end}}{{end}}"}, pkgs...)
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("go list in %s: %v\n%s", dir, err, stderr)
		}
		m := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Fields(line); len(f) >= 2 {
				m[f[0]] = f[len(f)-1]
			}
		}
		return m
	}
	sets := map[string]map[string]string{
		"nodedns":       modules(testutil.Path(t, "."), "./..."),
		"tools/kube":    modules(testutil.Path(t, "tools/kube"), "k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kubectl", "go.etcd.io/etcd/server/v3"),
		"tools/coredns": modules(testutil.Path(t, "tools/coredns"), "."),
	}
	names := []string{"nodedns", "tools/kube", "tools/coredns"}
	for i, a := range names {
		for _, b := range names[i+1:] {
			for path, va := range sets[a] {
				if vb, ok := sets[b][path]; ok && va != vb {
					t.Errorf("%s is %s in %s and %s in %s: pin one version in both go.mod files", path, va, a, vb, b)
				}
			}
		}
	}
}

// TestGoModPinsTheToolchain: a build outside make (go build, go install,
// the image's builder) gets the toolchain make uses, which govulncheck
// checked.
func TestGoModPinsTheToolchain(t *testing.T) {
	mk, err := os.ReadFile(testutil.Path(t, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^GOTOOLCHAIN \?= (go[0-9.]+)$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("the Makefile sets no GOTOOLCHAIN")
	}
	mod, err := os.ReadFile(testutil.Path(t, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "\ntoolchain " + string(m[1]) + "\n"; !strings.Contains(string(mod), want) {
		t.Errorf("go.mod lacks %q: builds outside make would use whatever Go is installed", strings.TrimSpace(want))
	}
}
