// Command nodedns is the node-local caching DNS resolver daemon.
//
// Start-up runs in one order: parse and check the configuration, build the
// components, start serving, wait for a signal. SIGHUP re-reads the config
// file; SIGTERM and SIGINT stop gracefully. docs/reference/flags.md lists
// every flag.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/nodedns/nodedns/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "-version") {
		fmt.Println("nodedns", version)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := run(ctx, os.Args[1:])
	switch {
	case err == nil:
	case errors.Is(err, config.ErrHelp):
	case errors.As(err, new(*usageError)):
		fmt.Fprintln(os.Stderr, "nodedns:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "nodedns:", err)
		os.Exit(1)
	}
}

// usageError marks a bad flag or config value: exit status 2, like flag.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }
