package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// TestBackendSIGKILLUnderLoad: three backends, each its own process, under
// steady GET and POST load; one is SIGKILLed. No GET may fail (each is
// retried on another backend, whether its connection was refused, found
// closed in the pool or reset mid-request). A POST may fail only if the
// killed backend had already begun it: its pipe says so, line by line.
func TestBackendSIGKILLUnderLoad(t *testing.T) {
	const delay = 2 * time.Millisecond
	bs := []*procBackend{
		startProcBackend(t, "b0", delay),
		startProcBackend(t, "b1", delay),
		startProcBackend(t, "b2", delay),
	}
	a := testkit.StartApp(t, fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: api }
pools:
  - name: api
    balance: round_robin
    backends: [%s, %s, %s]
    health: { type: http, path: /healthz, interval: 200ms, timeout: 500ms, rise: 2, fall: 2 }
    retries: { attempts: 2, budget: "20%%", on: [connect_failure, reset] }
`, bs[0].Addr, bs[1].Addr, bs[2].Addr))
	testkit.WaitFor(t, 10*time.Second, "pool ready", func() bool { return a.Pool("api").Routable() == 3 })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st := newLoadStats()
	var workers []worker
	for range 8 {
		workers = append(workers, worker{Method: fasthttp.MethodGet}, worker{Method: fasthttp.MethodPost})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runLoad(ctx, a.URL("web", ""), workers, 200_000, st)
	}()

	victim := bs[0]
	waitFor(t, 20*time.Second, "every backend under load", func() bool {
		return bs[0].seen.Load() > 300 && bs[1].seen.Load() > 300 && bs[2].seen.Load() > 300
	})
	victim.kill(t)
	inflight := victim.inFlight()
	t.Logf("SIGKILLed %s with %d requests begun and unfinished", victim.Name, len(inflight))

	// Keep the load on until the survivors have served plenty more.
	after := bs[1].seen.Load() + bs[2].seen.Load()
	waitFor(t, 30*time.Second, "load after the kill", func() bool {
		return bs[1].seen.Load()+bs[2].seen.Load() > after+3000
	})
	cancel()
	<-done

	sent, failures, _ := st.snapshot()
	var failedGET, failedPOST int
	var notBegun []string
	for _, f := range failures {
		if f.Method == fasthttp.MethodGet {
			failedGET++
			t.Errorf("GET %d failed: status %d err %v", f.ID, f.Status, f.Err)
			continue
		}
		failedPOST++
		id := fmt.Sprint(f.ID)
		if !victim.hasBegun(id) {
			notBegun = append(notBegun, fmt.Sprintf("%s (status %d, err %v)", id, f.Status, f.Err))
		}
	}
	sort.Strings(notBegun)
	t.Logf("sent %v; failed GETs %d; failed POSTs %d; requests in flight on the killed backend at the kill %d",
		sent, failedGET, failedPOST, len(inflight))
	if len(notBegun) > 0 {
		t.Errorf("%d failed POSTs never reached the killed backend (holdfast should have retried them): %s",
			len(notBegun), strings.Join(notBegun, "; "))
	}
	// Every failed POST was begun by the killed backend and never answered,
	// so there can be no more of them than it had in flight (counting one
	// whose handler had just returned while its response was still unsent).
	if bound := len(victim.began) - len(victim.ended) + 1; failedPOST > bound {
		t.Errorf("%d failed POSTs, more than the %d in flight on the killed backend", failedPOST, bound-1)
	}
	if sent[fasthttp.MethodPost] == 0 || sent[fasthttp.MethodGet] == 0 {
		t.Fatalf("no load: %v", sent)
	}
}
