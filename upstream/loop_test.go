package upstream

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// A loop is recorded only for a probe of the current round coming back
// from one of the group's servers: a client asking a name of that shape,
// or an old round's probe, proves nothing.
func TestOnlyTheCurrentProbeFromAServerMarksALoop(t *testing.T) {
	var mu sync.Mutex
	var names []string
	srv := startServer(t, true, false, func(s *testServer, w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Qtype == dns.TypeHINFO {
			mu.Lock()
			names = append(names, r.Question[0].Name)
			mu.Unlock()
		}
		answer(s, w, r)
	})
	probes := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), names...)
	}
	g, err := NewGroup(GroupConfig{Name: "default", Zones: []string{"."}, Addrs: []string{srv.addr}, LoopToken: "nltoken"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	r, err := NewRouter([]*Group{g})
	if err != nil {
		t.Fatal(err)
	}
	g.checkLoop(context.Background())
	sent := probes()
	if len(sent) != 1 || !IsLoopProbe(sent[0], "nltoken") {
		t.Fatalf("probes sent: %v", sent)
	}
	server := netip.MustParseAddrPort(srv.addr).Addr()
	pod := netip.MustParseAddr("10.244.1.7")
	forged := "nltoken-00000000.nodedns-loop.invalid."
	if r.IsLoopProbe(forged, "nltoken", server) || r.IsLoopProbe(sent[0], "nltoken", pod) {
		t.Error("a forged name, or the probe from a client, was taken for the loop")
	}
	if g.Looping() {
		t.Fatal("the group loops after forged probes")
	}
	old := sent[0]
	g.checkLoop(context.Background()) // a new round
	sent = probes()
	if r.IsLoopProbe(old, "nltoken", server) {
		t.Error("the last round's probe was taken for the loop")
	}
	if !r.IsLoopProbe(strings.ToUpper(sent[1]), "nltoken", server) || !g.Looping() {
		t.Error("the current probe, back from the server, does not mark the loop")
	}
}
