package balancer

import (
	"sync"
	"sync/atomic"
	"time"
)

// Outcome is how an attempt (on an Endpoint) or a request (on a Pool)
// ended, as the dashboard counts it.
type Outcome uint8

// Outcomes. The status classes are indexed by status/100, so
// Outcome(metrics.ClassIndex(status)) is the class of a status.
const (
	Out1xx Outcome = iota + 1
	Out2xx
	Out3xx
	Out4xx
	Out5xx
	OutConnect   // connect failure: no byte reached the backend
	OutTimeout   // the backend was too slow (response or per-try timeout)
	OutReset     // the connection failed while sending or before a complete response head
	OutQueue     // every connection busy past queue_timeout
	OutClient    // the client aborted or sent a bad body: nobody's fault but its own
	OutLocal     // holdfast itself ran out of descriptors or ports
	OutNoBackend // no routable backend (pool only)
	OutRetry     // a retry was sent (pool only)
	OutBudget    // a retry was refused by the retry budget (pool only)
	numOutcomes
)

// outcomeNames are the JSON keys of the outcomes.
var outcomeNames = [numOutcomes]string{"", "1xx", "2xx", "3xx", "4xx", "5xx", "connect_failure", "timeout",
	"reset", "queue_timeout", "client_abort", "local", "no_backend", "retry", "retry_budget_exhausted"}

// errorOutcomes are the outcomes the dashboard lists as errors, by class;
// every one but 4xx counts in the error rate (a 4xx is the client's).
var errorOutcomes = []Outcome{Out4xx, Out5xx, OutConnect, OutTimeout, OutReset, OutQueue, OutNoBackend}

// latencyBounds are the upper bounds of the latency histogram's buckets;
// one more bucket holds everything slower.
var latencyBounds = [...]time.Duration{
	250 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond,
	5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second,
	2500 * time.Millisecond, 5 * time.Second, 10 * time.Second, 30 * time.Second,
}

const numLatency = len(latencyBounds) + 1

// Traffic counts outcomes and latencies with atomics, for the dashboard:
// the request path adds, one sampler goroutine reads. The zero value is
// ready; every method is safe for concurrent use.
type Traffic struct {
	out [numOutcomes]atomic.Uint64
	lat [numLatency]atomic.Uint64

	// series is written by Sample, read by the status page.
	mu     sync.Mutex
	series *series
}

// Count notes one outcome.
func (t *Traffic) Count(o Outcome) {
	if o < numOutcomes {
		t.out[o].Add(1)
	}
}

// Observe notes one latency.
func (t *Traffic) Observe(d time.Duration) {
	i := 0
	for i < len(latencyBounds) && d > latencyBounds[i] {
		i++
	}
	t.lat[i].Add(1)
}

// Status counts outcome o (a status class or failure) for an answer of d.
func (t *Traffic) Status(o Outcome, d time.Duration) {
	t.Count(o)
	t.Observe(d)
}

// seriesLen is how many one-second samples a series keeps (the charts'
// span); rateWindow is how many the headline rates and percentiles use.
const (
	seriesLen  = 120
	rateWindow = 10
)

// sample is the cumulative counters at one instant.
type sample struct {
	at       time.Time
	out      [numOutcomes]uint64
	lat      [numLatency]uint64
	inflight int64
	conns    int64
}

// series is a ring of samples, oldest first from head.
type series struct {
	ring [seriesLen]sample
	head int // next slot to write
	n    int
}

func (s *series) at(i int) *sample { // i = 0: oldest
	return &s.ring[(s.head-s.n+i+seriesLen)%seriesLen]
}

// sample records the counters as of now, with the gauges given.
func (t *Traffic) sample(now time.Time, inflight, conns int64) {
	var s sample
	s.at, s.inflight, s.conns = now, inflight, conns
	for i := range t.out {
		s.out[i] = t.out[i].Load()
	}
	for i := range t.lat {
		s.lat[i] = t.lat[i].Load()
	}
	t.mu.Lock()
	if t.series == nil {
		t.series = &series{}
	}
	sr := t.series
	sr.ring[sr.head] = s
	sr.head = (sr.head + 1) % seriesLen
	if sr.n < seriesLen {
		sr.n++
	}
	t.mu.Unlock()
}

