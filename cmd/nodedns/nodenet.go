package main

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/nodedns/nodedns/config"
	"github.com/nodedns/nodedns/nodenet"
)

// processStart is when the process started, near enough (package
// variables are set before main runs): the set-up time is measured from
// it, since what a node waits for is the process, not one of its steps.
var processStart = time.Now()

// nodeNet is the daemon's side of the node's networking (package
// nodenet): nil-safe, nil when setup.interface and setup.rules are off.
type nodeNet struct {
	s      *nodenet.Setup
	listen []netip.AddrPort
	log    *zap.Logger
}

// setupInterface chooses the rules' backend and creates the interface
// holding the listen addresses. It runs before the DNS listeners bind:
// binding 169.254.20.10 needs the address.
func setupInterface(cfg config.Config, reg prometheus.Registerer, log *zap.Logger) (*nodeNet, error) {
	if !cfg.SetupInterface && !cfg.SetupRules {
		return nil, nil
	}
	n := &nodeNet{log: log.Named("nodenet")}
	for _, l := range cfg.Server.Listen {
		if ap, err := netip.ParseAddrPort(l); err == nil {
			n.listen = append(n.listen, ap)
		}
	}
	var probes []netip.AddrPort
	if ap, err := netip.ParseAddrPort(cfg.HTTPListen); err == nil {
		probes = append(probes, ap)
	}
	s, err := nodenet.New(nodenet.Config{
		Listen: n.listen, Probes: probes,
		Interface: cfg.SetupInterface, InterfaceName: cfg.InterfaceName,
		Rules: cfg.SetupRules, Backend: cfg.SetupRulesBackend,
		Interval: cfg.SetupInterval, Log: log, Registerer: reg,
		FailOpen: cfg.SetupRules && cfg.FailOpen, LiveFor: cfg.FailOpenAfter,
	})
	if err != nil {
		return nil, err
	}
	n.s = s
	if name, why := s.Backend(); name != "" {
		n.log.Info("rules backend chosen", zap.String("backend", name), zap.String("why", why))
	}
	if err := s.EnsureInterface(); err != nil {
		s.Close()
		return nil, err
	}
	return n, nil
}

// nodenetBypassMark is the packet mark of the watchdog's probes.
const nodenetBypassMark = nodenet.BypassMark

// rulesBeforeServing reports whether the rules go in before the listeners
// serve: with fail-open they divert nothing until the watchdog proves
// nodedns answers, and the fail-open DNAT serves the pods meanwhile.
// Without it they would send the kube-dns Service address's traffic here
// (transparent mode) before anything answers, so they wait.
func (n *nodeNet) rulesBeforeServing() bool {
	on, _ := n.failOpen()
	return on
}

// setupRules installs the rules, with the fail-open targets when it is on,
// and starts the periodic re-check of everything. A failure is logged,
// not fatal: DNS works without the rules (through conntrack), and each
// re-check tries again; nodedns_setup_rules_in_place says so.
func (n *nodeNet) setupRules(targets []netip.AddrPort, fromView bool) {
	if n == nil {
		return
	}
	if on, _ := n.failOpen(); on {
		switch {
		case fromView:
			n.log.Info("fail-open targets: the cluster DNS Service's endpoints, once the Kubernetes view has them")
		case len(targets) == 0:
			n.log.Warn("fail-open has no target: while nodedns does not answer, queries to the node-local address are not sent anywhere else (the cluster domain's upstream servers, which must be endpoints, not a Service address, are the targets)")
		}
		if err := n.s.SetFallback(targets); err != nil {
			n.log.Error("fail-open targets not in place; the re-check will try again", zap.Error(err))
		}
	}
	if err := n.s.EnsureRules(); err != nil {
		n.log.Error("rules not in place; the re-check will try again", zap.Error(err))
	}
	n.s.Start()
	n.log.Info("node networking in place", zap.Duration("since_process_start", time.Since(processStart)),
		zap.String("interface", n.s.InterfaceMode()))
}

// failOpen reports whether the node fails open, and after how long.
func (n *nodeNet) failOpen() (bool, time.Duration) {
	if n == nil {
		return false, 0
	}
	return n.s.FailOpen()
}

// alive renews the liveness mark (a no-op without fail-open).
func (n *nodeNet) alive() error {
	if n == nil {
		return nil
	}
	return n.s.Alive()
}

