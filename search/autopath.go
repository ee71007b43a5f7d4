package search

import (
	"net/netip"
)

// PodLookup says what is known of the pod at an address (package
// kubeview knows the pods of this node).
type PodLookup interface {
	// Pod returns the DNS set-up of the pod at addr; ok is false when its
	// search list is not known.
	Pod(addr netip.Addr) (p *PodDNS, ok bool)
}

// Autopath is the resolver's Walker (resolver.Config.Walker) for the pods
// of this node: it knows a pod's search list from the Kubernetes view, as
// kubelet writes it for a ClusterFirst pod. A name under a cluster domain
// is never walked: every expansion of it is a denial the search stage
// gives anyway (kubernetes.default.svc.cluster.local with ndots:5).
type Autopath struct {
	Pods  PodLookup
	Rules *Rules
}

// Knows reports whether the pod at client has a known search list.
func (a Autopath) Knows(client netip.Addr) bool {
	_, ok := a.Pods.Pod(client)
	return ok
}

// Walk returns the names the pod at client would ask for qname, qname
// first, when qname is the first name of its walk.
func (a Autopath) Walk(client netip.Addr, qname string) ([]string, bool) {
	pod, ok := a.Pods.Pod(client)
	if !ok {
		return nil, false
	}
	name, rest, ok := pod.Walk(qname)
	if !ok {
		return nil, false
	}
	if _, _, cluster := a.Rules.Domain(name + "."); cluster {
		return nil, false
	}
	return append([]string{qname}, rest...), true
}
