package balancer

import (
	"fmt"
	"math"
	"testing"
	"time"
)

// The rates and percentiles come from the counters' growth between
// samples, with an injected clock: 100 answers a second, 10% of them 5xx
// and 5% connect failures, latencies 1-2 ms for 98% and 1 s for 2%.
func TestTrafficView(t *testing.T) {
	var tr Traffic
	t0 := time.Unix(1_000_000, 0)
	tr.sample(t0, 0, 0)
	if v := tr.view(); v != nil {
		t.Fatalf("view after one sample: %+v, want nil", v)
	}
	for s := 1; s <= 15; s++ {
		for i := range 100 {
			switch {
			case i < 10:
				tr.Status(Out5xx, 1500*time.Microsecond)
			case i < 15:
				tr.Status(OutConnect, 1500*time.Microsecond)
			case i < 17:
				tr.Status(Out4xx, time.Second)
			default:
				tr.Status(Out2xx, 1500*time.Microsecond)
			}
		}
		tr.Count(OutRetry)
		tr.sample(t0.Add(time.Duration(s)*time.Second), int64(s), 2)
	}
	v := tr.view()
	if v == nil {
		t.Fatal("no view after 16 samples")
	}
	near := func(name string, got, want, tol float64) {
		t.Helper()
		if math.Abs(got-want) > tol {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	near("window", v.WindowSeconds, rateWindow, 0)
	near("rate", v.Rate, 100, 0.001)
	near("error rate (5xx + connect, not 4xx)", v.ErrorRate, 15, 0.001)
	near("errors[5xx]", v.Errors["5xx"], 10, 0.001)
	near("errors[connect_failure]", v.Errors["connect_failure"], 5, 0.001)
	near("errors[4xx]", v.Errors["4xx"], 2, 0.001)
	near("retry rate", v.retryRate, 1, 0.001)
	// 1.5 ms falls in the (1 ms, 2 ms] bucket; the 99th percentile in the
	// (500 ms, 1 s] one.
	if v.P50Ms <= 1 || v.P50Ms > 2 {
		t.Errorf("p50 = %v ms, want within (1, 2]", v.P50Ms)
	}
	if v.P99Ms <= 500 || v.P99Ms > 1000 {
		t.Errorf("p99 = %v ms, want within (500, 1000]", v.P99Ms)
	}
	if got := v.Totals["2xx"]; got != 15*83 {
		t.Errorf("totals[2xx] = %d, want %d", got, 15*83)
	}
	if n := len(v.Series.Rate); n != 15 || v.Series.Rate[n-1] != 100 || v.Series.Inflight[n-1] != 15 || v.Series.Connections[0] != 2 {
		t.Errorf("series = %+v", v.Series)
	}
}

// The series ring keeps the last seriesLen samples, oldest first.
func TestTrafficSeriesBounded(t *testing.T) {
	var tr Traffic
	t0 := time.Unix(1_000_000, 0)
	for s := range seriesLen + 50 {
		tr.sample(t0.Add(time.Duration(s)*time.Second), int64(s), 0)
	}
	v := tr.view()
	if n := len(v.Series.Inflight); n != seriesLen-1 {
		t.Fatalf("%d points, want %d", n, seriesLen-1)
	}
	if first, last := v.Series.Inflight[0], v.Series.Inflight[seriesLen-2]; first != 51 || last != seriesLen+49 {
		t.Errorf("points run %d..%d, want 51..%d", first, last, seriesLen+49)
	}
}

func TestQuantile(t *testing.T) {
	for _, tc := range []struct {
		name string
		fill map[int]uint64 // bucket index: count
		q    float64
		want float64
	}{
		{"empty", nil, 0.5, 0},
		{"one bucket, middle", map[int]uint64{2: 10}, 0.5, 0.75}, // (0.5, 1] ms
		{"first bucket", map[int]uint64{0: 4}, 1, 0.25},
		{"overflow answers the last bound", map[int]uint64{numLatency - 1: 3}, 0.99, 30000},
		{"split", map[int]uint64{0: 50, 4: 50}, 0.99, 2 + 3*0.98},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h [numLatency]uint64
			for i, c := range tc.fill {
				h[i] = c
			}
			if got := quantile(&h, tc.q); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

// The timeline keeps the last maxEvents, oldest first.
func TestEventRingBounded(t *testing.T) {
	var r eventRing
	for i := range maxEvents + 7 {
		r.add(Event{Backend: fmt.Sprint(i), Kind: "health", To: "healthy"})
	}
	evs := r.list()
	if len(evs) != maxEvents || evs[0].Backend != "7" || evs[maxEvents-1].Backend != fmt.Sprint(maxEvents+6) {
		t.Fatalf("%d events, %s..%s", len(evs), evs[0].Backend, evs[len(evs)-1].Backend)
	}
}

// Every DNS query's result is kept per server (bounded), and lookups in
// order, for the status page.
func TestDiscoveryAnswers(t *testing.T) {
	var d DiscoveryState
	d.Lookup("ok")
	for i := range maxAnswers + 5 {
		d.ServerResult("10.0.0.2:53", []string{"servfail", "ok"}[i%2])
	}
	d.ServerResult("10.0.0.3:53", "ok")
	for i := range maxLookups + 3 {
		d.Answered("ok", i, nil)
	}
	v := d.view(time.Now())
	if len(v.Servers) != 2 || v.Servers[0].Server != "10.0.0.2:53" {
		t.Fatalf("servers %+v", v.Servers)
	}
	s := v.Servers[0]
	if len(s.Recent) != maxAnswers || s.Counts["servfail"] != 13 || s.Counts["ok"] != 12 || s.LastResult != "servfail" {
		t.Errorf("server view: %d recent, counts %v, last %q", len(s.Recent), s.Counts, s.LastResult)
	}
	if len(v.Lookups) != maxLookups || v.Lookups[0].Records != 3 || v.Lookups[maxLookups-1].Records != maxLookups+2 {
		t.Errorf("lookups: %+v", v.Lookups)
	}
}

// BenchmarkTrafficStatus is the dashboard's cost per attempt on the
// request path: one outcome counter and one histogram bucket.
func BenchmarkTrafficStatus(b *testing.B) {
	var tr Traffic
	b.RunParallel(func(pb *testing.PB) {
		d := 3 * time.Millisecond
		for pb.Next() {
			tr.Status(Out2xx, d)
		}
	})
}