// setFallback gives fail-open the cluster DNS endpoints, "IP:port".
func (n *nodeNet) setFallback(addrs []string) { n.setFallbackTargets(parseTargets(addrs)) }

func (n *nodeNet) setFallbackTargets(targets []netip.AddrPort) {
	if on, _ := n.failOpen(); !on {
		return
	}
	if err := n.s.SetFallback(targets); err != nil {
		n.log.Error("fail-open targets not in place; the re-check will try again", zap.Error(err))
	}
}

// parseTargets reads "IP:port" and "IP" (port 53) addresses, skipping
// what does not parse.
func parseTargets(addrs []string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range addrs {
		if ap, err := netip.ParseAddrPort(a); err == nil {
			out = append(out, ap)
		} else if ip, err := netip.ParseAddr(a); err == nil {
			out = append(out, netip.AddrPortFrom(ip, 53))
		}
	}
	return out
}

// fallbackTargets are fail-open's targets without the Kubernetes view:
// the servers of the group that serves the cluster domain (else "."). They
// must be endpoints, not the kube-dns Service address: a query is NATed
// once, so kube-proxy would not translate it again. With the view, the
// cluster DNS Service's endpoints are the targets, as the view learns
// them; none before.
func fallbackTargets(cfg config.Config) []netip.AddrPort {
	if cfg.KubeOn() && cfg.KubeDNSService != "" {
		return nil
	}
	zone := "."
	if len(cfg.ClusterDomains) > 0 {
		zone = cfg.ClusterDomains[0]
	}
	for _, g := range cfg.Upstreams {
		for _, z := range g.Zones {
			if strings.EqualFold(strings.TrimSuffix(z, "."), strings.TrimSuffix(zone, ".")) {
				return parseTargets(g.Addrs)
			}
		}
	}
	for _, g := range cfg.Upstreams {
		if slices.Contains(g.Zones, ".") {
			return parseTargets(g.Addrs)
		}
	}
	return nil
}

// stop runs after the DNS server stopped: it removes the interface and the
// rules, unless skip (setup.skip_teardown), or another process serves the
// listen addresses already (an upgrade: the new process relies on them,
// and removing them would cut its DNS until its next re-check), or, with
// fail-open, nodedns was not answering when it was told to stop (kubelet
// restarting a stuck container: the fail-open rules carry the node's
// queries until the next process answers).
func (n *nodeNet) stop(skip, healthy bool) {
	if n == nil {
		return
	}
	defer n.s.Close()
	if skip {
		n.log.Info("node networking left in place (setup.skip_teardown)")
		return
	}
	if on, _ := n.failOpen(); on && !healthy {
		n.log.Warn("node networking left in place: nodedns was not answering when told to stop, and fail-open carries the node's queries until a new process does")
		return
	}
	if a, ok := servedElsewhere(n.listen); ok {
		n.log.Info("node networking left in place: another process serves the listen addresses", zap.Stringer("address", a))
		return
	}
	if err := n.s.Teardown(); err != nil {
		n.log.Warn("node networking not fully removed", zap.Error(err))
		return
	}
	n.log.Info("node networking removed")
}

// servedElsewhere asks each listen address over UDP, once this process's
// sockets are closed, whether anything answers there. Any reply counts:
// the query's opcode (STATUS) is one nodedns answers NOTIMP on the spot.
// The query carries the fail-open bypass mark, so that it reaches the
// node's own sockets, never the cluster DNS through the fail-open DNAT.
func servedElsewhere(listen []netip.AddrPort) (netip.AddrPort, bool) {
	c := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond,
		Dialer: &net.Dialer{Control: markControl(nodenetBypassMark)}}
	for _, a := range listen {
		m := new(dns.Msg)
		m.Id = dns.Id()
		m.Opcode = dns.OpcodeStatus
		m.Question = []dns.Question{{Name: ".", Qtype: dns.TypeSOA, Qclass: dns.ClassINET}}
		if r, _, err := c.Exchange(m, a.String()); err == nil && r != nil {
			return a, true
		}
	}
	return netip.AddrPort{}, false
}

// markControl sets a packet mark on a socket before it connects; where
// that fails (no CAP_NET_ADMIN), the socket goes unmarked.
func markControl(mark int) func(string, string, syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		_ = c.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark) })
		return nil
	}
}

// inPlace is nil when the node's set-up is whole, for /ready.
func (n *nodeNet) inPlace() error {
	if n == nil {
		return nil
	}
	return n.s.InPlace()
}
