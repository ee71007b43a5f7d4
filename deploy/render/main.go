// Command render writes deploy/nodedns.yaml, the kustomize base rendered as
// one file (`make deploy` runs it from the repository's root).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/nodedns/nodedns/deploy"
)

func main() {
	base := flag.String("base", "deploy/base", "the kustomization to render")
	out := flag.String("o", "deploy/nodedns.yaml", "the file to write")
	flag.Parse()
	if err := run(*base, *out); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}

func run(base, out string) error {
	b, err := deploy.Rendered(base)
	if err != nil {
		return err
	}
	return os.WriteFile(out, b, 0o644)
}
