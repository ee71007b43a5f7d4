package deploy

import (
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodedns/nodedns/cache"
	"github.com/nodedns/nodedns/config"
	"github.com/nodedns/nodedns/resolver"
	"github.com/nodedns/nodedns/search"
	"github.com/nodedns/nodedns/upstream"
)

// What the downward API gives the pod in these tests.
const (
	testNode   = "node-a"
	testHostIP = "10.0.0.7"
)

// nodeLocalIP is the address kubelet's --cluster-dns points at.
const nodeLocalIP = "169.254.20.10"

// deployment is what a kustomization renders, and the configuration its
// nodedns container runs with.
type deployment struct {
	dir  string
	objs []any
	ds   *appsv1.DaemonSet
	c    *corev1.Container
	env  map[string]string // the container's environment, as kubelet fills it
	args []string          // the container's args, $(VAR) expanded
	cfg  config.Config     // what config.Parse makes of args and the ConfigMap
}

// workloads returns the kustomizations that render a DaemonSet.
func workloads(t *testing.T) []*deployment {
	t.Helper()
	var out []*deployment
	for _, dir := range kustomizations(t) {
		objs := render(t, dir)
		if len(all[appsv1.DaemonSet](objs)) == 0 {
			continue
		}
		out = append(out, load(t, dir, objs))
	}
	if len(out) < 2 {
		t.Fatalf("%d kustomizations with a DaemonSet; want base and overlays/transparent", len(out))
	}
	return out
}

func load(t *testing.T, dir string, objs []any) *deployment {
	t.Helper()
	d := &deployment{dir: dir, objs: objs}
	d.ds = one[appsv1.DaemonSet](t, dir, objs)
	cs := d.ds.Spec.Template.Spec.Containers
	if len(cs) != 1 || len(d.ds.Spec.Template.Spec.InitContainers) != 0 {
		t.Fatalf("%s: %d containers and %d init containers, want the nodedns container alone", dir, len(cs), len(d.ds.Spec.Template.Spec.InitContainers))
	}
	d.c = &cs[0]
	d.env = containerEnv(t, d.c)
	var err error
	if d.args, err = expand(d.c.Args, d.env); err != nil {
		t.Fatalf("%s: args: %v", dir, err)
	}
	d.cfg = parseConfig(t, d)
	return d
}

// containerEnv is the container's environment as kubelet fills it on node
// testNode, whose address is testHostIP.
func containerEnv(t *testing.T, c *corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			switch p := e.ValueFrom.FieldRef.FieldPath; p {
			case "spec.nodeName":
				env[e.Name] = testNode
			case "status.hostIP", "status.podIP": // the same on the host network
				env[e.Name] = testHostIP
			default:
				t.Fatalf("env %s: field %s is not one the test fills", e.Name, p)
			}
		default:
			t.Fatalf("env %s: a source the test does not fill", e.Name)
		}
	}
	if len(c.EnvFrom) > 0 {
		t.Fatal("envFrom: the test does not fill it")
	}
	return env
}

// expand replaces $(VAR) in args as kubelet does (Kubernetes'
// third_party/forked/golang/expansion): $(NAME) by the variable's value,
// $$ by $. A reference to a variable the container does not have stays as
// it is in Kubernetes; here it is an error.
func expand(args []string, env map[string]string) ([]string, error) {
	out := make([]string, len(args))
	for i, a := range args {
		var b strings.Builder
		for j := 0; j < len(a); j++ {
			if a[j] != '$' || j+1 == len(a) {
				b.WriteByte(a[j])
				continue
			}
			switch a[j+1] {
			case '$':
				b.WriteByte('$')
				j++
			case '(':
				end := strings.IndexByte(a[j:], ')')
				if end < 0 {
					return nil, &expandError{a, "an unclosed $("}
				}
				name := a[j+2 : j+end]
				v, ok := env[name]
				if !ok {
					return nil, &expandError{a, "$(" + name + ") is no variable of the container"}
				}
				b.WriteString(v)
				j += end
			default:
				b.WriteByte('$')
			}
		}
		out[i] = b.String()
	}
	return out, nil
}

type expandError struct{ arg, why string }

func (e *expandError) Error() string { return e.arg + ": " + e.why }

