// Package kubetest runs a real Kubernetes control plane for integration
// tests: etcd and kube-apiserver, built from their Go modules by
// tools/kube/build.sh, started on loopback ports in a temporary directory.
// There is no controller-manager, scheduler or kubelet: a test creates what
// those would (a namespace's default ServiceAccount, EndpointSlices, pod
// status) itself, with the helpers here. Clients such as CoreDNS's
// kubernetes plugin see an ordinary API server.
//
// Start costs a few seconds (up to 20 s on a loaded machine) and about
// 300 MB of memory; a test binary that needs the control plane in several
// tests shares one through Shared and Main.
package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/nodedns/nodedns/internal/testutil"
)

// Versions of the control plane, as tools/kube/go.mod pins them.
const (
	KubeVersion = "v1.37.2"
	EtcdVersion = "v3.7.0"
)

// BinEnv names the environment variable that overrides where the binaries
// (etcd, kube-apiserver, kubectl) are looked for.
const BinEnv = "NODEDNS_KUBE_BIN"

// ReadyTimeout bounds the wait for the API server's /readyz: 3-4 s on an
// idle two-core machine, up to 20 s under load; generous, so that a slow CI
// machine fails on a real fault only.
const ReadyTimeout = 120 * time.Second

// ContextName is the context (and cluster) name in the kubeconfig.
const ContextName = "kubetest"

// Cluster is a running etcd and kube-apiserver.
type Cluster struct {
	// Kubeconfig is the path of a kubeconfig file for the cluster: a static
	// token in group system:masters, insecure-skip-tls-verify (the API
	// server's certificate is self-signed), current context ContextName.
	Kubeconfig string
	// Server is the API server's URL (https://127.0.0.1:<port>).
	Server string
	// Config is the client configuration the kubeconfig describes.
	Config *rest.Config
	// Client is a clientset for Config.
	Client kubernetes.Interface
	// StartTime is how long etcd and kube-apiserver took to become ready.
	StartTime time.Duration

	binDir string
	dir    string
	opts   Options
	procs  []*process // in start order; stopped in reverse
	once   sync.Once
	// apiArgs start the API server again after StopAPIServer.
	apiArgs []string
	token   string
	etcdURL string
}

// Options place the control plane in a network namespace the test made:
// there nodedns, started in the same namespace, reaches it on Addr or on
// the namespace's own loopback, while the test reaches it on Addr (the
// namespace's end of a veth pair).
type Options struct {
	Netns string // "" for the test's own namespace
	Addr  string // the address etcd and the API server listen on; default 127.0.0.1
}

// BinDir returns the directory the binaries are looked for in: $BinEnv if
// set, else the directory tools/kube/build.sh builds them into.
func BinDir() string {
	if d := os.Getenv(BinEnv); d != "" {
		return d
	}
	cache, err := os.UserCacheDir() // $XDG_CACHE_HOME, or ~/.cache
	if err != nil {
		return ""
	}
	return filepath.Join(cache, "nodedns", "kube-"+KubeVersion+"-etcd-"+EtcdVersion)
}

