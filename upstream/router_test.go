package upstream

import (
	"strings"
	"testing"
)

func TestRouterRoute(t *testing.T) {
	mk := func(name string, zones ...string) *Group {
		return mustGroup(t, GroupConfig{Name: name, Zones: zones, Addrs: []string{"127.0.0.1:1"}}, nil, nil)
	}
	def := mk("default", ".")
	cluster := mk("cluster", "cluster.local.", "in-addr.arpa")
	svc := mk("svc", "svc.Cluster.Local.")
	corp := mk("corp", "corp.example.")
	r, err := NewRouter([]*Group{def, cluster, svc, corp})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		qname string
		want  *Group
	}{
		{"kubernetes.default.svc.cluster.local.", svc},
		{"KUBERNETES.DEFAULT.SVC.CLUSTER.LOCAL.", svc},
		{"svc.cluster.local.", svc},
		{"pod.ns.pod.cluster.local.", cluster},
		{"cluster.local.", cluster},
		{"cluster.local", cluster}, // not fully qualified
		{"xcluster.local.", def},   // suffix match is on label boundaries
		{"local.", def},
		{"10.0.96.10.in-addr.arpa.", cluster},
		{"www.corp.example.", corp},
		{"example.", def},
		{"example.org.", def},
		{".", def},
		{"", def},
		// An escaped dot is not a label boundary: "a\.cluster" is one label.
		{`a\.cluster.local.`, def},
		{`x.svc\.cluster.local.`, def},
		{`a\.b.svc.cluster.local.`, svc},
	}
	for _, tt := range tests {
		if got := r.Route(tt.qname); got != tt.want {
			t.Errorf("Route(%q) = %q, want %q", tt.qname, got.Name(), tt.want.Name())
		}
	}
	if gs := r.Groups(); len(gs) != 4 || gs[0] != def || gs[3] != corp {
		t.Errorf("Groups() = %v", gs)
	}
}

func TestNewRouterValidation(t *testing.T) {
	mk := func(name string, zones ...string) *Group {
		return mustGroup(t, GroupConfig{Name: name, Zones: zones, Addrs: []string{"127.0.0.1:1"}}, nil, nil)
	}
	tests := []struct {
		name    string
		groups  []*Group
		wantErr string
	}{
		{"no groups", nil, "no groups"},
		{"nil group", []*Group{mk("a", "."), nil}, "groups[1] is nil"},
		{"no default", []*Group{mk("a", "cluster.local.")}, `no group serves the root zone "."`},
		{"duplicate zone", []*Group{mk("a", "."), mk("b", "Cluster.Local"), mk("c", "cluster.local.")}, `zone "cluster.local." is claimed by both group "b" and group "c"`},
		{"two defaults", []*Group{mk("a", "."), mk("b", ".")}, `zone "." is claimed`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewRouter(tt.groups)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}
