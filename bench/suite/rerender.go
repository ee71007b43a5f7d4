package suite

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// writeCharts writes base.svg and base.md (which links the SVG) from res.
func writeCharts(res *Results, base string) ([]string, error) {
	var files []string
	name := filepath.Base(base)
	var svg bytes.Buffer
	if err := WriteSVG(&svg, "Latency distributions, nodedns vs CoreDNS ("+name+")", Panels(res)); err != nil {
		return files, err
	}
	if err := os.WriteFile(base+".svg", svg.Bytes(), 0o644); err != nil {
		return files, err
	}
	files = append(files, base+".svg")
	var md bytes.Buffer
	if err := WriteMarkdown(&md, res, name+".svg"); err != nil {
		return files, err
	}
	if err := os.WriteFile(base+".md", md.Bytes(), 0o644); err != nil {
		return files, err
	}
	return append(files, base+".md"), nil
}

// Rerender reads a suite's <base>.json, evaluates the targets again with
// this version of the suite and rewrites <base>.md and <base>.svg next to
// it (the JSON is left as it is). It is for report changes after a run:
// the measurements are not touched.
func Rerender(jsonPath string) ([]string, error) {
	if !strings.HasSuffix(jsonPath, ".json") {
		return nil, fmt.Errorf("%s: want a suite's .json results", jsonPath)
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		return nil, err
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("%s: %w", jsonPath, err)
	}
	if len(res.Scenarios) == 0 {
		return nil, fmt.Errorf("%s: no scenarios", jsonPath)
	}
	finish(&res)
	res.Targets = Evaluate(&res)
	return writeCharts(&res, strings.TrimSuffix(jsonPath, ".json"))
}
