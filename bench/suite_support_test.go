package bench

import (
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodedns/nodedns/internal/testutil"
)

// sourceServer answers A queries over UDP and records the source addresses
// it saw.
func sourceServer(t *testing.T) (addr string, sources func() []string) {
	t.Helper()
	var mu sync.Mutex
	seen := map[string]bool{}
	u := testutil.StartUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if from, ok := w.RemoteAddr().(*net.UDPAddr); ok {
			mu.Lock()
			seen[from.IP.String()] = true
			mu.Unlock()
		}
		m := new(dns.Msg)
		m.SetReply(r)
		_ = w.WriteMsg(m)
	})
	return u.Addr, func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for k := range seen {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
}

func TestRunSources(t *testing.T) {
	addr, sources := sourceServer(t)
	r := mustRun(t, Config{
		Server: addr, Names: 10, Count: 100, Concurrency: 4, Sockets: 4,
		Sources: []string{"127.0.0.2", "127.0.0.3"},
	})
	if r.Answered != 100 {
		t.Fatalf("answered %d of 100", r.Answered)
	}
	if got := sources(); len(got) != 2 || got[0] != "127.0.0.2" || got[1] != "127.0.0.3" {
		t.Errorf("server saw sources %v, want 127.0.0.2 and 127.0.0.3", got)
	}
	// ndots workers bind too.
	mustRun(t, Config{
		Server: addr, NdotsNames: []Query{{Name: "a.b"}}, Count: 4, Concurrency: 2,
		Sources: []string{"127.0.0.4", "127.0.0.5"},
	})
	if got := sources(); len(got) != 4 {
		t.Errorf("server saw sources %v, want 4", got)
	}
	_, err := Run(t.Context(), Config{Server: addr, Names: 1, Count: 1, Sources: []string{"192.0.2.1"}})
	if err == nil {
		t.Error("a non-loopback source was accepted")
	}
	if err := (&Config{Sources: []string{"nope"}}).CheckSources(); err == nil {
		t.Error("a bad source was accepted")
	}
}

func TestRunCurve(t *testing.T) {
	addr, _ := sourceServer(t)
	r := mustRun(t, Config{Server: addr, Names: 10, Count: 500, Concurrency: 4, Curve: true})
	if len(r.Curve) != len(CurvePercentiles) {
		t.Fatalf("curve has %d points, want %d", len(r.Curve), len(CurvePercentiles))
	}
	for i := 1; i < len(r.Curve); i++ {
		if r.Curve[i].Ms < r.Curve[i-1].Ms || r.Curve[i].Percentile <= r.Curve[i-1].Percentile {
			t.Errorf("curve not increasing at %d: %+v", i, r.Curve)
		}
	}
	if r.Curve[len(r.Curve)-1].Ms != r.Latency.Max && r.Curve[len(r.Curve)-1].Ms > r.Latency.Max {
		t.Errorf("curve max %v > report max %v", r.Curve[len(r.Curve)-1].Ms, r.Latency.Max)
	}
	if r2 := mustRun(t, Config{Server: addr, Names: 10, Count: 10, Concurrency: 1}); r2.Curve != nil {
		t.Error("curve without Config.Curve")
	}
}

// LookupRate paces ndots lookups: far fewer than the server could take.
func TestRunNdotsLookupRate(t *testing.T) {
	addr, _ := sourceServer(t)
	r := mustRun(t, Config{
		Server: addr, NdotsNames: []Query{{Name: "a.b"}}, Concurrency: 4,
		LookupRate: 40, Duration: 500 * time.Millisecond, Curve: true,
	})
	if l := r.Lookups; l == nil || l.Lookups == 0 || l.Lookups > 30 {
		t.Errorf("lookups %+v: want about 20 at 40/s for 0.5 s", r.Lookups)
	}
	if r.Lookups != nil && len(r.Lookups.Curve) == 0 {
		t.Error("no lookup latency curve")
	}
	if _, err := Run(t.Context(), Config{Server: addr, Names: 1, LookupRate: 5}); err == nil {
		t.Error("LookupRate accepted outside ndots mode")
	}
}
