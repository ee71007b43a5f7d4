package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Network namespaces, for the tests that run nodedns with addresses,
// rules and clients of its own (Linux, root: RequireRoot). A Netns is
// named and driven with iproute2 (`ip netns`): commands and processes run
// in it through `ip netns exec`, which also gives them the namespace's own
// resolv.conf. A thread of the test joins one with Enter or Do; the
// test's own goroutine moves into an unnamed one for good with
// EnterNewNetns.

// Run runs a command and returns its combined output; it fails the test
// when the command fails or has not ended within a minute.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Netns is a network namespace the test made, with loopback up; it is
// deleted, with its resolv.conf, when the test ends.
type Netns struct{ Name string }

// netnsSeq numbers the namespaces of one test binary.
var netnsSeq atomic.Int32

// NewNetns makes a network namespace named prefix-PID-N.
func NewNetns(t testing.TB, prefix string) *Netns {
	t.Helper()
	n := &Netns{Name: fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), netnsSeq.Add(1))}
	Run(t, "ip", "netns", "add", n.Name)
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "delete", n.Name).Run()
		_ = os.RemoveAll(filepath.Join("/etc/netns", n.Name))
	})
	Run(t, "ip", "-n", n.Name, "link", "set", "lo", "up")
	return n
}

// AddAddress gives the namespace the address prefix (such as
// "192.0.2.1/24") on one end of a veth pair that stays inside it, both
// ends up: an address besides loopback, which getaddrinfo (AI_ADDRCONFIG)
// needs to return anything. Nothing is sent to it. Once per namespace.
func (n *Netns) AddAddress(t testing.TB, prefix string) {
	t.Helper()
	Run(t, "ip", "-n", n.Name, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	Run(t, "ip", "-n", n.Name, "addr", "add", prefix, "dev", "v0")
	Run(t, "ip", "-n", n.Name, "link", "set", "v0", "up")
	Run(t, "ip", "-n", n.Name, "link", "set", "v1", "up")
}

// SetResolvConf writes the resolv.conf that `ip netns exec` gives the
// namespace's processes.
func (n *Netns) SetResolvConf(t testing.TB, content string) {
	t.Helper()
	dir := filepath.Join("/etc/netns", n.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Command is the command args run inside the namespace (by `ip netns
// exec`, which executes it in place: its PID is the command's).
func (n *Netns) Command(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Exec runs a command inside the namespace as Run does.
func (n *Netns) Exec(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, "ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// ExecStdin runs a command inside the namespace with stdin as its input
// and returns its combined output; it fails the test when the command
// fails.
func (n *Netns) ExecStdin(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	cmd := n.Command(args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Start starts a long-lived process inside the namespace (StartProcess).
func (n *Netns) Start(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	return StartProcess(t, name, n.Command(args...))
}

// WaitDNS waits up to 30 s until something answers DNS on ip:port inside
// the namespace (dig), and fails the test when nothing has.
func (n *Netns) WaitDNS(t testing.TB, ip, port string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := n.Command("dig", "@"+ip, "-p", port, "+time=1", "+tries=1", "+short", "ready.probe.", "TXT").Run()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing answers DNS on %s port %s in %s", ip, port, n.Name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Enter locks the calling goroutine's thread and moves it into the
// namespace, where the sockets it opens stay; leave moves it back and
// unlocks it. The thread must survive: the processes a test starts die
// with the thread that forked them (DieWithTest), and a locked thread
// whose goroutine ends without unlocking it ends too. So leave must run
// before the goroutine ends; when the thread cannot move back, leave keeps
// it locked, and it ends with the goroutine rather than serve others in
// the wrong namespace.
func (n *Netns) Enter() (leave func(), err error) {
	ns, err := netns.GetFromName(n.Name)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		orig.Close()
		return nil, err
	}
	return func() {
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		orig.Close()
	}, nil
}

// Do runs f on a thread inside the namespace (Enter, on a goroutine of
// its own) and returns its error: the sockets f opens stay in the
// namespace.
func (n *Netns) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		leave, err := n.Enter()
		if err != nil {
			errc <- err
			return
		}
		defer leave()
		errc <- f()
	}()
	return <-errc
}

// EnterNewNetns moves the test's goroutine, for good, into a new unnamed
// network namespace with loopback up: it locks the goroutine's thread
// and never unlocks it, so that the thread ends with the test instead of
// going back to the runtime's pool. The commands the test runs inherit
// the namespace; processes it starts and leaves running die with the
// thread (DieWithTest).
func EnterNewNetns(t testing.TB) netns.NsHandle {
	t.Helper()
	runtime.LockOSThread() // never unlocked: see above
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatal(err)
	}
	return ns
}
