package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/types"
	sigsyaml "sigs.k8s.io/yaml"
)

// RenderedFile is the base rendered as one file (make deploy).
const RenderedFile = "nodedns.yaml"

// kinds are the API types the manifests may hold; any other kind is an
// error, so that every object is decoded into its type and checked.
var kinds = map[schema.GroupVersionKind]func() any{
	{Version: "v1", Kind: "ServiceAccount"}:                                         func() any { return new(corev1.ServiceAccount) },
	{Version: "v1", Kind: "ConfigMap"}:                                              func() any { return new(corev1.ConfigMap) },
	{Version: "v1", Kind: "Service"}:                                                func() any { return new(corev1.Service) },
	{Group: "apps", Version: "v1", Kind: "DaemonSet"}:                               func() any { return new(appsv1.DaemonSet) },
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"}:        func() any { return new(rbacv1.ClusterRole) },
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleBinding"}: func() any { return new(rbacv1.ClusterRoleBinding) },
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "Role"}:               func() any { return new(rbacv1.Role) },
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "RoleBinding"}:        func() any { return new(rbacv1.RoleBinding) },
}

// decodeStrict decodes every document of a YAML stream into its API type,
// strictly: a field the type does not have (misspelt, or indented under the
// wrong parent), a key given twice, or a value of the wrong type is an
// error, where the API server's defaulting decoder (and kubectl without
// validation) would drop it silently. Empty documents are skipped.
func decodeStrict(source string, b []byte) ([]any, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var out []any
	for i := 0; ; i++ {
		d, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		if j, err := sigsyaml.YAMLToJSON(d); err == nil && string(j) == "null" {
			continue // comments only
		}
		var tm metav1.TypeMeta
		if err := sigsyaml.Unmarshal(d, &tm); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		gvk := schema.FromAPIVersionAndKind(tm.APIVersion, tm.Kind)
		mk, ok := kinds[gvk]
		if !ok {
			return nil, fmt.Errorf("%s: document %d: kind %q of %q is not one the tests know", source, i, tm.Kind, tm.APIVersion)
		}
		obj := mk()
		if err := sigsyaml.UnmarshalStrict(d, obj); err != nil {
			return nil, fmt.Errorf("%s: document %d (%s): %w", source, i, tm.Kind, err)
		}
		out = append(out, obj)
	}
}

