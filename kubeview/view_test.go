package kubeview

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metafake "k8s.io/client-go/metadata/fake"
	"k8s.io/client-go/rest"

	"github.com/nodedns/nodedns/search"
)

// newTestView builds a view whose stores the tests fill by hand, as a
// reflector would; the clients are never called.
func newTestView(t *testing.T, cfg Config) *View {
	t.Helper()
	var err error
	if cfg, err = Connect(&rest.Config{Host: "http://127.0.0.1:1"}, cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Metadata = metafake.NewSimpleMetadataClient(metafake.NewTestScheme())
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = "cluster.local"
	}
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func objMeta(ns, name string) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

// Existence: nothing is denied before both lists are in; then the view
// answers from them, and a later change shows at once.
func TestViewExistence(t *testing.T) {
	v := newTestView(t, Config{})
	if v.Synced() {
		t.Fatal("synced before any list")
	}
	if err := v.namespaces.Replace([]any{objMeta("", "default"), objMeta("", "shop")}, "1"); err != nil {
		t.Fatal(err)
	}
	if v.Synced() {
		t.Fatal("synced with namespaces listed but not services")
	}
	if err := v.services.Replace([]any{objMeta("shop", "web"), objMeta("default", "kubernetes")}, "1"); err != nil {
		t.Fatal(err)
	}
	if !v.Synced() || !v.HasNamespace("shop") || v.HasNamespace("com") || !v.HasService("shop", "web") || v.HasService("shop", "db") {
		t.Fatalf("view after the lists: synced %v, namespaces %v, services %v", v.Synced(), v.namespaces.snapshot(), v.services.snapshot())
	}
	_ = v.services.Add(objMeta("shop", "db"))
	_ = v.services.Delete(objMeta("shop", "web"))
	if !v.HasService("shop", "db") || v.HasService("shop", "web") {
		t.Error("a Service added or deleted does not show")
	}
	// A failed watch (the API server away): the view keeps what it has
	// but denies nothing until a watch works again.
	v.services.setCurrent(false)
	if v.Synced() || !v.HasService("shop", "db") {
		t.Errorf("after a failed watch: synced %v, contents kept %v", v.Synced(), v.HasService("shop", "db"))
	}
	v.services.setCurrent(true)
	if !v.Synced() {
		t.Error("not synced once the watch works again")
	}
	var _ search.View = v
}

// Namespaces and Services created or deleted after the first list flush
// the cache under their names, batched, and once more a moment later; the
// first list flushes nothing.
func TestViewInvalidatesTheCache(t *testing.T) {
	flushed := make(chan []string, 10)
	v := newTestView(t, Config{
		ClusterDomains: []string{"cluster.local", "Cluster.Example."},
		Invalidate: func(zones []string) int {
			flushed <- slices.Sorted(slices.Values(zones))
			return len(zones)
		},
	})
	v.flushAgain = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { v.flushLoop(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	_ = v.namespaces.Replace([]any{objMeta("", "shop")}, "1")
	_ = v.services.Replace([]any{objMeta("shop", "web")}, "1")
	_ = v.services.Add(objMeta("shop", "db"))
	_ = v.namespaces.Delete(objMeta("", "shop"))
	_ = v.namespaces.Update(objMeta("", "default")) // new to the view: an add
	want := []string{
		"db.shop.svc.cluster.example.", "db.shop.svc.cluster.local.",
		"default.pod.cluster.example.", "default.pod.cluster.local.", "default.svc.cluster.example.", "default.svc.cluster.local.",
		"shop.pod.cluster.example.", "shop.pod.cluster.local.", "shop.svc.cluster.example.", "shop.svc.cluster.local.",
	}
	var got []string
	deadline := time.After(5 * time.Second)
	for len(got) < len(want) {
		select {
		case z := <-flushed:
			got = append(got, z...)
		case <-deadline:
			t.Fatalf("flushed %v, want %v", got, want)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("flushed %v, want %v", got, want)
	}
	// The same zones again, for a denial stored just after the first pass.
	var again []string
	for len(again) < len(want) {
		select {
		case z := <-flushed:
			again = append(again, z...)
		case <-time.After(5 * time.Second):
			t.Fatalf("second flush: %v, want %v", again, want)
		}
	}
	// A relist after an outage flushes what changed meanwhile, nothing else.
	_ = v.services.Replace([]any{objMeta("shop", "web"), objMeta("shop", "db"), objMeta("shop", "cart")}, "2")
	select {
	case z := <-flushed:
		if !slices.Equal(z, []string{"cart.shop.svc.cluster.example.", "cart.shop.svc.cluster.local."}) {
			t.Errorf("after a relist: flushed %v, want cart's zones", z)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a relist that added a Service flushed nothing")
	}
}

func pod(name string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
		Spec:       corev1.PodSpec{NodeName: "node-1", DNSPolicy: corev1.DNSClusterFirst},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.7",
			PodIPs: []corev1.PodIP{{IP: "10.244.1.7"}, {IP: "fd00:10:244:1::7"}}},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func ptr[T any](v T) *T { return &v }

// A pod's search list is known when kubelet writes its defaults: which
// pods count, and what their list is.
func TestViewPodDNS(t *testing.T) {
	v := newTestView(t, Config{NodeSearch: []string{"c.example.internal", "cluster.local"}})
	want := []string{"shop.svc.cluster.local.", "svc.cluster.local.", "cluster.local.", "c.example.internal."}
	for _, tc := range []struct {
		name   string
		pod    *corev1.Pod
		search []string // nil: the pod gets plain answers
	}{
		{"ClusterFirst", pod("a"), want},
		{"empty policy means ClusterFirst", pod("a", func(p *corev1.Pod) { p.Spec.DNSPolicy = "" }), want},
		{"ClusterFirstWithHostNet off the host network", pod("a", func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet }), want},
		{"pending with an address (init containers resolve too)", pod("a", func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }), want},
		{"dnsConfig options that keep the walk", pod("a", func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr("5")}, {Name: "single-request-reopen"}}}
		}), want},
		{"ndots 2", pod("a", func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr("2")}}}
		}), nil},
		{"own search domains", pod("a", func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{"corp.example"}}
		}), nil},
		{"own nameservers", pod("a", func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"192.0.2.53"}}
		}), nil},
		{"dnsPolicy Default", pod("a", func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSDefault }), nil},
		{"dnsPolicy None", pod("a", func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSNone }), nil},
	} {
		v.pods.items = map[string]podInfo{}
		_ = v.pods.Replace([]any{tc.pod}, "1")
		for _, addr := range []string{"10.244.1.7", "fd00:10:244:1::7", "::ffff:10.244.1.7"} {
			p, ok := v.Pod(netip.MustParseAddr(addr))
			switch {
			case tc.search == nil && ok:
				t.Errorf("%s: %s has a search list %v, want plain answers", tc.name, addr, p.Search)
			case tc.search != nil && (!ok || !slices.Equal(p.Search, tc.search) || p.Ndots != 5 || p.Namespace != "shop"):
				t.Errorf("%s: %s: %+v, %v; want search %v", tc.name, addr, p, ok, tc.search)
			}
		}
	}
	// Pods that do not count: their address is not (or no longer) theirs.
	for name, p := range map[string]*corev1.Pod{
		"hostNetwork": pod("a", func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
		"succeeded":   pod("a", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		"failed":      pod("a", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }),
		"no address":  pod("a", func(p *corev1.Pod) { p.Status.PodIP, p.Status.PodIPs = "", nil }),
	} {
		_ = v.pods.Replace([]any{p}, "1")
		if _, ok := v.Pod(netip.MustParseAddr("10.244.1.7")); ok {
			t.Errorf("%s pod: its address maps to it", name)
		}
	}
	// A pod that finishes leaves the index; two live pods with one address
	// (a moment during a restart) leave it to neither.
	_ = v.pods.Replace([]any{pod("a")}, "1")
	_ = v.pods.Update(pod("a", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }))
	if _, ok := v.Pod(netip.MustParseAddr("10.244.1.7")); ok {
		t.Error("a pod that finished still maps")
	}
	_ = v.pods.Add(pod("b"))
	_ = v.pods.Add(pod("c"))
	if _, ok := v.Pod(netip.MustParseAddr("10.244.1.7")); ok {
		t.Error("an address two pods claim maps to one of them")
	}
	_ = v.pods.Delete(pod("c"))
	if _, ok := v.Pod(netip.MustParseAddr("10.244.1.7")); !ok {
		t.Error("the address did not come back to the pod left")
	}
}

