package main

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nodedns/nodedns/cache"
	"github.com/nodedns/nodedns/config"
	"github.com/nodedns/nodedns/kubeview"
	"github.com/nodedns/nodedns/resolver"
	"github.com/nodedns/nodedns/search"
	"github.com/nodedns/nodedns/upstream"
)

// kube is the daemon's side of the Kubernetes view: nil-safe, so that a
// standalone nodedns (no view) needs no checks.
type kube struct {
	view    *kubeview.View
	current *atomic.Pointer[upstream.Router]
	domain  string // the cluster domain whose group gets the endpoints
	log     *zap.Logger
	wg      sync.WaitGroup

	mu        sync.Mutex
	endpoints []string // the last endpoints the view published
	nn        *nodeNet // fail-open's targets follow the endpoints; nil before
}

// startKube starts the view of the cluster when the configuration turns it
// on, and says at start which way nodedns runs. kube.enabled auto without
// a cluster to talk to runs standalone; true fails instead.
func startKube(ctx context.Context, cfg config.Config, c *cache.Cache, current *atomic.Pointer[upstream.Router],
	reg prometheus.Registerer, log *zap.Logger) (*kube, error) {
	if !cfg.KubeOn() {
		log.Info("running standalone: no Kubernetes view (kube.enabled " + cfg.Kube + "); the search stage uses the shape rules only, autopath is off")
		return nil, nil
	}
	rc, err := kubeview.RESTConfig(cfg.Kubeconfig)
	if err != nil {
		if cfg.Kube == "auto" {
			log.Warn("running standalone: no Kubernetes view", zap.Error(err))
			return nil, nil
		}
		return nil, err
	}
	k := &kube{current: current, domain: cfg.ClusterDomains[0] + ".", log: log}
	vc, err := kubeview.Connect(rc, kubeview.Config{
		NodeName:       cfg.NodeName,
		DNSService:     cfg.KubeDNSService,
		ClusterDomain:  cfg.ClusterDomains[0],
		ClusterDomains: append([]string(nil), cfg.ClusterDomains...),
		NodeSearch:     cfg.NodeSearch,
		Invalidate:     c.InvalidateZones,
		Endpoints:      k.setEndpoints,
		Log:            log,
		Registerer:     reg,
	})
	if err != nil {
		return nil, err
	}
	if k.view, err = kubeview.New(vc); err != nil {
		return nil, err
	}
	k.wg.Go(func() { k.view.Run(ctx) })
	log.Info("Kubernetes view on", zap.String("api_server", rc.Host), zap.String("node", cfg.NodeName),
		zap.String("dns_service", cfg.KubeDNSService), zap.Bool("autopath", cfg.Autopath && cfg.NodeName != ""))
	return k, nil
}

// stages are the resolver's Kubernetes knowledge (package search): the
// search stage, which answers on the node the names a cluster cannot have
// (refined by the view's existence when there is a view), and, with the
// view, search walks for the pods of this node (autopath).
func (k *kube) stages(cfg config.Config, reg prometheus.Registerer, log *zap.Logger) (local []resolver.Middleware, walker resolver.Walker) {
	rules := search.New(cfg.ClusterDomains, cfg.SearchExtraZones)
	if cfg.SearchEnabled {
		sc := search.StageConfig{Rules: rules, NegativeTTL: cfg.SearchNegativeTTL, Log: log, Registerer: reg}
		if k != nil {
			sc.View = k.view
		}
		local = append(local, search.Stage(sc))
	}
	if k != nil && cfg.Autopath && cfg.NodeName != "" {
		walker = search.Autopath{Pods: k.view, Rules: rules}
	}
	return local, walker
}

// setEndpoints gives the cluster DNS Service's ready endpoints to the
// group that serves the cluster domain, and to fail-open as its targets.
func (k *kube) setEndpoints(addrs []string) {
	k.mu.Lock()
	k.endpoints = addrs
	nn := k.nn
	k.mu.Unlock()
	k.apply(addrs)
	if nn != nil && len(addrs) > 0 {
		nn.setFallback(addrs)
	}
}

// setFallback makes the endpoints fail-open's targets from now on, the
// ones known already at once.
func (k *kube) setFallback(nn *nodeNet) {
	if k == nil || nn == nil {
		return
	}
	k.mu.Lock()
	k.nn = nn
	addrs := k.endpoints
	k.mu.Unlock()
	if len(addrs) > 0 {
		nn.setFallback(addrs)
	}
}

func (k *kube) apply(addrs []string) {
	g := k.current.Load().Route(k.domain)
	if err := g.SetEndpoints(addrs); err != nil {
		k.log.Warn("cluster DNS endpoints not applied", zap.String("group", g.Name()), zap.Error(err))
	}
}

// reapply gives the last endpoints to the groups a reload built.
func (k *kube) reapply() {
	if k == nil {
		return
	}
	k.mu.Lock()
	addrs := k.endpoints
	k.mu.Unlock()
	if addrs != nil {
		k.apply(addrs)
	}
}

// wait returns once the view has stopped (its context is done).
func (k *kube) wait() {
	if k != nil {
		k.wg.Wait()
	}
}

// readyDetail is /ready?verbose's detail: each group's servers and the
// view's state.
func readyDetail(r *upstream.Router, k *kube) any {
	groups := map[string]any{}
	for _, g := range r.Groups() {
		groups[g.Name()] = map[string]any{"zones": g.Zones(), "healthy": g.Healthy(), "servers": g.Members()}
	}
	out := map[string]any{"upstreams": groups}
	if k != nil {
		out["kube_view"] = k.view.Status()
	} else {
		out["kube_view"] = "off"
	}
	return out
}