// parseConfig runs config.Parse on the container's args with the pod's
// files where the container sees them: the ConfigMap's keys in place of
// its mount, a directory for each hostPath mount, the node's resolv.conf
// (dnsPolicy Default), and the container's environment.
func parseConfig(t *testing.T, d *deployment) config.Config {
	t.Helper()
	root := t.TempDir()
	mounts := map[string]string{} // mountPath -> directory here
	vols := map[string]corev1.Volume{}
	for _, v := range d.ds.Spec.Template.Spec.Volumes {
		vols[v.Name] = v
	}
	for _, m := range d.c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			t.Fatalf("%s: volumeMount %s names no volume", d.dir, m.Name)
		}
		dir := filepath.Join(root, m.Name)
		switch {
		case v.ConfigMap != nil:
			cm := named(d.objs, v.ConfigMap.Name, func(c *corev1.ConfigMap) metav1.ObjectMeta { return c.ObjectMeta })
			if cm == nil {
				t.Fatalf("%s: volume %s: no ConfigMap %s among the objects", d.dir, m.Name, v.ConfigMap.Name)
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for k, s := range cm.Data {
				if err := os.WriteFile(filepath.Join(dir, k), []byte(s), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		case v.HostPath != nil:
			if v.HostPath.Type != nil && *v.HostPath.Type == corev1.HostPathFileOrCreate {
				if err := os.WriteFile(dir, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			} else if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("%s: volume %s: a kind the test does not make", d.dir, m.Name)
		}
		mounts[m.MountPath] = dir
	}
	args := make([]string, len(d.args))
	for i, a := range d.args {
		args[i] = a
		name, val, ok := strings.Cut(a, "=")
		if !ok {
			continue
		}
		for mp, dir := range mounts {
			if val == mp || strings.HasPrefix(val, mp+"/") {
				args[i] = name + "=" + dir + strings.TrimPrefix(val, mp)
			}
		}
	}
	rc := filepath.Join(root, "resolv.conf")
	if err := os.WriteFile(rc, []byte("nameserver 192.0.2.53\nsearch c.example.internal\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := config.ResolvConf
	config.ResolvConf = rc
	t.Cleanup(func() { config.ResolvConf = old })
	for k, v := range d.env {
		t.Setenv(k, v)
	}
	cfg, err := config.Parse(args, io.Discard)
	if err != nil {
		t.Fatalf("%s: nodedns %s: %v", d.dir, strings.Join(d.args, " "), err)
	}
	return cfg
}

// argValue returns the value of --name in the container's args.
func (d *deployment) argValue(name string) (string, bool) {
	for _, a := range d.args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name {
			return "true", true
		}
	}
	return "", false
}

func TestDaemonSet(t *testing.T) {
	for _, d := range workloads(t) {
		t.Run(d.dir, func(t *testing.T) {
			spec := d.ds.Spec.Template.Spec
			if !spec.HostNetwork {
				t.Error("hostNetwork is not true: nodedns serves the node's own addresses")
			}
			if spec.DNSPolicy != corev1.DNSDefault {
				t.Errorf("dnsPolicy %q, want Default: nodedns must forward to the node's resolvers, not to itself", spec.DNSPolicy)
			}
			if spec.PriorityClassName != "system-node-critical" {
				t.Errorf("priorityClassName %q, want system-node-critical", spec.PriorityClassName)
			}
			if !slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool {
				return tl.Key == "" && tl.Operator == corev1.TolerationOpExists && tl.Effect == ""
			}) {
				t.Errorf("tolerations %v: none tolerates every taint (operator Exists, no key, no effect)", spec.Tolerations)
			}
			if sel := spec.NodeSelector["kubernetes.io/os"]; sel != "linux" {
				t.Errorf("nodeSelector kubernetes.io/os %q, want linux", sel)
			}
			checkUpdateStrategy(t, d.ds)
			checkProbes(t, d)
			checkEnv(t, d)
			checkSecurity(t, d)
			checkResources(t, d)
			checkVolumes(t, d)
			checkImage(t, d)
			checkNodeSetupAndUpgrade(t, d)
		})
	}
}

// checkUpdateStrategy: a rolling update that surges on a node and never
// takes a node's pod away first.
func checkUpdateStrategy(t *testing.T, ds *appsv1.DaemonSet) {
	t.Helper()
	u := ds.Spec.UpdateStrategy
	if u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil {
		t.Fatalf("updateStrategy %+v, want RollingUpdate with maxSurge and maxUnavailable", u)
	}
	zero := func(v *intstr.IntOrString) bool {
		return v != nil && ((v.Type == intstr.Int && v.IntVal == 0) || (v.Type == intstr.String && v.StrVal == "0%"))
	}
	if !zero(u.RollingUpdate.MaxUnavailable) {
		t.Errorf("maxUnavailable %v, want 0: a node must never be left without its resolver", u.RollingUpdate.MaxUnavailable)
	}
	if s := u.RollingUpdate.MaxSurge; s == nil || zero(s) {
		t.Errorf("maxSurge %v, want at least 1: the new pod starts next to the old one", s)
	} else if s.Type != intstr.Int || s.IntVal != 1 {
		t.Errorf("maxSurge %v, want 1 (one node at a time)", s)
	}
	if ds.Spec.MinReadySeconds < 1 {
		t.Errorf("minReadySeconds %d: the old pod would be stopped the moment the new one is first ready", ds.Spec.MinReadySeconds)
	}
	c := ds.Spec.Template.Spec.Containers[0]
	for _, p := range c.Ports {
		// In a hostNetwork pod the API server makes every containerPort a
		// hostPort too; the scheduler then refuses the surge pod the node
		// its old pod holds the port on, and the rollout stalls.
		t.Errorf("container port %+v: in a hostNetwork pod it is a hostPort, which keeps the surge pod Pending", p)
	}
}

// checkProbes: readiness on /ready and liveness on /health, on the port of
// --http-listen, at the pod's IP (no host: on the host network that is the
// node's address, which --http-listen must be).
func checkProbes(t *testing.T, d *deployment) {
	t.Helper()
	ap, err := netip.ParseAddrPort(d.cfg.HTTPListen)
	if err != nil {
		t.Fatalf("http_listen %q: %v", d.cfg.HTTPListen, err)
	}
	if ap.Addr().String() != testHostIP {
		t.Errorf("http_listen %s: kubelet probes, and Prometheus scrapes, the pod's IP %s (the node's address, status.hostIP)", d.cfg.HTTPListen, testHostIP)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readinessProbe", d.c.ReadinessProbe, "/ready"}, {"livenessProbe", d.c.LivenessProbe, "/health"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: want an HTTP GET of %s", p.name, p.path)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path {
			t.Errorf("%s: path %q, want %q", p.name, g.Path, p.path)
		}
		if g.Port.Type != intstr.Int || g.Port.IntVal != int32(ap.Port()) {
			t.Errorf("%s: port %v, want %d (--http-listen)", p.name, g.Port.String(), ap.Port())
		}
		if g.Host != "" {
			t.Errorf("%s: host %q: kubelet must probe the pod's IP, where --http-listen is", p.name, g.Host)
		}
		if g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP {
			t.Errorf("%s: scheme %s, want HTTP", p.name, g.Scheme)
		}
	}
	if d.c.StartupProbe != nil {
		t.Error("startupProbe: not expected")
	}
	// A hung nodedns is restarted within about 10 s of /health failing.
	if l := d.c.LivenessProbe; l != nil {
		if n := l.PeriodSeconds * l.FailureThreshold; n > 10 {
			t.Errorf("livenessProbe: %d s × %d failures = %d s before kubelet restarts a hung nodedns; want at most 10 s",
				l.PeriodSeconds, l.FailureThreshold, n)
		}
		if l.TimeoutSeconds >= l.PeriodSeconds {
			t.Errorf("livenessProbe: timeout %d s not under the period %d s", l.TimeoutSeconds, l.PeriodSeconds)
		}
	}
}

// checkEnv: NODE_NAME from the downward API, and no GOMEMLIMIT (which
// would override memory_limit_ratio).
func checkEnv(t *testing.T, d *deployment) {
	t.Helper()
	var nodeName bool
	for _, e := range d.c.Env {
		if e.Name == "NODE_NAME" {
			nodeName = e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
		}
		if e.Name == "GOMEMLIMIT" || e.Name == "GOMAXPROCS" {
			t.Errorf("env %s: nodedns sizes itself from the container's limits", e.Name)
		}
	}
	if !nodeName {
		t.Error("NODE_NAME: want the downward API's spec.nodeName")
	}
	if d.cfg.NodeName != testNode {
		t.Errorf("node name %q as nodedns reads it, want %q", d.cfg.NodeName, testNode)
	}
}

// checkSecurity: root with only NET_ADMIN and NET_BIND_SERVICE, no
// escalation, a read-only root filesystem.
func checkSecurity(t *testing.T, d *deployment) {
	t.Helper()
	sc := d.c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("securityContext.capabilities: none")
	}
	if !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities.drop %v, want [ALL]", sc.Capabilities.Drop)
	}
	add := slices.Clone(sc.Capabilities.Add)
	slices.Sort(add)
	if want := []corev1.Capability{"NET_ADMIN", "NET_BIND_SERVICE"}; !reflect.DeepEqual(add, want) {
		t.Errorf("capabilities.add %v, want exactly %v", sc.Capabilities.Add, want)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	// A non-root process gets no capability from capabilities.add: the
	// runtime puts them in its bounding, permitted and effective sets, and
	// execve of a binary without file capabilities clears the last two for
	// any user but root (ambient capabilities would carry them over, but
	// Kubernetes sets none). TestCapabilities shows it.
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Errorf("runAsUser %v: as a non-root user nodedns would have neither capability (unless the image's binary carries file capabilities)", sc.RunAsUser)
	}
	if ps := d.ds.Spec.Template.Spec.SecurityContext; ps == nil || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod securityContext.seccompProfile is not RuntimeDefault")
	}
	if p := d.ds.Spec.Template.Spec; p.HostPID || p.HostIPC {
		t.Error("hostPID or hostIPC: not needed")
	}
	if d.cfg.PprofListen != "" {
		t.Errorf("pprof_listen %q: profiling stays off in the DaemonSet", d.cfg.PprofListen)
	}
}

