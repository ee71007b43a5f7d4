package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// SetupFile is the `setup` section: the node's networking that nodedns
// makes and keeps (package nodenet): the interface holding the listen
// addresses and the rules that keep DNS out of conntrack.
type SetupFile struct {
	Interface     *bool  `json:"interface,omitempty"`
	InterfaceName string `json:"interface_name,omitempty"`
	Rules         *bool  `json:"rules,omitempty"`
	// RulesBackend is "auto", "iptables" or "nftables".
	RulesBackend string `json:"rules_backend,omitempty"`
	Interval     string `json:"interval,omitempty"`
	SkipTeardown *bool  `json:"skip_teardown,omitempty"`
}

func applySetup(c *Config, f SetupFile) error {
	setBool(&c.SetupInterface, f.Interface)
	setBool(&c.SetupRules, f.Rules)
	setBool(&c.SkipTeardown, f.SkipTeardown)
	setStr(&c.InterfaceName, f.InterfaceName)
	setStr(&c.SetupRulesBackend, f.RulesBackend)
	if f.Interval != "" {
		d, err := parseDuration(f.Interval)
		if err != nil {
			return fieldErr("setup.interval", err)
		}
		c.SetupInterval = d
	}
	return nil
}

func setBool(dst *bool, v *bool) {
	if v != nil {
		*dst = *v
	}
}

// boolFlag sets a boolean from a flag (--name alone is true).
func boolFlag(dst func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not a boolean", v)
		}
		*dst(c) = b
		return nil
	}
}

// validateSetup checks the `setup` section.
func validateSetup(c *Config) error {
	switch c.SetupRulesBackend {
	case "auto", "iptables", "nftables":
	default:
		return fmt.Errorf("setup.rules_backend: %q is not auto, iptables or nftables", c.SetupRulesBackend)
	}
	if n := c.InterfaceName; n == "" || len(n) > 15 || n == "." || n == ".." || strings.ContainsAny(n, "/: \t\n") {
		return fmt.Errorf("setup.interface_name: %q is not a link name (1 to 15 characters, no '/', ':' or spaces)", n)
	}
	if !c.SetupInterface && !c.SetupRules {
		return nil
	}
	for _, l := range c.Listen {
		if ap, err := netip.ParseAddrPort(l); err == nil && ap.Addr().IsUnspecified() {
			return fmt.Errorf("listen: %s is a wildcard: setup.interface and setup.rules need the addresses to set up", l)
		}
	}
	return nil
}
