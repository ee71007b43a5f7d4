package kubeview

import (
	"context"
	"fmt"
	"slices"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// pagedServer serves a list of n Services a page at a time, as the API
// server does, recording the options of each call; expire makes the
// continue token of those calls (by index) expired.
type pagedServer struct {
	n      int
	rv     string
	calls  []metav1.ListOptions
	expire map[int]bool
}

func (s *pagedServer) list(_ context.Context, o metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
	call := len(s.calls)
	s.calls = append(s.calls, o)
	if s.expire[call] {
		return nil, apierrors.NewResourceExpired("The provided continue parameter is too old")
	}
	from := 0
	if o.Continue != "" {
		if _, err := fmt.Sscanf(o.Continue, "from-%d", &from); err != nil {
			return nil, apierrors.NewBadRequest("continue: " + o.Continue)
		}
	}
	to := s.n
	if o.Limit > 0 {
		to = min(s.n, from+int(o.Limit))
	}
	out := &metav1.PartialObjectMetadataList{ListMeta: metav1.ListMeta{ResourceVersion: s.rv}}
	for i := from; i < to; i++ {
		out.Items = append(out.Items, metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
			Namespace: fmt.Sprintf("ns-%d", i%7), Name: fmt.Sprintf("svc-%d", i),
			Annotations: map[string]string{"big": "x"},
		}})
	}
	if to < s.n {
		out.Continue = fmt.Sprintf("from-%d", to)
		left := int64(s.n - to)
		out.RemainingItemCount = &left
	}
	return out, nil
}