// Beyond the cache and the bounds resolver.WorstCase counts: the Go runtime
// and a UDP socket's kernel receive buffer, charged to the container
// (docs/design.md, "Sizing memory").
const (
	runtimeBytes   = 10 << 20
	udpRcvbufBytes = 1 << 20
)

// checkResources: requests, a memory limit, and a configuration whose worst
// case fits under the Go memory limit that limit gives.
func checkResources(t *testing.T, d *deployment) {
	t.Helper()
	r := d.c.Resources
	limit, ok := r.Limits[corev1.ResourceMemory]
	if !ok {
		t.Fatal("no memory limit: nodedns sizes its Go memory limit from it")
	}
	if _, ok := r.Limits[corev1.ResourceCPU]; ok {
		t.Error("a CPU limit: a throttled resolver is a slow one")
	}
	if _, ok := r.Requests[corev1.ResourceCPU]; !ok {
		t.Error("no CPU request")
	}
	if req, ok := r.Requests[corev1.ResourceMemory]; !ok || req.Cmp(limit) != 0 {
		t.Errorf("memory request %v, want the limit %v: the node never has to take memory back", req.String(), limit.String())
	}
	if d.cfg.MemoryLimitRatio <= 0 || d.cfg.MemoryLimitRatio > 1 {
		t.Fatalf("memory_limit_ratio %v: nodedns would not follow the limit", d.cfg.MemoryLimitRatio)
	}
	if d.cfg.Server.UDPSockets == 0 {
		t.Error("server.udp_sockets unset: it would be GOMAXPROCS, every core of the node without a CPU limit")
	}
	sc := d.cfg.Server
	if d.cfg.Autopath {
		sc.Walker = search.Autopath{}
	}
	worst := resolver.WorstCase(sc)
	cacheBytes := d.cfg.Cache.MaxBytes + cache.Overhead(d.cfg.Cache)
	// At start a cache snapshot is read whole and its entries made, the
	// file and the cache at once, before anything is served.
	serving, loading := worst.Total(), d.cfg.Cache.MaxBytes+1<<20
	need := cacheBytes + max(serving, loading) + runtimeBytes + int64(len(d.cfg.Server.Listen)*d.cfg.Server.UDPSockets)*udpRcvbufBytes
	goLimit := int64(float64(limit.Value()) * d.cfg.MemoryLimitRatio)
	t.Logf("memory: cache %.1f MiB + bounds %.1f MiB (%v) + runtime and socket buffers = %.1f MiB, Go memory limit %.1f MiB (%s x %v)",
		mib(cacheBytes), mib(worst.Total()), worst, mib(need), mib(goLimit), limit.String(), d.cfg.MemoryLimitRatio)
	if need > goLimit {
		t.Errorf("the worst case (%.1f MiB) is above the Go memory limit (%.1f MiB): raise the memory limit or lower cache.size", mib(need), mib(goLimit))
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// checkVolumes: the config file mounted and passed with --config, the
// snapshot's host directory mounted, nothing else writable.
func checkVolumes(t *testing.T, d *deployment) {
	t.Helper()
	cf, ok := d.argValue("config")
	if !ok {
		t.Fatal("no --config")
	}
	vols := map[string]corev1.Volume{}
	for _, v := range d.ds.Spec.Template.Spec.Volumes {
		vols[v.Name] = v
	}
	var configMounted, stateMounted bool
	for _, m := range d.c.VolumeMounts {
		v := vols[m.Name]
		switch {
		case v.ConfigMap != nil:
			if !m.ReadOnly {
				t.Errorf("volumeMount %s: the config is mounted writable", m.Name)
			}
			if filepath.Dir(cf) == m.MountPath {
				configMounted = true
			}
		case v.HostPath != nil && v.HostPath.Path == "/var/lib/nodedns":
			stateMounted = true
			if v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate {
				t.Errorf("hostPath %s: type %v, want DirectoryOrCreate", v.HostPath.Path, v.HostPath.Type)
			}
		case v.HostPath != nil && v.HostPath.Path == "/run/xtables.lock":
			// iptables-legacy's lock, shared with kube-proxy.
		default:
			t.Errorf("volumeMount %s: not one the design has", m.Name)
		}
	}
	if !configMounted {
		t.Errorf("--config=%s: not in a ConfigMap's mount", cf)
	}
	if !stateMounted {
		t.Error("no hostPath /var/lib/nodedns for the cache snapshot")
	}
	if d.cfg.ConfigFile == "" {
		t.Error("config.Parse saw no config file")
	}
}

// checkNodeSetupAndUpgrade: nodedns makes the address and the conntrack
// rules, keeps them through an upgrade, and hands its cache and its
// addresses to the next pod within the grace period.
func checkNodeSetupAndUpgrade(t *testing.T, d *deployment) {
	t.Helper()
	c := d.cfg
	if !c.SetupInterface || !c.SetupRules {
		t.Errorf("setup interface %v, rules %v: without them nothing makes %s on the node, and DNS goes through conntrack", c.SetupInterface, c.SetupRules, nodeLocalIP)
	}
	if c.SetupInterval <= 0 {
		t.Errorf("setup interval %v: a flushed rule would stay flushed", c.SetupInterval)
	}
	// Teardown already leaves everything to a new process that serves;
	// skipping it always would leave the address and the rules behind on
	// uninstall, and in transparent mode keep the kube-dns address from
	// kube-proxy while nodedns is stopped.
	if c.SkipTeardown {
		t.Error("skip_teardown: not needed for upgrades, and it leaves the node's set-up behind")
	}
	snap, ok := d.argValue("cache-snapshot")
	if !ok || !strings.HasPrefix(snap, "/var/lib/nodedns/") {
		t.Errorf("--cache-snapshot %q: want a file in the hostPath /var/lib/nodedns, which the next pod sees", snap)
	}
	if c.Server.HandOverWait <= 0 {
		t.Error("handover wait 0: a pod deleted on its own would stop before its replacement serves")
	}
	grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if g := d.ds.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = *g
	}
	need := c.Lameduck + c.Server.HandOverWait + time.Second + c.ShutdownTimeout + 5*time.Second // + draining the queued, the last snapshot
	if time.Duration(grace)*time.Second < need {
		t.Errorf("terminationGracePeriodSeconds %d: below lameduck + handover wait + shutdown timeout + margin (%v): kubelet would kill nodedns mid-hand-over", grace, need)
	}
}

// checkImage: never pulled again on a restart (a registry outage must not
// keep a node's resolver down).
func checkImage(t *testing.T, d *deployment) {
	t.Helper()
	if d.c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("imagePullPolicy %q, want IfNotPresent", d.c.ImagePullPolicy)
	}
	if d.c.Image == "" {
		t.Error("no image")
	}
}

