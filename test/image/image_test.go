//go:build linux

package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/nodedns/nodedns/internal/testutil"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(initEnv); spec != "" {
		err := containerInit(spec)
		fmt.Fprintln(os.Stderr, "container stand-in:", err)
		os.Exit(127)
	}
	os.Exit(m.Run())
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	return runEnv(t, nil, name, args...)
}

// runEnv runs a command with env added to the test's environment.
func runEnv(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestImage builds the image twice as `make image` does, checks that both
// builds are the same bytes, checks its configuration against the
// Dockerfile's promises and the DaemonSet, and runs nodedns from its root
// filesystem the way the DaemonSet runs it.
func TestImage(t *testing.T) {
	testutil.RequireRoot(t, "buildah", "umoci", "ip", "dig", "curl", "nft", "tar")
	dir := t.TempDir()

	// Two builds. The second reuses the Go build cache, as a rebuild does;
	// buildah's storage is new each time.
	start := time.Now()
	a, b := filepath.Join(dir, "a.oci.tar"), filepath.Join(dir, "b.oci.tar")
	// The commit's metadata is read once: others may commit in this
	// checkout between the two builds.
	env := []string{
		"VERSION=" + strings.TrimSpace(run(t, "git", "describe", "--always", "--dirty")),
		"REVISION=" + strings.TrimSpace(run(t, "git", "rev-parse", "HEAD")),
		"SOURCE_DATE_EPOCH=" + strings.TrimSpace(run(t, "git", "log", "-1", "--format=%ct")),
	}
	t.Logf("build 1: %s", strings.TrimSpace(runEnv(t, env, testutil.Path(t, "image/build.sh"), a)))
	t.Logf("build 2: %s", strings.TrimSpace(runEnv(t, env, testutil.Path(t, "image/build.sh"), b)))
	t.Logf("two builds took %v", time.Since(start).Round(100*time.Millisecond))
	img := readArchive(t, a)
	if other := readArchive(t, b); other.digest != img.digest || other.sum != img.sum {
		t.Fatalf("two builds differ (unless the source changed in between): manifest %s and %s, archive sha256 %s and %s",
			img.digest, other.digest, img.sum, other.sum)
	}
	t.Logf("both builds: manifest %s, archive sha256:%s, %d bytes (layer %d bytes compressed, %d unpacked)",
		img.digest, img.sum, img.size, img.layerSize, img.unpackedSize)

	ds := daemonSet(t)
	c := ds.Spec.Template.Spec.Containers[0]
	checkConfig(t, img, c)

	// The root filesystem, unpacked by umoci (an OCI implementation other
	// than buildah's), and umoci's runtime view of the configuration.
	layout, bundle := filepath.Join(dir, "layout"), filepath.Join(dir, "bundle")
	if err := os.Mkdir(layout, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "tar", "-xf", a, "-C", layout)
	run(t, "umoci", "unpack", "--image", layout+":"+img.ref, bundle)
	rootfs := filepath.Join(bundle, "rootfs")
	checkBundle(t, bundle, img)

	runFromImage(t, img, c, &ds.Spec.Template.Spec, rootfs)
}

// ociImage is what the test reads from an OCI archive.
type ociImage struct {
	digest       string // the manifest's
	sum          string // the archive's sha256
	size         int64  // the archive's
	ref          string // org.opencontainers.image.ref.name
	config       imageConfig
	layer        map[string]*tar.Header // the single layer's entries
	binary       []byte                 // its /nodedns
	layerSize    int64
	unpackedSize int64
}

// imageConfig is the part of the OCI image configuration checked.
type imageConfig struct {
	Created      string `json:"created"`
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Config       struct {
		User         string              `json:"User"`
		ExposedPorts map[string]struct{} `json:"ExposedPorts"`
		Env          []string            `json:"Env"`
		Entrypoint   []string            `json:"Entrypoint"`
		Cmd          []string            `json:"Cmd"`
		WorkingDir   string              `json:"WorkingDir"`
		Labels       map[string]string   `json:"Labels"`
	} `json:"config"`
	RootFS struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
	History []struct {
		Created string `json:"created"`
	} `json:"history"`
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
}

// readArchive reads an OCI archive (a tar of an OCI image layout), checks
// every blob against its digest and size, and returns its one image.
func readArchive(t *testing.T, path string) *ociImage {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	img := &ociImage{sum: hex.EncodeToString(sum[:]), size: int64(len(raw))}
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if files[h.Name], err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
	if string(files["oci-layout"]) != `{"imageLayoutVersion": "1.0.0"}` {
		t.Fatalf("oci-layout: %q", files["oci-layout"])
	}
	blob := func(d descriptor) []byte {
		t.Helper()
		hexd, ok := strings.CutPrefix(d.Digest, "sha256:")
		b, found := files["blobs/sha256/"+hexd]
		if !ok || !found {
			t.Fatalf("no blob %s", d.Digest)
		}
		if s := sha256.Sum256(b); hex.EncodeToString(s[:]) != hexd || int64(len(b)) != d.Size {
			t.Fatalf("blob %s: wrong digest or size", d.Digest)
		}
		return b
	}
	var index struct{ Manifests []descriptor }
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v, %d manifests", err, len(index.Manifests))
	}
	md := index.Manifests[0]
	img.digest, img.ref = md.Digest, md.Annotations["org.opencontainers.image.ref.name"]
	var manifest struct {
		Config descriptor
		Layers []descriptor
	}
	if err := json.Unmarshal(blob(md), &manifest); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(blob(manifest.Config), &img.config); err != nil {
		t.Fatal(err)
	}
	if len(manifest.Layers) != 1 || manifest.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
		t.Fatalf("layers: want one gzip layer, have %+v", manifest.Layers)
	}
	layer := blob(manifest.Layers[0])
	img.layerSize = int64(len(layer))
	zr, err := gzip.NewReader(bytes.NewReader(layer))
	if err != nil {
		t.Fatal(err)
	}
	diff := sha256.New()
	lr := tar.NewReader(io.TeeReader(zr, diff))
	img.layer = map[string]*tar.Header{}
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		img.layer[h.Name] = h
		img.unpackedSize += h.Size
		if h.Name == "nodedns" {
			if img.binary, err = io.ReadAll(lr); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, _ = io.Copy(io.Discard, lr)
	_, _ = io.Copy(diff, zr)
	if d := "sha256:" + hex.EncodeToString(diff.Sum(nil)); !slices.Equal(img.config.RootFS.DiffIDs, []string{d}) {
		t.Fatalf("rootfs.diff_ids %v, the layer is %s", img.config.RootFS.DiffIDs, d)
	}
	return img
}

