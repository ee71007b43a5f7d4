package kubeview

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// How a Namespace or Service list reaches the view without ever being held
// whole. A reflector gets its list one of two ways:
//
//   - Streamed (client-go's WatchListClient, on by default, and an API
//     server that serves it): a watch whose initial events are the list,
//     gathered in a temporary store until the last one; keyStore's
//     Transformer reduces each object to its key as it arrives.
//   - Listed, when streaming is off or refused: the reflector asks the
//     ListerWatcher for the whole list at once. keyListWatch answers with
//     the keys alone, gathered page by page (listPageSize objects a page),
//     each page reduced to keys before the next is asked for.
//
// Either way the process holds the keys of the whole list and at most one
// page (or one event) of whole objects. Watch events come one at a time,
// and the store keeps only their keys.

// listPageSize is how many objects a page of a list holds: 500, as
// client-go's pager, about 1 MB of Services with their annotations and
// managed fields, decoded.
const listPageSize = 500

// listRestarts bounds how many times a list starts again after its
// continue token expired (the API server compacts what it can list at
// every few minutes; a list that takes longer starts again, with a new
// version). After that the error goes to the reflector, which retries
// with its backoff.
const listRestarts = 3

// objectKey is an object reduced to its namespace/name key: what a
// paginated list gives a key store.
type objectKey string

// GetObjectKind implements runtime.Object.
func (objectKey) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object.
func (k objectKey) DeepCopyObject() runtime.Object { return k }

// keyList is a list reduced to its objects' keys, as a reflector reads a
// list: its resource version, and Items.
type keyList struct {
	metav1.TypeMeta
	metav1.ListMeta
	Items []runtime.Object // objectKey
}

// DeepCopyObject implements runtime.Object.
func (l *keyList) DeepCopyObject() runtime.Object {
	c := *l
	c.Items = append([]runtime.Object(nil), l.Items...)
	return &c
}

// keyListWatch adapts a metadata client's List and Watch to a reflector
// for a store of keys: a list is paginated and reduced to keys page by
// page (listKeys); a watch is the client's, its events reduced by the
// store one at a time.
func keyListWatch(list func(context.Context, metav1.ListOptions) (*metav1.PartialObjectMetadataList, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) cache.ListerWatcher {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			l, err := listKeys(ctx, list, o)
			if err != nil {
				return nil, err
			}
			return l, nil
		},
		WatchFuncWithContext: watchFn,
	}
}

// listKeys lists every object, listPageSize at a time, and returns their
// keys, with the list's resource version. The reflector's own paging
// (o.Limit, o.Continue) is replaced by this one. Its resource version is
// kept as a lower bound (a list at a version is otherwise exact when
// paginated, and fails once that version is compacted), except "0": a
// list at "0" (any version, a reflector's first) is served whole from the
// API server's watch cache, whatever the limit, so the most recent version
// is asked for instead, which is paginated, and at least as recent as any
// the reflector could want.
func listKeys(ctx context.Context, list func(context.Context, metav1.ListOptions) (*metav1.PartialObjectMetadataList, error),
	o metav1.ListOptions) (*keyList, error) {
	first := o
	first.Limit, first.Continue = listPageSize, ""
	switch first.ResourceVersion {
	case "", "0":
		first.ResourceVersion, first.ResourceVersionMatch = "", ""
	default:
		if first.ResourceVersionMatch == "" {
			first.ResourceVersionMatch = metav1.ResourceVersionMatchNotOlderThan
		}
	}
	for restarts := 0; ; restarts++ {
		out, continued, err := listPages(ctx, list, first)
		if err == nil {
			return out, nil
		}
		// A continue token that expired: the list starts again. Any
		// other error is the reflector's (an expired version too: it
		// lists again at the most recent).
		if !continued || !isExpired(err) || restarts == listRestarts || ctx.Err() != nil {
			return nil, err
		}
	}
}

// isExpired reports an expired continue token or resource version (HTTP
// 410).
func isExpired(err error) bool { return apierrors.IsResourceExpired(err) || apierrors.IsGone(err) }

// maxPresize bounds the room made for a list from the API server's count
// of the items left.
const maxPresize = 1 << 20

// listPages lists from o's first page to the last, reducing each to keys;
// continued says that an error came on a page after the first.
func listPages(ctx context.Context, list func(context.Context, metav1.ListOptions) (*metav1.PartialObjectMetadataList, error),
	o metav1.ListOptions) (out *keyList, continued bool, err error) {
	out = &keyList{}
	for {
		page, err := list(ctx, o)
		if err != nil {
			return nil, o.Continue != "", err
		}
		if o.Continue == "" {
			// Every page is of the version of the first.
			out.ResourceVersion = page.ResourceVersion
			if n := page.RemainingItemCount; n != nil && *n > 0 {
				out.Items = make([]runtime.Object, 0, len(page.Items)+int(min(*n, maxPresize)))
			}
		}
		for i := range page.Items {
			m := &page.Items[i]
			k := m.Name
			if m.Namespace != "" {
				k = m.Namespace + "/" + m.Name
			}
			out.Items = append(out.Items, objectKey(k))
		}
		if page.Continue == "" {
			return out, false, nil
		}
		// A continue token carries the version it lists at: the API
		// server refuses one with a resource version beside it.
		o.Continue, o.ResourceVersion, o.ResourceVersionMatch = page.Continue, "", ""
	}
}
