package balancer

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holdfast-lb/holdfast/discovery"
	"github.com/holdfast-lb/holdfast/health"
	"github.com/holdfast-lb/holdfast/metrics"
)

// Options configure a pool. A Pool takes a new Options on reload without
// losing its endpoints' state.
type Options struct {
	Name           string
	Balance        string
	PanicThreshold float64
	SlowStart      time.Duration
	MaxEjected     float64
	Policy         health.Policy
	// Prober runs active checks; nil means none.
	Prober *health.Prober
	// Source produces the backend sets.
	Source discovery.Source
	// SourceKey identifies Source: when a reload brings the same key, the
	// running source is kept (its last good set and timers with it).
	SourceKey string
	// Overrides are the operator's overrides (drain, disable, weight),
	// read on every rebuild; nil: none. The process owns them, so they
	// outlive reloads.
	Overrides *Overrides
}

// Hooks attach the data path's per-backend client to endpoints.
type Hooks struct {
	// NewUpstream is called once per new endpoint, before it is published.
	NewUpstream func(*Endpoint) Upstream
	// CloseUpstream is called when a drained endpoint has nothing in flight.
	CloseUpstream func(*Endpoint)
	// Changed, when set, is called on the pool's goroutine after every
	// rebuild (a set, health or override change): the state file's cue.
	// It must not block.
	Changed func()
}

// Saved is what a pool keeps across a restart: the set it serves (not
// draining members) and each member's health. Read it with Pool.Saved.
type Saved struct {
	Set    []discovery.Backend
	Health map[string]health.Saved
}

type snapshot struct {
	all      []*Endpoint // every endpoint, draining ones included
	picker   Picker
	routable int
	total    int
	panic    bool
	status   []BackendStatus
	built    time.Time
	saved    *Saved
}

// Pool is one pool's endpoints and its current picker. Picker and Status are
// safe for concurrent use; everything else runs on the pool's goroutine.
type Pool struct {
	name  string
	hooks Hooks
	m     *metrics.Metrics
	log   *slog.Logger
	now   func() time.Time

	snap       atomic.Pointer[snapshot]
	opts       atomic.Pointer[Options]
	hadBackend atomic.Bool // set on the first rebuild with an entry; never cleared
	// Discovery freshness, written by the source's observer.
	Discovery DiscoveryState
	// disc is the DiscoveryState the running source reports to and Status
	// shows: Discovery, or the one the source was built with (discoveryOf).
	disc atomic.Pointer[DiscoveryState]
	// Traffic counts the requests the pool answered (by the data path)
	// and its retries, for the dashboard.
	Traffic Traffic
	// events is the dashboard's timeline of state changes.
	events eventRing
	since  time.Time // when the pool was made
	// budget reports the retry budget: retries available now and the
	// configured share (SetRetryBudget).
	budget atomic.Pointer[func() (float64, float64)]

	sets    chan setMsg
	checks  chan checkMsg
	ejects  chan *Endpoint
	updates chan *Options
	pokes   chan chan struct{} // Refresh: rebuild, then close the channel
	done    chan struct{}
	// warmed is closed by settle: the pool can route, or its discovery
	// failed (Warmed).
	warmed     chan struct{}
	settleOnce sync.Once
	settleFn   func()

	// Owned by run.
	restored  map[string]health.Saved // RestoreHealth's, used up by newEntry
	entries   map[string]*entry
	sourceGen int
	stopSrc   context.CancelFunc
	runCtx    context.Context
	wg        sync.WaitGroup
}

type entry struct {
	ep          *Endpoint
	backend     discovery.Backend
	tr          *health.Tracker
	stopProbe   context.CancelFunc
	upSince     time.Time
	state       health.State
	transitions int
	draining    bool
	ov          Override // the operator's, as of the last rebuild
}

type setMsg struct {
	gen int
	bs  []discovery.Backend
}

type checkMsg struct {
	ep  *Endpoint
	err error
}

