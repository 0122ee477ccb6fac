package app_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// holdfast_backend_inflight is read from the endpoints when /metrics is
// scraped (the request path keeps only an atomic): a request held by the
// backend shows as 1 while it runs and 0 after.
func TestBackendInflightMetric(t *testing.T) {
	b := testkit.StartBackend(t, "slow")
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	b.SetHandler(func(ctx *fasthttp.RequestCtx) {
		entered <- struct{}{}
		<-release
		ctx.SetBodyString("done\n")
	})
	a := testkit.StartApp(t, fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: p }
pools:
  - { name: p, backends: [%q], health: { type: none } }
`, b.Addr))
	labels := map[string]string{"pool": "p", "backend": b.Addr}
	done := make(chan error, 1)
	go func() {
		status, _, err := testkit.Get(a.URL("web", "/"))
		if err == nil && status != 200 {
			err = fmt.Errorf("status %d", status)
		}
		done <- err
	}()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the request never reached the backend")
	}
	if v := testkit.Metric(t, a.Registry(), "holdfast_backend_inflight", labels); v != 1 {
		t.Errorf("while held: holdfast_backend_inflight = %v, want 1", v)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "in-flight back to 0", func() bool {
		return testkit.Metric(t, a.Registry(), "holdfast_backend_inflight", labels) == 0
	})
}
