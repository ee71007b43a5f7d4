package memlimit

import (
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// fakeRoot writes files (path relative to the root → content) into a temp
// dir and returns it.
func fakeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const (
	procCgroup = "proc/self/cgroup"
	v2Root     = "sys/fs/cgroup/memory.max"
	v1Root     = "sys/fs/cgroup/memory/memory.limit_in_bytes"
	mib        = 1 << 20
)

// A cgroup v1 /proc/self/cgroup as Docker writes it (host paths, no cgroupns).
const v1Membership = `12:pids:/docker/abc
11:cpu,cpuacct:/docker/abc
9:memory:/docker/abc
1:name=systemd:/docker/abc
`

// The same on a hybrid host: v1 controllers plus an empty unified hierarchy.
const hybridMembership = v1Membership + "0::/docker/abc\n"

func TestCgroupMemoryLimit(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		want    int64
		wantErr error // nil: success; errParse: any other error
	}{
		{
			name:  "v2 with cgroupns, number",
			files: map[string]string{procCgroup: "0::/\n", v2Root: "268435456\n"},
			want:  256 * mib,
		},
		{
			name:    "v2 max",
			files:   map[string]string{procCgroup: "0::/\n", v2Root: "max\n"},
			wantErr: ErrNoLimit,
		},
		{
			name: "v2 nested path visible",
			files: map[string]string{
				procCgroup: "0::/kubepods/burstable/pod1/ctr\n",
				"sys/fs/cgroup/kubepods/burstable/pod1/ctr/memory.max": "134217728\n",
				"sys/fs/cgroup/kubepods/burstable/pod1/memory.max":     "max\n",
			},
			want: 128 * mib,
		},
		{
			name: "v2 nested path, ancestor is tighter",
			files: map[string]string{
				procCgroup: "0::/kubepods/pod1/ctr\n",
				"sys/fs/cgroup/kubepods/pod1/ctr/memory.max": "max\n",
				"sys/fs/cgroup/kubepods/pod1/memory.max":     "67108864\n",
			},
			want: 64 * mib,
		},
		{
			name: "v2 host path not mounted in the container: falls back to the mount root",
			files: map[string]string{
				procCgroup: "0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope\n",
				v2Root:     "104857600",
			},
			want: 100 * mib,
		},
		{
			name:  "v2 path escaping the namespace is clamped to the root",
			files: map[string]string{procCgroup: "0::/../../..\n", v2Root: "104857600\n", "memory.max": "1"},
			want:  100 * mib,
		},
		{
			name:  "v1 number",
			files: map[string]string{procCgroup: v1Membership, v1Root: "536870912\n"},
			want:  512 * mib,
		},
		{
			name: "v1 nested path",
			files: map[string]string{
				procCgroup: v1Membership,
				"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "209715200\n",
				v1Root: "9223372036854771712\n",
			},
			want: 200 * mib,
		},
		{
			name:    "v1 unlimited (4 KiB pages)",
			files:   map[string]string{procCgroup: v1Membership, v1Root: "9223372036854771712\n"},
			wantErr: ErrNoLimit,
		},
		{
			name:    "v1 unlimited (64 KiB pages)",
			files:   map[string]string{procCgroup: v1Membership, v1Root: "9223372036854710272\n"},
			wantErr: ErrNoLimit,
		},
		{
			name:    "no /proc/self/cgroup (not Linux)",
			files:   map[string]string{v2Root: "1000"},
			wantErr: fs.ErrNotExist,
		},
		{
			name:    "membership but no memory files",
			files:   map[string]string{procCgroup: "0::/\n"},
			wantErr: fs.ErrNotExist,
		},
		{
			name:    "v1 without a memory controller",
			files:   map[string]string{procCgroup: "3:cpu:/x\n", v1Root: "1000"},
			wantErr: fs.ErrNotExist,
		},
		{
			name:    "garbage in memory.max",
			files:   map[string]string{procCgroup: "0::/\n", v2Root: "lots\n"},
			wantErr: errParse,
		},
		{
			name:    "negative in memory.limit_in_bytes",
			files:   map[string]string{procCgroup: v1Membership, v1Root: "-1\n"},
			wantErr: errParse,
		},
		{
			name:    "zero limit",
			files:   map[string]string{procCgroup: "0::/\n", v2Root: "0\n"},
			wantErr: errParse,
		},
		{
			name:    "oversized file",
			files:   map[string]string{procCgroup: "0::/\n", v2Root: strings.Repeat("1", 100)},
			wantErr: errParse,
		},
		{
			name:  "garbage lines in /proc/self/cgroup are skipped",
			files: map[string]string{procCgroup: "nonsense\n\n0::/\n", v2Root: "1048576"},
			want:  mib,
		},
		{
			name:  "hybrid: unified hierarchy has no memory.max, v1 is used",
			files: map[string]string{procCgroup: hybridMembership, v1Root: "314572800\n"},
			want:  300 * mib,
		},
		{
			name: "hybrid: unified memory.max exists and is preferred",
			files: map[string]string{
				procCgroup: hybridMembership,
				v2Root:     "157286400\n",
				v1Root:     "314572800\n",
			},
			want: 150 * mib,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CgroupMemoryLimit(fakeRoot(t, tt.files))
			switch {
			case tt.wantErr == nil:
				if err != nil || got != tt.want {
					t.Fatalf("got %d, %v; want %d", got, err, tt.want)
				}
			case tt.wantErr == errParse:
				if err == nil || errors.Is(err, ErrNoLimit) || errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("got %d, %v; want a parse error", got, err)
				}
			default:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %d, %v; want %v", got, err, tt.wantErr)
				}
			}
		})
	}
}

