// Package memlimit makes the Go runtime's memory limit follow the container's.
//
// A node-local resolver runs with a small memory limit next to the
// workloads it serves. The Go GC does not know about that limit: left alone
// it lets the heap grow to twice the live set, so a burst of work (a retry
// storm filling caches and in-flight tables) can push the process past the
// cgroup limit and get it OOM-killed exactly when the node needs it most.
// Setting the runtime's soft limit (debug.SetMemoryLimit) somewhat below the
// cgroup limit makes the GC work harder instead. [Apply] does that once at
// start-up, unless GOMEMLIMIT was set explicitly, which always wins.
//
// Why our own small parser rather than github.com/KimMachineGun/automemlimit
// (which is in go.mod): its parser is unexported and reads the fixed paths
// /proc/self/cgroup and /proc/self/mountinfo, so it cannot be tested against
// a fake filesystem, and its entry point (memlimit.Set) reports only the
// ratio-adjusted value it applied. We want the cgroup limit itself, for
// logging and for sizing caches, and table tests over a temp-dir root for
// every layout we support. The layouts are the ones containers actually
// see: the memory file is looked up under /sys/fs/cgroup by the path in
// /proc/self/cgroup and, because without a cgroup namespace that path is the
// host's and does not exist inside the container, at the mount's root.
// automemlimit's mountinfo-based resolution handles exotic mounts we do not
// need.
package memlimit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// ErrNoLimit means the process's memory cgroup exists but sets no limit
// (cgroup v2 "max", or cgroup v1's page-counter maximum).
var ErrNoLimit = errors.New("cgroup sets no memory limit")

// DefaultRatio is the share of the cgroup limit given to the Go runtime. The
// rest is headroom for memory the GC does not account for (goroutine stacks
// in transit, cgo, kernel socket buffers charged to the cgroup) and for the
// GC's own lag.
const DefaultRatio = 0.9

// v1Unlimited: cgroup v1 reports "no limit" as the largest page-counter value,
// 9223372036854771712 with 4 KiB pages and slightly less with larger pages.
// Anything from 2^62 bytes (4 EiB) up can only be that sentinel.
const v1Unlimited = 1 << 62

// maxFileSize bounds what is read from one cgroup control file: a limit is at
// most 20 digits, so anything much longer is garbage.
const maxFileSize = 64

// CgroupMemoryLimit returns the memory limit in bytes of the current process's
// cgroup, reading /proc/self/cgroup and /sys/fs/cgroup under root ("/" in
// production, a temp dir in tests).
//
// cgroup v2 (line "0::/path"): the smallest numeric memory.max from
// <root>/sys/fs/cgroup/<path> up to <root>/sys/fs/cgroup (the effective limit
// is the minimum over ancestors, and the last step is the container's own
// cgroup when the path is the host's). If no memory.max exists on that walk,
// the v1 memory controller is tried, so a hybrid host whose unified
// hierarchy carries no memory controller uses v1.
//
// cgroup v1 (a line whose controllers include "memory"): likewise with
// <root>/sys/fs/cgroup/memory/<path>/memory.limit_in_bytes up to
// <root>/sys/fs/cgroup/memory/memory.limit_in_bytes.
//
// Errors: ErrNoLimit when the files exist but set no limit; an error wrapping
// fs.ErrNotExist when /proc/self/cgroup or every candidate file is missing
// (not Linux, no memory controller); a parse error for any other content.
func CgroupMemoryLimit(root string) (int64, error) {
	f, err := os.Open(filepath.Join(root, "proc", "self", "cgroup"))
	if err != nil {
		return 0, fmt.Errorf("reading cgroup membership: %w", err)
	}
	defer func() { _ = f.Close() }()
	v2Path, v1Path, hasV2, hasV1, err := parseCgroupFile(f)
	if err != nil {
		return 0, err
	}
	base := filepath.Join(root, "sys", "fs", "cgroup")
	if hasV2 {
		limit, err := walk(base, v2Path, "memory.max")
		if !errors.Is(err, fs.ErrNotExist) {
			return limit, err
		}
	}
	if hasV1 {
		limit, err := walk(filepath.Join(base, "memory"), v1Path, "memory.limit_in_bytes")
		if !errors.Is(err, fs.ErrNotExist) {
			return limit, err
		}
	}
	return 0, fmt.Errorf("no memory cgroup file found under %s: %w", base, fs.ErrNotExist)
}

// parseCgroupFile extracts the unified (v2) path and the v1 memory
// controller's path from /proc/self/cgroup ("hierarchy-ID:controllers:path"
// per line).
func parseCgroupFile(r io.Reader) (v2, v1 string, hasV2, hasV1 bool, err error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		id, rest, ok1 := strings.Cut(sc.Text(), ":")
		ctrls, p, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 {
			continue // not a membership line; the kernel writes none such
		}
		switch {
		case id == "0" && ctrls == "":
			v2, hasV2 = p, true
		case !hasV1 && hasController(ctrls, "memory"):
			v1, hasV1 = p, true
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", false, false, fmt.Errorf("reading cgroup membership: %w", err)
	}
	return v2, v1, hasV2, hasV1, nil
}

