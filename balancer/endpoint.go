// Package balancer turns backend sets plus health into immutable pickers.
//
// Each Pool has one goroutine (the only writer) that reconciles discovery
// sets, active-check results and live-traffic signals into long-lived
// Endpoints keyed by address, builds a Picker from the routable ones, and
// publishes it through an atomic.Pointer. The request path calls
// Pool.Picker().Pick, which takes no lock and never blocks.
package balancer

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/holdfast-lb/holdfast/metrics"
)

// Upstream is the typed seam between a pool and the data path: the
// per-backend client the proxy attaches to each endpoint. Close releases
// what the client holds once the endpoint has left its pool and has
// nothing in flight. Safe to call from the pool's goroutine while
// requests run.
type Upstream interface {
	Close()
}

// Endpoint is one backend of a pool. It lives as long as the address stays
// in the pool, across discovery updates and reloads, so in-flight counts,
// latency averages and health history survive rebuilds. Its counters are
// atomics: every method is safe for concurrent use.
type Endpoint struct {
	// Addr is the backend's host:port.
	Addr string
	// Pool is the name of the pool the endpoint belongs to.
	Pool string
	// Upstream is the data path's per-backend client, attached once by the
	// pool's NewUpstream hook before the endpoint is published; nil when
	// the pool has no hook (tests).
	Upstream Upstream
	// Stats are the backend's hot-path metric children.
	Stats *metrics.BackendSet
	// Traffic counts the attempts' outcomes and latencies for the
	// dashboard (atomics; sampled once a second by Pool.Sample).
	Traffic Traffic

	inflight   atomic.Int64
	conns      atomic.Int64
	consecFail atomic.Int32
	ewmaNanos  atomic.Int64
	failures   atomic.Uint64
	successes  atomic.Uint64

	// ejectThreshold is read on the request path (a pool option).
	ejectThreshold atomic.Int32
	signal         func(*Endpoint) // tells the pool goroutine; never blocks
	draining       atomic.Bool
}

// Inflight is the number of requests in flight to the endpoint.
func (e *Endpoint) Inflight() int64 { return e.inflight.Load() }

// Begin marks the start of an attempt on the endpoint.
func (e *Endpoint) Begin() { e.inflight.Add(1) }

// End marks the end of an attempt that took d.
func (e *Endpoint) End(d time.Duration) {
	e.inflight.Add(-1)
	// EWMA with alpha 1/8, in integer nanoseconds; races only lose samples.
	old := e.ewmaNanos.Load()
	n := int64(d)
	if old == 0 {
		e.ewmaNanos.Store(n)
	} else {
		e.ewmaNanos.Store(old + (n-old)/8)
	}
}

// Conns is the number of open upstream connections.
func (e *Endpoint) Conns() int64 { return e.conns.Load() }

// ConnOpened and ConnClosed keep the connection count.
func (e *Endpoint) ConnOpened() { e.conns.Add(1) }

// ConnClosed notes a closed upstream connection.
func (e *Endpoint) ConnClosed() { e.conns.Add(-1) }

// Success notes an attempt that the backend answered well.
func (e *Endpoint) Success() {
	e.successes.Add(1)
	if e.consecFail.Load() != 0 {
		e.consecFail.Store(0)
	}
}

// Failure notes an attempt that failed (connect failure, reset, 5xx). When
// the consecutive count reaches the pool's outlier threshold the pool
// goroutine is told, which decides on ejection.
func (e *Endpoint) Failure() {
	e.failures.Add(1)
	n := e.consecFail.Add(1)
	if t := e.ejectThreshold.Load(); t > 0 && n >= t && e.signal != nil {
		e.signal(e)
	}
}

// ConsecutiveFailures is the current run of failed attempts.
func (e *Endpoint) ConsecutiveFailures() int { return int(e.consecFail.Load()) }

// LatencyEWMA is the smoothed attempt latency.
func (e *Endpoint) LatencyEWMA() time.Duration { return time.Duration(e.ewmaNanos.Load()) }

// Draining reports whether the endpoint has left its pool.
func (e *Endpoint) Draining() bool { return e.draining.Load() }

// cost is the p2c_ewma score: latency weighted by outstanding work.
func (e *Endpoint) cost() float64 {
	l := float64(e.ewmaNanos.Load())
	if l == 0 {
		l = 1
	}
	return l * float64(e.inflight.Load()+1)
}

func load(e *Endpoint, w float64) float64 {
	if w <= 0 {
		return math.Inf(1)
	}
	return float64(e.inflight.Load()) / w
}
