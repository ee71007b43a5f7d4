package kubetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// callTimeout bounds each API call of the helpers.
const callTimeout = 30 * time.Second

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callTimeout)
}

// Namespace creates a namespace named prefix plus a random suffix, and
// its default ServiceAccount (which the ServiceAccount admission plugin
// wants before it admits a pod, and which no controller makes here). It
// returns the name. The namespace is left in place: deleting one leaves
// it Terminating for ever without a controller-manager, and a unique name
// keeps tests apart.
func (c *Cluster) Namespace(t testing.TB, prefix string) string {
	t.Helper()
	name := prefix + "-" + randomHex(4)
	if len(name) > 63 {
		t.Fatalf("kubetest: namespace %q is longer than a DNS label", name)
	}
	ctx, cancel := ctx()
	defer cancel()
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("kubetest: creating namespace %s: %v", name, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: name}}
	if _, err := c.Client.CoreV1().ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatalf("kubetest: creating the default ServiceAccount of %s: %v", name, err)
	}
	return name
}

// Service creates svc as given (any type: ExternalName, several ports...)
// and returns it as stored, with its ClusterIP allocated.
func (c *Cluster) Service(t testing.TB, svc *corev1.Service) *corev1.Service {
	t.Helper()
	ctx, cancel := ctx()
	defer cancel()
	out, err := c.Client.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: creating Service %s/%s: %v", svc.Namespace, svc.Name, err)
	}
	return out
}

// ClusterIPService creates a ClusterIP Service with the ports (at least
// one) and returns it as stored.
func (c *Cluster) ClusterIPService(t testing.TB, ns, name string, ports ...corev1.ServicePort) *corev1.Service {
	t.Helper()
	return c.Service(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: ports},
	})
}

// HeadlessService creates a headless Service (clusterIP: None) with the
// ports, which may be none, and returns it as stored. Its endpoints come
// from EndpointSlices the test creates (EndpointSlice).
func (c *Cluster) HeadlessService(t testing.TB, ns, name string, ports ...corev1.ServicePort) *corev1.Service {
	t.Helper()
	return c.Service(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: ports},
	})
}

// Port returns a ServicePort; protocol is corev1.ProtocolTCP, UDP or SCTP.
func Port(name string, protocol corev1.Protocol, port int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Protocol: protocol, Port: port}
}

// Endpoint returns a ready endpoint with one address and, if hostname is
// not empty, that hostname (the DNS name <hostname>.<service>...). The
// address may not be loopback, link-local or multicast (validation
// rejects them): use e.g. 10.244.x.y.
func Endpoint(addr, hostname string) discoveryv1.Endpoint {
	ready := true
	ep := discoveryv1.Endpoint{
		Addresses:  []string{addr},
		Conditions: discoveryv1.EndpointConditions{Ready: &ready},
	}
	if hostname != "" {
		ep.Hostname = &hostname
	}
	return ep
}

// EndpointPort returns an EndpointSlice port; name may be empty (an
// unnamed port).
func EndpointPort(name string, protocol corev1.Protocol, port int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: &name, Protocol: &protocol, Port: &port}
}

// EndpointSlice creates an EndpointSlice of the Service ns/service (label
// kubernetes.io/service-name: no controller generates them here) with the
// endpoints, which must all be IPv4 or all IPv6 (the slice's address type
// is taken from the first), and the ports. It returns the slice as stored.
func (c *Cluster) EndpointSlice(t testing.TB, ns, service string, endpoints []discoveryv1.Endpoint, ports ...discoveryv1.EndpointPort) *discoveryv1.EndpointSlice {
	t.Helper()
	addrType := discoveryv1.AddressTypeIPv4
	if len(endpoints) > 0 && len(endpoints[0].Addresses) > 0 {
		if a, err := netip.ParseAddr(endpoints[0].Addresses[0]); err == nil && a.Is6() {
			addrType = discoveryv1.AddressTypeIPv6
		}
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: service + "-",
			Namespace:    ns,
			Labels:       map[string]string{discoveryv1.LabelServiceName: service},
		},
		AddressType: addrType,
		Endpoints:   endpoints,
		Ports:       ports,
	}
	ctx, cancel := ctx()
	defer cancel()
	out, err := c.Client.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: creating an EndpointSlice of %s/%s: %v", ns, service, err)
	}
	return out
}

// Pod creates a pod with one container (its image is never pulled: there
// is no kubelet) and sets its status through the status subresource, as a
// kubelet would: Running, Ready, with the IPs (the first is status.podIP).
// It returns the pod as stored.
func (c *Cluster) Pod(t testing.TB, ns, name string, ips ...string) *corev1.Pod {
	t.Helper()
	return c.PodWith(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}, ips...)
}

