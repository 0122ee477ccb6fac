package app_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/internal/etcdtest"
	"github.com/holdfast-lb/holdfast/internal/testkit"
	"github.com/holdfast-lb/holdfast/state"
)

func etcdYAML(srv *etcdtest.Server, prefix, extra string) string {
	return fmt.Sprintf(`%s
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: api }
pools:
  - name: api
    health: { type: none }
    discovery: { type: etcd, name: %q, endpoints: [%q], min_refresh: 200ms, max_refresh: 500ms }
`, extra, prefix, srv.Endpoint)
}

// reaches polls until a request through the listener is answered by the
// backend named name, and returns how long that took.
func reaches(t *testing.T, a *testkit.App, name string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	url := a.URL("web", "/")
	for {
		if code, body, err := testkit.Get(url); err == nil && code == 200 && body == name+"\n" {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("no answer from %s within %v", name, limit)
		}
	}
}

// TestEtcdDiscoveryEndToEnd: holdfast follows an etcd prefix within a
// second (put and delete, seen by requests through the listener), keeps
// serving with 0 failures while etcd is killed (stale metric 1, status page),
// and follows changes again once etcd is back.
func TestEtcdDiscoveryEndToEnd(t *testing.T) {
	srv := etcdtest.Start(t)
	const p = "/services/api/"
	var bes []*testkit.Backend
	for i := range 3 {
		bes = append(bes, testkit.StartBackend(t, fmt.Sprintf("b%d", i)))
	}
	srv.Put(p+"b0", bes[0].Addr)
	srv.Put(p+"b1", fmt.Sprintf(`{"address":%q,"weight":2}`, bes[1].Addr))
	srv.Put(p+"junk", "{oops")
	a := testkit.StartApp(t, etcdYAML(srv, p, ""))
	testkit.WaitFor(t, 5*time.Second, "two etcd backends routable", func() bool { return a.Pool("api").Routable() == 2 })

	srv.Put(p+"b2", bes[2].Addr)
	d := reaches(t, a, "b2", 2*time.Second)
	t.Logf("etcd put to the first request reaching the new backend: %v", d)
	if d > time.Second {
		t.Errorf("a put reached traffic after %v, want within 1s", d)
	}
	start := time.Now()
	srv.Delete(p+"b2", false)
	testkit.WaitFor(t, 2*time.Second, "the deleted backend gone", func() bool { return a.Pool("api").Routable() == 2 })
	d = time.Since(start)
	t.Logf("etcd delete to the backend leaving the picker: %v", d)
	if d > time.Second {
		t.Errorf("a delete applied after %v, want within 1s", d)
	}
	served := bes[2].Requests()
	for range 20 {
		if code, body, err := testkit.Get(a.URL("web", "/")); err != nil || code != 200 || body == "b2\n" {
			t.Fatalf("after the delete: %d %q %v", code, body, err)
		}
	}
	if bes[2].Requests() != served {
		t.Errorf("the deleted backend still gets traffic")
	}

	// etcd dies under steady load: nothing fails, the pool is stale.
	ctx, cancel := context.WithCancel(context.Background())
	loadDone := make(chan *testkit.Result, 1)
	go func() {
		loadDone <- testkit.Load(ctx, 4, 1_000_000, func(_ int64, r *fasthttp.Request) { r.SetRequestURI(a.URL("web", "/")) })
	}()
	srv.Kill()
	testkit.WaitFor(t, 5*time.Second, "holdfast_discovery_stale 1", func() bool {
		return testkit.Metric(t, a.Registry(), "holdfast_discovery_stale", map[string]string{"pool": "api"}) == 1
	})
	if _, body := adminGet(t, a, "/status"); !strings.Contains(body, "stale") {
		t.Errorf("status page does not show the stale set:\n%s", body)
	}
	failedLookups := testkit.Metric(t, a.Registry(), "holdfast_discovery_lookups_total",
		map[string]string{"pool": "api", "resolver": "etcd", "result": "timeout"}) +
		testkit.Metric(t, a.Registry(), "holdfast_discovery_lookups_total",
			map[string]string{"pool": "api", "resolver": "etcd", "result": "error"})
	if failedLookups == 0 {
		t.Errorf("no failed etcd lookup counted while etcd is down")
	}
	srv.Restart()
	testkit.WaitFor(t, 5*time.Second, "holdfast_discovery_stale 0 after etcd returned", func() bool {
		return testkit.Metric(t, a.Registry(), "holdfast_discovery_stale", map[string]string{"pool": "api"}) == 0
	})
	cancel()
	res := <-loadDone
	t.Logf("through the etcd outage: %s", res)
	if res.Failed != 0 || res.Sent < 100 {
		t.Errorf("through the etcd outage: %s; want 0 failed of at least 100", res)
	}
	if ok := testkit.Metric(t, a.Registry(), "holdfast_discovery_lookups_total",
		map[string]string{"pool": "api", "resolver": "etcd", "result": "ok"}); ok == 0 {
		t.Errorf("no ok etcd lookup counted")
	}
	srv.Put(p+"b2", bes[2].Addr)
	if d := reaches(t, a, "b2", 2*time.Second); d > time.Second {
		t.Errorf("after etcd came back a put reached traffic after %v, want within 1s", d)
	}
}

// TestEtcdStateFileRestart: an etcd pool's set is saved to state_file, and
// a process that starts while etcd is down serves it at once: 0 failed.
func TestEtcdStateFileRestart(t *testing.T) {
	srv := etcdtest.Start(t)
	const p = "/services/api/"
	b0, b1 := testkit.StartBackend(t, "b0"), testkit.StartBackend(t, "b1")
	srv.Put(p+"b0", b0.Addr)
	srv.Put(p+"b1", b1.Addr)
	statePath := filepath.Join(t.TempDir(), "state.json")
	yaml := etcdYAML(srv, p, fmt.Sprintf("state_file: %q", statePath))
	first := testkit.StartApp(t, yaml)
	testkit.WaitFor(t, 5*time.Second, "two etcd backends routable", func() bool { return first.Pool("api").Routable() == 2 })
	testkit.WaitFor(t, 5*time.Second, "state file with the etcd set", func() bool {
		f, err := state.Read(statePath)
		return err == nil && len(f.Pools["api"].Set) == 2
	})
	stop(t, first)
	srv.Kill()

	second := testkit.StartApp(t, yaml)
	failed := 0
	seen := map[string]bool{}
	for range 50 {
		code, body, err := testkit.Get(second.URL("web", "/"))
		if err != nil || code != 200 {
			failed++
		}
		seen[body] = true
	}
	if failed != 0 || !seen["b0\n"] || !seen["b1\n"] {
		t.Errorf("restart with etcd down: %d of 50 failed, reached %v; want 0 failed, both backends", failed, seen)
	}
	if v := testkit.Metric(t, second.Registry(), "holdfast_discovery_stale", map[string]string{"pool": "api"}); v != 1 {
		t.Errorf("holdfast_discovery_stale %v while serving the saved set, want 1", v)
	}
}