// NewPool makes a pool; Run starts it.
func NewPool(o *Options, hooks Hooks, m *metrics.Metrics, log *slog.Logger) *Pool {
	p := &Pool{
		name:    o.Name,
		hooks:   hooks,
		m:       m,
		log:     log.With("pool", o.Name),
		now:     time.Now,
		sets:    make(chan setMsg, 4),
		checks:  make(chan checkMsg, 64),
		ejects:  make(chan *Endpoint, 64),
		updates: make(chan *Options, 1),
		pokes:   make(chan chan struct{}),
		done:    make(chan struct{}),
		warmed:  make(chan struct{}),
		entries: map[string]*entry{},
		since:   time.Now(),
	}
	p.settleFn = func() { p.settleOnce.Do(func() { close(p.warmed) }) }
	p.opts.Store(o)
	p.Discovery.pool = o.Name
	p.Discovery.m = m
	p.disc.Store(p.discoveryOf(o))
	p.snap.Store(&snapshot{picker: emptyPicker{}})
	return p
}

// RestoreHealth gives the pool health saved by an earlier process, by
// address: a backend that joins with a saved address starts from it (a
// held-down one stays held until its saved end). Addresses that never join
// are ignored. Call before Run.
func (p *Pool) RestoreHealth(m map[string]health.Saved) { p.restored = m }

// Saved returns the pool's state as of its last rebuild, for the state
// file; nil before the first. Safe for concurrent use; do not modify it.
func (p *Pool) Saved() *Saved { return p.snap.Load().saved }

// Endpoints returns every endpoint of the pool, draining ones included, as
// of the last rebuild. Safe for concurrent use; do not modify the slice.
func (p *Pool) Endpoints() []*Endpoint { return p.snap.Load().all }

// Name is the pool's name.
func (p *Pool) Name() string { return p.name }

// Picker returns the current picker snapshot. Never nil.
func (p *Pool) Picker() Picker { return p.snap.Load().picker }

// Routable is the number of routable endpoints in the current snapshot.
func (p *Pool) Routable() int { return p.snap.Load().routable }

// Ready reports whether the pool has a backend to send traffic to.
func (p *Pool) Ready() bool { s := p.snap.Load(); return s.routable > 0 || (s.panic && s.total > 0) }

// HadBackend reports whether the pool has had at least one backend since it
// started (a static member, a discovered one or one restored from a state
// file), routable or not. A pool that never had one, such as a pool just
// added whose DNS is dead, does not count against the instance's readiness.
// Safe for concurrent use.
func (p *Pool) HadBackend() bool { return p.hadBackend.Load() }

// Options returns the pool's current options.
func (p *Pool) Options() *Options { return p.opts.Load() }

// Update hands the pool new options (a reload). Endpoints that remain keep
// their state.
func (p *Pool) Update(o *Options) {
	select {
	case <-p.updates: // a newer update replaces one not yet applied
	default:
	}
	p.updates <- o
}

// Warmed is closed once the pool can route (Ready), or once its discovery
// has answered with a failure, after which waiting longer for a first set
// would not help. It stays closed. A new pool's warm-up waits on it.
func (p *Pool) Warmed() <-chan struct{} { return p.warmed }

// Done is closed when Run has returned and every probe has stopped.
func (p *Pool) Done() <-chan struct{} { return p.done }

