package app_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/discovery/dnstest"
	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// TestReadyzNotHostageToOnePool replays the reload: a pool whose
// DNS is dead is added (as a route of a serving listener and as the only
// pool of a new listener). /readyz stays 200 since that pool never had a
// backend, while /readyz?pool= of that pool is 503. A listener whose every
// pool had backends and lost them does take the instance out.
func TestReadyzNotHostageToOnePool(t *testing.T) {
	ok := testkit.StartBackend(t, "ok")
	dead := dnstest.Start(t)
	dead.SetFaults(dnstest.Servfail)
	base := fmt.Sprintf(`
resolvers:
  - { name: dead, servers: [%q], timeout: 200ms, attempts: 1 }
listeners:
  - name: web
    listen: 127.0.0.1:0
    pool: main
%%s
pools:
  - { name: main, health: { type: none }, backends: [%q] }
%%s`, dead.Addr, ok.Addr)
	a := testkit.StartApp(t, fmt.Sprintf(base, "", ""))
	waitReady(t, a)
	expect := func(t *testing.T, path string, code int, body string) {
		t.Helper()
		if c, b := adminGet(t, a, path); c != code || !strings.Contains(b, body) {
			t.Errorf("%s = %d %q, want %d containing %q", path, c, b, code, body)
		}
	}
	expect(t, "/readyz", 200, "ready")
	expect(t, "/readyz?pool=main", 200, "ready")
	expect(t, "/readyz?pool=nope", 404, "unknown pool")

	reload := func(t *testing.T, listeners, pools string) string {
		t.Helper()
		if err := os.WriteFile(a.Path, []byte("admin: { listen: "+a.AdminAddr().String()+" }\n"+fmt.Sprintf(base, listeners, pools)), 0o600); err != nil {
			t.Fatal(err)
		}
		code, body := adminDo(t, a.App, "POST", "/reload", "")
		if code != 200 {
			t.Fatalf("POST /reload: %d %q", code, body)
		}
		return body
	}
	t.Run("a pool added with dead DNS does not take the instance out", func(t *testing.T) {
		answer := reload(t, `    routes: [{ path_prefix: /new/, pool: fresh }]
  - { name: other, listen: 127.0.0.1:0, pool: fresh }`,
			`  - name: fresh
    health: { type: none }
    discovery: { type: a, name: fresh.holdfast.test., port: 80, resolver: dead, min_refresh: 100ms, max_refresh: 200ms }
`)
		testkit.WaitFor(t, 5*time.Second, "a failed lookup of pool fresh", func() bool {
			d := a.Pool("fresh").Status().Discovery
			return d != nil && d.LastResult != "" && d.LastResult != "ok"
		})
		if !strings.Contains(answer, `warning: pool "fresh" has no backend yet`) || strings.Contains(answer, `pool "main" has no`) {
			t.Errorf("reload answer does not name (only) the empty pool:\n%s", answer)
		}
		expect(t, "/readyz", 200, "ready")
		expect(t, "/readyz?pool=fresh", 503, `pool "fresh" has never had a backend`)
		expect(t, "/readyz?pool=main", 200, "ready")
	})
	t.Run("a listener whose only pool lost every backend takes it out", func(t *testing.T) {
		answer := reload(t, `  - { name: solo, listen: 127.0.0.1:0, pool: gone }`,
			fmt.Sprintf(`  - name: gone
    panic_threshold: "0%%"
    health: { type: tcp, interval: 20ms, timeout: 200ms, rise: 1, fall: 1 }
    backends: [%q]
`, testkit.FreeAddr(t)))
		testkit.WaitFor(t, 5*time.Second, "pool gone checked down", func() bool {
			return a.Pool("gone").HadBackend() && !a.Pool("gone").Ready()
		})
		if strings.Contains(answer, `pool "gone" has no backend yet`) {
			t.Errorf("reload answer calls a pool with a static backend empty:\n%s", answer)
		}
		expect(t, "/readyz", 503, `listener "solo": no pool behind it can route (gone)`)
		expect(t, "/readyz?pool=gone", 503, `pool "gone" has no routable backend`)
		expect(t, "/readyz?pool=main", 200, "ready")
	})
}

// TestReadyzNoPoolEverHadBackend: an instance whose only pool never had a
// backend serves nothing, so it is not ready.
func TestReadyzNoPoolEverHadBackend(t *testing.T) {
	dead := dnstest.Start(t)
	dead.SetFaults(dnstest.Servfail)
	a := testkit.StartApp(t, fmt.Sprintf(`
resolvers:
  - { name: dead, servers: [%q], timeout: 200ms, attempts: 1 }
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: fresh }
pools:
  - name: fresh
    health: { type: none }
    discovery: { type: a, name: fresh.holdfast.test., port: 80, resolver: dead }
`, dead.Addr))
	if c, b := adminGet(t, a, "/readyz"); c != 503 || !strings.Contains(b, "no pool has had a backend yet") {
		t.Errorf("/readyz = %d %q, want 503 naming no pool with a backend", c, b)
	}
}
