// Package nodenet sets up the node's networking for a node-local DNS cache,
// as NodeLocal DNSCache's node-cache does: a local interface holding the
// listen addresses (169.254.20.10, and in transparent mode the kube-dns
// Service address), and rules that keep DNS to and from those addresses
// out of conntrack (NOTRACK in the raw table) and accept it in the filter
// table. It keeps them in place: an idempotent ensure, re-run on a ticker,
// restores whatever someone removed (counted and logged), and Teardown
// removes them.
//
// The interface is a dummy link where the kernel has the dummy driver; where
// it has not, the addresses go on lo as host routes (/32, /128), which the
// kernel delivers locally just the same. The rules go through iptables
// (legacy or nft, whichever the node's kube-proxy uses) or native nftables,
// detected from what is already on the node (see Detect).
//
// Everything runs in the network namespace that was current for the thread
// that called New: netlink and nftables sockets are opened there, and the
// re-check loop locks its own thread into it, since iptables is a program
// whose child process inherits the calling thread's namespace.
package nodenet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"
)

// Backends that Config.Backend names.
const (
	BackendAuto     = "auto"
	BackendIPTables = "iptables"
	BackendNFTables = "nftables"
)

// Config says what to set up.
type Config struct {
	// Listen are the DNS addresses (IP:port) clients use: the interface
	// holds their IPs and the rules match their ports, UDP and TCP.
	Listen []netip.AddrPort
	// Probes are other addresses on the same IPs that kubelet's probes
	// reach from the node (the HTTP endpoints): their TCP traffic skips
	// conntrack in OUTPUT too, as NodeLocal DNSCache does for its health
	// port. Addresses on other IPs are ignored.
	Probes []netip.AddrPort

	// Interface turns the interface on; InterfaceName names the dummy
	// link ("lo" puts the addresses on lo whatever the kernel has).
	Interface     bool
	InterfaceName string
	// Rules turns the rules on; Backend is BackendAuto, BackendIPTables or
	// BackendNFTables.
	Rules   bool
	Backend string
	// Interval is the re-check period; 0: no re-check.
	Interval time.Duration
	// FailOpen makes the rules divert queries to nodedns only while Alive
	// keeps the listen addresses live, and otherwise DNAT them to the
	// fallback targets (SetFallback) or leave them to kube-proxy: see
	// failopen.go. Needs Rules.
	FailOpen bool
	// LiveFor is how long one Alive keeps the addresses live; 0 means
	// DefaultLiveFor. The iptables backends round it up to whole seconds.
	LiveFor time.Duration

	Log        *zap.Logger
	Registerer prometheus.Registerer
}

// Setup is the node's networking for nodedns. Its methods are not safe
// for concurrent use, except that the re-check loop (Start) and the
// metrics may run beside them: Stop ends the loop before Teardown.
type Setup struct {
	cfg     Config
	ns      netns.NsHandle // the namespace everything happens in
	iface   *iface         // nil: no interface
	rules   rules          // nil: no rules
	fo      *failOpen      // nil: no fail-open
	reason  string         // why that backend
	metrics *metrics
	log     *zap.Logger

	mu sync.Mutex // serialises ensure and teardown between the loop and the caller

	// stateMu guards what the last ensures found, for InPlace; apart from
	// mu, so that /ready never waits for an iptables command.
	stateMu            sync.Mutex
	ifaceErr, rulesErr error
	ifaceOK, rulesOK   time.Time // the last check that found (or made) each in place
	rulesSet           bool      // the rules were ensured at least once
	stop               context.CancelFunc
	stopped            chan struct{}
}

// New checks cfg and chooses the rules' backend (detecting it for
// BackendAuto); it changes nothing on the node.
func New(cfg Config) (*Setup, error) {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	ips, err := listenIPs(cfg.Listen)
	if err != nil {
		return nil, err
	}
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("node networking: the current network namespace: %w", err)
	}
	s := &Setup{cfg: cfg, ns: ns, log: cfg.Log.Named("nodenet")}
	if cfg.Interface {
		if err := checkLinkName(cfg.InterfaceName); err != nil {
			ns.Close()
			return nil, err
		}
		s.iface = &iface{name: cfg.InterfaceName, addrs: ips, ns: ns}
	}
	if cfg.FailOpen && !cfg.Rules {
		ns.Close()
		return nil, errors.New("node networking: fail-open needs the rules")
	}
	if cfg.Rules {
		if cfg.FailOpen {
			if cfg.LiveFor <= 0 {
				cfg.LiveFor = DefaultLiveFor
			}
			s.fo = &failOpen{listen: cfg.Listen, liveFor: cfg.LiveFor}
		}
		r, reason, err := newRules(cfg.Backend, ruleSet(cfg.Listen, cfg.Probes, cfg.FailOpen), s.fo, ns)
		if err != nil {
			ns.Close()
			return nil, err
		}
		s.rules, s.reason = r, reason
	}
	s.cfg = cfg
	s.metrics = newMetrics(cfg.Registerer, s.iface != nil, s.rules != nil, s.fo != nil)
	s.setInfo()
	return s, nil
}