// Run is the pool's goroutine: the only writer of its endpoints.
func (p *Pool) Run(ctx context.Context) {
	defer close(p.done)
	p.runCtx = ctx
	p.startSource(p.opts.Load())
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var waiters []chan struct{}
	for {
		dirty := false
		select {
		case w := <-p.pokes:
			waiters = append(waiters, w)
			dirty = true
		case <-ctx.Done():
			if p.stopSrc != nil {
				p.stopSrc()
			}
			for _, e := range p.entries {
				if e.stopProbe != nil {
					e.stopProbe()
				}
			}
			p.wg.Wait()
			// The pool is gone (shutdown or removed by a reload): close idle
			// upstream connections; busy ones close as their requests end.
			if p.hooks.CloseUpstream != nil {
				for _, e := range p.entries {
					p.hooks.CloseUpstream(e.ep)
				}
			}
			return
		case s := <-p.sets:
			if s.gen == p.sourceGen {
				dirty = p.applySet(s.bs)
			}
		case c := <-p.checks:
			dirty = p.applyCheck(c)
			if !dirty {
				p.refreshStatus()
			}
		case ep := <-p.ejects:
			dirty = p.applyEject(ep)
		case o := <-p.updates:
			p.applyOptions(o)
			dirty = true
		case <-timer.C:
			dirty = true
		}
		now := p.now()
		for _, e := range p.entries {
			if e.tr.Tick(now) {
				dirty = true
			}
		}
		p.reapDrained()
		if dirty {
			p.rebuild()
		}
		for _, w := range waiters {
			close(w)
		}
		waiters = waiters[:0]
		timer.Reset(p.nextWake(now))
	}
}

// discoveryOf returns the DiscoveryState o.Source reports to, set up to
// record under this pool's name and metrics, or &p.Discovery when the
// source reports to none of its own (static). A source built with a
// DiscoveryState other than p.Discovery (a new pool's DNS source is built
// before its pool) would otherwise count lookups and staleness where no
// metric and no status page sees them. Called before the source runs.
func (p *Pool) discoveryOf(o *Options) *DiscoveryState {
	src, ok := o.Source.(interface{ Observer() discovery.Observer })
	if !ok {
		return &p.Discovery
	}
	d, ok := src.Observer().(*DiscoveryState)
	if !ok || d == nil {
		return &p.Discovery
	}
	if d.pool != p.name || d.m != p.m {
		d.pool, d.m = p.name, p.m
	}
	d.failed.Store(&p.settleFn)
	return d
}

func (p *Pool) startSource(o *Options) {
	if p.stopSrc != nil {
		p.stopSrc()
	}
	p.sourceGen++
	gen := p.sourceGen
	ctx, cancel := context.WithCancel(p.runCtx)
	p.stopSrc = cancel
	src := o.Source
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		err := src.Run(ctx, func(bs []discovery.Backend) {
			if len(bs) == 0 {
				return // a pool never becomes empty because of discovery
			}
			select {
			case p.sets <- setMsg{gen, bs}:
			case <-ctx.Done():
			}
		})
		if err != nil && ctx.Err() == nil {
			p.log.Error("discovery stopped", "err", err)
		}
	}()
}

func (p *Pool) applyOptions(o *Options) {
	old := p.opts.Load()
	p.opts.Store(o)
	if o.SourceKey != old.SourceKey {
		p.disc.Store(p.discoveryOf(o))
		p.startSource(o)
	}
	for _, e := range p.entries {
		e.tr.SetPolicy(o.Policy)
		e.ep.ejectThreshold.Store(int32(o.Policy.ConsecutiveFailures))
		if !e.draining {
			p.restartProbe(e, o)
		}
	}
}

func (p *Pool) restartProbe(e *entry, o *Options) {
	if e.stopProbe != nil {
		e.stopProbe()
		e.stopProbe = nil
	}
	if o.Prober == nil {
		return
	}
	ctx, cancel := context.WithCancel(p.runCtx)
	e.stopProbe = cancel
	ep, prober := e.ep, o.Prober
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		prober.Run(ctx, ep.Addr, func(err error) {
			select {
			case p.checks <- checkMsg{ep, err}:
			case <-ctx.Done():
			}
		})
	}()
}

