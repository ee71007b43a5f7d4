package testutil

import (
	"testing"
	"time"
)

// WaitFor polls cond until it holds and returns how long that took, failing
// t after timeout; for states that only a metric, a count or another
// process shows. It polls every millisecond at first and every 50 ms at the
// most, so that a condition that holds at once is seen at once and an
// expensive one (a command run per poll) does not spin.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	pause := time.Millisecond
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
	return time.Since(start)
}
