package balancer

import (
	"slices"
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
}

// DiscoveryView is the freshness of a pool's discovered set.
type DiscoveryView struct {
	Stale       bool      `json:"stale"`
	LastSuccess time.Time `json:"last_success"`
	Age         string    `json:"age"`
	Backends    int       `json:"backends"`
	LastResult  string    `json:"last_result"`
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
	return ps
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
	return v
}

var (
	_ discovery.Observer       = (*DiscoveryState)(nil)
	_ discovery.ServerObserver = (*DiscoveryState)(nil)
)
