package kubetest

import (
	"context"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMain(m *testing.M) { Main(m) }

// TestCluster starts the control plane and writes and reads back what the
// DNS tests build on: a namespace, a Service, an EndpointSlice, a pod with
// its status.
func TestCluster(t *testing.T) {
	c := Shared(t)
	ctx := context.Background()

	v, err := c.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != KubeVersion {
		t.Errorf("server version %q, want %q (build.sh's version stamps)", v.GitVersion, KubeVersion)
	}

	ns := c.Namespace(t, "smoke")
	svc := c.ClusterIPService(t, ns, "web", Port("http", corev1.ProtocolTCP, 80))
	if svc.Spec.ClusterIP == "" || !strings.HasPrefix(svc.Spec.ClusterIP, "10.96.") {
		t.Errorf("ClusterIP %q, want one from 10.96.0.0/16", svc.Spec.ClusterIP)
	}
	c.EndpointSlice(t, ns, "web",
		[]discoveryv1.Endpoint{Endpoint("10.244.1.5", "web-0"), Endpoint("10.244.1.6", "")},
		EndpointPort("http", corev1.ProtocolTCP, 8080))
	c.Pod(t, ns, "web-0", "10.244.1.5")

	got, err := c.Client.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.ClusterIP != svc.Spec.ClusterIP || len(got.Spec.Ports) != 1 || got.Spec.Ports[0].Name != "http" {
		t.Errorf("Service read back as %+v", got.Spec)
	}
	slices, err := c.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
	if err != nil {
		t.Fatal(err)
	}
	if len(slices.Items) != 1 || len(slices.Items[0].Endpoints) != 2 ||
		slices.Items[0].Endpoints[0].Hostname == nil || *slices.Items[0].Endpoints[0].Hostname != "web-0" {
		t.Errorf("EndpointSlices read back as %+v", slices.Items)
	}
	pod, err := c.Client.CoreV1().Pods(ns).Get(ctx, "web-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP != "10.244.1.5" {
		t.Errorf("pod status read back as phase %q, IP %q", pod.Status.Phase, pod.Status.PodIP)
	}

	// The kubeconfig works for other clients: kubectl, as CoreDNS will.
	if out := c.Kubectl(t, "get", "service", "web", "-n", ns, "-o", "jsonpath={.spec.clusterIP}"); out != svc.Spec.ClusterIP {
		t.Errorf("kubectl get service: %q, want %q", out, svc.Spec.ClusterIP)
	}
	if b, err := os.ReadFile(c.Kubeconfig); err != nil || !strings.Contains(string(b), "current-context: "+ContextName) {
		t.Errorf("kubeconfig %s: %v\n%s", c.Kubeconfig, err, b)
	}
}

// TestRejectsLoopbackEndpoints pins a fact the DNS fixtures rely on: the
// API server validates endpoint addresses, so fixtures use 10.244.x.y.
func TestRejectsLoopbackEndpoints(t *testing.T) {
	c := Shared(t)
	ns := c.Namespace(t, "smoke")
	c.HeadlessService(t, ns, "db")
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{GenerateName: "db-", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: "db"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{Endpoint("127.0.0.1", "")},
	}
	if _, err := c.Client.DiscoveryV1().EndpointSlices(ns).Create(context.Background(), slice, metav1.CreateOptions{}); err == nil {
		t.Error("an EndpointSlice with a loopback address was accepted")
	}
}
