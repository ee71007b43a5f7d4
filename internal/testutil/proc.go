package testutil

import (
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// DieWithTest makes the kernel kill cmd's process (SIGKILL) when the test
// binary dies without stopping it: a panic, a timeout, a test killed from
// outside. Call it before cmd.Start; it keeps the other fields of
// cmd.SysProcAttr. Outside Linux it does nothing.
//
// The signal is tied to the thread that forks the child, not to the
// process: the Go runtime ends none of its threads while the program
// runs, except the thread of a goroutine that ends while locked to it
// (runtime.LockOSThread). A test that starts a process from such a
// goroutine, as one that moves its thread into a network namespace does,
// must unlock the thread before the goroutine ends (see Netns.Enter), or
// the process dies with it.
func DieWithTest(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	dieWithParent(cmd.SysProcAttr)
}

// Process is a program a test started. Its standard output and error go
// to Out; it dies with the test binary (DieWithTest), and when the test
// ends it is killed by its PID, if it still runs, and its output is
// logged if the test failed. Programs run through `ip netns exec`,
// setpriv or a container runtime's stand-in, which execute the next
// program in place, keep that PID.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	Out  *Buffer

	done chan struct{}
	err  error // Wait's, once done is closed
}

// StartProcess starts cmd, whose Stdout and Stderr it sets, as the
// Process name; it fails the test when cmd does not start.
func StartProcess(t testing.TB, name string, cmd *exec.Cmd) *Process {
	t.Helper()
	p, err := Launch(t, name, cmd)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Launch is StartProcess for a goroutine other than the test's, which
// must not fail the test: it returns the error of a failed start.
func Launch(t testing.TB, name string, cmd *exec.Cmd) (*Process, error) {
	p := &Process{Name: name, Cmd: cmd, Out: new(Buffer), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Out, p.Out
	DieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.Out.String())
		}
	})
	return p, nil
}

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to exit and returns its status as
// exec.Cmd.Wait does; p.Cmd.ProcessState is set once it returns.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Kill sends SIGKILL to the process and waits for it to exit.
func (p *Process) Kill() {
	if p.Exited() {
		return
	}
	_ = p.Cmd.Process.Kill()
	<-p.done
}

// Stop sends SIGTERM to the process and waits up to grace for it to exit;
// then it sends SIGKILL, waits, and returns an error that says so.
func (p *Process) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	p.Kill()
	return fmt.Errorf("%s: killed, not stopped %v after SIGTERM", p.Name, grace)
}

// WaitExit waits up to timeout for the process to exit, and fails the test
// when it has not.
func (p *Process) WaitExit(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v", p.Name, timeout)
	}
}