func (p *Pool) newEntry(b discovery.Backend, o *Options, now time.Time, serving bool) *entry {
	ep := &Endpoint{Addr: b.Address, Pool: p.name}
	ep.ejectThreshold.Store(int32(o.Policy.ConsecutiveFailures))
	ep.signal = func(e *Endpoint) {
		select {
		case p.ejects <- e:
		default: // the pool is busy; the next failure signals again
		}
	}
	if p.m != nil {
		ep.Stats = p.m.ForBackend(p.name, b.Address)
	}
	if p.hooks.NewUpstream != nil {
		ep.Upstream = p.hooks.NewUpstream(ep)
	}
	e := &entry{ep: ep, backend: b, tr: health.NewTracker(o.Policy, now), state: health.Healthy}
	if sv, ok := p.restored[b.Address]; ok {
		delete(p.restored, b.Address)
		e.tr.Restore(sv, now)
		if st := e.tr.State(); st != health.Healthy {
			p.log.Info("backend state restored", "backend", b.Address, "state", st.String(), "reason", e.tr.Reason())
		}
	}
	// A new backend is routable at once but ramps over slow_start only when
	// it joins an already serving pool.
	if serving {
		e.upSince = now
	}
	p.restartProbe(e, o)
	return e
}

// applySet reconciles a complete backend set: new addresses get endpoints,
// remaining ones keep theirs, missing ones drain.
func (p *Pool) applySet(bs []discovery.Backend) bool {
	o := p.opts.Load()
	now := p.now()
	seen := make(map[string]bool, len(bs))
	serving := len(p.entries) > 0
	for _, b := range bs {
		if b.Weight < 1 {
			b.Weight = 1
		}
		seen[b.Address] = true
		e, ok := p.entries[b.Address]
		switch {
		case !ok:
			p.entries[b.Address] = p.newEntry(b, o, now, serving)
			p.log.Info("backend added", "backend", b.Address, "weight", b.Weight, "priority", b.Priority)
			if serving {
				p.events.add(Event{Time: now, Backend: b.Address, Kind: "discovery", To: "added"})
			}
		case e.draining:
			e.draining = false
			e.ep.draining.Store(false)
			e.tr = health.NewTracker(o.Policy, now)
			e.backend = b
			p.restartProbe(e, o)
			p.log.Info("backend back", "backend", b.Address)
			p.events.add(Event{Time: now, Backend: b.Address, Kind: "discovery", From: "draining", To: "added"})
		default:
			e.backend = b
		}
	}
	for addr, e := range p.entries {
		if !seen[addr] && !e.draining {
			e.draining = true
			e.ep.draining.Store(true)
			e.tr.Drain()
			if e.stopProbe != nil {
				e.stopProbe()
				e.stopProbe = nil
			}
			p.log.Info("backend removed, draining", "backend", addr, "inflight", e.ep.Inflight())
		}
	}
	return true
}

func (p *Pool) applyCheck(c checkMsg) bool {
	e, ok := p.entries[c.ep.Addr]
	if !ok || e.ep != c.ep || e.draining {
		return false
	}
	if p.m != nil {
		res := "pass"
		if c.err != nil {
			res = "fail"
		}
		p.m.HealthChecks.WithLabelValues(p.name, e.ep.Addr, res).Inc()
	}
	return e.tr.CheckErr(c.err, p.now())
}

func (p *Pool) applyEject(ep *Endpoint) bool {
	e, ok := p.entries[ep.Addr]
	if !ok || e.ep != ep || e.draining {
		return false
	}
	// Held-down backends get traffic only in panic mode; failures there
	// restart the hold (the tracker decides), without counting as ejected.
	if st := e.tr.State(); st == health.HeldDown {
		ep.consecFail.Store(0)
		return e.tr.Eject(p.now())
	} else if st != health.Healthy {
		return false
	}
	if ep.consecFail.Load() < ep.ejectThreshold.Load() {
		return false // a success came in meanwhile
	}
	ejected, total := 0, 0
	for _, x := range p.entries {
		if x.draining {
			continue
		}
		total++
		if x.tr.State() == health.Ejected {
			ejected++
		}
	}
	if !health.EjectionAllowed(ejected, total, p.opts.Load().MaxEjected) {
		return false
	}
	ep.consecFail.Store(0)
	return e.tr.Eject(p.now())
}

