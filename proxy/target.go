package proxy

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-lb/holdfast/balancer"
	"github.com/holdfast-lb/holdfast/metrics"
)

// RetryPolicy says when an attempt is tried again on another backend.
type RetryPolicy struct {
	// Attempts is the number of retries after the first try.
	Attempts int
	// Budget caps retries as a share of requests (0.2 = 20%).
	Budget float64
	// OnConnectFailure retries requests whose bytes never reached a backend.
	OnConnectFailure bool
	// OnReset retries idempotent requests reset before a response began.
	OnReset bool
	// OnStatus are the backend statuses (5xx) whose answer is dropped and
	// the request tried on another backend, when it can be replayed.
	OnStatus []int
	// PerTryTimeout bounds each attempt until its response head (0: only
	// the pool's response timeout); an idempotent request whose try
	// timed out is tried on another backend.
	PerTryTimeout time.Duration
}

// onStatus reports whether status is one to retry on.
func (p *RetryPolicy) onStatus(status int) bool {
	for _, s := range p.OnStatus {
		if s == status {
			return true
		}
	}
	return false
}

// HashKind says where consistent_hash and maglev take their key.
type HashKind uint8

// Hash key sources.
const (
	HashNone HashKind = iota
	HashClientIP
	HashHeader
	HashCookie
)

// TargetConfig is the part of a pool's config the data path reads per
// request. Replaced whole on reload.
type TargetConfig struct {
	Retry    RetryPolicy
	HashKind HashKind
	HashName string
	// BufferBody is how much of a request body is kept for a retry.
	BufferBody int
	// H2 is set when the pool reaches its backends over HTTP/2 (protocol
	// h2 or h2c): gRPC calls may go there.
	H2 bool
}

// Target is a pool as the data path sees it: its balancer, retry budget and
// per-request options. Safe for concurrent use; shared by every listener
// that routes to the pool, and kept across reloads while the pool remains.
type Target struct {
	Name string
	Pool *balancer.Pool
	cfg  atomic.Pointer[TargetConfig]

	// Retry budget in thousandths of a retry: each request deposits
	// Budget×1000, each retry withdraws 1000.
	tokens atomic.Int64

	retryConnect, retryReset, retryTimeout prometheus.Counter
	budgetOut                              prometheus.Counter     // holdfast_retry_budget_exhausted_total
	retries                                *prometheus.CounterVec // by reason, for status codes

	msg503, msg502, msg504, msg413 []byte
}

// tokenCap bounds the saved-up retry budget (in thousandths).
const tokenCap = 100 * 1000

// NewTarget wraps a pool for the data path.
func NewTarget(pool *balancer.Pool, cfg *TargetConfig, m *metrics.Metrics) *Target {
	t := &Target{
		Name:   pool.Name(),
		Pool:   pool,
		msg503: []byte("503 Service Unavailable: no routable backend in pool " + pool.Name() + "\n"),
		msg502: []byte("502 Bad Gateway: upstream failed in pool " + pool.Name() + "\n"),
		msg504: []byte("504 Gateway Timeout: upstream too slow in pool " + pool.Name() + "\n"),
		msg413: []byte("413 Request Entity Too Large (pool " + pool.Name() + ")\n"),
	}
	t.cfg.Store(cfg)
	pool.SetRetryBudget(func() (float64, float64) {
		return float64(max(t.tokens.Load(), 0)) / 1000, t.cfg.Load().Retry.Budget
	})
	// A fresh pool may retry a little before traffic has paid for it.
	t.tokens.Store(10 * 1000)
	if m != nil {
		t.retryConnect = m.Retries.WithLabelValues(pool.Name(), "connect_failure")
		t.retryReset = m.Retries.WithLabelValues(pool.Name(), "reset")
		t.retryTimeout = m.Retries.WithLabelValues(pool.Name(), "per_try_timeout")
		t.retries = m.Retries
		t.budgetOut = m.RetryBudgetOut.WithLabelValues(pool.Name())
	}
	return t
}

// SetConfig replaces the per-request options (reload).
func (t *Target) SetConfig(cfg *TargetConfig) { t.cfg.Store(cfg) }

// Config returns the current per-request options.
func (t *Target) Config() *TargetConfig { return t.cfg.Load() }

func (t *Target) deposit(budget float64) {
	if t.tokens.Load() < tokenCap {
		t.tokens.Add(int64(budget * 1000))
	}
}

func (t *Target) withdraw() bool {
	if t.tokens.Add(-1000) < 0 {
		t.tokens.Add(1000)
		t.Pool.Traffic.Count(balancer.OutBudget)
		if t.budgetOut != nil {
			t.budgetOut.Inc()
		}
		return false
	}
	t.Pool.Traffic.Count(balancer.OutRetry)
	return true
}

// countStatusRetry counts a retry on a backend's status as
// reason="status_503" (the codes come from the config: bounded).
func (t *Target) countStatusRetry(status int) {
	if t.retries != nil {
		t.retries.WithLabelValues(t.Name, "status_"+strconv.Itoa(status)).Inc()
	}
}
