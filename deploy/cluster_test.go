package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodedns/nodedns/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// ensureNamespaces creates, for real, the namespaces the objects are in:
// a server-side dry-run of a Namespace does not create it, and the dry-run
// of an object in a missing namespace fails.
func ensureNamespaces(t *testing.T, c *kubetest.Cluster, objs []any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seen := map[string]bool{}
	for _, o := range objs {
		m, ok := objectMeta(o)
		if !ok || m.Namespace == "" || seen[m.Namespace] {
			continue
		}
		seen[m.Namespace] = true
		_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: m.Namespace}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating namespace %s: %v", m.Namespace, err)
		}
	}
}

// TestServerSideDryRun applies the rendered file and every kustomization
// to a real kube-apiserver (v1.37, internal/kubetest) with a server-side
// dry-run: the API server validates every object as it would store it,
// with strict field validation (an unknown field is an error), admission
// included, and returns the objects defaulted.
func TestServerSideDryRun(t *testing.T) {
	c := kubetest.Shared(t)
	sources := [][]string{{"-f", RenderedFile}}
	for _, dir := range kustomizations(t) {
		sources = append(sources, []string{"-k", dir})
	}
	for _, src := range sources {
		t.Run(src[1], func(t *testing.T) {
			var objs []any
			if src[0] == "-k" {
				objs = render(t, src[1])
			} else {
				b, err := os.ReadFile(src[1])
				if err != nil {
					t.Fatal(err)
				}
				if objs, err = decodeStrict(src[1], b); err != nil {
					t.Fatal(err)
				}
			}
			ensureNamespaces(t, c, objs)
			out := c.Kubectl(t, append([]string{"apply", "--server-side", "--dry-run=server", "--validate=strict",
				"--field-manager=nodedns-deploy-test", "-o", "json"}, src...)...)
			items := applied(t, out)
			if len(items) != len(objs) {
				t.Errorf("the API server returned %d objects, %d were applied", len(items), len(objs))
			}
			for _, it := range items {
				var tm metav1.TypeMeta
				if err := json.Unmarshal(it, &tm); err != nil {
					t.Fatal(err)
				}
				if tm.Kind != "DaemonSet" {
					continue
				}
				var ds appsv1.DaemonSet
				if err := json.Unmarshal(it, &ds); err != nil {
					t.Fatal(err)
				}
				// The API server makes every containerPort of a hostNetwork
				// pod a hostPort; there must be none.
				for _, ct := range ds.Spec.Template.Spec.Containers {
					for _, p := range ct.Ports {
						t.Errorf("container %s: port %+v as stored: a hostPort keeps the surge pod Pending", ct.Name, p)
					}
				}
				if ds.Spec.UpdateStrategy.RollingUpdate == nil || ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable.IntValue() != 0 {
					t.Errorf("updateStrategy as stored: %+v", ds.Spec.UpdateStrategy)
				}
			}
		})
	}
}

// applied returns the objects in kubectl apply -o json's output: one
// object, or a List of them.
func applied(t *testing.T, out string) []json.RawMessage {
	t.Helper()
	var list struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("kubectl apply -o json: %v\n%s", err, out)
	}
	if list.Kind != "List" {
		return []json.RawMessage{json.RawMessage(out)}
	}
	return list.Items
}

// applyRBAC creates, for real, the ServiceAccount, the ClusterRole, the
// Role and their bindings of the rendered file, and returns a kubeconfig that
// authenticates as that ServiceAccount, with a token from the API server's
// TokenRequest, as a pod's projected token would.
func applyRBAC(t *testing.T, c *kubetest.Cluster) string {
	t.Helper()
	b, err := os.ReadFile(RenderedFile)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeStrict(RenderedFile, b)
	if err != nil {
		t.Fatal(err)
	}
	ensureNamespaces(t, c, objs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sa := one[corev1.ServiceAccount](t, RenderedFile, objs)
	role := one[rbacv1.ClusterRole](t, RenderedFile, objs)
	binding := one[rbacv1.ClusterRoleBinding](t, RenderedFile, objs)
	nsRole := one[rbacv1.Role](t, RenderedFile, objs)
	nsBinding := one[rbacv1.RoleBinding](t, RenderedFile, objs)
	for _, create := range []func() error{
		func() error {
			_, err := c.Client.CoreV1().ServiceAccounts(sa.Namespace).Create(ctx, sa, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := c.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := c.Client.RbacV1().Roles(nsRole.Namespace).Create(ctx, nsRole, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := c.Client.RbacV1().RoleBindings(nsBinding.Namespace).Create(ctx, nsBinding, metav1.CreateOptions{})
			return err
		},
	} {
		if err := create(); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	exp := int64(3600)
	tok, err := c.Client.CoreV1().ServiceAccounts(sa.Namespace).CreateToken(ctx, sa.Name,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("a token for ServiceAccount %s/%s: %v", sa.Namespace, sa.Name, err)
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	content := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubetest
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: nodedns
  user:
    token: %s
contexts:
- name: nodedns
  context:
    cluster: kubetest
    user: nodedns
current-context: nodedns
`, c.Server, tok.Status.Token)
	if err := os.WriteFile(kc, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return kc
}