// TestConfig checks what nodedns makes of each config file with the
// container's args.
func TestConfig(t *testing.T) {
	for _, d := range workloads(t) {
		t.Run(d.dir, func(t *testing.T) {
			c := d.cfg
			if !slices.Contains(c.Server.Listen, nodeLocalIP+":53") {
				t.Errorf("listen %v: not on %s:53, kubelet's --cluster-dns", c.Server.Listen, nodeLocalIP)
			}
			if !c.KubeOn() || c.Kubeconfig != "" {
				t.Errorf("kube.enabled %q, kubeconfig %q: want the view on through the pod's service account", c.Kube, c.Kubeconfig)
			}
			if c.KubeDNSService != "kube-system/kube-dns" {
				t.Errorf("kube.dns_service %q", c.KubeDNSService)
			}
			if !c.SearchEnabled || !slices.Equal(c.ClusterDomains, []string{"cluster.local"}) {
				t.Errorf("search %v %v", c.SearchEnabled, c.ClusterDomains)
			}
			var cluster *upstream.GroupConfig
			for i, g := range c.Upstreams {
				if slices.Contains(g.Zones, "cluster.local") {
					cluster = &c.Upstreams[i]
				}
			}
			if cluster == nil {
				t.Fatal("no group serves cluster.local")
			}
			// "." comes from the node's resolv.conf (dnsPolicy Default).
			var root bool
			for _, g := range c.Upstreams {
				if slices.Contains(g.Zones, ".") {
					root = true
					if !slices.Equal(g.Addrs, []string{"192.0.2.53:53"}) {
						t.Errorf("group %q: servers %v, want the node's resolv.conf's", g.Name, g.Addrs)
					}
				}
			}
			if !root {
				t.Error(`no group for "."`)
			}
			if !slices.Equal(c.NodeSearch, []string{"c.example.internal"}) {
				t.Errorf("node search %v, want the node's resolv.conf's", c.NodeSearch)
			}
		})
	}
}

