package kubeview

import (
	"sync"
	"sync/atomic"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/cache"
)

// keyStore is what a reflector fills: for each object, a key and a small
// value extracted from it, never the object itself. The view needs to
// know that a Service exists, not its metadata: keeping only the keys is
// what makes a cluster-wide watch affordable on every node (kubeview's
// memory test measures it).
type keyStore[T any] struct {
	// extract returns the object's key and value; ok false leaves the
	// object out (a finished pod, one without an address).
	extract func(obj any) (key string, val T, ok bool)
	// keysOnly says that extract needs nothing of an object but its key:
	// a streamed list (Transformer) and a paginated one (listKeys) are
	// then reduced to keys as they arrive.
	keysOnly bool
	// changed, when not nil, is called after every change, outside the
	// lock, with the keys added and removed (both empty when an object
	// changed in place); initial is set for the first full list, whose
	// keys are not passed.
	changed func(added, removed []string, initial bool)

	mu     sync.RWMutex
	items  map[string]T
	synced atomic.Bool // listed once
	// current is false from a failed list or watch until the next one
	// that works: the view may be missing what changed meanwhile.
	current atomic.Bool
	seen    func() // called on every event: the API server is talking
	// replaced counts full lists (Replace).
	replaced atomic.Int64
}

var _ cache.TransformingStore = (*keyStore[struct{}])(nil)

func newKeyStore[T any](extract func(obj any) (string, T, bool)) *keyStore[T] {
	return &keyStore[T]{extract: extract, items: map[string]T{}, seen: func() {}}
}

// newKeysOnlyStore is a store of keys alone (Namespaces, Services).
func newKeysOnlyStore() *keyStore[struct{}] {
	s := newKeyStore(func(obj any) (string, struct{}, bool) {
		k, err := keyOf(obj)
		return k, struct{}{}, err == nil
	})
	s.keysOnly = true
	return s
}

// Transformer implements cache.TransformingStore. A reflector that
// streams its list (a watch with the initial events, client-go's
// WatchListClient) gathers the objects in a store of its own until the
// list is complete, then calls Replace with all of them: a store of keys
// has each reduced to its key as it arrives, so that the whole list is
// never held (100,000 Services with their annotations and managed fields
// are hundreds of megabytes; their keys, a few). Other stores take whole
// objects: a node's pods and the cluster DNS Service's EndpointSlices are
// few.
func (s *keyStore[T]) Transformer() cache.TransformFunc {
	if !s.keysOnly {
		return nil
	}
	return func(obj any) (any, error) {
		k, err := keyOf(obj)
		if err != nil {
			return nil, err
		}
		return cache.ExplicitKey(k), nil
	}
}

func (s *keyStore[T]) get(key string) (T, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.items[key]
	return v, ok
}

func (s *keyStore[T]) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.items)
}

// snapshot returns a copy of the items.
func (s *keyStore[T]) snapshot() map[string]T {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]T, len(s.items))
	for k, v := range s.items {
		out[k] = v
	}
	return out
}

// Add implements cache.ReflectorStore.
func (s *keyStore[T]) Add(obj any) error { return s.Update(obj) }

// Update implements cache.ReflectorStore.
func (s *keyStore[T]) Update(obj any) error {
	s.seen()
	key, val, ok := s.extract(obj)
	if !ok {
		// An object that no longer counts (a pod that finished) leaves.
		if k, err := keyOf(obj); err == nil {
			s.remove(k)
		}
		return nil
	}
	s.mu.Lock()
	_, had := s.items[key]
	s.items[key] = val
	s.mu.Unlock()
	if s.changed != nil {
		if had {
			s.changed(nil, nil, false)
		} else {
			s.changed([]string{key}, nil, false)
		}
	}
	return nil
}

// Delete implements cache.ReflectorStore.
func (s *keyStore[T]) Delete(obj any) error {
	s.seen()
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		s.remove(d.Key)
		return nil
	}
	key, err := keyOf(obj)
	if err != nil {
		return err
	}
	s.remove(key)
	return nil
}

func (s *keyStore[T]) remove(key string) {
	s.mu.Lock()
	_, had := s.items[key]
	delete(s.items, key)
	s.mu.Unlock()
	if had && s.changed != nil {
		s.changed(nil, []string{key}, false)
	}
}

// Replace implements cache.ReflectorStore: a full list, at start and
// whenever a watch could not be resumed (after an API server outage).
func (s *keyStore[T]) Replace(list []any, _ string) error {
	s.seen()
	next := make(map[string]T, len(list))
	for _, obj := range list {
		if key, val, ok := s.extract(obj); ok {
			next[key] = val
		}
	}
	s.mu.Lock()
	old := s.items
	s.items = next
	s.mu.Unlock()
	s.current.Store(true)
	s.replaced.Add(1)
	first := !s.synced.Swap(true)
	if s.changed == nil {
		return nil
	}
	if first {
		s.changed(nil, nil, true)
		return nil
	}
	var added, removed []string
	for k := range next {
		if _, ok := old[k]; !ok {
			added = append(added, k)
		}
	}
	for k := range old {
		if _, ok := next[k]; !ok {
			removed = append(removed, k)
		}
	}
	s.changed(added, removed, false)
	return nil
}

// Resync implements cache.ReflectorStore; there is nothing to resync.
func (s *keyStore[T]) Resync() error { return nil }

// keyOf is the namespace/name key of an object, or of what a list
// reduced it to (Transformer, listKeys).
func keyOf(obj any) (string, error) {
	switch k := obj.(type) {
	case cache.ExplicitKey:
		return string(k), nil
	case objectKey:
		return string(k), nil
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return "", err
	}
	if ns := m.GetNamespace(); ns != "" {
		return ns + "/" + m.GetName(), nil
	}
	return m.GetName(), nil
}

// isSynced reports whether the store has been listed and is watched now.
func (s *keyStore[T]) isSynced() bool { return s.synced.Load() && s.current.Load() }

func (s *keyStore[T]) setCurrent(c bool) { s.current.Store(c) }
