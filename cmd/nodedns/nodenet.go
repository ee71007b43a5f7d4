package main

import (
	"net/netip"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

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
	for _, l := range cfg.Listen {
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

// setupRules installs the rules once the listeners serve, and starts the
// periodic re-check of everything. A failure is logged, not fatal: DNS
// works without the rules (through conntrack), and each re-check tries
// again; nodedns_setup_rules_in_place says so.
func (n *nodeNet) setupRules() {
	if n == nil {
		return
	}
	if err := n.s.EnsureRules(); err != nil {
		n.log.Error("rules not in place; the re-check will try again", zap.Error(err))
	}
	n.s.Start()
	n.log.Info("node networking in place", zap.Duration("since_process_start", time.Since(processStart)),
		zap.String("interface", n.s.InterfaceMode()))
}

// stop runs after the DNS server stopped: it removes the interface and the
// rules, unless skip (setup.skip_teardown) or another process serves the
// listen addresses already (an upgrade: the new process relies on them,
// and removing them would cut its DNS until its next re-check).
func (n *nodeNet) stop(skip bool) {
	if n == nil {
		return
	}
	defer n.s.Close()
	if skip {
		n.log.Info("node networking left in place (setup.skip_teardown)")
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
func servedElsewhere(listen []netip.AddrPort) (netip.AddrPort, bool) {
	c := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
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