// listenIPs are the distinct IPs of the listen addresses that an interface
// must hold: loopback addresses already exist, and a wildcard cannot be
// set up.
func listenIPs(listen []netip.AddrPort) ([]netip.Addr, error) {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, ap := range listen {
		a := ap.Addr().Unmap()
		if a.IsUnspecified() {
			return nil, fmt.Errorf("node networking: listen address %s is a wildcard: give the addresses to set up", ap)
		}
		if a.IsLoopback() || seen[a] {
			continue
		}
		seen[a] = true
		out = append(out, a)
	}
	return out, nil
}

// Backend names the rules' backend in use ("iptables-legacy",
// "iptables-nft", "iptables", "nftables") and why it was chosen; "" when
// the rules are off.
func (s *Setup) Backend() (name, reason string) {
	if s.rules == nil {
		return "", ""
	}
	return s.rules.name(), s.reason
}

// InterfaceMode is "dummy" or "lo" once the interface is set up, "" before
// or when it is off.
func (s *Setup) InterfaceMode() string {
	if s.iface == nil {
		return ""
	}
	return s.iface.mode
}

// EnsureInterface creates the interface and its addresses where they are
// missing. Run it before the DNS listeners bind: they need the addresses.
func (s *Setup) EnsureInterface() error {
	if s.iface == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	_, err := s.ensureInterface(false)
	if err != nil {
		return err
	}
	s.log.Info("interface in place", zap.String("mode", s.iface.mode), zap.String("link", s.iface.link()),
		zap.Stringers("addresses", s.iface.addrs), zap.Duration("took", time.Since(start)))
	if s.iface.fellBack {
		s.log.Warn("the kernel has no dummy link type: the listen addresses are on lo as host routes instead (fallback)",
			zap.String("wanted", s.iface.name))
	}
	return nil
}

// EnsureRules installs the rules that are missing. Run it once the DNS
// listeners serve: in transparent mode the rules send the kube-dns Service
// address's traffic to this node instead of the cluster DNS, so they must
// not come before something answers there (NodeLocal DNSCache waits for
// the same reason).
func (s *Setup) EnsureRules() error {
	if s.rules == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	added, err := s.rules.ensure()
	s.setRulesState(err)
	if err != nil {
		s.metrics.errors.WithLabelValues("rules").Inc()
		return fmt.Errorf("node networking: rules (%s): %w", s.rules.name(), err)
	}
	s.log.Info("rules in place", zap.String("backend", s.rules.name()), zap.String("why", s.reason),
		zap.Int("added", added), zap.Int("rules", s.rules.count()), zap.Duration("took", time.Since(start)))
	return nil
}

// FailOpen reports whether the rules fail open, and the liveness window.
func (s *Setup) FailOpen() (bool, time.Duration) {
	if s.fo == nil {
		return false, 0
	}
	return true, s.fo.liveFor
}

// Alive marks the listen addresses live for LiveFor: until then the rules
// send queries to nodedns; after, to the cluster DNS (failopen.go). Call
// it only on evidence that nodedns answers on every listen address, and
// several times per LiveFor. A no-op without fail-open.
func (s *Setup) Alive() error {
	if s.fo == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.rules.alive(s.fo.liveFor); err != nil {
		s.metrics.errors.WithLabelValues("alive").Inc()
		return fmt.Errorf("node networking: marking the listen addresses live (%s): %w", s.rules.name(), err)
	}
	s.fo.liveUntil = time.Now().Add(s.fo.liveFor)
	return nil
}

// SetFallback gives the fail-open DNAT its targets, the cluster DNS
// endpoints, and puts them in place at once (and at every re-check).
// Loopback and unspecified addresses are dropped: the kernel does not
// DNAT a routed packet there. A no-op without fail-open.
func (s *Setup) SetFallback(targets []netip.AddrPort) error {
	if s.fo == nil {
		return nil
	}
	ts := normTargets(targets)
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Equal(ts, s.fo.targets) {
		return nil
	}
	s.rules.setTargets(ts)
	s.metrics.fallbackTargets.Set(float64(len(ts)))
	_, err := s.rules.ensure()
	s.setRulesState(err)
	if err != nil {
		s.metrics.errors.WithLabelValues("rules").Inc()
		return fmt.Errorf("node networking: fail-open targets (%s): %w", s.rules.name(), err)
	}
	s.log.Info("fail-open targets in place", zap.String("backend", s.rules.name()), zap.String("targets", targetsString(ts)))
	return nil
}

// ensureInterface runs one ensure of the interface, counting what it
// restored when restoring is true.
func (s *Setup) ensureInterface(restoring bool) (restored []string, err error) {
	restored, err = s.iface.ensure()
	s.setInterfaceState(err)
	if err != nil {
		s.metrics.errors.WithLabelValues("interface").Inc()
		return nil, fmt.Errorf("node networking: interface %s: %w", s.iface.link(), err)
	}
	if restoring {
		for _, what := range restored {
			s.metrics.restored.WithLabelValues(what).Inc()
		}
	}
	s.setInfo()
	return restored, nil
}

