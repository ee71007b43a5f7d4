package testutil

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// Buffer is a process's output as it runs: written by the process's
// copying goroutines, read by the test at any time.
type Buffer struct {
	mu   sync.Mutex
	b    bytes.Buffer
	next int // where WaitLine resumes: the end of the line it last returned
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// WaitLine waits up to timeout for a complete line containing s, written
// after the line WaitLine last returned, and returns it; it fails the test
// with the output when none comes. Each call passes over the lines before
// the one it returns, so that calls in turn wait for successive events.
func (b *Buffer) WaitLine(t testing.TB, s string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if line, ok := b.nextLine(s); ok {
			return line
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line with %q in %v; the output:\n%s", s, timeout, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (b *Buffer) nextLine(s string) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	rest := b.b.Bytes()[b.next:]
	for {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return "", false
		}
		line := string(rest[:i])
		b.next += i + 1
		rest = rest[i+1:]
		if strings.Contains(line, s) {
			return line, true
		}
	}
}
