package config

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestSetupSettings(t *testing.T) {
	withResolvConf(t, "nameserver 192.0.2.53\n")
	c, err := Parse([]string{"--listen", "169.254.20.10:53"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.SetupInterface || c.SetupRules || c.SkipTeardown || c.InterfaceName != "nodedns0" ||
		c.SetupRulesBackend != "auto" || c.SetupInterval != 10*time.Second {
		t.Errorf("defaults: %+v", c)
	}
	file := writeConfig(t, "setup:\n  interface: true\n  interface_name: lo\n  rules: true\n  rules_backend: nftables\n  interval: 2s\n  skip_teardown: true\n")
	c, err = Parse([]string{"--config", file, "--listen", "169.254.20.10:53,10.96.0.10:53", "--setup-interval", "0s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.SetupInterface || !c.SetupRules || !c.SkipTeardown || c.InterfaceName != "lo" ||
		c.SetupRulesBackend != "nftables" || c.SetupInterval != 0 {
		t.Errorf("from the file and flags: %+v", c)
	}
	c, err = Parse([]string{"--listen", "169.254.20.10:53", "--setup-interface", "--setup-rules", "--setup-rules-backend", "iptables",
		"--interface-name", "nodelocaldns", "--skip-teardown"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.SetupInterface || !c.SetupRules || !c.SkipTeardown || c.InterfaceName != "nodelocaldns" || c.SetupRulesBackend != "iptables" {
		t.Errorf("from flags: %+v", c)
	}
	// skip_teardown is read at shutdown: a reload changes it.
	if live, restart := Diff(Config{}, Config{SkipTeardown: true}); len(live) != 1 || live[0] != "setup.skip_teardown" || len(restart) != 0 {
		t.Errorf("Diff: live %v, restart %v", live, restart)
	}
}

func TestSetupErrorsNameTheField(t *testing.T) {
	withResolvConf(t, "nameserver 192.0.2.53\n")
	for _, tc := range []struct {
		name string
		args []string
		file string
		want string
	}{
		{"backend flag", []string{"--setup-rules-backend", "ipchains"}, "", "setup.rules_backend"},
		{"backend key", nil, "setup:\n  rules_backend: pf\n", "setup.rules_backend"},
		{"interval", nil, "setup:\n  interval: often\n", "setup.interval"},
		{"interval flag", []string{"--setup-interval", "-1s"}, "", "flag --setup-interval"},
		{"bool flag", []string{"--setup-rules=maybe"}, "", "flag --setup-rules"},
		{"link name", []string{"--interface-name", "a/b"}, "", "setup.interface_name"},
		{"link name too long", nil, "setup:\n  interface_name: nodedns-interface0\n", "setup.interface_name"},
		{"wildcard with the interface", []string{"--listen", "0.0.0.0:53", "--setup-interface"}, "", "listen"},
		{"wildcard with the rules", []string{"--listen", "[::]:53", "--setup-rules"}, "", "listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append(args, "--config", writeConfig(t, tc.file))
			}
			_, err := Parse(args, io.Discard)
			if err == nil {
				t.Fatal("no error")
			}
			if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line naming %q", msg, tc.want)
			}
		})
	}
	// A wildcard is fine when nothing is set up.
	if _, err := Parse([]string{"--listen", "0.0.0.0:5353"}, io.Discard); err != nil {
		t.Error(err)
	}
}
