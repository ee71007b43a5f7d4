package search

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nodedns/nodedns/reply"
	"github.com/nodedns/nodedns/resolver"
)

// StageConfig turns on the search stage.
type StageConfig struct {
	// Rules are the shape rules of the cluster domains.
	Rules *Rules
	// View, when not nil, refines them with what exists in the cluster
	// (package kubeview): names under a Namespace or Service it does not
	// have are NXDOMAIN too, once it has synced.
	View View
	// NegativeTTL is the TTL and MINIMUM of the cluster domain's SOA in the
	// answers the stage gives: how long clients and caches keep the denial.
	// Short, since a Service may be created a moment later; 0 means the
	// answers are not cached.
	NegativeTTL time.Duration
	Log         *zap.Logger
	Registerer  prometheus.Registerer
}

// Stage is the search stage, a local stage of the resolver
// (resolver.Config.Local): it answers, on the node, the names under a
// cluster domain that the shape rules say cannot exist (NXDOMAIN) or exist
// without records (NODATA), with the cluster domain's SOA in the authority
// section so that clients and caches time the denial by it (RFC 2308); it
// passes every other name on. It sits after the cache stage, which stores
// what it answers: the next identical query is a fast-path hit. A pod's
// ndots:5 search list sends most of its expansions of an external name
// here (api.example.com.default.svc.cluster.local...), and none of them
// reach the cluster's DNS. Its answers are counted in
// nodedns_search_answered_total, by rule.
func Stage(cfg StageConfig) resolver.Middleware {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	answered := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodedns_search_answered_total",
		Help: "Queries the search stage answered on the node (NXDOMAIN, or NODATA for an empty non-terminal), by the shape rule that decided.",
	}, []string{"rule"})
	byRule := map[Rule]prometheus.Counter{}
	for _, r := range AllRules() {
		byRule[r] = answered.WithLabelValues(r.String())
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(answered)
	}
	log := cfg.Log.Named("search")
	ttl := uint32(cfg.NegativeTTL / time.Second)
	// The serial says nothing to a cache; the start time, as CoreDNS's
	// kubernetes plugin uses the time of its last change.
	serial := uint32(time.Now().Unix())
	return func(next resolver.Handler) resolver.Handler {
		return resolver.HandlerFunc(func(ctx context.Context, req *resolver.Request) (resolver.Answer, error) {
			q := req.Msg.Question[0]
			verdict, rule := cfg.Rules.CheckView(q.Name, cfg.View)
			if verdict == Forward {
				return next.Resolve(ctx, req)
			}
			cd, _, _ := cfg.Rules.Domain(q.Name)
			byRule[rule].Inc()
			if ce := log.Check(zap.DebugLevel, "answered on the node by the search stage"); ce != nil {
				ce.Write(zap.String("qname", q.Name), zap.Uint16("qtype", q.Qtype),
					zap.Stringer("verdict", verdict), zap.Stringer("rule", rule))
			}
			return resolver.Answer{Msg: reply.Denial(req.Msg, verdict == NXDomain, cd, ttl, serial)}, nil
		})
	}
}
