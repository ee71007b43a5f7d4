package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
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
	// FailOpen sends queries to the cluster DNS whenever nodedns does not
	// serve (with the rules only); FailOpenAfter is how long after its
	// last proof of life.
	FailOpen      *bool  `json:"fail_open,omitempty"`
	FailOpenAfter string `json:"fail_open_after,omitempty"`
}

func applySetup(c *Config, f SetupFile) error {
	setBool(&c.SetupInterface, f.Interface)
	setBool(&c.SetupRules, f.Rules)
	setBool(&c.SkipTeardown, f.SkipTeardown)
	setBool(&c.FailOpen, f.FailOpen)
	setStr(&c.InterfaceName, f.InterfaceName)
	setStr(&c.SetupRulesBackend, f.RulesBackend)
	if f.Interval != "" {
		d, err := parseDuration(f.Interval)
		if err != nil {
			return fieldErr("setup.interval", err)
		}
		c.SetupInterval = d
	}
	if f.FailOpenAfter != "" {
		d, err := parseDuration(f.FailOpenAfter)
		if err != nil {
			return fieldErr("setup.fail_open_after", err)
		}
		c.FailOpenAfter = d
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
	if c.FailOpenAfter < 500*time.Millisecond || c.FailOpenAfter > time.Minute {
		return fmt.Errorf("setup.fail_open_after: %v is not between 500ms and 1m", c.FailOpenAfter)
	}
	if !c.SetupInterface && !c.SetupRules {
		return nil
	}
	for _, l := range c.Server.Listen {
		if ap, err := netip.ParseAddrPort(l); err == nil && ap.Addr().IsUnspecified() {
			return fmt.Errorf("listen: %s is a wildcard: setup.interface and setup.rules need the addresses to set up", l)
		}
	}
	return nil
}