// reapDrained closes endpoints that left the pool once nothing is in flight.
func (p *Pool) reapDrained() {
	for addr, e := range p.entries {
		if e.draining && e.ep.Inflight() == 0 {
			delete(p.entries, addr)
			if p.hooks.CloseUpstream != nil {
				p.hooks.CloseUpstream(e.ep)
			}
			if p.m != nil {
				p.m.ForgetBackend(p.name, addr)
			}
			p.log.Info("backend drained", "backend", addr)
		}
	}
}

func (p *Pool) nextWake(now time.Time) time.Duration {
	next := time.Hour
	o := p.opts.Load()
	for _, e := range p.entries {
		if e.draining {
			next = min(next, 200*time.Millisecond)
			continue
		}
		if t := e.tr.Next(); !t.IsZero() {
			next = min(next, max(t.Sub(now), time.Millisecond))
		}
		if o.SlowStart > 0 && !e.upSince.IsZero() && now.Sub(e.upSince) < o.SlowStart {
			next = min(next, max(o.SlowStart/10, 50*time.Millisecond))
		}
	}
	return next
}

// rebuild publishes a new picker from the routable endpoints, following RFC
// 2782: the lowest priority group with a routable member serves.
func (p *Pool) rebuild() {
	o := p.opts.Load()
	now := p.now()
	var live []*entry
	for _, e := range p.entries {
		if ov := o.Overrides.Get(p.name, e.ep.Addr); ov != e.ov {
			p.events.add(Event{Time: now, Backend: e.ep.Addr, Kind: "override",
				From: overrideText(e.ov), To: overrideText(ov), Reason: "operator"})
			e.ov = ov
		}
		// Drained or disabled by the operator: out of every group, panic
		// mode included; in-flight requests finish on their own.
		if !e.draining && !e.ov.Drain && !e.ov.Disable {
			live = append(live, e)
		}
		p.noteState(e)
	}
	slices.SortFunc(live, func(a, b *entry) int {
		if a.backend.Priority != b.backend.Priority {
			return a.backend.Priority - b.backend.Priority
		}
		if a.ep.Addr < b.ep.Addr {
			return -1
		}
		return 1
	})
	routable := 0
	for _, e := range live {
		if e.tr.Routable() {
			routable++
		}
	}
	var chosen []*entry
	panicMode := false
	// Find the lowest priority group with a routable member.
	for i := 0; i < len(live); {
		j := i
		for j < len(live) && live[j].backend.Priority == live[i].backend.Priority {
			j++
		}
		group := live[i:j]
		var ok []*entry
		for _, e := range group {
			if e.tr.Routable() {
				ok = append(ok, e)
			}
		}
		if len(ok) > 0 {
			if health.Panic(len(ok), len(group), o.PanicThreshold) {
				chosen, panicMode = group, true
			} else {
				chosen = ok
			}
			break
		}
		i = j
	}
	if chosen == nil && len(live) > 0 && o.PanicThreshold > 0 {
		// Nothing routable anywhere: spread over the lowest group rather
		// than refuse everything.
		prio := live[0].backend.Priority
		for _, e := range live {
			if e.backend.Priority == prio {
				chosen = append(chosen, e)
			}
		}
		panicMode = true
	}
	ms := make([]member, 0, len(chosen))
	for _, e := range chosen {
		weight := e.backend.Weight
		if e.ov.Weight > 0 {
			weight = e.ov.Weight
		}
		w := float64(weight)
		if o.SlowStart > 0 && !e.upSince.IsZero() {
			w = health.SlowStartWeight(weight, e.upSince, now, o.SlowStart)
		}
		ms = append(ms, member{ep: e.ep, weight: w})
	}
	if panicMode && !p.snap.Load().panic {
		p.log.Warn("panic mode: routing to every backend", "routable", routable, "total", len(live))
		p.events.add(Event{Time: now, Kind: "panic", From: "normal", To: "panic",
			Reason: fmt.Sprintf("%d of %d backends routable", routable, len(live))})
	} else if !panicMode && p.snap.Load().panic {
		p.log.Info("panic mode over", "routable", routable, "total", len(live))
		p.events.add(Event{Time: now, Kind: "panic", From: "panic", To: "normal",
			Reason: fmt.Sprintf("%d of %d backends routable", routable, len(live))})
	}
	all := make([]*Endpoint, 0, len(p.entries))
	for _, e := range p.entries {
		all = append(all, e.ep)
	}
	p.snap.Store(&snapshot{
		all:      all,
		picker:   newPicker(o.Balance, ms),
		routable: routable,
		total:    len(live),
		panic:    panicMode,
		status:   p.statusOf(now),
		built:    now,
		saved:    p.savedOf(),
	})
	// After the snapshot: a reader that sees hadBackend sees the set too.
	if len(all) > 0 && !p.hadBackend.Load() {
		p.hadBackend.Store(true)
	}
	if p.Ready() {
		p.settleFn()
	}
	if p.hooks.Changed != nil {
		p.hooks.Changed()
	}
}

