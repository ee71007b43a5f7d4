package suite

import (
	"context"
	"fmt"
	"time"

	"github.com/nodedns/nodedns/internal/echo"
)

// Echo is the name of the generator-floor runs: the same load against a
// trivial responder (bench/internal/echo: recvmmsg/sendmmsg, answers at
// once) pinned like the servers, so the report can tell the generator's and
// the kernel's share of a latency from the server's.
const Echo = "echo"

// ServeEcho runs the echo responder on addr (loopback) until ctx ends or
// maxTime passes. `nodedns-bench suite-echo` calls it; the suite starts that
// as a process on the servers' core (Options.EchoCommand).
func ServeEcho(ctx context.Context, addr string, maxTime time.Duration) error {
	s, err := echo.Listen(addr, echo.Options{})
	if err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(maxTime):
	}
	return s.Close()
}
