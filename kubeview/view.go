// Package kubeview keeps nodedns's view of the cluster from the
// Kubernetes API: which Namespaces and Services exist (so that names under
// those that do not are answered NXDOMAIN on the node), the DNS set-up of
// this node's pods (for autopath), and the ready endpoints of the cluster
// DNS Service (so that each CoreDNS pod is health-checked on its own).
//
// It is built to be cheap on every node of a large cluster:
//   - Namespaces and Services are watched metadata-only
//     (k8s.io/client-go/metadata), and only their keys are kept: the
//     objects pass through on their way to a key store and are dropped.
//     Lists too are reduced to keys as they arrive, never held whole: a
//     streamed list (watch-list) object by object, a paginated one page by
//     page (list.go). The peak, not only what is kept, stays small.
//   - Pods are watched on this node only (field selector spec.nodeName),
//     EndpointSlices of the cluster DNS Service only (label selector).
//
// When the API server goes away the last view is kept and used: no answer
// changes because the API went away, and the reflectors list again, with
// backoff, until it is back. A "forbidden" from an API server that has just
// restarted (its authorizer not yet warm) is such a transient error too.
package kubeview

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/nodedns/nodedns/search"
)

// Config says what to watch and whom to tell.
type Config struct {
	// Core and Discovery are REST clients of the two API group versions
	// the view reads whole, core/v1 and discovery.k8s.io/v1 (Connect
	// makes them, decoding with a scheme of those two groups alone);
	// Metadata reads metadata only.
	Core      rest.Interface
	Discovery rest.Interface
	Metadata  metadata.Interface
	// NodeName is this node's name (the downward API's spec.nodeName);
	// without it no pod is watched and autopath is off.
	NodeName string
	// DNSService is the cluster DNS Service, "namespace/name" (normally
	// kube-system/kube-dns); "" turns endpoint discovery off.
	DNSService string
	// ClusterDomain is kubelet's --cluster-domain, fully qualified, and
	// ClusterDomains every domain the cluster DNS serves the cluster under
	// (the first among them); cached answers under each are invalidated.
	ClusterDomain  string
	ClusterDomains []string
	// NodeSearch are the node's own search domains, which kubelet appends
	// to a ClusterFirst pod's search list (from its --resolv-conf).
	NodeSearch []string
	// Invalidate removes the cached answers at or under zones; called in
	// batches when Namespaces and Services come and go.
	Invalidate func(zones []string) int
	// Endpoints receives the cluster DNS Service's ready endpoints
	// ("IP:port") whenever they change; none means the view has none.
	Endpoints func(addrs []string)
	Log       *zap.Logger
	// Registerer takes the view's metrics (nil: not registered).
	Registerer prometheus.Registerer
	// CheckInterval is how often the API server is asked for its version
	// to tell the view's age when nothing changes; default 10s.
	CheckInterval time.Duration
}

// View is the last known state of the cluster, safe for concurrent use.
type View struct {
	cfg Config
	log *zap.Logger
	m   *metrics

	namespaces *keyStore[struct{}]
	services   *keyStore[struct{}]
	pods       *keyStore[podInfo]
	slices     *keyStore[[]string]

	// byIP maps a pod address to the pod's DNS set-up; rebuilt from pods
	// on every change (a node has about a hundred).
	byIP atomic.Pointer[map[netip.Addr]*search.PodDNS]

	// flushAgain is flushAgainAfter but in tests.
	flushAgain time.Duration

	contact   atomic.Int64 // UnixNano of the API server's last answer
	apiErr    atomic.Pointer[string]
	flushMu   sync.Mutex
	flushSet  map[string]struct{}
	flushWake chan struct{}
}

// podInfo is what the view keeps of a pod of this node.
type podInfo struct {
	ips []netip.Addr
	dns *search.PodDNS // nil: nodedns cannot know its search list
}

// The resources the view watches, for metrics and RBAC.
var (
	namespacesGVR = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	servicesGVR   = schema.GroupVersionResource{Version: "v1", Resource: "services"}
)

