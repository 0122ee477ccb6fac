package health

import (
	"context"
	"math/rand/v2"
	"time"
)

// Defaults for a Prober with unset fields (the SPEC defaults).
const (
	defaultInterval = 2 * time.Second
	// maxFirstDelay bounds the random offset before a backend's first probe,
	// so a new backend is judged soon but probes of many backends do not align.
	maxFirstDelay = time.Second
)

// Prober runs a Checker against one backend on a schedule. Its fields are
// read by Run and must not change while Run runs; one Prober may drive many
// backends (one Run per backend) if its Checker and Rand are safe for
// concurrent use (the Checkers in this package are; the default Rand is).
type Prober struct {
	// Checker performs one probe (required).
	Checker Checker
	// Interval is the time between probe starts (2s when not positive).
	Interval time.Duration
	// Timeout bounds each probe (Interval when not positive).
	Timeout time.Duration
	// Jitter spreads each interval by ±Jitter×Interval (0.1 = ±10%).
	Jitter float64
	// Rand returns a number in [0, 1); nil uses math/rand/v2.
	Rand func() float64
}

// Run probes addr until ctx ends, then returns. The first probe starts after a
// random offset below min(Interval, 1s); later probes start Interval ± jitter
// after the previous one started, or at once if a probe outlasted that. At
// most one probe is in flight, each bounded by Timeout. result is called with
// each probe's error (nil = pass) on Run's goroutine, never after Run returns,
// and not for a probe cut short because ctx ended.
func (p *Prober) Run(ctx context.Context, addr string, result func(err error)) {
	interval := p.Interval
	if interval <= 0 {
		interval = defaultInterval
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = interval
	}
	rnd := p.Rand
	if rnd == nil {
		rnd = rand.Float64
	}

	timer := time.NewTimer(firstDelay(interval, rnd()))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		start := time.Now()
		pctx, cancel := context.WithTimeout(ctx, timeout)
		err := p.Checker.Check(pctx, addr)
		cancel()
		if ctx.Err() != nil {
			return // our shutdown, not the backend's failure
		}
		result(err)

		timer.Reset(max(jittered(interval, p.Jitter, rnd())-time.Since(start), 0))
	}
}

// firstDelay is the random offset before the first probe, for r in [0, 1).
func firstDelay(interval time.Duration, r float64) time.Duration {
	return time.Duration(r * float64(min(interval, maxFirstDelay)))
}

// jittered is interval spread by ±jitter×interval, for r in [0, 1); jitter is
// clamped to [0, 1] so an interval never goes negative.
func jittered(interval time.Duration, jitter, r float64) time.Duration {
	jitter = min(max(jitter, 0), 1)
	return time.Duration(float64(interval) * (1 + jitter*(2*r-1)))
}