// TestTransparentOverlay checks the overlay against the base: the same
// configuration but for the kube-dns Service address nodedns listens on and
// the cluster group's fallback, the kube-dns-upstream Service.
func TestTransparentOverlay(t *testing.T) {
	ds := workloads(t)
	byDir := map[string]*deployment{}
	for _, d := range ds {
		byDir[d.dir] = d
	}
	base, tr := byDir["base"], byDir[filepath.Join("overlays", "transparent")]
	if base == nil || tr == nil {
		t.Fatalf("want base and overlays/transparent among %v", byDir)
	}
	up := named(tr.objs, "kube-dns-upstream", func(s *corev1.Service) metav1.ObjectMeta { return s.ObjectMeta })
	if up == nil {
		t.Fatal("no kube-dns-upstream Service")
	}
	if up.Namespace != "kube-system" || up.Spec.Selector["k8s-app"] != "kube-dns" || len(up.Spec.Selector) != 1 {
		t.Errorf("kube-dns-upstream: namespace %q, selector %v; want kube-system and the kube-dns pods (k8s-app: kube-dns)", up.Namespace, up.Spec.Selector)
	}
	var protos []string
	for _, p := range up.Spec.Ports {
		if p.Port == 53 && p.TargetPort.IntValue() == 53 {
			protos = append(protos, string(p.Protocol))
		}
	}
	sort.Strings(protos)
	if !slices.Equal(protos, []string{"TCP", "UDP"}) {
		t.Errorf("kube-dns-upstream ports %v: want 53 over UDP and TCP", up.Spec.Ports)
	}
	var kubeDNS string
	for _, l := range tr.cfg.Server.Listen {
		if !strings.HasPrefix(l, nodeLocalIP+":") {
			kubeDNS = l
		}
	}
	if len(tr.cfg.Server.Listen) != 2 || kubeDNS == "" || !strings.HasSuffix(kubeDNS, ":53") {
		t.Fatalf("listen %v: want %s:53 and the kube-dns Service's address", tr.cfg.Server.Listen, nodeLocalIP)
	}
	clusterGroup := func(c *config.Config) *upstream.GroupConfig {
		for i, g := range c.Upstreams {
			if g.Name == "cluster" {
				return &c.Upstreams[i]
			}
		}
		t.Fatal("no group named cluster")
		return nil
	}
	g := clusterGroup(&tr.cfg)
	if !slices.Equal(addrs(t, g.Addrs), []string{up.Spec.ClusterIP + ":53"}) {
		t.Errorf("cluster group servers %v, want kube-dns-upstream's %s:53", g.Addrs, up.Spec.ClusterIP)
	}
	if bg := clusterGroup(&base.cfg); !slices.Equal(addrs(t, bg.Addrs), []string{kubeDNS}) {
		t.Errorf("the base forwards the cluster domain to %v, the overlay listens on %v: they must name the same kube-dns address", bg.Addrs, tr.cfg.Server.Listen)
	}
	// Everything else as the base has it.
	a, b := base.cfg, tr.cfg
	a.ConfigFile, b.ConfigFile = "", ""
	a.Snapshot, b.Snapshot = "", "" // in each test's own directory
	b.Server.Listen = a.Server.Listen
	clusterGroup(&b).Addrs = clusterGroup(&a).Addrs
	a.Upstreams, b.Upstreams = slices.Clone(a.Upstreams), slices.Clone(b.Upstreams)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("the overlay's configuration differs from the base's in more than listen and the cluster group's servers:\nbase    %+v\noverlay %+v", a, b)
	}
	if !reflect.DeepEqual(base.ds.Spec, tr.ds.Spec) {
		// The ConfigMap's name (its hash) differs; nothing else should.
		x, y := base.ds.Spec.DeepCopy(), tr.ds.Spec.DeepCopy()
		for _, s := range []*appsv1.DaemonSetSpec{x, y} {
			for i := range s.Template.Spec.Volumes {
				if s.Template.Spec.Volumes[i].ConfigMap != nil {
					s.Template.Spec.Volumes[i].ConfigMap.Name = ""
				}
			}
		}
		if !reflect.DeepEqual(x, y) {
			t.Error("the overlay's DaemonSet differs from the base's in more than its ConfigMap")
		}
	}
}