// daemonSet is the DaemonSet of deploy/nodedns.yaml (the base rendered),
// decoded strictly.
func daemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	raw, err := os.ReadFile(testutil.Path(t, "deploy/nodedns.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var meta struct{ Kind string }
		if err := sigsyaml.Unmarshal([]byte(doc), &meta); err != nil || meta.Kind != "DaemonSet" {
			continue
		}
		ds := new(appsv1.DaemonSet)
		if err := sigsyaml.UnmarshalStrict([]byte(doc), ds); err != nil {
			t.Fatal(err)
		}
		if cs := ds.Spec.Template.Spec.Containers; len(cs) != 1 {
			t.Fatalf("the DaemonSet has %d containers, the test knows one", len(cs))
		}
		return ds
	}
	t.Fatal("no DaemonSet in deploy/nodedns.yaml")
	return nil
}

// checkConfig checks the image's configuration and layer: what the
// Dockerfile says, reproducible timestamps, a static binary alone, and
// what the DaemonSet relies on.
func checkConfig(t *testing.T, img *ociImage, c corev1.Container) {
	t.Helper()
	cfg := img.config
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s", cfg.OS, cfg.Architecture)
	}
	if !slices.Equal(cfg.Config.Entrypoint, []string{"/nodedns"}) || len(cfg.Config.Cmd) != 0 {
		t.Errorf("entrypoint %q, cmd %q: want [/nodedns] and none", cfg.Config.Entrypoint, cfg.Config.Cmd)
	}
	if cfg.Config.User != "0:0" {
		t.Errorf("user %q, want 0:0 (numeric, as the DaemonSet runs it)", cfg.Config.User)
	}
	var ports []string
	for p := range cfg.Config.ExposedPorts {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	if want := []string{"53/tcp", "53/udp", "9253/tcp"}; !slices.Equal(ports, want) {
		t.Errorf("exposed ports %v, want %v", ports, want)
	}

	// Labels, and every timestamp the build's.
	created, err := time.Parse(time.RFC3339, cfg.Created)
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimPrefix(img.ref, "nodedns:")
	labels := cfg.Config.Labels
	for k, want := range map[string]string{
		"org.opencontainers.image.title":   "nodedns",
		"org.opencontainers.image.source":  "https://github.com/nodedns/nodedns",
		"org.opencontainers.image.version": version,
		"org.opencontainers.image.created": cfg.Created,
	} {
		if labels[k] != want {
			t.Errorf("label %s = %q, want %q", k, labels[k], want)
		}
	}
	if labels["org.opencontainers.image.description"] == "" {
		t.Error("no org.opencontainers.image.description label")
	}
	if r := labels["org.opencontainers.image.revision"]; !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(r) {
		t.Errorf("label org.opencontainers.image.revision = %q, want a commit", r)
	}
	for k := range labels {
		if !strings.HasPrefix(k, "org.opencontainers.image.") {
			t.Errorf("label %s: only org.opencontainers.image.* labels expected (no build tool identity, which would tie the digest to its version)", k)
		}
	}
	for i, h := range cfg.History {
		if h.Created != cfg.Created {
			t.Errorf("history[%d] created %s, the image %s", i, h.Created, cfg.Created)
		}
	}

	// The layer: the binary alone, root's, with the build's time.
	if len(img.layer) != 1 || img.layer["nodedns"] == nil {
		var names []string
		for n := range img.layer {
			names = append(names, n)
		}
		t.Fatalf("layer holds %v, want only nodedns", names)
	}
	h := img.layer["nodedns"]
	if h.Typeflag != tar.TypeReg || h.Mode&0o7777 != 0o755 || h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(created) {
		t.Errorf("nodedns in the layer: type %c mode %o owner %d:%d time %v", h.Typeflag, h.Mode, h.Uid, h.Gid, h.ModTime)
	}
	// Static: no interpreter and no shared libraries, so FROM scratch runs it.
	f, err := elf.NewFile(bytes.NewReader(img.binary))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary is not static: it has a %v program header", p.Type)
		}
	}

	// The DaemonSet: the image's user is the one it runs (it may set
	// runAsUser, but it runs root either way), its probes use a port the
	// image exposes, and it keeps the image's entrypoint.
	if sc := c.SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Errorf("the DaemonSet's container does not run as user 0 (its securityContext: %+v), the image's user", c.SecurityContext)
	}
	for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("the DaemonSet's container lacks an HTTP readiness or liveness probe")
			continue
		}
		if port := fmt.Sprintf("%d/tcp", p.HTTPGet.Port.IntValue()); !slices.Contains(ports, port) {
			t.Errorf("the DaemonSet probes %s, which the image does not expose", port)
		}
	}
	if len(c.Command) != 0 {
		t.Errorf("the DaemonSet overrides the image's entrypoint with %q", c.Command)
	}
}

