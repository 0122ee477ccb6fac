package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// backendCmd runs `holdfast backend ARGS... --admin ADDR`.
func backendCmd(t *testing.T, admin string, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append(append([]string{"backend"}, args...), "--admin", admin), &out, &errb)
	return code, out.String() + errb.String()
}

func backendState(a *testkit.App, addr string) (state string, inflight int64) {
	for _, p := range a.Status() {
		for _, b := range p.Backends {
			if b.Address == addr {
				return b.State, b.Inflight
			}
		}
	}
	return "", 0
}

// A rolling deploy: drain a backend under load, reload, enable it again.
func TestBackendDrainUnderLoad(t *testing.T) {
	slow := func(ctx *fasthttp.RequestCtx) {
		time.Sleep(20 * time.Millisecond) // the backend's work: keeps requests in flight
		ctx.SetBodyString("ok\n")
	}
	keep, drained := testkit.StartBackend(t, "keep"), testkit.StartBackend(t, "drained")
	keep.SetHandler(slow)
	drained.SetHandler(slow)
	a := testkit.StartApp(t, fmt.Sprintf(`
listeners: [{ name: web, listen: "127.0.0.1:0", pool: api }]
pools:
  - name: api
    health: { type: none }
    backends: [%q, %q]
`, keep.Addr, drained.Addr))
	testkit.WaitFor(t, 5*time.Second, "ready", a.Ready)
	admin := a.AdminAddr().String()
	url := a.URL("web", "/")

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var res *testkit.Result
	wg.Add(1)
	go func() {
		defer wg.Done()
		res = testkit.Load(ctx, 8, 1<<20, func(_ int64, r *fasthttp.Request) { r.SetRequestURI(url) })
	}()
	testkit.WaitFor(t, 5*time.Second, "load on both backends", func() bool { return drained.Requests() > 20 && keep.Requests() > 20 })

	if code, out := backendCmd(t, admin, "drain", "api", drained.Addr); code != 0 {
		t.Fatalf("drain: exit %d: %s", code, out)
	}
	if st, _ := backendState(a, drained.Addr); st != "draining" {
		t.Fatalf("state %q after drain, want draining", st)
	}
	// What was picked before the drain returned finishes; nothing new comes.
	testkit.WaitFor(t, 5*time.Second, "in-flight requests to finish", func() bool { _, n := backendState(a, drained.Addr); return n == 0 })
	after := drained.Requests()
	before := keep.Requests()
	testkit.WaitFor(t, 5*time.Second, "more traffic on the other backend", func() bool { return keep.Requests() > before+100 })
	if got := drained.Requests(); got != after {
		t.Fatalf("the drained backend got %d new requests", got-after)
	}
	if v := testkit.Metric(t, a.Registry(), "holdfast_backend_override", map[string]string{"backend": drained.Addr, "override": "drain"}); v != 1 {
		t.Errorf("holdfast_backend_override{override=drain} = %v", v)
	}
	if v := testkit.Metric(t, a.Registry(), "holdfast_backend_state", map[string]string{"backend": drained.Addr, "state": "draining"}); v != 1 {
		t.Errorf("holdfast_backend_state{state=draining} = %v", v)
	}

	// The override survives a reload.
	resp, err := http.Post("http://"+admin+"/reload", "text/plain", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("reload: %v %v", resp, err)
	}
	resp.Body.Close()
	before = keep.Requests()
	testkit.WaitFor(t, 5*time.Second, "traffic after the reload", func() bool { return keep.Requests() > before+50 })
	if st, _ := backendState(a, drained.Addr); st != "draining" || drained.Requests() != after {
		t.Fatalf("after reload: state %q, %d new requests", st, drained.Requests()-after)
	}

	if code, out := backendCmd(t, admin, "enable", "api", drained.Addr); code != 0 {
		t.Fatalf("enable: exit %d: %s", code, out)
	}
	testkit.WaitFor(t, 5*time.Second, "traffic back on the enabled backend", func() bool { return drained.Requests() > after+20 })
	cancel()
	wg.Wait()
	if res.Failed != 0 || res.OK == 0 {
		t.Fatalf("load through drain, reload and enable: %s", res)
	}
	if st, _ := backendState(a, drained.Addr); st != "healthy" {
		t.Errorf("state %q after enable", st)
	}
}

func TestBackendWeightAndErrors(t *testing.T) {
	b1, b2 := testkit.StartBackend(t, "b1"), testkit.StartBackend(t, "b2")
	tok := t.TempDir() + "/token"
	if err := os.WriteFile(tok, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := testkit.StartApp(t, fmt.Sprintf(`
admin: { listen: "127.0.0.1:0", token_file: %q }
listeners: [{ name: web, listen: "127.0.0.1:0", pool: api }]
pools:
  - name: api
    health: { type: none }
    backends: [%q, %q]
`, tok, b1.Addr, b2.Addr))
	testkit.WaitFor(t, 5*time.Second, "ready", a.Ready)
	admin := a.AdminAddr().String()
	if code, out := backendCmd(t, admin, "weight", "api", b1.Addr, "3"); code != 1 || !strings.Contains(out, "401") {
		t.Fatalf("without the token: exit %d: %s", code, out)
	}
	if code, out := backendCmd(t, admin, "weight", "api", b1.Addr, "3", "--token-file", tok); code != 0 {
		t.Fatalf("weight: exit %d: %s", code, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	url := a.URL("web", "/")
	res := testkit.Load(ctx, 4, 400, func(_ int64, r *fasthttp.Request) { r.SetRequestURI(url) })
	if res.OK != 400 {
		t.Fatalf("load: %s", res)
	}
	if share := float64(res.ByBody["b1\n"]) / 400; share < 0.70 || share > 0.80 {
		t.Errorf("weight 3:1 gave b1 %.0f%% of requests, want about 75%%: %v", share*100, res.ByBody)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown pool", []string{"drain", "nope", b1.Addr}, 1, "unknown pool"},
		{"unknown backend", []string{"drain", "api", "127.0.0.1:1"}, 1, "unknown backend"},
		{"weight out of range", []string{"weight", "api", b1.Addr, "5000"}, 1, "out of range"},
		{"weight without N", []string{"weight", "api", b1.Addr}, 2, "needs N"},
		{"unknown action", []string{"pause", "api", b1.Addr}, 2, "unknown action"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out := backendCmd(t, admin, append(tc.args, "--token-file", tok)...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, output %q; want exit %d containing %q", code, out, tc.code, tc.want)
			}
		})
	}
	// GET /backends lists the override.
	req, _ := http.NewRequest(http.MethodGet, "http://"+admin+"/backends", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	if !strings.Contains(buf.String(), `"weight": 3`) || !strings.Contains(buf.String(), b2.Addr) {
		t.Errorf("GET /backends: %s", buf.String())
	}
}
