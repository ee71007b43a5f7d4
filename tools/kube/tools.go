//go:build tools

// Package tools pins the Kubernetes control plane the integration tests run
// (internal/kubetest): kube-apiserver and kubectl from k8s.io/kubernetes,
// and etcd's server, whose module is its main package. It is never built as
// a package; build.sh builds the three commands from this module, so that
// go.sum (committed) pins every dependency and CI never tidies.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