// checkBundle checks the runtime configuration umoci made from the image
// configuration: what a runtime would run.
func checkBundle(t *testing.T, bundle string, img *ociImage) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Process struct {
			User struct{ UID, GID int }
			Args []string
			Cwd  string
		}
	}
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	p := spec.Process
	if p.User.UID != 0 || p.User.GID != 0 || !slices.Equal(p.Args, []string{"/nodedns"}) || p.Cwd != "/" {
		t.Errorf("umoci's runtime config: user %d:%d, args %q, cwd %q", p.User.UID, p.User.GID, p.Args, p.Cwd)
	}
	st, err := os.Stat(filepath.Join(bundle, "rootfs", "nodedns"))
	if err != nil || st.Mode().Perm() != 0o755 || st.Size() != int64(len(img.binary)) {
		t.Errorf("rootfs/nodedns: %v %v", st, err)
	}
}

// capNumbers are the capabilities (linux/capability.h) the DaemonSet may
// add.
var capNumbers = map[corev1.Capability]int{"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "KILL": 5, "SETGID": 6, "SETUID": 7,
	"NET_BIND_SERVICE": 10, "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "SYS_CHROOT": 18, "SYS_ADMIN": 21, "SYS_RESOURCE": 24}

// The test's node: its address (the pod's status.hostIP, as the DaemonSet's
// HTTP address), and nodedns's node-local address in the DaemonSet's
// config. Documentation and link-local addresses, inside the namespace.
const (
	hostIP    = "192.0.2.1"
	localIP   = "169.254.20.10"
	nodeName  = "image-test-node"
	httpPort  = "9253"
	testZone  = "example.test."
	clusterIP = "10.96.0.1"
)

// testConfig replaces the DaemonSet's ConfigMap: its listen address, a
// cluster DNS on loopback, no Kubernetes API.
const testConfig = `listen: ["169.254.20.10:53"]
log_format: json
upstreams:
  - name: cluster
    zones: [cluster.local]
    servers: ["127.0.0.1:1053"]
search:
  cluster_domains: [cluster.local]
kube:
  enabled: "false"
`

// runFromImage runs the image's entrypoint from rootfs in a network
// namespace, with the DaemonSet's user, capabilities, privilege escalation
// setting, read-only root, volumes and arguments (its ConfigMap replaced by
// testConfig, the node's resolv.conf by the namespace's resolver), and
// checks that it sets up the node-local address and rules, answers, caches,
// reports ready, and shuts down cleanly, leaving its cache snapshot.
func runFromImage(t *testing.T, img *ociImage, c corev1.Container, pod *corev1.PodSpec, rootfs string) {
	dir := t.TempDir()

	// `nodedns --version` from the image says the version of its label.
	ver := exec.Command("/nodedns", "--version")
	ver.SysProcAttr = &syscall.SysProcAttr{Chroot: rootfs}
	out, err := ver.Output()
	if want := "nodedns " + img.config.Config.Labels["org.opencontainers.image.version"]; err != nil || strings.TrimSpace(string(out)) != want {
		t.Errorf("/nodedns --version from the image: %q, %v; want %q", out, err, want)
	}

	ns := testutil.NewNetns(t, "nodedns-image")
	ns.AddAddress(t, hostIP+"/24")
	up := startUpstream(t, ns)

	// The container as the DaemonSet describes it.
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Fatalf("the DaemonSet's container does not drop ALL capabilities: %+v", sc)
	}
	spec := containerSpec{
		Rootfs:     rootfs,
		NoNewPrivs: sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation,
		ReadOnly:   sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem,
	}
	var capMask uint64
	for _, name := range sc.Capabilities.Add {
		n, ok := capNumbers[name]
		if !ok {
			t.Fatalf("capability %s: unknown to the test", name)
		}
		spec.Caps = append(spec.Caps, n)
		capMask |= 1 << n
	}
	env := map[string]string{}
	spec.Env = append(spec.Env, img.config.Config.Env...)
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef == nil {
				t.Fatalf("env %s: only fieldRef is known to the test", e.Name)
			}
			switch e.ValueFrom.FieldRef.FieldPath {
			case "spec.nodeName":
				v = nodeName
			case "status.hostIP", "status.podIP":
				v = hostIP
			default:
				t.Fatalf("env %s: fieldRef %s unknown to the test", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		}
		env[e.Name] = v
		spec.Env = append(spec.Env, e.Name+"="+v)
	}
	// kubelet expands $(VAR) in the arguments from the container's env.
	expand := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	spec.Args = append(spec.Args, img.config.Config.Entrypoint...)
	for _, a := range c.Args {
		spec.Args = append(spec.Args, expand.ReplaceAllStringFunc(a, func(m string) string {
			if v, ok := env[m[2:len(m)-1]]; ok {
				return v
			}
			return m
		}))
	}
	// Stop at once on SIGTERM: no successor is coming to hand over to.
	spec.Args = append(spec.Args, "--handover-wait=0s")
	// The volumes: the ConfigMap holds testConfig; each hostPath is a
	// directory or file of the test's.
	volumes := map[string]string{}
	for _, v := range pod.Volumes {
		switch {
		case v.ConfigMap != nil:
			d := filepath.Join(dir, "configmap-"+v.Name)
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d, "config.yaml"), []byte(testConfig), 0o644); err != nil {
				t.Fatal(err)
			}
			volumes[v.Name] = d
		case v.HostPath != nil:
			p := filepath.Join(dir, "hostpath-"+v.Name)
			if v.HostPath.Type != nil && *v.HostPath.Type == corev1.HostPathFileOrCreate {
				if err := os.WriteFile(p, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			} else if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
			volumes[v.Name] = p
		default:
			t.Fatalf("volume %s: a kind the test does not know", v.Name)
		}
	}
	for _, m := range c.VolumeMounts {
		src, ok := volumes[m.Name]
		if !ok || m.SubPath != "" {
			t.Fatalf("volume mount %s: no such volume, or a subPath", m.Name)
		}
		spec.Mounts = append(spec.Mounts, bindMount{Source: src, Target: m.MountPath, ReadOnly: m.ReadOnly})
	}
	// What kubelet adds: the node's resolv.conf (dnsPolicy Default), here
	// the namespace's resolver on loopback.
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec.Mounts = append(spec.Mounts, bindMount{Source: resolv, Target: "/etc/resolv.conf", ReadOnly: true})

	t.Logf("running %q from the image's root filesystem in %s, caps %v, no_new_privs %v, read-only root %v",
		spec.Args, ns.Name, sc.Capabilities.Add, spec.NoNewPrivs, spec.ReadOnly)
	ct := startContainer(t, ns, spec)
	if err := ct.waitDNS(); err != nil {
		t.Fatal(err)
	}
	cmd := ct.Cmd
	t.Logf("answering on %s:53 %v after the start", localIP, ct.ready.Sub(ct.started).Round(time.Millisecond))

	dig := func(args ...string) string {
		t.Helper()
		return strings.TrimSpace(run(t, "ip", append([]string{"netns", "exec", ns.Name, "dig", "@" + localIP, "+time=2", "+tries=1", "+short"}, args...)...))
	}

	// The process is the image's binary, in the image's root, as the
	// DaemonSet's security context says.
	pid := cmd.Process.Pid // `ip netns exec` and the stand-in exec in place
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid)); err != nil || exe != rootfs {
		t.Errorf("/proc/%d/root is %q (%v), want %s", pid, exe, err, rootfs)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	wantNNP := "0"
	if spec.NoNewPrivs {
		wantNNP = "1"
	}
	for field, want := range map[string]string{
		"Uid":        "0\t0\t0\t0",
		"Gid":        "0\t0\t0\t0",
		"CapInh":     "0000000000000000",
		"CapPrm":     fmt.Sprintf("%016x", capMask),
		"CapEff":     fmt.Sprintf("%016x", capMask),
		"CapBnd":     fmt.Sprintf("%016x", capMask),
		"CapAmb":     "0000000000000000",
		"NoNewPrivs": wantNNP,
	} {
		if got := statusField(string(status), field); got != want {
			t.Errorf("/proc/%d/status %s: %q, want %q", pid, field, got, want)
		}
	}
	if spec.ReadOnly {
		mounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
		if err != nil {
			t.Fatal(err)
		}
		if !rootReadOnly(string(mounts)) {
			t.Errorf("the root filesystem is not read-only for nodedns:\n%s", mounts)
		}
	}

	// DNS: a name of the default group (the node's resolver, from the
	// resolv.conf kubelet mounts), asked twice over UDP and once over TCP,
	// reaches the upstream once; a cluster name goes to the cluster group.
	for i, args := range [][]string{{"www." + testZone, "A"}, {"www." + testZone, "A"}, {"+tcp", "www." + testZone, "A"}} {
		if got := dig(args...); got != "192.0.2.10" {
			t.Fatalf("query %d (dig %s): %q, want 192.0.2.10", i+1, strings.Join(args, " "), got)
		}
	}
	if n := up.count("53", "www."+testZone); n != 1 {
		t.Errorf("the node's resolver was asked %d times for www.%s, want 1 (then the cache)", n, testZone)
	}
	if got := dig("kubernetes.default.svc.cluster.local.", "A"); got != clusterIP {
		t.Errorf("kubernetes.default.svc.cluster.local: %q, want %s", got, clusterIP)
	}
	if n := up.count("1053", "kubernetes.default.svc.cluster.local."); n != 1 {
		t.Errorf("the cluster DNS was asked %d times for kubernetes.default.svc.cluster.local, want 1", n)
	}

	// HTTP on the node's address, as kubelet probes it.
	curl := func(path string) string {
		t.Helper()
		return run(t, "ip", "netns", "exec", ns.Name, "curl", "-sSf", "--max-time", "5", "http://"+hostIP+":"+httpPort+path)
	}
	for _, path := range []string{readyPath(c.ReadinessProbe), readyPath(c.LivenessProbe)} {
		curl(path)
	}

	// The node networking the arguments ask for, with nothing in the image
	// but nodedns: the address, and the rules through nftables' netlink
	// interface (no iptables program to run).
	setupRules := flagOn(spec.Args, "setup-rules")
	if flagOn(spec.Args, "setup-interface") {
		if a := run(t, "ip", "-n", ns.Name, "-o", "addr", "show"); !strings.Contains(a, " "+localIP+"/32 ") {
			t.Errorf("no %s/32 in the namespace:\n%s", localIP, a)
		}
	}
	if setupRules {
		rules := run(t, "ip", "netns", "exec", ns.Name, "nft", "list", "ruleset")
		if !strings.Contains(rules, localIP) || !strings.Contains(rules, "notrack") {
			t.Errorf("no NOTRACK rule for %s in the namespace's nftables ruleset:\n%s", localIP, rules)
		}
		if m := curl("/metrics"); !regexp.MustCompile(`nodedns_setup_info\{[^}]*backend="nftables"[^}]*\} 1`).MatchString(m) {
			t.Errorf("nodedns_setup_info does not say nftables:\n%s", grepLines(m, "nodedns_setup"))
		}
	}

	// SIGTERM, as kubelet stops it: a clean exit within the grace period,
	// the cache snapshot in the state volume, the set-up removed.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	grace := 30 * time.Second
	if pod.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	}
	select {
	case <-ct.Done():
		if err := ct.Wait(); err != nil {
			t.Errorf("nodedns exited with %v after SIGTERM", err)
		}
	case <-time.After(grace):
		t.Fatalf("nodedns still runs %v after SIGTERM", grace)
	}
	for _, a := range spec.Args {
		if p, ok := strings.CutPrefix(a, "--cache-snapshot="); ok {
			var host string
			for _, m := range spec.Mounts {
				if rel, err := filepath.Rel(m.Target, p); err == nil && !strings.HasPrefix(rel, "..") {
					host = filepath.Join(m.Source, rel)
				}
			}
			if st, err := os.Stat(host); host == "" || err != nil || st.Size() == 0 {
				t.Errorf("no cache snapshot %s in a volume after SIGTERM (host path %q: %v)", p, host, err)
			}
		}
	}
	if setupRules {
		if rules := run(t, "ip", "netns", "exec", ns.Name, "nft", "list", "ruleset"); strings.Contains(rules, localIP) {
			t.Errorf("the rules outlive nodedns:\n%s", rules)
		}
	}
}