// missingBinaries returns the binaries not found in dir.
func missingBinaries(dir string) []string {
	var missing []string
	for _, b := range []string{"etcd", "kube-apiserver", "kubectl"} {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	return missing
}

// requireBinaries skips t when the binaries are missing, except in CI (env
// CI set), where a skip would hide a missing proof: there it fails.
func requireBinaries(t testing.TB) string {
	t.Helper()
	dir := BinDir()
	missing := missingBinaries(dir)
	if len(missing) == 0 {
		return dir
	}
	msg := fmt.Sprintf("kubetest: %s not found in %s: build them with tools/kube/build.sh (4-8 min cold; `make tools` does it) or point %s at a directory holding them",
		strings.Join(missing, ", "), dir, BinEnv)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// Start starts a control plane for t and stops it when t ends. It skips t
// when the binaries are missing (fails in CI).
func Start(t testing.TB) *Cluster { t.Helper(); return StartWith(t, Options{}) }

// StartWith is Start with the control plane placed by opts.
func StartWith(t testing.TB, opts Options) *Cluster {
	t.Helper()
	bin := requireBinaries(t)
	dir := t.TempDir()
	c, err := start(bin, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	t.Logf("kubetest: etcd %s and kube-apiserver %s ready in %v at %s", EtcdVersion, KubeVersion, c.StartTime.Round(time.Millisecond), c.Server)
	return c
}

var shared struct {
	mu  sync.Mutex
	c   *Cluster
	err error
	dir string
}

// Shared returns the test binary's one control plane, starting it at the
// first call; later calls return the same cluster (or the same error).
// It outlives the test that started it: call Main from TestMain, or
// StopShared after m.Run, to stop it. (Should a test binary die first, its
// children die with it on Linux: they are started with a parent-death
// signal.) Tests sharing a cluster keep apart by namespace (Namespace).
func Shared(t testing.TB) *Cluster {
	t.Helper()
	bin := requireBinaries(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.c == nil && shared.err == nil {
		shared.dir, shared.err = os.MkdirTemp("", "kubetest-")
		if shared.err == nil {
			shared.c, shared.err = start(bin, shared.dir, Options{})
		}
		if shared.c != nil {
			t.Logf("kubetest: shared etcd %s and kube-apiserver %s ready in %v at %s", EtcdVersion, KubeVersion, shared.c.StartTime.Round(time.Millisecond), shared.c.Server)
		}
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.c
}

// StopShared stops the cluster Shared started, if any, and removes its
// directory.
func StopShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.c != nil {
		shared.c.Stop()
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
	shared.c, shared.err, shared.dir = nil, nil, ""
}

// Main runs the tests and stops the shared cluster after them:
//
//	func TestMain(m *testing.M) { kubetest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}

// start runs etcd and kube-apiserver from bin with their state in dir, and
// waits until the API server is ready.
func start(bin, dir string, opts Options) (c *Cluster, err error) {
	begin := time.Now()
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1"
	}
	c = &Cluster{binDir: bin, dir: dir, opts: opts}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()

	// etcd. It has no port-0 option; a port taken between freePort and
	// its bind fails the start with a clear log.
	ports := []int{2379, 2380, 6443} // a namespace of the test's own has them free
	if opts.Netns == "" {
		if ports, err = testutil.TCPPorts(3); err != nil {
			return nil, err
		}
	}
	etcdURL := "http://" + net.JoinHostPort(opts.Addr, strconv.Itoa(ports[0]))
	c.etcdURL = etcdURL
	peerURL := "http://" + net.JoinHostPort(opts.Addr, strconv.Itoa(ports[1]))
	etcd, err := c.run("etcd",
		"--name=kubetest",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=kubetest="+peerURL,
		"--log-level=warn",
		// The data is thrown away with the test: no fsync, which costs
		// seconds on a busy disk and buys nothing here.
		"--unsafe-no-fsync=true",
	)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(etcdURL+"/health", nil, 30*time.Second, etcd); err != nil {
		return nil, fmt.Errorf("kubetest: etcd: %w", err)
	}

	// kube-apiserver, with a service-account key made here, a static token
	// in system:masters, and RBAC.
	certDir := filepath.Join(dir, "apiserver-certs")
	saKey := filepath.Join(dir, "sa.key")
	tokens := filepath.Join(dir, "tokens.csv")
	token := randomHex(16)
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, err
	}
	if err := writeRSAKey(saKey); err != nil {
		return nil, err
	}
	if err := os.WriteFile(tokens, []byte(token+`,kubetest-admin,kubetest-admin,"system:masters"`+"\n"), 0o600); err != nil {
		return nil, err
	}
	port := ports[2]
	c.Server = "https://" + net.JoinHostPort(opts.Addr, strconv.Itoa(port))
	c.token = token
	c.apiArgs = []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + opts.Addr,
		"--advertise-address=" + opts.Addr,
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + certDir, // a self-signed serving certificate
		"--token-auth-file=" + tokens,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saKey,
		"--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		// Without a kubelet or kube-proxy, the kubernetes Service's
		// endpoints would point at 127.0.0.1, which EndpointSlice
		// validation rejects; nothing here needs them.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--profiling=false",
	}
	if err := c.StartAPIServer(); err != nil {
		return nil, err
	}

	c.Config = &rest.Config{
		Host:            c.Server,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		// Tests create objects in bursts; the default 5 qps would make
		// them wait on the client's own rate limiter.
		QPS:   100,
		Burst: 200,
	}
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, err
	}
	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, []byte(kubeconfig(c.Server, token)), 0o600); err != nil {
		return nil, err
	}
	c.StartTime = time.Since(begin)
	return c, nil
}

// StopAPIServer stops the API server (an outage), leaving etcd running.
func (c *Cluster) StopAPIServer() {
	for _, p := range c.procs {
		if p.name == "kube-apiserver" {
			p.stop()
		}
	}
}

