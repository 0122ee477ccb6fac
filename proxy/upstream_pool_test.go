package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// Under steady concurrency above max_idle_per_backend, the upstream pool
// keeps the connections that concurrency needs instead of closing and
// redialling the ones above the idle cap on every swing: 10 rounds of 8
// requests in flight at once at the backend, with max_idle_per_backend 2,
// are carried by 8 backend connections (closing on each return what sat
// idle above 2 at that instant made it 8 + 6 per round).
func TestUpstreamPoolKeepsWhatConcurrencyNeeds(t *testing.T) {
	const conc, rounds = 8, 10
	be := testkit.StartBackend(t, "b")
	var mu sync.Mutex
	conns := map[uint64]bool{}
	arrived := make(chan struct{}, conc)
	var gate chan struct{}
	be.SetHandler(func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		conns[ctx.ConnID()] = true
		g := gate
		mu.Unlock()
		arrived <- struct{}{}
		<-g
		ctx.SetBodyString("b\n")
	})
	a := startL4(t, fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: p }
pools:
  - { name: p, backends: [%s], health: { type: none }, limits: { max_idle_per_backend: 2 } }
`, be.Addr))
	url := "http://" + a.ListenerAddr("web").String() + "/"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc}, Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	for r := range rounds {
		mu.Lock()
		gate = make(chan struct{})
		mu.Unlock()
		errs := make(chan error, conc)
		for range conc {
			go func() {
				resp, err := client.Get(url)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				errs <- err
			}()
		}
		for range conc {
			select {
			case <-arrived:
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: not all %d requests reached the backend", r, conc)
			}
		}
		mu.Lock()
		close(gate)
		mu.Unlock()
		for range conc {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", r, err)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(conns) > conc+2 {
		t.Fatalf("%d backend connections carried %d rounds of %d concurrent requests; want about %d", len(conns), rounds, conc, conc)
	}
}