// New builds a view; Run starts watching.
func New(cfg Config) (*View, error) {
	if cfg.Core == nil || cfg.Discovery == nil || cfg.Metadata == nil {
		return nil, errors.New("kubeview: the core, discovery and metadata clients are required")
	}
	if cfg.ClusterDomain == "" {
		return nil, errors.New("kubeview: no cluster domain")
	}
	if cfg.DNSService != "" {
		if ns, name, ok := strings.Cut(cfg.DNSService, "/"); !ok || ns == "" || name == "" {
			return nil, fmt.Errorf("kubeview: DNS service %q is not namespace/name", cfg.DNSService)
		}
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = 10 * time.Second
	}
	cfg.ClusterDomain = fqdn(cfg.ClusterDomain)
	for i, d := range cfg.ClusterDomains {
		cfg.ClusterDomains[i] = fqdn(d)
	}
	if len(cfg.ClusterDomains) == 0 {
		cfg.ClusterDomains = []string{cfg.ClusterDomain}
	}
	v := &View{
		cfg:        cfg,
		log:        cfg.Log.Named("kubeview"),
		flushSet:   map[string]struct{}{},
		flushWake:  make(chan struct{}, 1),
		flushAgain: flushAgainAfter,
	}
	v.namespaces = newKeysOnlyStore()
	v.services = newKeysOnlyStore()
	v.pods = newKeyStore(v.podOf)
	v.slices = newKeyStore(readyEndpoints)
	v.namespaces.changed = func(added, removed []string, initial bool) {
		v.invalidate(added, removed, initial, func(ns string) []string {
			var zones []string
			for _, cd := range cfg.ClusterDomains {
				zones = append(zones, ns+".svc."+cd, ns+".pod."+cd)
			}
			return zones
		})
	}
	v.services.changed = func(added, removed []string, initial bool) {
		v.invalidate(added, removed, initial, func(key string) []string {
			ns, name, _ := strings.Cut(key, "/")
			var zones []string
			for _, cd := range cfg.ClusterDomains {
				zones = append(zones, name+"."+ns+".svc."+cd)
			}
			return zones
		})
	}
	v.pods.changed = func([]string, []string, bool) { v.indexPods() }
	v.slices.changed = func([]string, []string, bool) { v.publishEndpoints() }
	empty := map[netip.Addr]*search.PodDNS{}
	v.byIP.Store(&empty)
	v.m = newMetrics(v, cfg.Registerer)
	v.namespaces.seen, v.services.seen, v.pods.seen, v.slices.seen = v.touch, v.touch, v.touch, v.touch
	return v, nil
}

func fqdn(s string) string { return strings.ToLower(strings.TrimSuffix(s, ".")) + "." }

// Synced reports whether the view holds every Namespace and Service now:
// both have been listed, and are being watched. Until the first list, and
// from a failed list or watch (the API server away, or refusing for a
// moment after a restart) until one works again, the view denies nothing:
// a Service created meanwhile must not be denied, and the cluster DNS,
// asked instead, says what it knows. The view's contents are kept.
func (v *View) Synced() bool { return v.namespaces.isSynced() && v.services.isSynced() }

// HasNamespace implements search.View.
func (v *View) HasNamespace(name string) bool {
	_, ok := v.namespaces.get(name)
	return ok
}

// HasService implements search.View.
func (v *View) HasService(namespace, name string) bool {
	_, ok := v.services.get(namespace + "/" + name)
	return ok
}

// Pod returns the DNS set-up of the pod of this node at addr, when nodedns
// knows its search list: a ClusterFirst pod with kubelet's defaults.
func (v *View) Pod(addr netip.Addr) (*search.PodDNS, bool) {
	p, ok := (*v.byIP.Load())[addr.Unmap()]
	return p, ok
}