// TrafficView is what a backend's (attempts) or a pool's (requests
// answered) traffic looked like over the last WindowSeconds, and the
// per-second series the charts draw (oldest first, one point per sample).
type TrafficView struct {
	WindowSeconds float64 `json:"window_seconds"`
	// Rate is per second; ErrorRate counts every error class but 4xx.
	Rate      float64 `json:"rate"`
	ErrorRate float64 `json:"error_rate"`
	// Errors is the rate per second of each error class (4xx, 5xx,
	// connect_failure, timeout, reset, queue_timeout, no_backend).
	Errors map[string]float64 `json:"errors"`
	// P50Ms and P99Ms are latency percentiles in milliseconds, estimated
	// from a fixed-bucket histogram; 0 when nothing was answered.
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	// Totals are the cumulative counts by outcome since the process began
	// (or the backend joined).
	Totals map[string]uint64 `json:"totals"`
	// Series, one point per second: rate, error rate, p99 (ms), in-flight
	// and connections.
	Series SeriesView `json:"series"`

	// retryRate and budgetRate are the pool's retries and refused retries
	// per second over the window.
	retryRate, budgetRate float64
}

// SeriesView is the dashboard's chart data.
type SeriesView struct {
	StepSeconds float64   `json:"step_seconds"`
	Rate        []float64 `json:"rate"`
	ErrorRate   []float64 `json:"error_rate"`
	P99Ms       []float64 `json:"p99_ms"`
	Inflight    []int64   `json:"inflight"`
	Connections []int64   `json:"connections"`
}

// view summarises the samples; nil until two samples exist.
func (t *Traffic) view() *TrafficView {
	t.mu.Lock()
	defer t.mu.Unlock()
	sr := t.series
	if sr == nil || sr.n < 2 {
		return nil
	}
	last := sr.at(sr.n - 1)
	first := sr.at(max(0, sr.n-1-rateWindow))
	v := &TrafficView{Errors: map[string]float64{}, Totals: map[string]uint64{}}
	summarize(v, first, last)
	for i := 1; i < len(outcomeNames); i++ {
		v.Totals[outcomeNames[i]] = last.out[i]
	}
	v.Series.StepSeconds = 1
	for i := 1; i < sr.n; i++ {
		a, b := sr.at(i-1), sr.at(i)
		var p TrafficView
		summarize(&p, a, b)
		v.Series.Rate = append(v.Series.Rate, round3(p.Rate))
		v.Series.ErrorRate = append(v.Series.ErrorRate, round3(p.ErrorRate))
		v.Series.P99Ms = append(v.Series.P99Ms, round3(p.P99Ms))
		v.Series.Inflight = append(v.Series.Inflight, b.inflight)
		v.Series.Connections = append(v.Series.Connections, b.conns)
	}
	return v
}

// summarize fills v's rates and percentiles from the counters between a
// and b (Errors, when not nil, by class).
func summarize(v *TrafficView, a, b *sample) {
	dt := b.at.Sub(a.at).Seconds()
	if dt <= 0 {
		return
	}
	v.WindowSeconds = round3(dt)
	var n, errs uint64
	for i := Out1xx; i <= OutNoBackend; i++ {
		if i == OutClient || i == OutLocal {
			continue
		}
		n += b.out[i] - a.out[i]
	}
	for _, o := range errorOutcomes {
		d := b.out[o] - a.out[o]
		if o != Out4xx {
			errs += d
		}
		if v.Errors != nil {
			v.Errors[outcomeNames[o]] = round3(float64(d) / dt)
		}
	}
	v.Rate = round3(float64(n) / dt)
	v.ErrorRate = round3(float64(errs) / dt)
	var h [numLatency]uint64
	for i := range h {
		h[i] = b.lat[i] - a.lat[i]
	}
	v.P50Ms = round3(quantile(&h, 0.50))
	v.P99Ms = round3(quantile(&h, 0.99))
	v.retryRate = round3(float64(b.out[OutRetry]-a.out[OutRetry]) / dt)
	v.budgetRate = round3(float64(b.out[OutBudget]-a.out[OutBudget]) / dt)
}

// quantile estimates the q-quantile (milliseconds) of the histogram h,
// interpolating linearly inside the bucket it falls in (as Prometheus'
// histogram_quantile does); the overflow bucket answers its lower bound.
func quantile(h *[numLatency]uint64, q float64) float64 {
	var total uint64
	for _, c := range h {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var seen float64
	for i, c := range h {
		if c == 0 {
			continue
		}
		if seen+float64(c) >= rank {
			if i == len(latencyBounds) {
				return ms(latencyBounds[i-1])
			}
			lo := 0.0
			if i > 0 {
				lo = ms(latencyBounds[i-1])
			}
			hi := ms(latencyBounds[i])
			return lo + (hi-lo)*(rank-seen)/float64(c)
		}
		seen += float64(c)
	}
	return ms(latencyBounds[len(latencyBounds)-1])
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func round3(f float64) float64 {
	if f < 0 {
		return -round3(-f)
	}
	return float64(int64(f*1000+0.5)) / 1000
}
