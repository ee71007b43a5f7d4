//go:build linux

package main

import (
	"os"

	"golang.org/x/sys/unix"
)

func stderrIsTerminal() bool {
	_, err := unix.IoctlGetTermios(int(os.Stderr.Fd()), unix.TCGETS)
	return err == nil
}
