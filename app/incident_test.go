package app_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/discovery/dnstest"
	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// with returns a copy of m with k set to v.
func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for a, b := range m {
		out[a] = b
	}
	return out
}

// servedBackend is a backend that counts the requests it serves, health
// checks aside.
type servedBackend struct {
	*testkit.Backend
	served atomic.Int64
}

func startServedBackend(t *testing.T, name string) *servedBackend {
	b := &servedBackend{Backend: testkit.StartBackend(t, name)}
	b.SetHandler(func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) != "/healthz" {
			b.served.Add(1)
		}
		ctx.SetBodyString(name + "\n")
	})
	return b
}

// srvRecords are SRV records for name pointing at the backends (all on
// 127.0.0.1, one target name each, with glue), with TTL 0 as Consul
// answers by default, so holdfast refreshes every min_refresh.
func srvRecords(name string, bes []*servedBackend) []string {
	var rs []string
	for i, b := range bes {
		port := b.Addr[strings.LastIndexByte(b.Addr, ':')+1:]
		target := fmt.Sprintf("b%d.holdfast.test.", i)
		rs = append(rs,
			fmt.Sprintf("%s 0 IN SRV 10 10 %s %s", name, port, target),
			target+" 0 IN A 127.0.0.1")
	}
	return rs
}

