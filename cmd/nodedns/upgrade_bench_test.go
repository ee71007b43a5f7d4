//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nodedns/nodedns/internal/testutil"
)

// The hand-over's benchmark (make bench-upgrade; not in make test): the
// upgrade of TestDaemonUpgradeLosesNoQueryAndKeepsTheCache under
// nodedns-bench's open loop at 20k queries/s over 1,000 cached names, the
// servers pinned to core 0 and the load to core 1. Targets: 0 lost, and
// the new process's upstream queries for the warm set at most 5 % of it.
func TestUpgradeBench(t *testing.T) {
	if os.Getenv("NODEDNS_UPGRADE_BENCH") == "" {
		t.Skip("a benchmark: make bench-upgrade")
	}
	benchBin := testutil.Binary(t, "./cmd/nodedns-bench")
	up := startUpstream(t, "192.0.2.1")
	snap := filepath.Join(t.TempDir(), "cache.snapshot")
	addr := testutil.FreeAddr(t)
	t.Setenv("GOMAXPROCS", "1")
	args := []string{"--upstream", up.Addr, "--cache-snapshot", snap, "--handover-wait", "5s", "--prefetch-min-hits", "0"}
	pin := func(d *testutil.Daemon) {
		if out, err := exec.Command("taskset", "-p", "-c", "0", fmt.Sprint(d.Cmd.Process.Pid)).CombinedOutput(); err != nil {
			t.Fatalf("taskset: %v %s", err, out)
		}
	}
	old := testutil.StartDaemonAt(t, addr, args...)
	pin(old)
	const names = 1000
	bench := func(extra ...string) *exec.Cmd {
		cmd := exec.Command("taskset", append([]string{"-c", "1", benchBin, "--server", addr, "--names", fmt.Sprint(names), "--zone", "upgrade.test.", "--quiet", "--json"}, extra...)...)
		testutil.DieWithTest(cmd)
		return cmd
	}
	if out, err := bench("--concurrency", "50", "--count", fmt.Sprint(names)).CombinedOutput(); err != nil {
		t.Fatalf("warm-up: %v\n%s", err, out)
	}
	upstreamQueries := func() int {
		n := 0
		for i := range names {
			n += up.Count(fmt.Sprintf("name-%d.upgrade.test.", i))
		}
		return n
	}
	warm := upstreamQueries()
	if warm < names {
		t.Fatalf("the warm-up sent %d of %d names upstream: are the names right?", warm, names)
	}

	load := bench("--qps", "20000", "--duration", "8s", "--timeout", "2s")
	var out strings.Builder
	load.Stdout = &out
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	next := testutil.StartDaemonAt(t, addr, args...)
	pin(next)
	time.Sleep(2 * time.Second)
	if err := old.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := old.Wait(); err != nil {
		t.Fatalf("the old nodedns exited with %v", err)
	}
	if err := load.Wait(); err != nil {
		t.Fatalf("nodedns-bench: %v\n%s", err, out.String())
	}
	var rep struct {
		Sent, Answered, Lost, Late uint64
		SendQPS                    float64 `json:"send_qps"`
	}
	if err := json.Unmarshal([]byte(out.String()), &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, out.String())
	}
	again := upstreamQueries() - warm
	t.Logf("upgrade under %.0f queries/s: %d sent, %d answered, %d lost (%d late); the new process asked the upstream %d times for the %d warm names (%.1f %%)",
		rep.SendQPS, rep.Sent, rep.Answered, rep.Lost, rep.Late, again, names, 100*float64(again)/names)
	if rep.Lost != 0 {
		t.Errorf("%d queries lost across the upgrade", rep.Lost)
	}
	if again > names/20 {
		t.Errorf("%d upstream queries for the warm set, want at most 5 %%", again)
	}
}
