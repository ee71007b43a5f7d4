package kubeview

import (
	"fmt"

	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	discoveryv1client "k8s.io/client-go/kubernetes/typed/discovery/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RESTConfig is the connection to the API server: from the kubeconfig
// file when one is given, else the pod's service account (in-cluster).
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kube.kubeconfig: %w", err)
		}
	} else if rc, err = rest.InClusterConfig(); err != nil {
		return nil, fmt.Errorf("kube: no in-cluster configuration (%w); give kube.kubeconfig or set kube.enabled false", err)
	}
	rc.UserAgent = "nodedns"
	// A DaemonSet on every node: few requests, all of them watches after
	// the first lists. Modest limits protect the API server from a
	// restart of every node's nodedns at once.
	rc.QPS, rc.Burst = 5, 10
	return rc, nil
}

// Connect fills cfg's clients from rc.
func Connect(rc *rest.Config, cfg Config) (Config, error) {
	var err error
	if cfg.Core, err = corev1client.NewForConfig(rc); err != nil {
		return cfg, fmt.Errorf("kube: %w", err)
	}
	if cfg.Discovery, err = discoveryv1client.NewForConfig(rc); err != nil {
		return cfg, fmt.Errorf("kube: %w", err)
	}
	if cfg.Metadata, err = metadata.NewForConfig(rc); err != nil {
		return cfg, fmt.Errorf("kube: %w", err)
	}
	return cfg, nil
}