// addrs returns servers as IP:port.
func addrs(t *testing.T, servers []string) []string {
	t.Helper()
	out := make([]string, len(servers))
	for i, s := range servers {
		a, err := upstream.ParseAddr(s)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = a
	}
	return out
}

// TestRBAC checks that the ClusterRole and the Role grant exactly what the
// Kubernetes view uses (docs/kubernetes.md): cluster wide, list and watch
// of namespaces, services and pods, get of /version; in the cluster DNS
// Service's namespace only, list and watch of discovery.k8s.io
// endpointslices; and that both are bound to the DaemonSet's
// ServiceAccount.
func TestRBAC(t *testing.T) {
	grants := func(rules []rbacv1.PolicyRule) []string {
		var got []string
		for _, r := range rules {
			if len(r.ResourceNames) > 0 {
				t.Errorf("rule %+v: resourceNames are not expected", r)
			}
			for _, v := range r.Verbs {
				for _, u := range r.NonResourceURLs {
					got = append(got, v+" "+u)
				}
				for _, g := range r.APIGroups {
					for _, res := range r.Resources {
						got = append(got, v+" "+g+"/"+res)
					}
				}
			}
			if len(r.NonResourceURLs) > 0 && (len(r.APIGroups) > 0 || len(r.Resources) > 0) {
				t.Errorf("rule %+v mixes resources and non-resource URLs", r)
			}
		}
		sort.Strings(got)
		return got
	}
	for _, d := range workloads(t) {
		t.Run(d.dir, func(t *testing.T) {
			role := one[rbacv1.ClusterRole](t, d.dir, d.objs)
			want := []string{
				"get /version",
				"list /namespaces", "list /pods", "list /services",
				"watch /namespaces", "watch /pods", "watch /services",
			}
			if got := grants(role.Rules); !slices.Equal(got, want) {
				t.Errorf("the ClusterRole grants\n  %s\nwant exactly\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
			nsRole := one[rbacv1.Role](t, d.dir, d.objs)
			if ns, _, _ := strings.Cut(d.cfg.KubeDNSService, "/"); nsRole.Namespace != ns {
				t.Errorf("the Role is in %q, the cluster DNS Service (kube.dns_service %q) in %q", nsRole.Namespace, d.cfg.KubeDNSService, ns)
			}
			want = []string{"list discovery.k8s.io/endpointslices", "watch discovery.k8s.io/endpointslices"}
			if got := grants(nsRole.Rules); !slices.Equal(got, want) {
				t.Errorf("the Role grants\n  %s\nwant exactly\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
			sa := one[corev1.ServiceAccount](t, d.dir, d.objs)
			if d.ds.Spec.Template.Spec.ServiceAccountName != sa.Name || sa.Namespace != d.ds.Namespace {
				t.Errorf("the DaemonSet runs as %q in %q, the ServiceAccount is %s/%s", d.ds.Spec.Template.Spec.ServiceAccountName, d.ds.Namespace, sa.Namespace, sa.Name)
			}
			if am := d.ds.Spec.Template.Spec.AutomountServiceAccountToken; am != nil && !*am {
				t.Error("automountServiceAccountToken false: the view needs the token")
			}
			subjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: sa.Namespace}}
			b := one[rbacv1.ClusterRoleBinding](t, d.dir, d.objs)
			if b.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name}) {
				t.Errorf("roleRef %+v, want ClusterRole %s", b.RoleRef, role.Name)
			}
			if !reflect.DeepEqual(b.Subjects, subjects) {
				t.Errorf("subjects %+v, want %+v", b.Subjects, subjects)
			}
			rb := one[rbacv1.RoleBinding](t, d.dir, d.objs)
			if rb.Namespace != nsRole.Namespace || rb.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: nsRole.Name}) {
				t.Errorf("RoleBinding %s/%s roleRef %+v, want Role %s/%s", rb.Namespace, rb.Name, rb.RoleRef, nsRole.Namespace, nsRole.Name)
			}
			if !reflect.DeepEqual(rb.Subjects, subjects) {
				t.Errorf("RoleBinding subjects %+v, want %+v", rb.Subjects, subjects)
			}
		})
	}
}

