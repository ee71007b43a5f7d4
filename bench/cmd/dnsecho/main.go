// Command dnsecho is a tiny, fast loopback DNS responder used to measure the
// load generator itself (see bench/NOTES.md): every query is answered with
// its own question and, for A queries, 127.0.0.1. It listens on a loopback
// address only and exits by itself after --max-time.
//
//	taskset -c 0 go run ./bench/cmd/dnsecho --listen 127.0.0.1:5300
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nodedns/nodedns/internal/echo"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:5300", "loopback `IP:PORT` to serve on (UDP and TCP)")
	noAnswer := flag.Bool("nodata", false, "answer NODATA instead of an A record")
	maxTime := flag.Duration("max-time", 30*time.Minute, "exit after this long")
	flag.Parse()

	s, err := echo.Listen(*listen, echo.Options{NoAnswer: *noAnswer})
	if err != nil {
		fmt.Fprintln(os.Stderr, "dnsecho:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "dnsecho: serving on %s (pid %d)\n", s.Addr(), os.Getpid())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	select {
	case <-ctx.Done():
	case <-time.After(*maxTime):
	}
	s.Close()
	fmt.Fprintf(os.Stderr, "dnsecho: answered %d queries\n", s.Queries.Load())
}