func keysOf(t *testing.T, l *keyList) []string {
	t.Helper()
	var keys []string
	for _, o := range l.Items {
		k, err := keyOf(o)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	return keys
}

// A list is paginated whatever the reflector asks, at the most recent
// version for its first list ("0" is never paginated by the API server's
// watch cache), at least at the version it gives for a relist; continue
// pages carry the token alone; the result is the keys, with the version
// of the first page.
func TestListKeysPaginates(t *testing.T) {
	for _, tc := range []struct {
		rv, wantRV, wantMatch string
	}{
		{"0", "", ""},
		{"", "", ""},
		{"12345", "12345", string(metav1.ResourceVersionMatchNotOlderThan)},
	} {
		s := &pagedServer{n: 2*listPageSize + 3, rv: "777"}
		l, err := listKeys(context.Background(), s.list, metav1.ListOptions{ResourceVersion: tc.rv, Limit: 7, Continue: "reflector's"})
		if err != nil {
			t.Fatal(err)
		}
		if len(s.calls) != 3 {
			t.Fatalf("rv %q: %d calls, want 3 pages", tc.rv, len(s.calls))
		}
		first := s.calls[0]
		if first.ResourceVersion != tc.wantRV || string(first.ResourceVersionMatch) != tc.wantMatch || first.Limit != listPageSize || first.Continue != "" {
			t.Errorf("rv %q: first page asked with %+v, want version %q (%q), limit %d", tc.rv, first, tc.wantRV, tc.wantMatch, listPageSize)
		}
		for _, o := range s.calls[1:] {
			if o.ResourceVersion != "" || o.ResourceVersionMatch != "" || o.Continue == "" || o.Limit != listPageSize {
				t.Errorf("rv %q: a continue page asked with %+v", tc.rv, o)
			}
		}
		keys := keysOf(t, l)
		if l.ResourceVersion != "777" || len(keys) != s.n || keys[0] != "ns-0/svc-0" || keys[s.n-1] != fmt.Sprintf("ns-%d/svc-%d", (s.n-1)%7, s.n-1) {
			t.Errorf("rv %q: list at %q of %d keys (%q...)", tc.rv, l.ResourceVersion, len(keys), keys[:1])
		}
		if cap(l.Items) != s.n {
			t.Errorf("room for %d keys, want %d (the API server's count)", cap(l.Items), s.n)
		}
	}
}

// A continue token that expires (a list slower than the API server's
// compaction) starts the list again, a few times; an expired version on
// the first page is the reflector's to handle (it lists at the most recent).
func TestListKeysRestartsAfterExpiry(t *testing.T) {
	s := &pagedServer{n: 3 * listPageSize, rv: "9", expire: map[int]bool{2: true}}
	l, err := listKeys(context.Background(), s.list, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Pages 0, 1, then 2 expired; again 0, 1, 2.
	if len(s.calls) != 6 || s.calls[3].Continue != "" || len(l.Items) != s.n {
		t.Errorf("%d calls, %d keys; want the list again from its first page", len(s.calls), len(l.Items))
	}

	always := map[int]bool{}
	for i := range 100 {
		always[i] = i%2 == 1 // every continue page
	}
	s = &pagedServer{n: 3 * listPageSize, expire: always}
	if _, err := listKeys(context.Background(), s.list, metav1.ListOptions{}); !apierrors.IsResourceExpired(err) {
		t.Errorf("a list whose continue tokens always expire: %v", err)
	}
	if want := 2 * (listRestarts + 1); len(s.calls) != want {
		t.Errorf("%d calls, want %d (%d restarts)", len(s.calls), want, listRestarts)
	}

	s = &pagedServer{n: 10, expire: map[int]bool{0: true}}
	if _, err := listKeys(context.Background(), s.list, metav1.ListOptions{ResourceVersion: "5"}); !apierrors.IsResourceExpired(err) || len(s.calls) != 1 {
		t.Errorf("an expired version on the first page: %v after %d calls, want the error at once", err, len(s.calls))
	}
}

// A streamed list is reduced to keys as it arrives (the reflector's
// temporary store keeps what Transformer returns), and the store takes
// both kinds of reduced list; stores of whole objects have no transformer.
func TestKeyStoreReducesStreamedLists(t *testing.T) {
	v := newTestView(t, Config{})
	tr := v.services.Transformer()
	if tr == nil || v.pods.Transformer() != nil || v.slices.Transformer() != nil {
		t.Fatal("the services store has no transformer, or a store of whole objects has one")
	}
	tmp := cache.NewStore(cache.DeletionHandlingMetaNamespaceKeyFunc, cache.WithTransformer(tr))
	for _, o := range []any{objMeta("shop", "web"), objMeta("shop", "db")} {
		if err := tmp.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	got := slices.Sorted(slices.Values(tmp.ListKeys()))
	if !slices.Equal(got, []string{"shop/db", "shop/web"}) {
		t.Fatalf("temporary store keys %v", got)
	}
	for _, o := range tmp.List() {
		if _, ok := o.(cache.ExplicitKey); !ok {
			t.Fatalf("the temporary store holds a %T, want keys alone", o)
		}
	}
	if err := v.services.Replace(append(tmp.List(), objectKey("shop/cart")), "1"); err != nil {
		t.Fatal(err)
	}
	if !v.HasService("shop", "web") || !v.HasService("shop", "db") || !v.HasService("shop", "cart") || v.services.len() != 3 {
		t.Errorf("store after a reduced list: %v", v.services.snapshot())
	}
}

// A watch that opens makes the view current at once, but a streamed list
// (a watch with its initial events) only once its objects are all in.
func TestWatchListIsCurrentOnceListed(t *testing.T) {
	v := newTestView(t, Config{})
	lw := v.watchErrors("services", &cache.ListWatch{
		ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) { return &keyList{}, nil },
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
			return watch.NewFake(), nil
		},
	}, v.services.setCurrent)
	lwc := cache.ToListerWatcherWithContext(lw)
	_ = v.namespaces.Replace(nil, "1")
	_ = v.services.Replace(nil, "1")
	v.services.setCurrent(false) // a failed watch
	if _, err := lwc.WatchWithContext(context.Background(), metav1.ListOptions{SendInitialEvents: ptr(true), AllowWatchBookmarks: true}); err != nil {
		t.Fatal(err)
	}
	if v.Synced() {
		t.Error("synced once a streamed list's watch opened, before its objects are in")
	}
	_ = v.services.Replace(nil, "2")
	if !v.Synced() {
		t.Error("not synced once the streamed list is in")
	}
	v.services.setCurrent(false)
	if _, err := lwc.WatchWithContext(context.Background(), metav1.ListOptions{ResourceVersion: "2"}); err != nil {
		t.Fatal(err)
	}
	if !v.Synced() {
		t.Error("not synced once a watch resumed")
	}
}