// PodWith is Pod for a pod whose spec the test sets (node name, DNS
// policy, dnsConfig...); a container is added when it has none.
func (c *Cluster) PodWith(t testing.TB, pod *corev1.Pod, ips ...string) *corev1.Pod {
	t.Helper()
	ctx, cancel := ctx()
	defer cancel()
	ns, name := pod.Namespace, pod.Name
	pods := c.Client.CoreV1().Pods(ns)
	if len(pod.Spec.Containers) == 0 {
		pod.Spec.Containers = []corev1.Container{{Name: "main", Image: "registry.invalid/kubetest:never-pulled"}}
	}
	pod, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: creating pod %s/%s: %v", ns, name, err)
	}
	now := metav1.Now()
	pod.Status.Phase = corev1.PodRunning
	pod.Status.StartTime = &now
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}}
	for i, ip := range ips {
		if i == 0 {
			pod.Status.PodIP = ip
		}
		pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	pod, err = pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("kubetest: setting the status of pod %s/%s: %v", ns, name, err)
	}
	return pod
}

// CreateMany calls create for i from 0 to n-1 on workers goroutines, with
// a clientset of its own that talks protobuf and has no client-side rate
// limit: thousands of objects (hundreds a second on two cores; the API
// server is the bottleneck). A call that fails with an error worth
// retrying (the API server busy, a timeout) is tried again, up to 5 times,
// and a retried create that finds its object already there succeeded. The
// first other error fails t once the calls under way end.
func (c *Cluster) CreateMany(t testing.TB, n, workers int, create func(ctx context.Context, cs kubernetes.Interface, i int) error) {
	t.Helper()
	rc := rest.CopyConfig(c.Config)
	rc.QPS, rc.Burst = -1, 0 // no client-side rate limit
	rc.ContentType = runtime.ContentTypeProtobuf
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	var (
		next     atomic.Int64
		firstErr atomic.Pointer[error]
		wg       sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for firstErr.Load() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := createRetrying(cs, i, create); err != nil {
					err = fmt.Errorf("object %d of %d: %w", i, n, err)
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		t.Fatalf("kubetest: creating %v", *p)
	}
}

func createRetrying(cs kubernetes.Interface, i int, create func(ctx context.Context, cs kubernetes.Interface, i int) error) error {
	var err error
	for attempt := range 5 {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
		}
		ctx, cancel := ctx()
		err = create(ctx, cs, i)
		cancel()
		switch {
		case err == nil, attempt > 0 && apierrors.IsAlreadyExists(err):
			return nil
		case apierrors.IsTooManyRequests(err), apierrors.IsServerTimeout(err), apierrors.IsTimeout(err),
			apierrors.IsServiceUnavailable(err), errors.Is(err, context.DeadlineExceeded):
			continue
		default:
			return err
		}
	}
	return err
}

// AppliedService returns a headless Service ns/name as `kubectl apply`
// leaves one in a real cluster, for tests that measure what clients hold
// of many: labels, the last-applied-configuration annotation kubectl
// writes (the object as applied, padded to about 600 bytes, the size of
// a Service with a few ports, selectors and annotations of its own), and
// the managedFields entry of the apply. Headless, so that a hundred
// thousand of them need no ClusterIPs. Create it with FieldManager
// "kubectl".
func AppliedService(ns, name string) *corev1.Service {
	svc := &corev1.Service{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{
			"app.kubernetes.io/name":    name,
			"app.kubernetes.io/part-of": ns,
		}},
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Selector:  map[string]string{"app.kubernetes.io/name": name},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP,
				TargetPort: intstr.FromString("http")}},
		},
	}
	applied, err := json.Marshal(svc)
	if err != nil {
		panic(err) // a Service always marshals
	}
	const annotationSize = 600
	if pad := annotationSize - len(applied) - 1; pad > 0 {
		applied = append(applied, bytes.Repeat([]byte(" "), pad)...)
	}
	svc.Annotations = map[string]string{corev1.LastAppliedConfigAnnotation: string(applied) + "\n"}
	now := metav1.Now()
	svc.ManagedFields = []metav1.ManagedFieldsEntry{{
		Manager: "kubectl-client-side-apply", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1",
		Time: &now, FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(appliedServiceFields),
	}}
	svc.TypeMeta = metav1.TypeMeta{}
	return svc
}

// appliedServiceFields are the fields AppliedService sets, as the API
// server records them in managedFields.
const appliedServiceFields = `{"f:metadata":{"f:annotations":{".":{},"f:kubectl.kubernetes.io/last-applied-configuration":{}},` +
	`"f:labels":{".":{},"f:app.kubernetes.io/name":{},"f:app.kubernetes.io/part-of":{}}},` +
	`"f:spec":{"f:clusterIP":{},"f:internalTrafficPolicy":{},"f:ports":{".":{},"k:{\"port\":80,\"protocol\":\"TCP\"}":` +
	`{".":{},"f:name":{},"f:port":{},"f:protocol":{},"f:targetPort":{}}},"f:selector":{},"f:sessionAffinity":{},"f:type":{}}}}`
