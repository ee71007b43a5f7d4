//go:build !linux

package resolver

import (
	"errors"
	"syscall"
)

// setMark fails: packet marks are Linux's.
func setMark(syscall.RawConn, int) error { return errors.New("packet marks need Linux") }