// kustomizations are the directories holding a kustomization.yaml.
func kustomizations(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() == "kustomization.yaml" {
			dirs = append(dirs, filepath.Dir(p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 2 {
		t.Fatalf("found kustomizations %v; want at least base and overlays/transparent", dirs)
	}
	return dirs
}

// readKustomization decodes dir/kustomization.yaml strictly.
func readKustomization(t *testing.T, dir string) *types.Kustomization {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k types.Kustomization
	if err := sigsyaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	return &k
}

// render renders the kustomization in dir and decodes its objects
// strictly.
func render(t *testing.T, dir string) []any {
	t.Helper()
	b, err := Render(dir)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeStrict("kustomize "+dir, b)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// all returns the objects of type T.
func all[T any](objs []any) []*T {
	var out []*T
	for _, o := range objs {
		if v, ok := o.(*T); ok {
			out = append(out, v)
		}
	}
	return out
}

// one returns the only object of type T, failing t when there is not
// exactly one.
func one[T any](t *testing.T, what string, objs []any) *T {
	t.Helper()
	vs := all[T](objs)
	if len(vs) != 1 {
		var zero T
		t.Fatalf("%s: %d objects of type %T, want 1", what, len(vs), &zero)
	}
	return vs[0]
}

// named returns the object of type T with the name, or nil.
func named[T any](objs []any, name string, meta func(*T) metav1.ObjectMeta) *T {
	for _, v := range all[T](objs) {
		if meta(v).Name == name {
			return v
		}
	}
	return nil
}

// TestEveryManifestDecodesStrictly decodes, strictly, each kustomization
// file, each file a kustomization lists, the rendered file, and what
// kustomize renders from each kustomization.
func TestEveryManifestDecodesStrictly(t *testing.T) {
	for _, dir := range kustomizations(t) {
		k := readKustomization(t, dir)
		for _, r := range k.Resources {
			p := filepath.Join(dir, r)
			if fi, err := os.Stat(p); err == nil && fi.IsDir() {
				continue // a base, decoded on its own
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatalf("%s lists %s: %v", dir, r, err)
			}
			objs, err := decodeStrict(p, b)
			if err != nil {
				t.Error(err)
			}
			if len(objs) == 0 {
				t.Errorf("%s: no object", p)
			}
		}
		if objs := render(t, dir); len(objs) == 0 {
			t.Errorf("kustomize %s: no object", dir)
		}
	}
	b, err := os.ReadFile(RenderedFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeStrict(RenderedFile, b); err != nil {
		t.Error(err)
	}
}

// TestStrictDecodingCatchesMistakes shows that the decoding above fails on
// the mistakes it is there for, each of which a lenient decoder accepts
// without a word: a field indented under the wrong parent, a misspelt
// field, a key given twice, a value of the wrong type.
func TestStrictDecodingCatchesMistakes(t *testing.T) {
	const good = `apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: x
spec:
  selector:
    matchLabels: {a: b}
  template:
    metadata:
      labels: {a: b}
    spec:
      hostNetwork: true
      containers:
        - name: c
          image: i
          resources:
            limits: {memory: 128Mi}
          readinessProbe:
            httpGet: {path: /ready, port: 9253}
`
	if _, err := decodeStrict("good", []byte(good)); err != nil {
		t.Fatalf("the well-formed DaemonSet: %v", err)
	}
	for _, c := range []struct{ name, from, to string }{
		{"mis-indented", "          readinessProbe:\n            httpGet: {path: /ready, port: 9253}\n",
			"            readinessProbe:\n              httpGet: {path: /ready, port: 9253}\n"},
		{"misspelt", "hostNetwork: true", "hostNetwrok: true"},
		{"duplicate key", "hostNetwork: true", "hostNetwork: true\n      hostNetwork: false"},
		{"wrong type", "hostNetwork: true", `hostNetwork: "yes"`},
	} {
		bad := strings.Replace(good, c.from, c.to, 1)
		if bad == good {
			t.Fatalf("%s: the replacement did not apply", c.name)
		}
		_, err := decodeStrict(c.name, []byte(bad))
		if err == nil {
			t.Errorf("%s: decoded without an error", c.name)
			continue
		}
		t.Log(err)
		// The lenient decoder takes it (the wrong type aside).
		var lenient appsv1.DaemonSet
		if c.name != "wrong type" {
			if err := sigsyaml.Unmarshal([]byte(bad), &lenient); err != nil {
				t.Errorf("%s: even the lenient decoder fails (%v): the case shows nothing", c.name, err)
			}
		}
	}
}

// TestRenderedFileIsCurrent checks that nodedns.yaml is what kustomize
// renders from base (run `make deploy` after changing base), and, where the
// test harness's kubectl is built, that kubectl renders the same.
func TestRenderedFileIsCurrent(t *testing.T) {
	want, err := Rendered("base")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(RenderedFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is not what kustomize renders from base: run `make deploy`\n%s", RenderedFile, lineDiff(string(want), string(got)))
	}
	kubectl := kubectlPath(t)
	if kubectl == "" {
		return
	}
	for _, dir := range kustomizations(t) {
		out := runKubectl(t, kubectl, "kustomize", dir)
		lib, err := Render(dir)
		if err != nil {
			t.Fatal(err)
		}
		if out != string(lib) {
			t.Errorf("kubectl kustomize %s differs from the kustomize library's rendering:\n%s", dir, lineDiff(string(lib), out))
		}
	}
}

// lineDiff names the first line where a and b differ.
func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d: want %q, got %q", i+1, x, y)
		}
	}
	return "(no difference by line)"
}