// TestMetricsService checks the headless Service Prometheus scrapes.
func TestMetricsService(t *testing.T) {
	for _, d := range workloads(t) {
		t.Run(d.dir, func(t *testing.T) {
			var svc *corev1.Service
			for _, s := range all[corev1.Service](d.objs) {
				if s.Spec.ClusterIP == corev1.ClusterIPNone {
					if svc != nil {
						t.Fatal("two headless Services")
					}
					svc = s
				}
			}
			if svc == nil {
				t.Fatal("no headless Service")
			}
			labels := d.ds.Spec.Template.Labels
			for k, v := range svc.Spec.Selector {
				if labels[k] != v {
					t.Errorf("selector %v does not select the DaemonSet's pods %v", svc.Spec.Selector, labels)
				}
			}
			if len(svc.Spec.Selector) == 0 {
				t.Error("no selector")
			}
			ap := netip.MustParseAddrPort(d.cfg.HTTPListen)
			if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.IntValue() != int(ap.Port()) || svc.Spec.Ports[0].Name != "metrics" {
				t.Errorf("ports %+v, want one named metrics to port %d", svc.Spec.Ports, ap.Port())
			}
			if !svc.Spec.PublishNotReadyAddresses {
				t.Error("publishNotReadyAddresses is false: a pod whose upstreams are down would not be scraped")
			}
			for _, o := range d.objs {
				m, ok := objectMeta(o)
				if ok && m.Namespace != "" && m.Namespace != d.ds.Namespace {
					t.Errorf("%s is in namespace %q, the DaemonSet in %q", m.Name, m.Namespace, d.ds.Namespace)
				}
			}
		})
	}
}