// errParse marks table rows that expect an error other than ErrNoLimit and
// fs.ErrNotExist.
var errParse = errors.New("parse error")

// fakeRuntime records what apply does to the runtime's memory limit.
type fakeRuntime struct {
	limit int64
	sets  []int64
}

func (f *fakeRuntime) set(v int64) int64 {
	old := f.limit
	if v >= 0 {
		f.limit = v
		f.sets = append(f.sets, v)
	}
	return old
}

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

func TestApply(t *testing.T) {
	limited := map[string]string{procCgroup: "0::/\n", v2Root: "1000000000\n"}
	tests := []struct {
		name      string
		files     map[string]string
		env       map[string]string
		ratio     float64
		want      int64
		source    string
		wantSet   bool
		level     zapcore.Level
		logSubstr string
	}{
		{"cgroup limit, default ratio", limited, nil, 0, 900_000_000, SourceCgroup, true, zapcore.InfoLevel, "set from container"},
		{"cgroup limit, ratio 0.5", limited, nil, 0.5, 500_000_000, SourceCgroup, true, zapcore.InfoLevel, "set from container"},
		{"nonsense ratio means default", limited, nil, 7, 900_000_000, SourceCgroup, true, zapcore.InfoLevel, "set from container"},
		{"NaN ratio means default", limited, nil, math.NaN(), 900_000_000, SourceCgroup, true, zapcore.InfoLevel, "set from container"},
		{"GOMEMLIMIT wins", limited, map[string]string{"GOMEMLIMIT": "300MiB"}, 0, 300 * mib, SourceEnv, false, zapcore.InfoLevel, "left to GOMEMLIMIT"},
		{"GOMEMLIMIT=off", limited, map[string]string{"GOMEMLIMIT": "off"}, 0, 0, SourceEnv, false, zapcore.InfoLevel, "left to GOMEMLIMIT"},
		{"no limit", map[string]string{procCgroup: "0::/\n", v2Root: "max"}, nil, 0, 0, SourceNone, false, zapcore.InfoLevel, "no container memory limit"},
		{"not in a cgroup", nil, nil, 0, 0, SourceNone, false, zapcore.InfoLevel, "no container memory limit"},
		{"unreadable limit", map[string]string{procCgroup: "0::/\n", v2Root: "junk"}, nil, 0, 0, SourceNone, false, zapcore.WarnLevel, "could not read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			rt := &fakeRuntime{limit: math.MaxInt64}
			if tt.env["GOMEMLIMIT"] == "300MiB" {
				rt.limit = 300 * mib // what the runtime parsed from the variable
			}
			limit, source := apply(zap.New(core), tt.ratio, fakeRoot(t, tt.files), env(tt.env), rt.set)
			if limit != tt.want || source != tt.source {
				t.Errorf("apply = %d, %q; want %d, %q", limit, source, tt.want, tt.source)
			}
			if tt.wantSet != (len(rt.sets) == 1) || (tt.wantSet && rt.sets[0] != tt.want) {
				t.Errorf("SetMemoryLimit calls %v, want one with %d: %v", rt.sets, tt.want, tt.wantSet)
			}
			if logs.Len() != 1 {
				t.Fatalf("%d log lines, want exactly 1: %v", logs.Len(), logs.All())
			}
			e := logs.All()[0]
			if e.Level != tt.level || !strings.Contains(e.Message, tt.logSubstr) {
				t.Errorf("logged %v %q, want %v containing %q", e.Level, e.Message, tt.level, tt.logSubstr)
			}
		})
	}
}

// TestApplyReal runs Apply against the host it runs on, with GOMEMLIMIT set, the one
// case that cannot change the test process's runtime settings.
func TestApplyReal(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "1GiB")
	if _, source := Apply(nil, 0); source != SourceEnv {
		t.Errorf("source %q with GOMEMLIMIT set, want %q", source, SourceEnv)
	}
}

// TestCgroupMemoryLimitHost checks that the real root parses without
// surprises: any outcome is fine except a parse error.
func TestCgroupMemoryLimitHost(t *testing.T) {
	limit, err := CgroupMemoryLimit("/")
	if err != nil && !errors.Is(err, ErrNoLimit) && !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("host cgroup: %v", err)
	}
	t.Logf("host cgroup memory limit: %d, %v", limit, err)
}
