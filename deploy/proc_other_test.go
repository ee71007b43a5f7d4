//go:build !linux

package deploy

import (
	"syscall"
	"testing"
)

func sysProcAttr() *syscall.SysProcAttr { return nil }

func setupSeries(t *testing.T) series {
	t.Skip("node set-up is Linux's")
	return nil
}
