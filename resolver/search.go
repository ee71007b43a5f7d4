package resolver

import (
	"context"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/nodedns/nodedns/search"
)

// SearchConfig turns on the search stage.
type SearchConfig struct {
	// Rules are the shape rules of the cluster domains (package search).
	Rules *search.Rules
	// View, when not nil, refines them with what exists in the cluster
	// (package kubeview): names under a Namespace or Service it does not
	// have are NXDOMAIN too, once it has synced.
	View search.View
	// NegativeTTL is the TTL and MINIMUM of the cluster domain's SOA in the
	// answers the stage gives: how long clients and caches keep the denial.
	// Short, since a Service may be created a moment later; 0 means the
	// answers are not cached.
	NegativeTTL time.Duration
}

// searchStage answers, on the node, the names under a cluster domain that
// the shape rules say cannot exist (NXDOMAIN) or exist without records
// (NODATA), with the cluster domain's SOA in the authority section so that
// clients and caches time the denial by it (RFC 2308); it passes every
// other name on. It sits after the cache stage, which stores what it
// answers: the next identical query is a fast-path hit. A pod's ndots:5
// search list sends most of its expansions of an external name here
// (api.example.com.default.svc.cluster.local...), and none of them reach
// the cluster's DNS.
func searchStage(cfg SearchConfig, m *metrics, log *zap.Logger) Middleware {
	ttl := uint32(cfg.NegativeTTL / time.Second)
	// The serial says nothing to a cache; the start time, as CoreDNS's
	// kubernetes plugin uses the time of its last change.
	serial := uint32(time.Now().Unix())
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, req *Request) (Answer, error) {
			q := req.Msg.Question[0]
			verdict, rule := cfg.Rules.CheckView(q.Name, cfg.View)
			if verdict == search.Forward {
				return next.Resolve(ctx, req)
			}
			cd, _, _ := cfg.Rules.Domain(q.Name)
			resp := new(dns.Msg)
			resp.SetReply(req.Msg)
			resp.RecursionAvailable = true
			if verdict == search.NXDomain {
				resp.Rcode = dns.RcodeNameError
			}
			resp.Ns = []dns.RR{&dns.SOA{
				Hdr: dns.RR_Header{Name: cd, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
				Ns:  "ns.dns." + cd, Mbox: "hostmaster." + cd,
				Serial: serial, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: ttl,
			}}
			m.searchAnswered[rule].Inc()
			if ce := log.Check(zap.DebugLevel, "answered on the node by the search stage"); ce != nil {
				ce.Write(zap.String("qname", q.Name), zap.String("qtype", dns.TypeToString[q.Qtype]),
					zap.Stringer("verdict", verdict), zap.Stringer("rule", rule))
			}
			return Answer{Msg: resp}, nil
		})
	}
}