func hasController(list, name string) bool {
	for c := range strings.SplitSeq(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// walk reads file in base/rel and each ancestor up to base, and returns the
// smallest limit found. rel is clamped under base: a path outside our cgroup
// namespace shows up as "/../..", which must not escape the fake root.
func walk(base, rel, file string) (int64, error) {
	rel = path.Clean("/" + rel)
	var (
		best    int64 = math.MaxInt64
		found   bool
		limited bool
	)
	for {
		limit, err := readLimit(filepath.Join(base, filepath.FromSlash(rel), file))
		switch {
		case err == nil:
			found, limited = true, true
			best = min(best, limit)
		case errors.Is(err, ErrNoLimit):
			found = true
		case errors.Is(err, fs.ErrNotExist):
		default:
			return 0, err
		}
		if rel == "/" {
			break
		}
		rel = path.Dir(rel)
	}
	switch {
	case limited:
		return best, nil
	case found:
		return 0, ErrNoLimit
	}
	return 0, fmt.Errorf("%s under %s: %w", file, base, fs.ErrNotExist)
}

// readLimit parses one memory.max or memory.limit_in_bytes file.
func readLimit(name string) (int64, error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", name, err)
	}
	if len(b) > maxFileSize {
		return 0, fmt.Errorf("parsing %s: more than %d bytes, not a limit", name, maxFileSize)
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, ErrNoLimit
	}
	v, err := strconv.ParseUint(s, 10, 64)
	switch {
	case err != nil:
		return 0, fmt.Errorf("parsing %s: %q is not a byte count", name, s)
	case v >= v1Unlimited:
		return 0, ErrNoLimit
	case v == 0:
		// Valid for the kernel but useless as a GC target (it would
		// collect continuously); treat it as a misconfiguration.
		return 0, fmt.Errorf("parsing %s: limit is 0", name)
	}
	return int64(v), nil
}

// Sources reported by [Apply].
const (
	SourceEnv    = "GOMEMLIMIT" // the GOMEMLIMIT environment variable
	SourceCgroup = "cgroup"     // ratio × the cgroup limit
	SourceNone   = "none"       // no limit found; the runtime's default (none)
)

// Apply sets the Go runtime's soft memory limit from the container's and logs
// one line saying what it did. It returns the limit now in effect (0 if none)
// and where it came from (one of the Source* constants):
//
//   - GOMEMLIMIT set: left alone, because an operator's explicit setting
//     wins over our guess.
//   - a cgroup limit: debug.SetMemoryLimit(ratio × limit). ratio outside
//     (0, 1] means DefaultRatio.
//   - no limit, or it cannot be read: nothing is set.
//
// Call it once, early in main, before allocating caches sized from it.
func Apply(log *zap.Logger, ratio float64) (limit int64, source string) {
	return apply(log, ratio, "/", os.LookupEnv, debug.SetMemoryLimit)
}

// apply is Apply with its environment injected, for tests.
func apply(log *zap.Logger, ratio float64, root string, lookupEnv func(string) (string, bool),
	setLimit func(int64) int64) (int64, string) {
	if log == nil {
		log = zap.NewNop()
	}
	if !(ratio > 0 && ratio <= 1) { // also catches NaN
		ratio = DefaultRatio
	}
	if v, ok := lookupEnv("GOMEMLIMIT"); ok && v != "" {
		cur := setLimit(-1) // a negative value only reads the current limit
		if cur == math.MaxInt64 {
			cur = 0 // GOMEMLIMIT=off
		}
		log.Info("memory limit left to GOMEMLIMIT", zap.String("GOMEMLIMIT", v), zap.Int64("go_memory_limit_bytes", cur))
		return cur, SourceEnv
	}
	cg, err := CgroupMemoryLimit(root)
	switch {
	case errors.Is(err, ErrNoLimit) || errors.Is(err, fs.ErrNotExist):
		log.Info("no container memory limit found; Go memory limit left unset", zap.String("reason", err.Error()))
		return 0, SourceNone
	case err != nil:
		log.Warn("could not read container memory limit; Go memory limit left unset", zap.Error(err))
		return 0, SourceNone
	}
	limit := int64(float64(cg) * ratio)
	setLimit(limit)
	log.Info("Go memory limit set from container memory limit",
		zap.Int64("cgroup_limit_bytes", cg), zap.Float64("ratio", ratio), zap.Int64("go_memory_limit_bytes", limit))
	return limit, SourceCgroup
}