// container is nodedns started from the image by the runtime's stand-in.
type container struct {
	*testutil.Process
	ns             *testutil.Netns
	started, ready time.Time
}

func startContainer(t *testing.T, ns *testutil.Netns, spec containerSpec) *container {
	t.Helper()
	specJSON, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command(self)
	cmd.Env = append(os.Environ(), initEnv+"="+string(specJSON))
	c := &container{ns: ns, started: time.Now()}
	c.Process = testutil.StartProcess(t, "nodedns (from the image)", cmd)
	return c
}

// waitDNS waits until nodedns answers on localIP:53, for 30 s, or exits.
func (c *container) waitDNS() error {
	deadline := time.Now().Add(30 * time.Second)
	for c.ns.Command("dig", "@"+localIP, "+time=1", "+tries=1", "ready.probe.", "TXT").Run() != nil {
		if c.Exited() {
			return fmt.Errorf("nodedns exited (%v) before it answered:\n%s", c.Wait(), c.Out)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing answers on %s:53 in %s after 30 s:\n%s", localIP, c.ns.Name, c.Out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.ready = time.Now()
	return nil
}

// flagOn reports whether args turn the boolean flag on.
func flagOn(args []string, name string) bool {
	for _, a := range args {
		if a == "--"+name || a == "--"+name+"=true" {
			return true
		}
	}
	return false
}

func readyPath(p *corev1.Probe) string {
	if p == nil || p.HTTPGet == nil {
		return "/ready"
	}
	return p.HTTPGet.Path
}

func statusField(status, field string) string {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// rootReadOnly reports whether the mount at "/" in a mountinfo file (the
// last one: mounts stack) is read-only.
func rootReadOnly(mountinfo string) bool {
	ro := false
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == "/" {
			ro = slices.Contains(strings.Split(f[5], ","), "ro")
		}
	}
	return ro
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// upstream stands in for the node's resolver (127.0.0.1:53, in the
// resolv.conf kubelet gives the pod) and the cluster DNS (127.0.0.1:1053,
// in testConfig), over UDP and TCP, inside the namespace, and counts the
// questions each port was asked.
type upstream map[string]*testutil.Upstream // by port

func (u upstream) count(port, name string) int { return u[port].Count(name) }

func startUpstream(t *testing.T, ns *testutil.Netns) upstream {
	t.Helper()
	u := upstream{}
	soa, _ := dns.NewRR(testZone + " 60 IN SOA ns.test. hostmaster.test. 1 7200 1800 86400 60")
	answers := map[string]string{
		"53/www." + testZone:                         "www." + testZone + " 300 IN A 192.0.2.10",
		"1053/kubernetes.default.svc.cluster.local.": "kubernetes.default.svc.cluster.local. 5 IN A " + clusterIP,
	}
	for _, port := range []string{"53", "1053"} {
		handler := func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			if len(r.Question) == 1 {
				q := r.Question[0]
				if rr, ok := answers[port+"/"+strings.ToLower(q.Name)]; ok && q.Qtype == dns.TypeA {
					a, _ := dns.NewRR(rr)
					m.Answer = append(m.Answer, a)
				} else {
					m.Rcode = dns.RcodeNameError
					m.Ns = append(m.Ns, soa)
				}
			}
			_ = w.WriteMsg(m)
		}
		// Sockets made by a thread inside the namespace stay there.
		var pc net.PacketConn
		var l net.Listener
		err := ns.Do(func() (err error) {
			if pc, err = net.ListenPacket("udp", "127.0.0.1:"+port); err != nil {
				return err
			}
			l, err = net.Listen("tcp", "127.0.0.1:"+port)
			return err
		})
		if err != nil {
			t.Fatalf("listening on 127.0.0.1:%s in %s: %v", port, ns.Name, err)
		}
		u[port] = testutil.ServeUpstream(t, pc, l, handler)
	}
	return u
}
