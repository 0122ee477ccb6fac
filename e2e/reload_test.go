package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// TestReloadsUnderLoad: under steady load, ten reloads through POST
// /reload alternate invalid and valid configs. The valid ones move
// backends between pools, replace a routed pool and add or remove a
// listener; the invalid ones (each broken in a different way, one only
// at bind time) are refused with 400 and change nothing. No request
// fails, and after each refusal the previous config still serves.
func TestReloadsUnderLoad(t *testing.T) {
	b := map[string]*testkit.Backend{}
	for _, n := range []string{"b1", "b2", "b3", "b4"} {
		b[n] = testkit.StartBackend(t, n)
	}
	// An address in use, for the config that fails only when binding.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	// Each valid config: the backends of the default pool, and which
	// backend answers /x/.
	type valid struct {
		yaml  string
		api   []string
		x     string
		side  bool
		pools string
	}
	v1 := valid{yaml: fmt.Sprintf(`
listeners:
  - name: web
    listen: 127.0.0.1:0
    pool: api
    routes:
      - { path_prefix: "/x/", pool: xa }
  - { name: side, listen: 127.0.0.1:0, pool: xa }
pools:
  - { name: api, backends: [%s, %s] }
  - { name: xa, backends: [%s] }
`, b["b1"].Addr, b["b2"].Addr, b["b3"].Addr), api: []string{"b1", "b2"}, x: "b3", side: true, pools: "api, xa"}
	v2 := valid{yaml: fmt.Sprintf(`
listeners:
  - name: web
    listen: 127.0.0.1:0
    pool: api
    routes:
      - { path_prefix: "/x/", pool: xb }
pools:
  - { name: api, backends: [%s, %s], balance: least_conn }
  - { name: xb, backends: [%s] }
`, b["b2"].Addr, b["b3"].Addr, b["b4"].Addr), api: []string{"b2", "b3"}, x: "b4", pools: "api, xb"}
	invalid := []struct{ name, yaml string }{
		{"unknown key", fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: api }
pools:
  - { name: api, backends: [%s], bogus: 1 }
`, b["b4"].Addr)},
		{"route to a missing pool", fmt.Sprintf(`
listeners:
  - name: web
    listen: 127.0.0.1:0
    pool: api
    routes: [{ path_prefix: "/x/", pool: nowhere }]
pools:
  - { name: api, backends: [%s] }
`, b["b4"].Addr)},
		{"bad duration and bad address", `
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: api }
pools:
  - { name: api, backends: ["not an address"], timeouts: { connect: soon } }
`},
		{"listener address in use (fails at bind)", fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: api }
  - { name: clash, listen: %s, pool: api }
pools:
  - { name: api, backends: [%s] }
`, busy.Addr(), b["b4"].Addr)},
		{"not YAML", "listeners: [\n"},
	}

	a := testkit.StartApp(t, "admin: { listen: 127.0.0.1:0 }\n"+v1.yaml)
	testkit.WaitFor(t, 10*time.Second, "pools ready", a.Ready)
	reloadURL := "http://" + a.AdminAddr().String() + "/reload"
	base := a.URL("web", "")

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	st := newLoadStats()
	var workers []worker
	for _, path := range []string{"/", "/x/"} {
		workers = append(workers,
			worker{Method: fasthttp.MethodGet, Path: path}, worker{Method: fasthttp.MethodPost, Path: path},
			worker{Method: fasthttp.MethodGet, Path: path, Fresh: true})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runLoad(ctx, base, workers, 10_000_000, st)
	}()
	okAfter := func(n int64) func() bool {
		base := st.ok.Load()
		return func() bool { return st.ok.Load() >= base+n }
	}
	waitFor(t, 20*time.Second, "load before the reloads", okAfter(300))

	get := func(url string) string {
		t.Helper()
		code, body, err := testkit.Get(url)
		if err != nil || code != 200 {
			t.Errorf("GET %s: %d %q %v", url, code, body, err)
		}
		return strings.TrimSpace(body)
	}
	// check asserts that cur is the config serving.
	check := func(step string, cur valid, strict bool) {
		t.Helper()
		if got := get(base + "/x/"); got != cur.x {
			t.Errorf("%s: /x/ answered by %q, want %q", step, got, cur.x)
		}
		// A pool that remains takes its new set on its own goroutine, a
		// moment after the reload (removed backends drain meanwhile): after
		// a valid reload, wait for it; after a refused one, nothing moves.
		inAPI := func() (string, bool) {
			for range 8 {
				n := get(base + "/")
				if !slices.Contains(cur.api, n) {
					return n, false
				}
			}
			return "", true
		}
		if strict {
			if n, ok := inAPI(); !ok {
				t.Errorf("%s: / answered by %q, not one of %v", step, n, cur.api)
			}
		} else {
			waitFor(t, 5*time.Second, step+": / served by "+strings.Join(cur.api, ", "), func() bool {
				_, ok := inAPI()
				return ok
			})
		}
		if side := a.ListenerAddr("side"); (side != nil) != cur.side {
			t.Errorf("%s: listener side present %v, want %v", step, side != nil, cur.side)
		} else if side != nil {
			if got := get("http://" + side.String() + "/"); got != cur.x {
				t.Errorf("%s: side answered by %q, want %q", step, got, cur.x)
			}
		}
		if s := summaryPools(a.Config()); s != cur.pools {
			t.Errorf("%s: config in force has pools %q, want %q", step, s, cur.pools)
		}
	}

	cur := v1
	check("start", cur, true)
	for i := range 10 {
		var yaml, step string
		next := cur
		if i%2 == 0 {
			bad := invalid[(i/2)%len(invalid)]
			yaml, step = bad.yaml, fmt.Sprintf("reload %d (invalid: %s)", i+1, bad.name)
		} else {
			next = v2
			if cur.x == v2.x {
				next = v1
			}
			yaml, step = "admin: { listen: 127.0.0.1:0 }\n"+next.yaml, fmt.Sprintf("reload %d (valid)", i+1)
		}
		if err := os.WriteFile(a.Path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		code, body := post(t, reloadURL)
		switch {
		case i%2 == 0 && code != 400:
			t.Errorf("%s: POST /reload answered %d %q, want 400", step, code, body)
		case i%2 == 0 && strings.TrimSpace(body) == "":
			t.Errorf("%s: 400 without the errors", step)
		case i%2 == 1 && code != 200:
			t.Fatalf("%s: POST /reload answered %d %q, want 200", step, code, body)
		}
		t.Logf("%s: %d %s", step, code, strings.ReplaceAll(strings.TrimSpace(body), "\n", " | "))
		cur = next
		check(step, cur, i%2 == 0)
		waitFor(t, 20*time.Second, "load after "+step, okAfter(300))
	}
	cancel()
	<-done

	sent, failures, _ := st.snapshot()
	t.Logf("sent %v; ok %d; failed %d", sent, st.ok.Load(), len(failures))
	for i, f := range failures {
		if i == 20 {
			t.Errorf("… and %d more", len(failures)-20)
			break
		}
		t.Errorf("%s %d failed: status %d, err %v", f.Method, f.ID, f.Status, f.Err)
	}
	if got := testkit.Metric(t, a.Registry(), "holdfast_config_reloads_total", nil); got != 5 {
		t.Errorf("holdfast_config_reloads_total = %v, want 5", got)
	}
	if got := testkit.Metric(t, a.Registry(), "holdfast_config_reload_failures_total", nil); got != 5 {
		t.Errorf("holdfast_config_reload_failures_total = %v, want 5", got)
	}
}

func post(t *testing.T, url string) (int, string) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	req.Header.SetMethod(fasthttp.MethodPost)
	if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return resp.StatusCode(), string(resp.Body())
}

// summaryPools lists a config's pool names, sorted, comma-separated.
func summaryPools(c *config.Config) string {
	var ns []string
	for _, p := range c.Pools {
		ns = append(ns, p.Name)
	}
	sort.Strings(ns)
	return strings.Join(ns, ", ")
}
