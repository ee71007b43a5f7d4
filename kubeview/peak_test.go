// The race detector would measure itself, and compile the control plane's
// clientset into every race test: these run in make memory and view-scale.

//go:build !race

package kubeview

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientfeatures "k8s.io/client-go/features"
	clientfeaturestesting "k8s.io/client-go/features/testing"
	"k8s.io/client-go/kubernetes"

	"github.com/nodedns/nodedns/internal/kubetest"
	"github.com/nodedns/nodedns/internal/testutil"
)

// populate creates nNS namespaces (team-00000...) and nSvc Services as
// kubectl apply leaves them (service-000000..., spread over the
// namespaces), on a real API server.
func populate(t *testing.T, c *kubetest.Cluster, nNS, nSvc int) {
	t.Helper()
	start := time.Now()
	c.CreateMany(t, nNS, 16, func(ctx context.Context, cs kubernetes.Interface, i int) error {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: teamNS(i)}}, metav1.CreateOptions{})
		return err
	})
	c.CreateMany(t, nSvc, 16, func(ctx context.Context, cs kubernetes.Interface, i int) error {
		ns := teamNS(i % nNS)
		_, err := cs.CoreV1().Services(ns).Create(ctx, kubetest.AppliedService(ns, serviceName(i)), metav1.CreateOptions{FieldManager: "kubectl"})
		return err
	})
	t.Logf("created %d namespaces and %d Services in %v", nNS, nSvc, time.Since(start).Round(100*time.Millisecond))
}

func teamNS(i int) string      { return fmt.Sprintf("team-%05d", i) }
func serviceName(i int) string { return fmt.Sprintf("service-%06d", i) }

// heapPeak samples the Go heap (bytes in live and not yet swept objects)
// until stop is called, with the garbage collector running at every 5%
// of growth so that the heap stays close to what is live; stop returns
// the peak above the heap at the start, after a collection.
func heapPeak() (stop func() uint64) {
	old := debug.SetGCPercent(5)
	runtime.GC()
	sample := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 { rtmetrics.Read(sample); return sample[0].Value.Uint64() }
	base := read()
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			peak.Store(max(peak.Load(), read()))
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	return func() uint64 {
		close(done)
		wg.Wait()
		debug.SetGCPercent(old)
		return max(peak.Load(), base) - base
	}
}

// TestViewListPeak measures the view's peak, not what it keeps: the Go
// heap while it lists 10,000 Services as kubectl apply leaves them
// (labels, a 600-byte annotation, managed fields) in 1,000 namespaces from
// a real API server, streamed (watch-list, client-go's default) and
// paginated (watch-list off), then again when an API server restart makes
// both views list again. A view that held a whole list before reducing it
// to keys peaks at about 2.5 KiB a Service (25 MiB here, 250 MiB for
// 100,000, which is what got nodedns OOM-killed at start); one that
// reduces as it goes holds the keys and a page. TestViewScale (make
// view-scale) runs the binary at 100,000 Services in the DaemonSet's
// memory limit.
func TestViewListPeak(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 10,000 Services on a real API server")
	}
	const nNS, nSvc = 1_000, 10_000
	c := kubetest.Start(t)
	populate(t, c, nNS, nSvc)
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	defer func() { cancel(); running.Wait() }()

	// What may be held: the keys of every object listed, twice during a
	// relist (the store's and the list's), and a page of whole objects.
	const perObject, page = 300, 4 << 20
	allowed := func(views int) uint64 { return uint64(views) * (uint64(nNS+nSvc)*perObject + page) }

	views := map[string]*View{}
	for _, mode := range []struct {
		name      string
		watchList bool
	}{{"streamed", true}, {"paginated", false}} {
		t.Run(mode.name, func(t *testing.T) {
			clientfeaturestesting.SetFeatureDuringTest(t, clientfeatures.WatchListClient, mode.watchList)
			cfg, err := Connect(c.Config, Config{ClusterDomain: "cluster.local"})
			if err != nil {
				t.Fatal(err)
			}
			v, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			stop := heapPeak()
			start := time.Now()
			running.Go(func() { v.Run(ctx) })
			testutil.WaitFor(t, 60*time.Second, "the view to sync", v.Synced)
			peak := stop()
			t.Logf("%s list of %d namespaces and %d Services: synced in %v, heap peak %.1f MiB above the start (allowed %.1f MiB)",
				mode.name, v.namespaces.len(), v.services.len(), time.Since(start).Round(10*time.Millisecond), mib(peak), mib(allowed(1)))
			if peak > allowed(1) {
				t.Errorf("heap peak %.1f MiB while listing, want at most %.1f MiB: is a whole list held?", mib(peak), mib(allowed(1)))
			}
			checkViewOf(t, v, nNS, nSvc)
			views[mode.name] = v
		})
	}
	if len(views) != 2 {
		t.FailNow()
	}

	// An API server restart: every view lists again.
	replaced := map[string]int64{}
	for name, v := range views {
		replaced[name] = v.services.replaced.Load()
	}
	stop := heapPeak()
	start := time.Now()
	if err := c.RestartAPIServer(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*time.Minute, "both views to list again", func() bool {
		for name, v := range views {
			if v.services.replaced.Load() == replaced[name] || !v.Synced() {
				return false
			}
		}
		return true
	})
	peak := stop()
	t.Logf("API server restart: both views listed again within %v of it, heap peak %.1f MiB above the start (allowed %.1f MiB)",
		time.Since(start).Round(10*time.Millisecond), mib(peak), mib(allowed(2)))
	if peak > allowed(2) {
		t.Errorf("heap peak %.1f MiB while two views relisted, want at most %.1f MiB", mib(peak), mib(allowed(2)))
	}
	for _, v := range views {
		checkViewOf(t, v, nNS, nSvc)
	}
}

// checkViewOf checks that v holds what populate created.
func checkViewOf(t *testing.T, v *View, nNS, nSvc int) {
	t.Helper()
	// Beside them: the kubernetes Service, and default, kube-system,
	// kube-public and kube-node-lease.
	if n := v.services.len(); n != nSvc+1 {
		t.Errorf("the view holds %d Services, want %d", n, nSvc+1)
	}
	if n := v.namespaces.len(); n < nNS || n > nNS+4 {
		t.Errorf("the view holds %d namespaces, want %d and the system ones", n, nNS)
	}
	last := nSvc - 1
	if !v.HasNamespace(teamNS(nNS-1)) || !v.HasService(teamNS(last%nNS), serviceName(last)) || !v.HasService("default", "kubernetes") {
		t.Error("a namespace or Service that exists is not in the view")
	}
	if v.HasService(teamNS(0), serviceName(nSvc)) || v.HasNamespace(teamNS(nNS)) {
		t.Error("a namespace or Service that does not exist is in the view")
	}
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }
