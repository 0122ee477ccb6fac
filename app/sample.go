package app

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/holdfast-lb/holdfast/balancer"
)

// sampleEvery is the step of the dashboard's rates and charts.
const sampleEvery = time.Second

// runSampler records every pool's traffic counters once a second for the
// dashboard (balancer.Pool.Sample): the one reader of the request path's
// atomics, so a request never takes a lock for the status page.
func (a *App) runSampler(ctx context.Context) {
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	a.sampleAll(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			a.sampleAll(now)
		}
	}
}

func (a *App) sampleAll(now time.Time) {
	a.mu.Lock()
	pools := make([]*balancer.Pool, 0, len(a.pools))
	for _, rt := range a.pools {
		pools = append(pools, rt.pool)
	}
	a.mu.Unlock()
	for _, p := range pools {
		p.Sample(now)
	}
}

// gaugeValue reads a gauge's current value (a status page read, not a
// request path one).
func gaugeValue(g prometheus.Gauge) int64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil || m.Gauge == nil {
		return 0
	}
	return int64(m.Gauge.GetValue())
}
