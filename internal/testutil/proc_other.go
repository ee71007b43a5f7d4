//go:build !linux

package testutil

import "syscall"

// dieWithParent: no parent-death signal outside Linux; a Process is still
// killed when its test ends.
func dieWithParent(*syscall.SysProcAttr) {}
