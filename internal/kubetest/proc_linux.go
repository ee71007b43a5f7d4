package kubetest

import "syscall"

// sysProcAttr makes the kernel kill a child when the test binary dies
// without stopping it (a panic, a timeout, a Shared cluster nobody
// stopped), so no etcd or API server outlives its test run. The signal
// is tied to the thread that started the child; the Go runtime does not
// end its threads while the program runs, except a goroutine's locked
// thread, which Start does not use.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
