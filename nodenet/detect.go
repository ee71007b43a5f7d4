package nodenet

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/google/nftables"
	"github.com/vishvananda/netns"
)

// The iptables flavours: which command (and so which kernel interface)
// the rules go through.
const (
	flavourLegacy  = "iptables-legacy" // the x_tables interface
	flavourNFT     = "iptables-nft"    // iptables rules in nf_tables tables
	flavourDefault = "iptables"        // whatever the node's iptables command is
)

// signals are what the node shows about who manages its packet filter.
type signals struct {
	nft          bool  // the kernel answers nf_tables requests
	nftErr       error // why not
	kubeProxyNFT bool  // a table named kube-proxy: kube-proxy in nftables mode (Kubernetes 1.31+)
	nftKube      int   // KUBE-* chains in ip and ip6 tables: kube-proxy (or kubelet) through iptables-nft
	legacyKube   int   // KUBE-* chains that iptables-legacy lists
	commands     map[string]bool
}

// gather reads the signals in namespace ns. iptables-legacy is asked only
// when nf_tables shows no sign of kube-proxy and the namespace has legacy
// tables already: listing a legacy table creates it, and once any exists
// every iptables-nft command warns "iptables-legacy tables present".
func gather(ns netns.NsHandle) signals {
	s := signals{commands: map[string]bool{}}
	for _, c := range []string{flavourDefault, flavourLegacy, flavourNFT} {
		if _, err := exec.LookPath(c); err == nil {
			s.commands[c] = true
		}
	}
	conn, err := nftConn(ns)
	if err == nil {
		var tables []*nftables.Table
		if tables, err = conn.ListTables(); err == nil {
			s.nft = true
			for _, t := range tables {
				if t.Name == "kube-proxy" {
					s.kubeProxyNFT = true
				}
			}
			chains, _ := conn.ListChains()
			for _, c := range chains {
				fam := c.Table.Family
				if (fam == nftables.TableFamilyIPv4 || fam == nftables.TableFamilyIPv6) && strings.HasPrefix(c.Name, "KUBE-") {
					s.nftKube++
				}
			}
		}
		_ = conn.CloseLasting()
	}
	s.nftErr = err
	if !s.kubeProxyNFT && s.nftKube == 0 && s.commands[flavourLegacy] && legacyTablesExist() {
		if ipt, err := iptables.New(iptables.Path(flavourLegacy), iptables.Timeout(lockWait)); err == nil {
			for _, table := range []string{"mangle", "nat", "filter"} {
				chains, _ := ipt.ListChains(table)
				for _, c := range chains {
					if strings.HasPrefix(c, "KUBE-") {
						s.legacyKube++
					}
				}
			}
		}
	}
	return s
}

// choose picks the backend for the setting backend (auto, iptables,
// nftables) from the signals, and says why:
//
//  1. a kube-proxy table in nf_tables: kube-proxy runs in nftables mode,
//     so native nftables;
//  2. KUBE-* chains (kube-proxy's iptables mode, or kubelet's canaries):
//     iptables, through the flavour that holds more of them (legacy or
//     nft, as Kubernetes' iptables-wrapper decides);
//  3. neither (no kube-proxy, or one that needs no rules such as Cilium's
//     replacement): native nftables if the kernel has it, since it needs
//     no iptables command in the image; else iptables.
func choose(backend string, s signals) (flavour, reason string, err error) {
	switch backend {
	case BackendNFTables:
		if !s.nft {
			return "", "", fmt.Errorf("the kernel does not answer nf_tables requests: %v", s.nftErr)
		}
		return BackendNFTables, "set in the configuration", nil
	case BackendIPTables:
		f, why := iptablesFlavour(s)
		if f == "" {
			return "", "", errors.New("no iptables command found (iptables, iptables-legacy or iptables-nft)")
		}
		return f, "set in the configuration; " + why, nil
	case BackendAuto:
		switch f, why := iptablesFlavour(s); {
		case s.kubeProxyNFT:
			return BackendNFTables, "kube-proxy runs in nftables mode (a kube-proxy table exists)", nil
		case s.legacyKube+s.nftKube > 0 && f != "":
			return f, "kube-proxy runs in iptables mode: " + why, nil
		case s.legacyKube+s.nftKube > 0 && s.nft:
			// An image without iptables programs: NOTRACK in nftables works
			// beside iptables rules (both hook the same packets), only the
			// ACCEPTs are not installed.
			return BackendNFTables, "kube-proxy runs in iptables mode but no iptables command is here; nftables (NOTRACK only)", nil
		case s.nft:
			return BackendNFTables, "no kube-proxy rules on the node; the kernel has nf_tables", nil
		case f != "":
			return f, fmt.Sprintf("no kube-proxy rules on the node and no nf_tables (%v); %s", s.nftErr, why), nil
		}
		return "", "", fmt.Errorf("neither nf_tables (%v) nor an iptables command is available", s.nftErr)
	}
	return "", "", fmt.Errorf("%q is not auto, iptables or nftables", backend)
}

// iptablesFlavour is the iptables command to use and why.
func iptablesFlavour(s signals) (string, string) {
	switch {
	case s.legacyKube > s.nftKube && s.commands[flavourLegacy]:
		return flavourLegacy, fmt.Sprintf("its KUBE-* chains are in iptables-legacy (%d, against %d in iptables-nft)", s.legacyKube, s.nftKube)
	case s.nftKube > 0 && s.commands[flavourNFT]:
		return flavourNFT, fmt.Sprintf("its KUBE-* chains are in iptables-nft (%d, against %d in iptables-legacy)", s.nftKube, s.legacyKube)
	case s.commands[flavourDefault]:
		return flavourDefault, "the node's iptables command (no KUBE-* chains tell which flavour)"
	case s.commands[flavourNFT]:
		return flavourNFT, "iptables-nft, the only iptables command found"
	case s.commands[flavourLegacy]:
		return flavourLegacy, "iptables-legacy, the only iptables command found"
	}
	return "", ""
}

// legacyTablesExist reports whether the calling thread's network namespace
// has an x_tables (iptables-legacy) table, without creating one.
func legacyTablesExist() bool {
	b, err := os.ReadFile("/proc/thread-self/net/ip_tables_names")
	return err == nil && len(strings.TrimSpace(string(b))) > 0
}
