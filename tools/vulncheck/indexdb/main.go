// Command indexdb builds the Go vulnerability database in the form
// govulncheck reads from a directory (-db file://DIR): the OSV reports of
// the golang.org/x/vulndb module, one file each under ID/, and the three
// indexes under index/ (db.json, modules.json, vulns.json).
//
// It writes what the database's own indexdb command writes, without the
// fixed-version hints in modules.json (an optimisation only: govulncheck
// then reads each report of a module in use and compares the versions
// itself), and without that command's dependencies, which take minutes
// to build.
//
//	go run ./tools/vulncheck/indexdb -vulns VULNDB/data/osv -out DIR
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// report is what the indexes need of an OSV report.
type report struct {
	ID       string   `json:"id"`
	Modified string   `json:"modified"`
	Aliases  []string `json:"aliases,omitempty"`
	Affected []struct {
		Package struct {
			Name string `json:"name"`
		} `json:"package"`
	} `json:"affected"`
}

type vulnEntry struct {
	ID       string   `json:"id"`
	Modified string   `json:"modified"`
	Aliases  []string `json:"aliases,omitempty"`
}

type moduleVuln struct {
	ID       string `json:"id"`
	Modified string `json:"modified"`
}

type moduleEntry struct {
	Path  string       `json:"path"`
	Vulns []moduleVuln `json:"vulns"`
}

func main() {
	vulns := flag.String("vulns", "", "directory of OSV reports (vulndb's data/osv)")
	out := flag.String("out", "", "directory to write the database into")
	flag.Parse()
	if *vulns == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := build(*vulns, *out); err != nil {
		fmt.Fprintln(os.Stderr, "indexdb:", err)
		os.Exit(1)
	}
}

func build(src, out string) error {
	files, err := filepath.Glob(filepath.Join(src, "*.json"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no reports in %s", src)
	}
	for _, d := range []string{"ID", "index"} {
		if err := os.MkdirAll(filepath.Join(out, d), 0o755); err != nil {
			return err
		}
	}
	var index []vulnEntry
	byModule := map[string][]moduleVuln{}
	latest := ""
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var r report
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if r.ID == "" || strings.ContainsAny(r.ID, `/\`) {
			return fmt.Errorf("%s: no usable id", f)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, raw); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if err := os.WriteFile(filepath.Join(out, "ID", r.ID+".json"), compact.Bytes(), 0o644); err != nil {
			return err
		}
		index = append(index, vulnEntry{ID: r.ID, Modified: r.Modified, Aliases: r.Aliases})
		for _, a := range r.Affected {
			byModule[a.Package.Name] = append(byModule[a.Package.Name], moduleVuln{ID: r.ID, Modified: r.Modified})
		}
		latest = max(latest, r.Modified)
	}
	slices.SortFunc(index, func(a, b vulnEntry) int { return strings.Compare(a.ID, b.ID) })
	modules := make([]moduleEntry, 0, len(byModule))
	for p, vs := range byModule {
		modules = append(modules, moduleEntry{Path: p, Vulns: vs})
	}
	slices.SortFunc(modules, func(a, b moduleEntry) int { return strings.Compare(a.Path, b.Path) })
	for name, v := range map[string]any{
		"db.json":      map[string]string{"modified": latest},
		"vulns.json":   index,
		"modules.json": modules,
	} {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, "index", name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
