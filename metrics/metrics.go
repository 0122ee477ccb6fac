// Package metrics defines holdfast's Prometheus collectors (SPEC.md names),
// built on an injected registry so tests and reloads never share globals.
package metrics

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

const ns = "holdfast"

// Metrics holds every collector. Safe for concurrent use.
type Metrics struct {
	Requests          *prometheus.CounterVec
	RequestDuration   *prometheus.HistogramVec
	BackendUp         *prometheus.GaugeVec
	BackendState      *prometheus.GaugeVec
	BackendOverride   *prometheus.GaugeVec
	BackendRequests   *prometheus.CounterVec
	BackendInflight   *prometheus.GaugeVec
	BackendConns      *prometheus.GaugeVec
	BackendTrans      *prometheus.CounterVec
	HealthChecks      *prometheus.CounterVec
	Retries           *prometheus.CounterVec
	RetryBudgetOut    *prometheus.CounterVec
	DiscoveryLookups  *prometheus.CounterVec
	DiscoveryQueries  *prometheus.CounterVec
	DiscoveryStale    *prometheus.GaugeVec
	DiscoveryBackends *prometheus.GaugeVec
	DiscoveryLastOK   *prometheus.GaugeVec
	Reloads           prometheus.Counter
	ReloadFailures    prometheus.Counter
	ListenerConns     *prometheus.GaugeVec
	ListenerIdle      *prometheus.GaugeVec
	ListenerRejected  *prometheus.CounterVec
	ListenerAcceptErr *prometheus.CounterVec
	RateLimited       *prometheus.CounterVec
	AccessLogBlocked  prometheus.Counter

	inflightSource atomic.Pointer[func(set func(pool, backend string, v float64))]
}

// SetInflightSource gives the function that reports every backend's
// in-flight count when /metrics is scraped. The request path keeps the count
// in an atomic on the endpoint; updating a float gauge there too would cost
// two compare-and-swap loops per request for a value read once a scrape.
func (m *Metrics) SetInflightSource(f func(set func(pool, backend string, v float64))) {
	m.inflightSource.Store(&f)
}

// syncedGauge sets its values from a source just before it is collected.
type syncedGauge struct {
	vec  *prometheus.GaugeVec
	sync *atomic.Pointer[func(set func(pool, backend string, v float64))]
}

func (g *syncedGauge) Describe(ch chan<- *prometheus.Desc) { g.vec.Describe(ch) }

func (g *syncedGauge) Collect(ch chan<- prometheus.Metric) {
	if f := g.sync.Load(); f != nil {
		(*f)(func(pool, backend string, v float64) { g.vec.WithLabelValues(pool, backend).Set(v) })
	}
	g.vec.Collect(ch)
}