// Run watches until ctx is done.
func (v *View) Run(ctx context.Context) {
	var wg sync.WaitGroup
	run := func(name string, lw cache.ListerWatcher, expected runtime.Object, store interface {
		cache.ReflectorStore
		setCurrent(bool)
	}) {
		r := cache.NewReflectorWithOptions(v.watchErrors(name, lw, store.setCurrent), expected, store,
			cache.ReflectorOptions{Name: "nodedns-" + name})
		wg.Go(func() { r.RunWithContext(ctx) })
	}
	for _, r := range []struct {
		name string
		gvr  schema.GroupVersionResource
		keys *keyStore[struct{}]
	}{{"namespaces", namespacesGVR, v.namespaces}, {"services", servicesGVR, v.services}} {
		res := v.cfg.Metadata.Resource(r.gvr)
		run(r.name, keyListWatch(res.List, res.Watch), &metav1.PartialObjectMetadata{}, r.keys)
	}
	if v.cfg.NodeName != "" {
		sel := fields.OneTermEqualSelector("spec.nodeName", v.cfg.NodeName).String()
		run("pods", restListWatch(v.cfg.Core, "", "pods", func() runtime.Object { return &corev1.PodList{} },
			func(o *metav1.ListOptions) { o.FieldSelector = sel }), &corev1.Pod{}, v.pods)
	} else {
		v.log.Info("no node name (NODE_NAME): this node's pods are not watched, autopath is off")
	}
	if v.cfg.DNSService != "" {
		ns, name, _ := strings.Cut(v.cfg.DNSService, "/")
		sel := discoveryv1.LabelServiceName + "=" + name
		run("endpointslices", restListWatch(v.cfg.Discovery, ns, "endpointslices", func() runtime.Object { return &discoveryv1.EndpointSliceList{} },
			func(o *metav1.ListOptions) { o.LabelSelector = sel }), &discoveryv1.EndpointSlice{}, v.slices)
	}
	wg.Go(func() { v.checkAPI(ctx) })
	wg.Go(func() { v.flushLoop(ctx) })
	wg.Wait()
}

// listWatch adapts a client's List and Watch to a reflector, with tweak
// applied to every call's options (the view's selectors).
func listWatch[L runtime.Object](list func(context.Context, metav1.ListOptions) (L, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error), tweak func(*metav1.ListOptions)) cache.ListerWatcher {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			tweak(&o)
			l, err := list(ctx, o)
			if err != nil {
				return nil, err
			}
			return l, nil
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			tweak(&o)
			return watchFn(ctx, o)
		},
	}
}

// restListWatch lists and watches resource in namespace ns ("" for all)
// through c, a list decoded into newList's; tweak applies to every call's
// options.
func restListWatch(c rest.Interface, ns, resource string, newList func() runtime.Object, tweak func(*metav1.ListOptions)) cache.ListerWatcher {
	list := func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		l := newList()
		err := c.Get().Namespace(ns).Resource(resource).VersionedParams(&o, metav1.ParameterCodec).Do(ctx).Into(l)
		return l, err
	}
	watchFn := func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		o.Watch = true
		return c.Get().Namespace(ns).Resource(resource).VersionedParams(&o, metav1.ParameterCodec).Watch(ctx)
	}
	return listWatch(list, watchFn, tweak)
}

// touch records that the API server answered.
func (v *View) touch() { v.contact.Store(time.Now().UnixNano()) }

// watchErrors wraps a ListerWatcher to count and log its failures, and to
// note the API server's answers.
func (v *View) watchErrors(resource string, lw cache.ListerWatcher, current func(bool)) cache.ListerWatcher {
	lwc := cache.ToListerWatcherWithContext(lw)
	var lastLog atomic.Int64
	fail := func(op string, err error) {
		current(false)
		v.m.apiErrors.WithLabelValues(resource).Inc()
		msg := err.Error()
		v.apiErr.Store(&msg)
		// Reflectors retry with backoff; one line a minute per resource is
		// enough to say the API server is away.
		now := time.Now().UnixNano()
		if last := lastLog.Load(); now-last > int64(time.Minute) && lastLog.CompareAndSwap(last, now) {
			v.log.Warn("Kubernetes API: "+op+" failed; keeping the last view", zap.String("resource", resource), zap.Error(err))
		}
	}
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			obj, err := lwc.ListWithContext(ctx, o)
			if err != nil {
				fail("list", err)
				return nil, err
			}
			v.touch()
			return obj, nil
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			w, err := lwc.WatchWithContext(ctx, o)
			if err != nil {
				fail("watch", err)
				return nil, err
			}
			v.touch()
			// A watch that begins with the whole list (watch-list) brings
			// the view up to date once that list is in, when the store
			// is replaced; until then it holds what it held before.
			if o.SendInitialEvents == nil || !*o.SendInitialEvents {
				current(true)
			}
			return w, nil
		},
	}
}