// objectMeta returns the metadata of an API object.
func objectMeta(o any) (metav1.ObjectMeta, bool) {
	v := reflect.ValueOf(o)
	if v.Kind() != reflect.Pointer {
		return metav1.ObjectMeta{}, false
	}
	f := v.Elem().FieldByName("ObjectMeta")
	if !f.IsValid() {
		return metav1.ObjectMeta{}, false
	}
	m, ok := f.Interface().(metav1.ObjectMeta)
	return m, ok
}

// TestUserOverlay renders the overlay README.md shows (the image named by
// digest), with the config file replaced and maxSurge raised, on top of the
// base, as a user's directory outside deploy/ would.
func TestUserOverlay(t *testing.T) {
	base, err := filepath.Abs("base")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rel, err := filepath.Rel(dir, base) // kustomize takes no absolute path
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join("base", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), "size: 32MiB", "size: 64MiB", 1))
	overlay := readmeOverlay(t)
	overlay = strings.Replace(overlay, "../deploy/base", rel, 1)
	files := map[string]string{
		"config.yaml": string(cfg),
		"kustomization.yaml": overlay + `configMapGenerator:
  - name: nodedns-config
    namespace: kube-system
    behavior: replace
    files:
      - config.yaml
patches:
  - target: {kind: DaemonSet, name: nodedns}
    patch: |
      - op: replace
        path: /spec/updateStrategy/rollingUpdate/maxSurge
        value: 10%
`,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	objs := render(t, dir)
	d := load(t, dir, objs)
	if !regexp.MustCompile(`^registry\.example/nodedns@sha256:[0-9a-f]{64}$`).MatchString(d.c.Image) {
		t.Errorf("image %q, want the registry's name by digest", d.c.Image)
	}
	if d.c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("imagePullPolicy %s", d.c.ImagePullPolicy)
	}
	if s := d.ds.Spec.UpdateStrategy.RollingUpdate.MaxSurge; s == nil || s.String() != "10%" {
		t.Errorf("maxSurge %v", s)
	}
	if d.cfg.Cache.MaxBytes != 64<<20 {
		t.Errorf("cache size %d: the replaced config file is not the one mounted", d.cfg.Cache.MaxBytes)
	}
	if n := len(all[corev1.ConfigMap](objs)); n != 1 {
		t.Errorf("%d ConfigMaps, want the replaced one alone", n)
	}
}

// readmeOverlay returns the user's kustomization README.md shows, without
// the indentation of its list item.
func readmeOverlay(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "# my-cluster/kustomization.yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README.md shows no my-cluster/kustomization.yaml")
	}
	var out strings.Builder
	for _, line := range strings.Split(strings.TrimRight(block, " \n"), "\n") {
		out.WriteString(strings.TrimPrefix(line, "   ") + "\n")
	}
	return out.String()
}