// New builds the collectors and registers them on reg (nil: not registered).
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "requests_total",
			Help: "Requests answered, by listener, pool and status class."}, []string{"listener", "pool", "code"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "request_duration_seconds",
			Help:    "Time from request read to response written.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"listener", "pool"}),
		BackendUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "backend_up",
			Help: "1 when the backend is routable, 0 when not."}, []string{"pool", "backend"}),
		BackendState: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "backend_state",
			Help: "1 for the backend's current state."}, []string{"pool", "backend", "state"}),
		BackendOverride: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "backend_override",
			Help: "1 for each operator override in force on the backend (drain, disable, weight)."}, []string{"pool", "backend", "override"}),
		BackendRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "backend_requests_total",
			Help: "Upstream attempts, by backend and status class."}, []string{"pool", "backend", "code"}),
		BackendInflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "backend_inflight",
			Help: "Requests in flight to the backend."}, []string{"pool", "backend"}),
		BackendConns: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "backend_connections",
			Help: "Open upstream connections to the backend."}, []string{"pool", "backend"}),
		BackendTrans: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "backend_transitions_total",
			Help: "Healthy/unhealthy crossings of the backend."}, []string{"pool", "backend"}),
		HealthChecks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "health_checks_total",
			Help: "Active health checks, by result."}, []string{"pool", "backend", "result"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "retries_total",
			Help: "Upstream attempts retried, by reason."}, []string{"pool", "reason"}),
		RetryBudgetOut: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "retry_budget_exhausted_total",
			Help: "Retries not sent because the pool's retry budget was spent."}, []string{"pool"}),
		DiscoveryLookups: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "discovery_lookups_total",
			Help: "DNS lookups, by result."}, []string{"pool", "resolver", "result"}),
		DiscoveryQueries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "discovery_server_queries_total",
			Help: "DNS queries by server and result, including failures hidden by failover to the next server."}, []string{"pool", "server", "result"}),
		DiscoveryStale: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "discovery_stale",
			Help: "1 while the pool serves its last good set after lookup failures."}, []string{"pool"}),
		DiscoveryBackends: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "discovery_backends",
			Help: "Backends in the pool's current discovered set."}, []string{"pool"}),
		DiscoveryLastOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "discovery_last_success_timestamp_seconds",
			Help: "Unix time of the last successful lookup."}, []string{"pool"}),
		Reloads: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "config_reloads_total",
			Help: "Configuration reloads applied."}),
		ReloadFailures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "config_reload_failures_total",
			Help: "Configuration reloads rejected."}),
		ListenerConns: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "listener_connections",
			Help: "Open client connections on the listener."}, []string{"listener"}),
		ListenerIdle: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "listener_idle_connections",
			Help: "Keep-alive client connections waiting for a request."}, []string{"listener"}),
		ListenerRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "listener_rejected_total",
			Help: "Client connections or requests refused, by reason (denied, proxy_untrusted, max_connections, bad_request, ...)."}, []string{"listener", "reason"}),
		ListenerAcceptErr: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "listener_accept_errors_total",
			Help: "Failed accepts (EMFILE, ENFILE, ENOBUFS, ...), by reason; the listener pauses and resumes."}, []string{"listener", "reason"}),
		RateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "rate_limited_total",
			Help: "Requests answered 429 by a route's rate_limit."}, []string{"listener", "route"}),
		AccessLogBlocked: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "access_log_blocked_seconds_total",
			Help: "Time requests waited for room in the full access-log queue (the log writer, e.g. stdout, fell behind)."}),
	}
	if reg != nil {
		reg.MustRegister(m.Requests, m.RequestDuration, m.BackendUp, m.BackendState, m.BackendOverride, m.BackendRequests,
			&syncedGauge{vec: m.BackendInflight, sync: &m.inflightSource}, m.BackendConns, m.BackendTrans, m.HealthChecks, m.Retries, m.RetryBudgetOut,
			m.DiscoveryLookups, m.DiscoveryQueries, m.DiscoveryStale, m.DiscoveryBackends, m.DiscoveryLastOK,
			m.Reloads, m.ReloadFailures, m.ListenerConns, m.ListenerIdle, m.ListenerRejected, m.ListenerAcceptErr, m.RateLimited,
			m.AccessLogBlocked)
	}
	return m
}

// CodeClasses are the values of the code label, indexed by status/100.
var CodeClasses = [6]string{"", "1xx", "2xx", "3xx", "4xx", "5xx"}

// ClassIndex maps a status code to its index in CodeClasses (1..5).
func ClassIndex(status int) int {
	c := status / 100
	if c < 1 || c > 5 {
		return 5
	}
	return c
}

// RequestSet holds one listener+pool's request counters, resolved once so the
// request path never looks up labels.
type RequestSet struct {
	ByClass  [6]prometheus.Counter
	Duration prometheus.Observer
}

// ForRequests resolves the counters for a listener and pool.
func (m *Metrics) ForRequests(listener, pool string) *RequestSet {
	s := &RequestSet{Duration: m.RequestDuration.WithLabelValues(listener, pool)}
	for i := 1; i < len(CodeClasses); i++ {
		s.ByClass[i] = m.Requests.WithLabelValues(listener, pool, CodeClasses[i])
	}
	return s
}

// BackendSet holds one backend's hot-path collectors.
type BackendSet struct {
	ByClass [6]prometheus.Counter
	Conns   prometheus.Gauge
}

// ForBackend resolves the counters of a backend.
func (m *Metrics) ForBackend(pool, backend string) *BackendSet {
	s := &BackendSet{
		Conns: m.BackendConns.WithLabelValues(pool, backend),
	}
	for i := 1; i < len(CodeClasses); i++ {
		s.ByClass[i] = m.BackendRequests.WithLabelValues(pool, backend, CodeClasses[i])
	}
	return s
}

// ForgetBackend drops every series of a backend that left its pool.
func (m *Metrics) ForgetBackend(pool, backend string) {
	l := prometheus.Labels{"pool": pool, "backend": backend}
	m.BackendUp.DeletePartialMatch(l)
	m.BackendState.DeletePartialMatch(l)
	m.BackendOverride.DeletePartialMatch(l)
	m.BackendRequests.DeletePartialMatch(l)
	m.BackendInflight.DeletePartialMatch(l)
	m.BackendConns.DeletePartialMatch(l)
	m.BackendTrans.DeletePartialMatch(l)
	m.HealthChecks.DeletePartialMatch(l)
}
