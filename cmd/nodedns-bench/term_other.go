//go:build !linux

package main

// stderrIsTerminal is only implemented on Linux; elsewhere no progress line.
func stderrIsTerminal() bool { return false }