func (p *Pool) savedOf() *Saved {
	sv := &Saved{Health: make(map[string]health.Saved, len(p.entries))}
	for addr, e := range p.entries {
		if e.draining {
			continue
		}
		sv.Set = append(sv.Set, e.backend)
		sv.Health[addr] = e.tr.Save()
	}
	discovery.SortBackends(sv.Set)
	return sv
}

// refreshStatus republishes the status view (reasons, counters) without
// rebuilding the picker.
func (p *Pool) refreshStatus() {
	old := p.snap.Load()
	s := *old
	s.status = p.statusOf(p.now())
	p.snap.Store(&s)
}

// noteState logs and records a state change once, at the transition.
func (p *Pool) noteState(e *entry) {
	st := e.visibleState()
	if tr := e.tr.Transitions(); tr != e.transitions {
		if p.m != nil {
			p.m.BackendTrans.WithLabelValues(p.name, e.ep.Addr).Add(float64(tr - e.transitions))
		}
		e.transitions = tr
	}
	if p.m != nil {
		p.setStateGauges(e, st)
	}
	if st == e.state {
		return
	}
	prev := e.state
	e.state = st
	if st == health.Healthy {
		e.upSince = p.now() // slow start after a return to service
	}
	p.log.Info("backend state", "backend", e.ep.Addr, "from", prev.String(), "to", st.String(), "reason", e.tr.Reason())
	p.events.add(Event{Time: p.now(), Backend: e.ep.Addr, Kind: stateEventKind(prev, st, e),
		From: prev.String(), To: st.String(), Reason: e.tr.Reason()})
}

// visibleState is the backend's state with the operator's override over
// the tracker's: disabled, then draining, win.
func (e *entry) visibleState() health.State {
	switch {
	case e.draining:
		return health.Draining
	case e.ov.Disable:
		return health.Disabled
	case e.ov.Drain:
		return health.Draining
	}
	return e.tr.State()
}

// routable reports whether the backend may be picked outside panic mode.
func (e *entry) routable() bool {
	return e.tr.Routable() && !e.draining && !e.ov.Drain && !e.ov.Disable
}

func (p *Pool) setStateGauges(e *entry, st health.State) {
	up := 0.0
	if e.routable() {
		up = 1
	}
	for _, name := range overrideNames {
		v := 0.0
		switch {
		case name == "drain" && e.ov.Drain, name == "disable" && e.ov.Disable, name == "weight" && e.ov.Weight > 0:
			v = 1
		}
		p.m.BackendOverride.WithLabelValues(p.name, e.ep.Addr, name).Set(v)
	}
	p.m.BackendUp.WithLabelValues(p.name, e.ep.Addr).Set(up)
	for _, s := range health.AllStates {
		v := 0.0
		if s == st {
			v = 1
		}
		p.m.BackendState.WithLabelValues(p.name, e.ep.Addr, s.String()).Set(v)
	}
}