// TestIncidentDNSHoldsLastGoodSet replays the incident behind the issue
// "DNS/SRV discovery that holds the last good set" end to end: a primary
// resolver answering SERVFAIL to 2 of every 3 queries, then every resolver
// failing, then empty answers, then a destructive shrink. Through all of it
// no request fails and the pool never shrinks or empties before DNS has
// said so `confirm` times, and never empties at all.
func TestIncidentDNSHoldsLastGoodSet(t *testing.T) {
	const (
		name    = "_http._tcp.api.holdfast.test."
		confirm = 3
	)
	primary, secondary := dnstest.Start(t), dnstest.Start(t)
	var bes []*servedBackend
	for i := range 4 {
		bes = append(bes, startServedBackend(t, fmt.Sprintf("srv%d", i)))
	}
	records := srvRecords(name, bes)
	primary.Add(records...)
	secondary.Add(records...)
	primary.SetFaults(dnstest.Servfail, dnstest.Servfail, dnstest.OK)

	a := testkit.StartApp(t, fmt.Sprintf(`
resolvers:
  - name: incident
    servers: [%q, %q]
    timeout: 500ms
    attempts: 1
listeners:
  - name: web
    listen: 127.0.0.1:0
    pool: api
pools:
  - name: api
    discovery:
      type: srv
      name: %s
      resolver: incident
      min_refresh: 250ms
      max_refresh: 1s
      max_shrink: "50%%"
      confirm: %d
    health: { type: http, path: /healthz, interval: 500ms, timeout: 500ms }
`, primary.Addr, secondary.Addr, name, confirm))
	url := a.URL("web", "/")
	testkit.WaitFor(t, 10*time.Second, "four SRV backends routable", func() bool {
		return a.Pool("api").Routable() == 4
	})

	pool := map[string]string{"pool": "api"}
	lookups := func(result string) float64 {
		return testkit.Metric(t, a.Registry(), "holdfast_discovery_lookups_total", with(pool, "result", result))
	}
	stale := func() float64 { return testkit.Metric(t, a.Registry(), "holdfast_discovery_stale", pool) }
	served := func() []int64 {
		out := make([]int64, len(bes))
		for i, b := range bes {
			out[i] = b.served.Load()
		}
		return out
	}
	// phase loads for d, or until stop reports true (polled every 10ms),
	// and checks that no request failed.
	phase := func(label string, d time.Duration, stop func() bool) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		stopped := make(chan struct{})
		if stop == nil {
			close(stopped)
		} else {
			go func() {
				defer close(stopped)
				tick := time.NewTicker(10 * time.Millisecond)
				defer tick.Stop()
				for ctx.Err() == nil && !stop() {
					select {
					case <-ctx.Done():
					case <-tick.C:
					}
				}
				cancel()
			}()
		}
		before := served()
		ok0, fail0 := lookups("ok"), lookups("servfail")
		start := time.Now()
		res := testkit.Load(ctx, 4, 10_000_000, func(_ int64, r *fasthttp.Request) { r.SetRequestURI(url) })
		cancel()
		<-stopped
		after := served()
		per := make([]int64, len(bes))
		for i := range per {
			per[i] = after[i] - before[i]
		}
		t.Logf("%s (%.1fs): %d sent, %d failed; per backend %v; lookups ok +%.0f servfail +%.0f; stale %v",
			label, time.Since(start).Seconds(), res.Sent, res.Failed, per, lookups("ok")-ok0, lookups("servfail")-fail0, stale())
		if res.Failed != 0 {
			t.Errorf("%s: %d requests failed: %v", label, res.Failed, res)
		}
		if res.Sent < 100 {
			t.Errorf("%s: only %d requests sent", label, res.Sent)
		}
	}
	// everyBackendServed checks that each backend got a fair part of the
	// requests since the snapshot.
	everyBackendServed := func(label string, since []int64) {
		t.Helper()
		now := served()
		total := int64(0)
		for i := range now {
			total += now[i] - since[i]
		}
		for i := range now {
			if got := now[i] - since[i]; got*10 < total { // a fair share is 25%
				t.Errorf("%s: backend %s got %d of %d requests", label, bes[i].Addr, got, total)
			}
		}
	}
	poolIntact := func(label string) {
		t.Helper()
		ps := a.Pool("api").Status()
		if ps.Total != 4 || ps.Routable != 4 {
			t.Errorf("%s: pool has %d backends, %d routable; want 4 and 4", label, ps.Total, ps.Routable)
		}
		if v := testkit.Metric(t, a.Registry(), "holdfast_discovery_backends", pool); v != 4 {
			t.Errorf("%s: holdfast_discovery_backends = %v, want 4", label, v)
		}
	}

	// Phase 1: the primary answers SERVFAIL to 2 of every 3 queries; the
	// secondary covers, so every lookup succeeds and nothing is stale.
	snap := served()
	ok0 := lookups("ok")
	phase("phase 1: primary SERVFAILs 2 of 3", 4*time.Second, nil)
	everyBackendServed("phase 1", snap)
	poolIntact("phase 1")
	if n := lookups("ok") - ok0; n < 4 {
		t.Errorf("phase 1: only %v successful lookups: not several refresh cycles", n)
	}
	servfails := 0
	for _, q := range primary.Log() {
		if q.Fault == dnstest.Servfail {
			servfails++
		}
	}
	if servfails < 4 || secondary.Queries() < 4 {
		t.Errorf("phase 1: primary answered %d SERVFAILs, secondary %d queries: the failover path was not exercised",
			servfails, secondary.Queries())
	}
	if v := stale(); v != 0 {
		t.Errorf("phase 1: holdfast_discovery_stale = %v, want 0 (the secondary answered)", v)
	}
	// The failover hid the primary's SERVFAILs from the lookup results; the
	// per-server counter still shows them, so an operator can notice.
	if v := testkit.Metric(t, a.Registry(), "holdfast_discovery_server_queries_total",
		map[string]string{"server": primary.Addr, "result": "servfail"}); v < float64(servfails)/2 {
		t.Errorf("phase 1: holdfast_discovery_server_queries_total{server=%s,result=servfail} = %v, want about %d",
			primary.Addr, v, servfails)
	}

	// Phase 2: every resolver fails, for longer than several refreshes.
	primary.SetFaults(dnstest.Servfail)
	secondary.SetFaults(dnstest.Servfail)
	sf0 := lookups("servfail")
	testkit.WaitFor(t, 5*time.Second, "discovery stale", func() bool { return stale() == 1 })
	snap = served()
	phase("phase 2: every resolver SERVFAILs", 6*time.Second, nil)
	everyBackendServed("phase 2", snap)
	poolIntact("phase 2")
	if n := lookups("servfail") - sf0; n < 4 {
		t.Errorf("phase 2: %v SERVFAIL lookups, want several (>= 4)", n)
	}
	if v := lookups("servfail"); v <= 0 {
		t.Errorf(`holdfast_discovery_lookups_total{result="servfail"} = %v, want > 0`, v)
	}
	if v := stale(); v != 1 {
		t.Errorf("phase 2: holdfast_discovery_stale = %v during the outage, want 1", v)
	}
	if dv := a.Pool("api").Status().Discovery; dv == nil || !dv.Stale || dv.LastResult != "servfail" {
		t.Errorf("phase 2: status discovery %+v, want stale with last result servfail", dv)
	}

	// Phase 3: both resolvers answer, but with no records (NOERROR, empty).
	// The set holds while the answer awaits confirmation and keeps holding
	// after it was confirmed: a pool never becomes empty because of DNS.
	empty0 := lookups("empty")
	primary.SetFaults(dnstest.Empty)
	secondary.SetFaults(dnstest.Empty)
	snap = served()
	phase("phase 3: empty answers", 10*time.Second, func() bool { return lookups("empty")-empty0 >= confirm+3 })
	everyBackendServed("phase 3", snap)
	poolIntact("phase 3")
	if n := lookups("empty") - empty0; n < confirm+3 {
		t.Errorf("phase 3: %v empty answers, want more than confirm (%d)", n, confirm)
	}
	if v := stale(); v != 1 {
		t.Errorf("phase 3: holdfast_discovery_stale = %v while empty answers are refused, want 1", v)
	}

	// Phase 4: DNS answers again, with one backend of four: a shrink beyond
	// max_shrink, which applies only once `confirm` answers agree.
	ok0 = lookups("ok")
	primary.Set(name, dns.TypeSRV, records[0])
	secondary.Set(name, dns.TypeSRV, records[0])
	primary.SetFaults()
	secondary.SetFaults()
	var okAtShrink float64
	phase("phase 4: shrink to one backend", 10*time.Second, func() bool {
		if a.Pool("api").Status().Total != 1 {
			return false
		}
		okAtShrink = lookups("ok") - ok0 // read after the shrink was seen
		return true
	})
	if okAtShrink < confirm {
		t.Errorf("phase 4: the shrink applied after %v answers, want %d (confirm)", okAtShrink, confirm)
	}
	if ps := a.Pool("api").Status(); ps.Total != 1 || ps.Routable != 1 {
		t.Errorf("phase 4: pool %d backends, %d routable after the confirmed shrink; want 1", ps.Total, ps.Routable)
	}
	if v := stale(); v != 0 {
		t.Errorf("phase 4: holdfast_discovery_stale = %v after the confirmed answer, want 0", v)
	}
	t.Logf("phase 4: shrink applied after %v matching answers (confirm %d)", okAtShrink, confirm)
}
