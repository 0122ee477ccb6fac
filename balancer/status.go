package balancer

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holdfast-lb/holdfast/discovery"
	"github.com/holdfast-lb/holdfast/metrics"
)

// BackendStatus is one backend as the status page shows it.
type BackendStatus struct {
	Address             string    `json:"address"`
	Weight              int       `json:"weight"`
	Priority            int       `json:"priority"`
	State               string    `json:"state"`
	Routable            bool      `json:"routable"`
	Reason              string    `json:"reason,omitempty"`
	Transitions         int       `json:"transitions"`
	HoldUntil           time.Time `json:"-"`
	HoldRemaining       string    `json:"hold_remaining,omitempty"`
	Inflight            int64     `json:"inflight"`
	Connections         int64     `json:"connections"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	LatencyEWMA         string    `json:"latency_ewma,omitempty"`
	// Override is the operator's, when one is in force; Weight is then
	// the effective weight.
	Override *Override `json:"override,omitempty"`
	// Traffic is the backend's attempts (retries included) over the last
	// seconds; absent until sampled twice.
	Traffic *TrafficView `json:"traffic,omitempty"`
}

// PoolStatus is a pool as the status page shows it.
type PoolStatus struct {
	Name      string          `json:"name"`
	Balance   string          `json:"balance"`
	Routable  int             `json:"routable"`
	Total     int             `json:"total"`
	Panic     bool            `json:"panic"`
	Discovery *DiscoveryView  `json:"discovery,omitempty"`
	Backends  []BackendStatus `json:"backends"`
	// Traffic is the requests the pool answered (after retries); absent
	// until sampled twice.
	Traffic *TrafficView `json:"traffic,omitempty"`
	Retries *RetryView   `json:"retries,omitempty"`
	// Events are the last state changes, oldest first (at most 100);
	// Since is when the pool started, where its timeline begins.
	Events []Event   `json:"events"`
	Since  time.Time `json:"since"`
}

// RetryView is a pool's retries and retry budget.
type RetryView struct {
	// Total retries sent and refused by the budget since the start.
	Total     uint64 `json:"total"`
	Exhausted uint64 `json:"budget_exhausted"`
	// Rate and ExhaustedRate are per second over the traffic window.
	Rate          float64 `json:"rate"`
	ExhaustedRate float64 `json:"budget_exhausted_rate"`
	// Budget is the configured share of requests that may be retried;
	// Available the retries the budget would allow right now.
	Budget    float64 `json:"budget"`
	Available float64 `json:"available"`
}

// DiscoveryView is the freshness of a pool's discovered set.
type DiscoveryView struct {
	Stale       bool      `json:"stale"`
	LastSuccess time.Time `json:"last_success"`
	Age         string    `json:"age"`
	Backends    int       `json:"backends"`
	LastResult  string    `json:"last_result"`
	// Servers is each DNS server's recent answers; Lookups the last
	// lookups, oldest first.
	Servers []ServerView `json:"servers,omitempty"`
	Lookups []LookupView `json:"lookups,omitempty"`
}

func (p *Pool) statusOf(now time.Time) []BackendStatus {
	out := make([]BackendStatus, 0, len(p.entries))
	for _, e := range p.entries {
		st := e.visibleState()
		bs := BackendStatus{
			Address:     e.ep.Addr,
			Weight:      e.backend.Weight,
			Priority:    e.backend.Priority,
			State:       st.String(),
			Routable:    e.routable(),
			Reason:      e.tr.Reason(),
			Transitions: e.tr.Transitions(),
		}
		if !e.ov.IsZero() {
			ov := e.ov
			bs.Override = &ov
			if ov.Weight > 0 {
				bs.Weight = ov.Weight
			}
			switch {
			case ov.Disable:
				bs.Reason = "disabled by the operator"
			case ov.Drain:
				bs.Reason = "drained by the operator"
			}
		}
		if h := e.tr.HoldRemaining(now); h > 0 {
			bs.HoldUntil = now.Add(h)
		}
		out = append(out, bs)
	}
	slices.SortFunc(out, func(a, b BackendStatus) int {
		if a.Priority != b.Priority {
			return a.Priority - b.Priority
		}
		if a.Address < b.Address {
			return -1
		}
		return 1
	})
	return out
}

// Status returns the pool's state for the admin status page. Safe for
// concurrent use.
func (p *Pool) Status() PoolStatus {
	s := p.snap.Load()
	now := time.Now()
	ps := PoolStatus{
		Name: p.name, Balance: p.opts.Load().Balance,
		Routable: s.routable, Total: s.total, Panic: s.panic,
		Backends: slices.Clone(s.status),
	}
	// Every endpoint of the snapshot, drained and ejected ones too: their
	// in-flight requests and connections are what an operator waits on.
	eps := make(map[string]*Endpoint, len(s.all))
	for _, e := range s.all {
		eps[e.Addr] = e
	}
	for i := range ps.Backends {
		b := &ps.Backends[i]
		if !b.HoldUntil.IsZero() && b.HoldUntil.After(now) {
			b.HoldRemaining = b.HoldUntil.Sub(now).Round(time.Second).String()
		}
		if e := eps[b.Address]; e != nil {
			b.Inflight = e.Inflight()
			b.Connections = e.Conns()
			b.ConsecutiveFailures = e.ConsecutiveFailures()
			if l := e.LatencyEWMA(); l > 0 {
				b.LatencyEWMA = l.Round(time.Microsecond).String()
			}
		}
	}
	if v := p.disc.Load().view(now); v != nil {
		ps.Discovery = v
	}
	ps.Events = p.events.list()
	ps.Since = p.since
	ps.Traffic = p.Traffic.view()
	rv := &RetryView{Total: p.Traffic.out[OutRetry].Load(), Exhausted: p.Traffic.out[OutBudget].Load()}
	if ps.Traffic != nil {
		rv.Rate, rv.ExhaustedRate = ps.Traffic.retryRate, ps.Traffic.budgetRate
	}
	if f := p.budget.Load(); f != nil {
		rv.Available, rv.Budget = (*f)()
		rv.Available = round3(rv.Available)
	}
	ps.Retries = rv
	// Every backend's traffic, drained and ejected ones included.
	for i := range ps.Backends {
		if e := eps[ps.Backends[i].Address]; e != nil {
			ps.Backends[i].Traffic = e.Traffic.view()
		}
	}
	return ps
}

// SetRetryBudget gives the function that reports the pool's retry budget:
// the retries it would allow now and the configured share. Safe for
// concurrent use.
func (p *Pool) SetRetryBudget(f func() (available, share float64)) { p.budget.Store(&f) }

// Sample records the pool's and its endpoints' counters as of now, for
// the dashboard's rates, percentiles and charts. One goroutine calls it
// about once a second for every pool; safe for concurrent use with the
// request path and Status.
func (p *Pool) Sample(now time.Time) {
	s := p.snap.Load()
	var inflight, conns int64
	for _, e := range s.all {
		in, c := e.Inflight(), e.Conns()
		e.Traffic.sample(now, in, c)
		inflight += in
		conns += c
	}
	p.Traffic.sample(now, inflight, conns)
}

func endpointsOf(pk Picker) []*Endpoint {
	var ms []member
	switch x := pk.(type) {
	case *RoundRobin:
		return uniq(x.schedule)
	case *LeastConn:
		ms = x.ms
	case *P2C:
		ms = x.draw.ms
	case *Random:
		ms = x.ms
	case *Ring:
		return uniq(x.owners)
	}
	out := make([]*Endpoint, len(ms))
	for i, m := range ms {
		out[i] = m.ep
	}
	return out
}

func uniq(es []*Endpoint) []*Endpoint {
	seen := map[*Endpoint]bool{}
	var out []*Endpoint
	for _, e := range es {
		if !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	return out
}

// DiscoveryState records a pool's discovery freshness; it implements the
// discovery observer. Safe for concurrent use.
type DiscoveryState struct {
	pool     string
	m        *metrics.Metrics
	resolver atomic.Pointer[string]

	active   atomic.Bool
	stale    atomic.Bool
	lastOK   atomic.Int64
	backends atomic.Int64
	last     atomic.Pointer[string]
	// failed is called after a lookup that failed (its pool's Warmed).
	failed atomic.Pointer[func()]

	// The status page's recent answers: one lookup or one DNS query at a
	// time, never per request.
	mu      sync.Mutex
	servers map[string]*serverLog
	lookups [maxLookups]LookupView
	lhead   int
	ln      int
}

// maxLookups bounds the lookups kept per pool; maxAnswers the answers
// kept per server; maxServers the servers tracked.
const (
	maxLookups = 20
	maxAnswers = 20
	maxServers = 16
)

// ServerView is one DNS server's recent answers to a pool's lookups.
type ServerView struct {
	Server     string            `json:"server"`
	LastResult string            `json:"last_result"`
	LastTime   time.Time         `json:"last_time"`
	Counts     map[string]uint64 `json:"counts"`
	// Recent are the last answers (result per query), oldest first.
	Recent []AnswerView `json:"recent"`
}

// AnswerView is one query's result.
type AnswerView struct {
	Time   time.Time `json:"time"`
	Result string    `json:"result"`
}

// LookupView is one lookup of a pool's name, after resolver failover.
type LookupView struct {
	Time    time.Time `json:"time"`
	Result  string    `json:"result"`
	Records int       `json:"records"`
	Error   string    `json:"error,omitempty"`
}

type serverLog struct {
	counts map[string]uint64
	recent [maxAnswers]AnswerView
	head   int
	n      int
}

// Answered records one lookup's detail for the status page.
func (d *DiscoveryState) Answered(result string, records int, err error) {
	lv := LookupView{Time: time.Now(), Result: result, Records: records}
	if err != nil {
		lv.Error = err.Error()
	}
	d.mu.Lock()
	d.lookups[d.lhead] = lv
	d.lhead = (d.lhead + 1) % maxLookups
	d.ln = min(d.ln+1, maxLookups)
	d.mu.Unlock()
}

func (d *DiscoveryState) noteServer(server, result string, at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.servers == nil {
		d.servers = map[string]*serverLog{}
	}
	sl := d.servers[server]
	if sl == nil {
		if len(d.servers) >= maxServers {
			return
		}
		sl = &serverLog{counts: map[string]uint64{}}
		d.servers[server] = sl
	}
	sl.counts[result]++
	sl.recent[sl.head] = AnswerView{Time: at, Result: result}
	sl.head = (sl.head + 1) % maxAnswers
	sl.n = min(sl.n+1, maxAnswers)
}

// answers lists the servers (by name) and lookups for the view.
func (d *DiscoveryState) answers(v *DiscoveryView) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, sl := range d.servers {
		sv := ServerView{Server: name, Counts: maps.Clone(sl.counts)}
		for i := range sl.n {
			sv.Recent = append(sv.Recent, sl.recent[(sl.head-sl.n+i+maxAnswers)%maxAnswers])
		}
		if sl.n > 0 {
			last := sv.Recent[len(sv.Recent)-1]
			sv.LastResult, sv.LastTime = last.Result, last.Time
		}
		v.Servers = append(v.Servers, sv)
	}
	slices.SortFunc(v.Servers, func(a, b ServerView) int { return strings.Compare(a.Server, b.Server) })
	for i := range d.ln {
		v.Lookups = append(v.Lookups, d.lookups[(d.lhead-d.ln+i+maxLookups)%maxLookups])
	}
}

// SetResolver names the resolver for the lookups metric. Safe to call while
// a source reports (a reload).
func (d *DiscoveryState) SetResolver(name string) { d.resolver.Store(&name) }

// Lookup counts one lookup by result.
func (d *DiscoveryState) Lookup(result string) {
	d.active.Store(true)
	d.last.Store(&result)
	if result != discovery.ResultOK {
		if f := d.failed.Load(); f != nil {
			(*f)()
		}
	}
	if d.m != nil {
		res := ""
		if r := d.resolver.Load(); r != nil {
			res = *r
		}
		d.m.DiscoveryLookups.WithLabelValues(d.pool, res, result).Inc()
	}
}

// ServerResult counts one query to one DNS server, so a primary that fails
// while the next server covers for it is still visible.
func (d *DiscoveryState) ServerResult(server, result string) {
	d.noteServer(server, result, time.Now())
	if d.m != nil {
		d.m.DiscoveryQueries.WithLabelValues(d.pool, server, result).Inc()
	}
}

// Applied records a successful lookup that produced n backends.
func (d *DiscoveryState) Applied(n int, at time.Time) {
	d.active.Store(true)
	d.lastOK.Store(at.UnixNano())
	d.backends.Store(int64(n))
	if d.m != nil {
		d.m.DiscoveryBackends.WithLabelValues(d.pool).Set(float64(n))
		d.m.DiscoveryLastOK.WithLabelValues(d.pool).Set(float64(at.UnixNano()) / 1e9)
	}
}

// Stale records whether the pool serves its last good set after failures.
func (d *DiscoveryState) Stale(stale bool) {
	d.stale.Store(stale)
	if d.m != nil {
		v := 0.0
		if stale {
			v = 1
		}
		d.m.DiscoveryStale.WithLabelValues(d.pool).Set(v)
	}
}

func (d *DiscoveryState) view(now time.Time) *DiscoveryView {
	if !d.active.Load() {
		return nil
	}
	v := &DiscoveryView{Stale: d.stale.Load(), Backends: int(d.backends.Load())}
	if ns := d.lastOK.Load(); ns != 0 {
		v.LastSuccess = time.Unix(0, ns)
		v.Age = now.Sub(v.LastSuccess).Round(time.Millisecond).String()
	}
	if r := d.last.Load(); r != nil {
		v.LastResult = *r
	}
	d.answers(v)
	return v
}

var (
	_ discovery.Observer       = (*DiscoveryState)(nil)
	_ discovery.ServerObserver = (*DiscoveryState)(nil)
	_ discovery.AnswerObserver = (*DiscoveryState)(nil)
)
