//go:build !linux

package suite

import (
	"context"
	"errors"
)

// Run needs Linux (/proc, taskset, CPU affinity).
func Run(ctx context.Context, o Options) (*Results, []string, error) {
	return nil, nil, errors.New("the benchmark suite runs on Linux only")
}