// Check runs one re-check: whatever is missing is put back, counted in
// nodedns_setup_restored_total and logged.
func (s *Setup) Check() {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	if s.iface != nil {
		restored, err := s.ensureInterface(true)
		if err != nil {
			s.log.Error("re-check: the interface could not be restored", zap.Error(err))
		} else if len(restored) > 0 {
			s.log.Warn("re-check: restored the interface", zap.Strings("restored", restored),
				zap.String("link", s.iface.link()), zap.Duration("took", time.Since(start)))
		}
	}
	if s.rules != nil {
		added, err := s.rules.ensure()
		s.setRulesState(err)
		switch {
		case err != nil:
			s.metrics.errors.WithLabelValues("rules").Inc()
			s.log.Error("re-check: the rules could not be restored", zap.String("backend", s.rules.name()), zap.Error(err))
		case added > 0:
			s.metrics.restored.WithLabelValues("rules").Add(float64(added))
			s.log.Warn("re-check: restored missing rules", zap.String("backend", s.rules.name()),
				zap.Int("added", added), zap.Duration("took", time.Since(start)))
		}
	}
}

// Start runs Check every Interval until Stop (nothing when Interval is 0).
func (s *Setup) Start() {
	if s.cfg.Interval <= 0 || (s.iface == nil && s.rules == nil) {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop, s.stopped = cancel, make(chan struct{})
	go func() {
		defer close(s.stopped)
		// iptables runs as a child process, which inherits this thread's
		// network namespace: keep the thread in the set-up's. The thread
		// is never unlocked, so it ends with the goroutine instead of
		// going back to the pool in another namespace.
		runtime.LockOSThread()
		if cur, err := netns.Get(); err == nil {
			same := cur.Equal(s.ns)
			cur.Close()
			if !same {
				if err := netns.Set(s.ns); err != nil {
					s.log.Error("re-check off: cannot enter the network namespace", zap.Error(err))
					return
				}
			}
		}
		t := time.NewTicker(s.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.Check()
			}
		}
	}()
}

// Stop ends the re-check loop and waits for it.
func (s *Setup) Stop() {
	if s.stop != nil {
		s.stop()
		<-s.stopped
		s.stop = nil
	}
}

// Teardown stops the re-check loop and removes the rules and the interface
// (the dummy link, or the addresses on lo). It goes on after an error and
// returns them all.
func (s *Setup) Teardown() error {
	s.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if s.rules != nil {
		if err := s.rules.remove(); err != nil {
			errs = append(errs, fmt.Errorf("node networking: removing the rules (%s): %w", s.rules.name(), err))
		}
		s.setRulesState(errors.New("removed"))
	}
	if s.iface != nil {
		if err := s.iface.remove(); err != nil {
			errs = append(errs, fmt.Errorf("node networking: removing interface %s: %w", s.iface.link(), err))
		}
		s.setInterfaceState(errors.New("removed"))
	}
	return errors.Join(errs...)
}

// Close stops the re-check loop and releases the namespace handle, leaving
// the set-up in place (--skip-teardown).
func (s *Setup) Close() {
	s.Stop()
	s.ns.Close()
}

// setInfo publishes the interface mode and the backend in
// nodedns_setup_info.
func (s *Setup) setInfo() {
	mode, backend := "off", "off"
	if s.iface != nil {
		mode = s.iface.mode
		if mode == "" {
			mode = "pending"
		}
	}
	if s.rules != nil {
		backend = s.rules.name()
	}
	s.metrics.mode.Reset()
	s.metrics.mode.WithLabelValues(mode, backend).Set(1)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (s *Setup) setRulesState(err error) {
	s.metrics.rulesInPlace.Set(b2f(err == nil))
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.rulesSet = true
	s.rulesErr = err
	if err == nil {
		s.rulesOK = time.Now()
	}
}

func (s *Setup) setInterfaceState(err error) {
	s.metrics.interfaceInPlace.Set(b2f(err == nil))
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.ifaceErr = err
	if err == nil {
		s.ifaceOK = time.Now()
	}
}

// inPlaceGrace is how long a part of the set-up may fail its checks before
// InPlace says so: a check that cannot run (iptables waiting for the
// xtables lock while kube-proxy syncs) proves nothing missing, and each
// check restores what is.
func (s *Setup) inPlaceGrace() time.Duration { return max(3*s.cfg.Interval, 10*time.Second) }

// InPlace is nil when every part of the set-up is in place, as its checks
// found: the rules never installed yet, or a part failing its checks for
// longer than a few re-check periods, is an error.
func (s *Setup) InPlace() error {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	var errs []error
	grace := s.inPlaceGrace()
	if s.iface != nil && s.ifaceErr != nil && time.Since(s.ifaceOK) > grace {
		errs = append(errs, fmt.Errorf("node networking: interface not in place: %w", s.ifaceErr))
	}
	if s.rules != nil {
		switch {
		case !s.rulesSet || s.rulesOK.IsZero():
			errs = append(errs, errors.New("node networking: rules not installed yet"))
		case s.rulesErr != nil && time.Since(s.rulesOK) > grace:
			errs = append(errs, fmt.Errorf("node networking: rules not in place: %w", s.rulesErr))
		}
	}
	return errors.Join(errs...)
}