// StartAPIServer starts the API server (again, after StopAPIServer) and
// waits until it is ready.
func (c *Cluster) StartAPIServer() error {
	api, err := c.run("kube-apiserver", c.apiArgs...)
	if err != nil {
		return err
	}
	if err := waitHTTP(c.Server+"/readyz", &c.token, ReadyTimeout, api); err != nil {
		return fmt.Errorf("kubetest: kube-apiserver: %w", err)
	}
	return nil
}

// RestartAPIServer stops the API server and starts it again on the same
// etcd, which keeps every object, as in a control plane's upgrade. While
// it is down the cluster moves on (a write to etcd, under a key of its
// own): the new server's watch caches begin after the last version any
// client saw, so that no client can resume its watches (410 Gone) and
// each lists everything again.
func (c *Cluster) RestartAPIServer() error {
	c.StopAPIServer()
	if err := c.writeEtcd("/kubetest/restarted", time.Now().String()); err != nil {
		return err
	}
	return c.StartAPIServer()
}

// writeEtcd puts key in etcd through its JSON gateway.
func (c *Cluster) writeEtcd(key, value string) error {
	body, err := json.Marshal(map[string]string{
		"key":   base64.StdEncoding.EncodeToString([]byte(key)),
		"value": base64.StdEncoding.EncodeToString([]byte(value)),
	})
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Post(c.etcdURL+"/v3/kv/put", "application/json", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("kubetest: writing to etcd: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("kubetest: writing to etcd: %s: %s", resp.Status, b)
	}
	return nil
}

// kubeconfig returns a kubeconfig for server and token.
func kubeconfig(server, token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    server: %[2]s
    insecure-skip-tls-verify: true
users:
- name: kubetest-admin
  user:
    token: %[3]s
contexts:
- name: %[1]s
  context:
    cluster: %[1]s
    user: kubetest-admin
current-context: %[1]s
`, ContextName, server, token)
}

// Stop kills the processes (by PID, the API server first) and waits for
// them. Start registers it with t.Cleanup; calling it again does nothing.
func (c *Cluster) Stop() {
	c.once.Do(func() {
		for i := len(c.procs) - 1; i >= 0; i-- {
			c.procs[i].stop()
		}
	})
}

// Log returns the output of one of the processes ("etcd",
// "kube-apiserver"), for a failing test's report.
func (c *Cluster) Log(name string) string {
	for _, p := range c.procs {
		if p.name == name {
			return p.output()
		}
	}
	return ""
}

// Kubectl runs kubectl against the cluster and returns its standard
// output; it fails t on an error.
func (c *Cluster) Kubectl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// process is a child the cluster started.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string // path of its combined output
	done chan struct{}
	err  error // valid once done is closed
}

// run starts bin/name with args, its output in dir/name.log, and an
// environment without ETCD_* variables (etcd reads each as a flag).
func (c *Cluster) run(name string, args ...string) (*process, error) {
	logPath := filepath.Join(c.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child has its own descriptor
	cmd := exec.Command(filepath.Join(c.binDir, name), args...)
	if c.opts.Netns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", c.opts.Netns, filepath.Join(c.binDir, name)}, args...)...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = c.dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// Killed by the kernel when the test binary dies without stopping it
	// (a panic, a timeout, a Shared cluster nobody stopped), so no etcd or
	// API server outlives its test run; Start forks from no locked thread.
	testutil.DieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("kubetest: starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	c.procs = append(c.procs, p)
	return p, nil
}

// stop kills the process by its PID and waits for it to be reaped.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// output returns the end of the process's log.
func (p *process) output() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	const max = 8 << 10
	if len(b) > max {
		b = append([]byte("...\n"), b[len(b)-max:]...)
	}
	return string(b)
}

// waitHTTP polls url until it answers 200, the process exits, or timeout
// passes. A token, if given, is sent as a bearer token; TLS is not
// verified (the certificate is self-signed).
func waitHTTP(url string, token *string, timeout time.Duration, p *process) error {
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // a self-signed loopback server the test started
	}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if token != nil {
			req.Header.Set("Authorization", "Bearer "+*token)
		}
		resp, err := client.Do(req)
		if err == nil {
			body := make([]byte, 512)
			n, _ := resp.Body.Read(body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, body[:n])
		} else {
			last = err.Error()
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited (%v) before %s answered; its output:\n%s", p.err, url, p.output())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v (last: %s); its output:\n%s", url, timeout, last, p.output())
		}
	}
}

// writeRSAKey writes a new RSA private key, PEM (PKCS #1), to path: the
// API server signs service-account tokens with it and verifies them with
// its public half.
func writeRSAKey(path string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	return os.WriteFile(path, b, 0o600)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}