// checkAPI asks the API server for its version every CheckInterval, so
// that the view's age says how long ago the API server last answered even
// when nothing in the cluster changes.
func (v *View) checkAPI(ctx context.Context) {
	t := time.NewTicker(v.cfg.CheckInterval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := v.cfg.Core.Get().AbsPath("/version").Do(cctx).Raw()
		cancel()
		if err == nil {
			v.touch()
			v.apiErr.Store(nil)
		} else if ctx.Err() == nil {
			msg := err.Error()
			v.apiErr.Store(&msg)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Age is how long ago the API server last answered; 0 before it ever did.
func (v *View) Age() time.Duration {
	c := v.contact.Load()
	if c == 0 {
		return 0
	}
	return time.Since(time.Unix(0, c))
}

// invalidate queues the zones of the objects added and removed for a
// flush of the cache: a Namespace or Service created must not be denied
// by answers cached before, and one deleted must not be served from them.
func (v *View) invalidate(added, removed []string, initial bool, zones func(key string) []string) {
	if initial || v.cfg.Invalidate == nil || len(added)+len(removed) == 0 {
		return
	}
	v.flushMu.Lock()
	for _, k := range append(added, removed...) {
		for _, z := range zones(k) {
			v.flushSet[z] = struct{}{}
		}
	}
	v.flushMu.Unlock()
	select {
	case v.flushWake <- struct{}{}:
	default:
	}
}

// flushBatch is how long the flusher gathers zones before a pass over the
// cache, and flushAgainAfter when it flushes the same zones a second time: a
// query that read the view just before an object was added may store its
// denial just after the first pass.
const (
	flushBatch      = 50 * time.Millisecond
	flushAgainAfter = time.Second
)

// flushLoop runs the cache invalidations, batched.
func (v *View) flushLoop(ctx context.Context) {
	var again []string
	var againAt <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-againAt:
			v.flush(again)
			again, againAt = nil, nil
			continue
		case <-v.flushWake:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(flushBatch):
		}
		v.flushMu.Lock()
		zones := make([]string, 0, len(v.flushSet))
		for z := range v.flushSet {
			zones = append(zones, z)
		}
		clear(v.flushSet)
		v.flushMu.Unlock()
		v.flush(zones)
		again = append(again, zones...)
		if againAt == nil {
			againAt = time.After(v.flushAgain)
		}
	}
}

func (v *View) flush(zones []string) {
	if len(zones) == 0 {
		return
	}
	n := v.cfg.Invalidate(zones)
	v.m.flushedZones.Add(float64(len(zones)))
	v.m.flushedEntries.Add(float64(n))
	if ce := v.log.Check(zap.DebugLevel, "cache invalidated"); ce != nil {
		ce.Write(zap.Int("zones", len(zones)), zap.Int("entries", n))
	}
}

// podOf extracts what the view keeps of a pod of this node: nothing for a
// pod that finished (its address may be reused), has no address yet, or
// shares the node's (hostNetwork).
func (v *View) podOf(obj any) (string, podInfo, bool) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return "", podInfo{}, false
	}
	key := p.Namespace + "/" + p.Name
	if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return key, podInfo{}, false
	}
	var info podInfo
	for _, pip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(pip.IP); err == nil {
			info.ips = append(info.ips, a.Unmap())
		}
	}
	if len(info.ips) == 0 {
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			info.ips = append(info.ips, a.Unmap())
		}
	}
	if len(info.ips) == 0 {
		return key, podInfo{}, false
	}
	info.dns = v.podDNS(p)
	return key, info, true
}

// podDNS is the search list and ndots kubelet gives the pod, when nodedns
// can know them: dnsPolicy ClusterFirst (or ClusterFirstWithHostNet, which
// is ClusterFirst off the host network) and a dnsConfig that adds neither
// nameservers nor search domains and keeps ndots at kubelet's 5. nil for
// any other pod: it gets plain answers.
func (v *View) podDNS(p *corev1.Pod) *search.PodDNS {
	switch p.Spec.DNSPolicy {
	case "", corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet:
	default:
		return nil
	}
	ndots := 5
	if c := p.Spec.DNSConfig; c != nil {
		if len(c.Nameservers) > 0 || len(c.Searches) > 0 {
			return nil
		}
		for _, o := range c.Options {
			if o.Name == "ndots" {
				n := 1 // resolv.conf's default when the value is missing
				if o.Value != nil {
					var err error
					if n, err = strconv.Atoi(*o.Value); err != nil {
						return nil
					}
				}
				ndots = n
			}
		}
		if ndots != 5 {
			return nil
		}
	}
	cd := v.cfg.ClusterDomain
	list := []string{strings.ToLower(p.Namespace) + ".svc." + cd, "svc." + cd, cd}
	for _, d := range v.cfg.NodeSearch {
		d = fqdn(d)
		if !slices.Contains(list, d) && len(list) < 32 { // kubelet's cap on search domains
			list = append(list, d)
		}
	}
	return &search.PodDNS{Namespace: p.Namespace, Search: list, Ndots: ndots}
}

