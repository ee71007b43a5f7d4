//go:build !linux

package deploy

import "testing"

func setupSeries(t *testing.T) series {
	t.Skip("node set-up is Linux's")
	return nil
}
