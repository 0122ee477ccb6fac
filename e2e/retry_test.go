package e2e

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// TestStalePooledConnections: backends that close idle keep-alive
// connections long before holdfast would (Node.js closes after 5s, holdfast
// keeps them 60s) leave dead connections in the pool. A request of any
// method that finds one is sent again on a fresh connection to the same
// backend: it neither fails, nor costs a retry, nor counts against the
// backend.
func TestStalePooledConnections(t *testing.T) {
	var lns []*countingListener
	var addrs []any
	for i := range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cl := &countingListener{Listener: ln}
		name := fmt.Sprintf("b%d", i)
		srv := &fasthttp.Server{
			Handler:     func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(name) },
			IdleTimeout: 20 * time.Millisecond,
		}
		go func() { _ = srv.Serve(cl) }()
		t.Cleanup(func() { _ = srv.Shutdown() })
		lns = append(lns, cl)
		addrs = append(addrs, cl.Addr().String())
	}
	a := testkit.StartApp(t, fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: api }
pools:
  - name: api
    backends: [%s, %s]
    health: { type: none }
    outlier: { consecutive_failures: 2 }
    timeouts: { idle: 60s }
`, addrs...))
	testkit.WaitFor(t, 10*time.Second, "pool ready", func() bool { return a.Pool("api").Routable() == 2 })

	client := &fasthttp.Client{MaxIdemponentCallAttempts: 1, ReadTimeout: 5 * time.Second}
	for i := range 12 {
		method := fasthttp.MethodGet
		if i%2 == 1 {
			method = fasthttp.MethodPost
		}
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI(a.URL("web", "/"))
		req.Header.SetMethod(method)
		err := client.DoTimeout(req, resp, 5*time.Second)
		if err != nil || resp.StatusCode() != 200 {
			t.Errorf("request %d (%s): status %d, err %v, body %q", i, method, resp.StatusCode(), err, resp.Body())
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
		// Both backends have closed every idle connection holdfast keeps.
		waitFor(t, 10*time.Second, "backends closing idle connections", func() bool {
			return lns[0].open.Load() == 0 && lns[1].open.Load() == 0
		})
	}
	if got := a.Pool("api").Routable(); got != 2 {
		t.Errorf("%d backends routable, want 2: a healthy backend was ejected", got)
	}
	for _, reason := range []string{"connect_failure", "reset"} {
		if n := testkit.Metric(t, a.Registry(), "holdfast_retries_total", map[string]string{"reason": reason}); n > 0 {
			t.Errorf("%v retries for %s: a stale pooled connection cost a retry", n, reason)
		}
	}
}