// indexPods rebuilds the address index. An address two live pods claim
// (a moment during a restart) belongs to neither.
func (v *View) indexPods() {
	idx := map[netip.Addr]*search.PodDNS{}
	dup := map[netip.Addr]bool{}
	for _, info := range v.pods.snapshot() {
		for _, a := range info.ips {
			if _, seen := idx[a]; seen || dup[a] {
				dup[a] = true
				delete(idx, a)
				continue
			}
			if info.dns != nil {
				idx[a] = info.dns
			} else {
				idx[a] = nil
			}
		}
	}
	for a, p := range idx {
		if p == nil {
			delete(idx, a)
		}
	}
	v.byIP.Store(&idx)
}

// readyEndpoints extracts the ready addresses of an EndpointSlice of the
// cluster DNS Service, with the port of its DNS port ("dns", UDP).
func readyEndpoints(obj any) (string, []string, bool) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return "", nil, false
	}
	key := s.Namespace + "/" + s.Name
	port := int32(53)
	for _, p := range s.Ports {
		if p.Port == nil || (p.Protocol != nil && *p.Protocol != corev1.ProtocolUDP) {
			continue
		}
		if p.Name != nil && *p.Name == "dns" {
			port = *p.Port
			break
		}
	}
	var addrs []string
	for _, ep := range s.Endpoints {
		if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
			continue
		}
		for _, a := range ep.Addresses {
			if ip, err := netip.ParseAddr(a); err == nil {
				addrs = append(addrs, netip.AddrPortFrom(ip.Unmap(), uint16(port)).String())
			}
		}
	}
	return key, addrs, true
}

// publishEndpoints tells the forwarder the union of the slices' ready
// endpoints.
func (v *View) publishEndpoints() {
	all := v.Endpoints()
	v.m.endpoints.Set(float64(len(all)))
	if v.cfg.Endpoints != nil {
		v.cfg.Endpoints(all)
	}
}

// Endpoints returns the cluster DNS Service's ready endpoints the view
// holds now.
func (v *View) Endpoints() []string {
	var all []string
	for _, addrs := range v.slices.snapshot() {
		for _, a := range addrs {
			if !slices.Contains(all, a) {
				all = append(all, a)
			}
		}
	}
	slices.Sort(all)
	return all
}

// Status is the view's state, for /ready?verbose.
type Status struct {
	// Synced says, per resource, whether it has been listed once.
	Synced map[string]bool `json:"synced"`
	// Objects counts, per resource, what the view holds.
	Objects map[string]int `json:"objects"`
	// AgeSeconds is how long ago the API server last answered.
	AgeSeconds float64 `json:"age_seconds"`
	// LastError is the API's last error, while it lasts.
	LastError string `json:"last_error,omitempty"`
	// Endpoints are the cluster DNS Service's ready endpoints.
	Endpoints []string `json:"dns_endpoints"`
}

// Status returns the view's state.
func (v *View) Status() Status {
	st := Status{
		Synced:     map[string]bool{},
		Objects:    map[string]int{},
		AgeSeconds: v.Age().Seconds(),
		Endpoints:  v.Endpoints(),
	}
	for name, s := range map[string]interface {
		isSynced() bool
		len() int
	}{"namespaces": v.namespaces, "services": v.services, "pods": v.pods, "endpointslices": v.slices} {
		st.Synced[name], st.Objects[name] = s.isSynced(), s.len()
	}
	if e := v.apiErr.Load(); e != nil {
		st.LastError = *e
	}
	return st
}
