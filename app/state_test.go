package app_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/discovery/dnstest"
	"github.com/holdfast-lb/holdfast/internal/testkit"
	"github.com/holdfast-lb/holdfast/state"
)

// TestRestartIntoServfailWithStateFile replays issue 14's restart: a
// DNS-discovered pool, holdfast restarted while every DNS answer is
// SERVFAIL. With a state file the new process serves the saved set at once
// (stale): 0 failed requests, every backend reached. A drained backend stays
// drained across the restart.
func TestRestartIntoServfailWithStateFile(t *testing.T) {
	const name = "_http._tcp.api.holdfast.test."
	dnsSrv := dnstest.Start(t)
	var bes []*servedBackend
	for i := range 4 {
		bes = append(bes, startServedBackend(t, fmt.Sprintf("srv%d", i)))
	}
	dnsSrv.Add(srvRecords(name, bes)...)
	statePath := filepath.Join(t.TempDir(), "state.json")
	yaml := fmt.Sprintf(`
state_file: %q
resolvers:
  - { name: r, servers: [%q], timeout: 200ms, attempts: 1 }
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: api }
pools:
  - name: api
    health: { type: none }
    discovery: { type: srv, name: %s, resolver: r, min_refresh: 100ms, max_refresh: 200ms }
`, statePath, dnsSrv.Addr, name)

	first := testkit.StartApp(t, yaml)
	testkit.WaitFor(t, 10*time.Second, "four SRV backends routable", func() bool { return first.Pool("api").Routable() == 4 })
	if code, body := adminDo(t, first.App, "POST", "/backends/api/"+bes[3].Addr+"/drain", ""); code != 200 {
		t.Fatalf("drain: %d %q", code, body)
	}
	testkit.WaitFor(t, 5*time.Second, "state file with four backends and the drain", func() bool {
		f, err := state.Read(statePath)
		return err == nil && len(f.Pools["api"].Set) == 4 && f.Overrides["api"][bes[3].Addr].Drain
	})
	stop(t, first)

	dnsSrv.SetFaults(dnstest.Servfail)
	second := testkit.StartApp(t, yaml)
	url := second.URL("web", "/")
	before := make([]int64, len(bes))
	for i, b := range bes {
		before[i] = b.served.Load()
	}
	failed := 0
	for range 200 {
		if code, _, err := testkit.Get(url); err != nil || code != 200 {
			failed++
		}
	}
	if failed != 0 {
		t.Errorf("%d of 200 requests failed after the restart into SERVFAIL, want 0", failed)
	}
	for i, b := range bes[:3] {
		if b.served.Load() == before[i] {
			t.Errorf("backend %s not reached after the restart", b.Addr)
		}
	}
	if n := bes[3].served.Load() - before[3]; n != 0 {
		t.Errorf("the drained backend served %d requests after the restart, want 0", n)
	}
	testkit.WaitFor(t, 5*time.Second, "a failed lookup after the restart", func() bool {
		d := second.Pool("api").Status().Discovery
		return d != nil && d.LastResult != "" && d.LastResult != "ok"
	})
	if st := second.Pool("api").Status().Discovery; !st.Stale {
		t.Errorf("discovery not stale while serving the saved set through SERVFAIL: %+v", st)
	}
	if v := testkit.Metric(t, second.Registry(), "holdfast_discovery_stale", map[string]string{"pool": "api"}); v != 1 {
		t.Errorf("holdfast_discovery_stale %v, want 1", v)
	}
}

// TestStateFileCorruptIsIgnored: a corrupt or foreign state file is logged
// and ignored; holdfast starts from its config, and the file is replaced.
func TestStateFileCorruptIsIgnored(t *testing.T) {
	for _, c := range []struct{ name, content string }{
		{"garbage", "\x00\x01 not json"},
		{"foreign version", `{"version": 99, "pools": {}}`},
		{"truncated", `{"version": 1, "pools": {"api": {"set": [`},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := testkit.StartBackend(t, "b")
			statePath := filepath.Join(t.TempDir(), "state.json")
			if err := os.WriteFile(statePath, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			a := testkit.StartApp(t, fmt.Sprintf(`
state_file: %q
listeners: [{ name: web, listen: 127.0.0.1:0, pool: api }]
pools: [{ name: api, health: { type: none }, backends: [%q] }]
`, statePath, b.Addr))
			if code, _, err := testkit.Get(a.URL("web", "/")); err != nil || code != 200 {
				t.Fatalf("GET: %d %v", code, err)
			}
			testkit.WaitFor(t, 5*time.Second, "the file replaced by a good one", func() bool {
				_, err := state.Read(statePath)
				return err == nil
			})
		})
	}
}

func stop(t *testing.T, a *testkit.App) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.Shutdown(ctx)
}

// TestStateFileKeepsHoldAndDoesNotResurrect: a backend saved as held down
// stays held after a restart (no traffic, state held_down) even though its
// checks pass, and a backend the file knows but the config no longer has
// is not resurrected, neither in a static pool nor through a set saved
// for another discovery name.
func TestStateFileKeepsHoldAndDoesNotResurrect(t *testing.T) {
	good, held := startServedBackend(t, "good"), startServedBackend(t, "held")
	statePath := filepath.Join(t.TempDir(), "state.json")
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	f := &state.File{Pools: map[string]state.Pool{
		"api": {Health: map[string]state.Health{
			held.Addr:        {ChecksPassing: true, HeldUntil: until, HoldFor: "1h0m0s", HoldLevel: 1, HoldReason: "flapping: held before"},
			"127.0.0.1:9":    {ChecksPassing: true},
			"10.255.0.1:443": {ChecksPassing: false},
		}},
		"dns": {Source: "dns|srv|_other._tcp.test.|0", Set: []state.Backend{{Address: "127.0.0.1:9", Weight: 1}}},
	}}
	if err := state.Write(statePath, f); err != nil {
		t.Fatal(err)
	}
	dnsSrv := dnstest.Start(t)
	dnsSrv.SetFaults(dnstest.Servfail)
	a := testkit.StartApp(t, fmt.Sprintf(`
state_file: %q
resolvers:
  - { name: r, servers: [%q], timeout: 200ms, attempts: 1 }
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: api }
pools:
  - name: api
    health: { type: http, path: /healthz, interval: 100ms, timeout: 500ms, rise: 1, fall: 1,
      flap: { window: 10s, max_transitions: 3, hold: 1s, max_hold: 2h } }
    backends: [%q, %q]
  - name: dns
    health: { type: none }
    discovery: { type: srv, name: _http._tcp.dns.holdfast.test., resolver: r }
`, statePath, dnsSrv.Addr, good.Addr, held.Addr))
	waitReady(t, a)
	if st := stateOf(a, "api", held.Addr); st != "held_down" {
		t.Fatalf("restored backend state %q, want held_down", st)
	}
	before := held.served.Load()
	for range 50 {
		if code, _, err := testkit.Get(a.URL("web", "/")); err != nil || code != 200 {
			t.Fatalf("GET: %d %v", code, err)
		}
	}
	if n := held.served.Load() - before; n != 0 {
		t.Errorf("the held-down backend served %d requests, want 0", n)
	}
	if len(a.Pool("api").Endpoints()) != 2 {
		t.Errorf("pool api has %d endpoints, want the 2 of the config", len(a.Pool("api").Endpoints()))
	}
	if n := len(a.Pool("dns").Endpoints()); n != 0 {
		t.Errorf("pool dns has %d endpoints from a set saved for another name, want 0", n)
	}
}
