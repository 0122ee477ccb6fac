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
// closed in the pool or reset mid-request). A POST may fail only if it was
// in flight on the killed backend when it died: sent before the kill, not
// answered, and failed there (the survivors fail no attempt). The backend's
// pipe tells which of them its process had read; the others its kernel had
// acknowledged (queued for accept, or unread), which holdfast cannot tell
// from a read, so it does not resend them.
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
	// In flight at the kill: sent before the victim was dead and not
	// answered before the signal.
	atKill, firstAfter := st.inFlight()
	victim.kill(t)
	_, lastBefore := st.inFlight()
	for id := firstAfter + 1; id <= lastBefore; id++ {
		atKill[id] = st.method(id) // sent while the victim was dying
	}
	inflight := victim.inFlight()
	t.Logf("SIGKILLed %s with %d requests read and unanswered", victim.Name, len(inflight))

	// Keep the load on until the survivors have served plenty more.
	after := bs[1].seen.Load() + bs[2].seen.Load()
	waitFor(t, 30*time.Second, "load after the kill", func() bool {
		return bs[1].seen.Load()+bs[2].seen.Load() > after+3000
	})
	cancel()
	<-done

	sent, failures, _ := st.snapshot()
	var failedGET, failedPOST, readByVictim int
	var notInFlight []string
	for _, f := range failures {
		if f.Method == fasthttp.MethodGet {
			failedGET++
			t.Errorf("GET %d failed: status %d err %v", f.ID, f.Status, f.Err)
			continue
		}
		failedPOST++
		if victim.hasRead(fmt.Sprint(f.ID)) {
			readByVictim++
		}
		if atKill[f.ID] == "" {
			notInFlight = append(notInFlight, fmt.Sprintf("%d (status %d, err %v)", f.ID, f.Status, f.Err))
		}
	}
	postsAtKill := 0
	for _, m := range atKill {
		if m == fasthttp.MethodPost {
			postsAtKill++
		}
	}
	t.Logf("sent %v; failed GETs %d; failed POSTs %d (%d of them read by the killed backend's process, "+
		"the others acknowledged by its kernel only); POSTs in flight at the kill %d",
		sent, failedGET, failedPOST, readByVictim, postsAtKill)
	if len(notInFlight) > 0 {
		sort.Strings(notInFlight)
		t.Errorf("%d failed POSTs were not in flight when the backend was killed: %s",
			len(notInFlight), strings.Join(notInFlight, "; "))
	}
	if failedPOST > postsAtKill {
		t.Errorf("%d failed POSTs, more than the %d in flight at the kill", failedPOST, postsAtKill)
	}
	// And they failed on the killed backend: the survivors failed nothing.
	for _, b := range bs[1:] {
		if n := testkit.Metric(t, a.Registry(), "holdfast_backend_requests_total", map[string]string{"backend": b.Addr, "code": "5xx"}); n > 0 {
			t.Errorf("backend %s (alive) failed %v attempts", b.Name, n)
		}
	}
	if sent[fasthttp.MethodPost] == 0 || sent[fasthttp.MethodGet] == 0 {
		t.Fatalf("no load: %v", sent)
	}
}
