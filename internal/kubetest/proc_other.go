//go:build !linux

package kubetest

import "syscall"

// sysProcAttr: no parent-death signal outside Linux; Stop and StopShared
// end the children.
func sysProcAttr() *syscall.SysProcAttr { return nil }
