package e2e

import (
	"os/exec"
	"syscall"
)

// dieWithTest makes the daemon a test starts die with the test binary, so
// that a test killed by its timeout leaves no daemon behind.
func dieWithTest(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