func TestViewEndpoints(t *testing.T) {
	var got [][]string
	v := newTestView(t, Config{DNSService: "kube-system/kube-dns", Endpoints: func(a []string) { got = append(got, a) }})
	slice := func(name string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: name},
			Ports: ports, Endpoints: eps}
	}
	dnsPorts := []discoveryv1.EndpointPort{
		{Name: ptr("metrics"), Port: ptr(int32(9153)), Protocol: ptr(corev1.ProtocolTCP)},
		{Name: ptr("dns-tcp"), Port: ptr(int32(53)), Protocol: ptr(corev1.ProtocolTCP)},
		{Name: ptr("dns"), Port: ptr(int32(1053)), Protocol: ptr(corev1.ProtocolUDP)},
	}
	_ = v.slices.Replace([]any{
		slice("kube-dns-a", dnsPorts,
			discoveryv1.Endpoint{Addresses: []string{"10.244.0.5"}},
			discoveryv1.Endpoint{Addresses: []string{"10.244.0.6"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}},
			discoveryv1.Endpoint{Addresses: []string{"10.244.0.7"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false)}}),
		slice("kube-dns-b", nil, discoveryv1.Endpoint{Addresses: []string{"fd00::5"}}),
	}, "1")
	want := []string{"10.244.0.5:1053", "10.244.0.6:1053", "[fd00::5]:53"}
	if len(got) != 1 || !slices.Equal(got[0], want) {
		t.Fatalf("endpoints published %v, want [%v]", got, want)
	}
	_ = v.slices.Delete(slice("kube-dns-a", nil))
	if last := got[len(got)-1]; !slices.Equal(last, []string{"[fd00::5]:53"}) {
		t.Errorf("after a slice went: %v", last)
	}
	_ = v.slices.Delete(slice("kube-dns-b", nil))
	if last := got[len(got)-1]; len(last) != 0 {
		t.Errorf("with no slice left: %v, want none", last)
	}
}

