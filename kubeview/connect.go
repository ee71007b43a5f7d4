package kubeview

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
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

// scheme knows the types the view decodes whole: pods and EndpointSlices,
// and the watch events that carry them. client-go's typed clients would
// register every API group of Kubernetes, and link them all into the
// binary, for these two.
var (
	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme)
)

func init() {
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, discoveryv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
}

// Connect fills cfg's clients from rc.
func Connect(rc *rest.Config, cfg Config) (Config, error) {
	var err error
	if cfg.Core, err = restClient(rc, "/api", corev1.SchemeGroupVersion); err != nil {
		return cfg, fmt.Errorf("kube: %w", err)
	}
	if cfg.Discovery, err = restClient(rc, "/apis", discoveryv1.SchemeGroupVersion); err != nil {
		return cfg, fmt.Errorf("kube: %w", err)
	}
	if cfg.Metadata, err = metadata.NewForConfig(rc); err != nil {
		return cfg, fmt.Errorf("kube: %w", err)
	}
	return cfg, nil
}

// restClient is a client of one API group version, under apiPath ("/api"
// for the core group, "/apis" for the others).
func restClient(rc *rest.Config, apiPath string, gv schema.GroupVersion) (rest.Interface, error) {
	c := rest.CopyConfig(rc)
	c.APIPath = apiPath
	c.GroupVersion = &gv
	c.NegotiatedSerializer = codecs.WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	return rest.RESTClientFor(c)
}