// The view's memory for a large cluster: 10,000 namespaces, 50,000
// Services and this node's 110 pods, listed as the API server sends them
// (with labels, annotations and managed fields), keeping only what the
// view needs. The figure is in docs/kubernetes.md (make memory runs it).
func TestViewMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("lists 60,000 objects")
	}
	v := newTestView(t, Config{NodeSearch: []string{"c.example.internal"}})
	fat := func(ns, name string) *metav1.PartialObjectMetadata {
		o := objMeta(ns, name)
		o.UID = "0b4c2f1e-5d6a-4f7b-8c9d-0e1f2a3b4c5d"
		o.ResourceVersion = "123456789"
		o.CreationTimestamp = metav1.Now()
		o.Labels = map[string]string{"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "shop"}
		o.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 400)}
		o.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: "Apply", APIVersion: "v1"}}
		return o
	}
	const nNS, nSvc, nPods = 10_000, 50_000, 110
	build := func() (ns, svc, pods []any) {
		for i := range nNS {
			ns = append(ns, fat("", fmt.Sprintf("team-%05d", i)))
		}
		for i := range nSvc {
			svc = append(svc, fat(fmt.Sprintf("team-%05d", i%nNS), fmt.Sprintf("service-%06d", i)))
		}
		for i := range nPods {
			pods = append(pods, pod(fmt.Sprintf("pod-%03d", i), func(p *corev1.Pod) {
				p.Status.PodIP = fmt.Sprintf("10.244.1.%d", i+1)
				p.Status.PodIPs = []corev1.PodIP{{IP: p.Status.PodIP}}
			}))
		}
		return
	}
	before := heapInUse()
	ns, svc, pods := build()
	_ = v.namespaces.Replace(ns, "1")
	_ = v.services.Replace(svc, "1")
	_ = v.pods.Replace(pods, "1")
	ns, svc, pods = nil, nil, nil
	after := heapInUse()
	runtime.KeepAlive(v)
	if v.namespaces.len() != nNS || v.services.len() != nSvc || len(*v.byIP.Load()) != nPods {
		t.Fatalf("view holds %d namespaces, %d services, %d pod addresses", v.namespaces.len(), v.services.len(), len(*v.byIP.Load()))
	}
	mb := float64(after-before) / (1 << 20)
	t.Logf("view of %d namespaces, %d Services, %d pods: %.1f MiB (%.0f bytes per object)",
		nNS, nSvc, nPods, mb, float64(after-before)/(nNS+nSvc+nPods))
	if mb > 16 {
		t.Errorf("the view takes %.1f MiB, want at most 16 MiB: is it keeping whole objects?", mb)
	}
}

func heapInUse() uint64 {
	var ms runtime.MemStats
	for range 2 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}
