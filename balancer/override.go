package balancer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
)

// Errors of an override aimed at something the process does not have.
var (
	ErrUnknownPool    = errors.New("unknown pool")
	ErrUnknownBackend = errors.New("unknown backend")
)

// Override is an operator's say over one backend, above what discovery
// and health decide.
type Override struct {
	// Drain: no new requests or connections; in-flight ones finish.
	Drain bool `json:"drain,omitempty"`
	// Disable: no traffic at all, not even in panic mode.
	Disable bool `json:"disable,omitempty"`
	// Weight, when above 0, replaces the configured or discovered weight.
	Weight int `json:"weight,omitempty"`
}

// IsZero reports an override that changes nothing.
func (o Override) IsZero() bool { return o == Override{} }

// Names lists what the override does, as the holdfast_backend_override
// label values: "drain", "disable", "weight".
func (o Override) Names() []string {
	var out []string
	if o.Drain {
		out = append(out, "drain")
	}
	if o.Disable {
		out = append(out, "disable")
	}
	if o.Weight > 0 {
		out = append(out, "weight")
	}
	return out
}

// overrideNames are every holdfast_backend_override label value.
var overrideNames = [...]string{"drain", "disable", "weight"}

// Overrides are the operator's overrides, by pool and backend address.
// They belong to the process, not to a pool, so they survive reloads
// (and a pool removed and added again); Snapshot and Restore are the
// seam a state file persists through. Safe for concurrent use.
type Overrides struct {
	mu sync.Mutex
	m  map[string]map[string]Override
}

// NewOverrides returns an empty set.
func NewOverrides() *Overrides { return &Overrides{m: map[string]map[string]Override{}} }

// Get returns the override of a backend (zero when none). A nil set has
// none.
func (s *Overrides) Get(pool, addr string) Override {
	if s == nil {
		return Override{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[pool][addr]
}

// Set records o for a backend; a zero o removes the entry.
func (s *Overrides) Set(pool, addr string, o Override) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setLocked(pool, addr, o)
}

func (s *Overrides) setLocked(pool, addr string, o Override) {
	if o.IsZero() {
		delete(s.m[pool], addr)
		if len(s.m[pool]) == 0 {
			delete(s.m, pool)
		}
		return
	}
	if s.m[pool] == nil {
		s.m[pool] = map[string]Override{}
	}
	s.m[pool][addr] = o
}

// Snapshot copies every override, by pool and address.
func (s *Overrides) Snapshot() map[string]map[string]Override {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]map[string]Override, len(s.m))
	for p, bs := range s.m {
		out[p] = maps.Clone(bs)
	}
	return out
}

// Restore replaces every override with m (a state file read at start).
func (s *Overrides) Restore(m map[string]map[string]Override) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m = make(map[string]map[string]Override, len(m))
	for p, bs := range m {
		s.m[p] = maps.Clone(bs)
	}
}

// Update applies change to a backend's override under the lock and
// returns the result.
func (s *Overrides) Update(pool, addr string, change func(Override) Override) Override {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := change(s.m[pool][addr])
	s.setLocked(pool, addr, o)
	return o
}

// Override changes the operator override of the backend at addr and
// returns once the pool routes by it: after a drain returns, no new
// request or connection goes to the backend. An address the pool does
// not serve is ErrUnknownBackend. Safe for concurrent use.
func (p *Pool) Override(ctx context.Context, addr string, change func(Override) Override) (Override, error) {
	set := p.opts.Load().Overrides
	if set == nil {
		return Override{}, fmt.Errorf("pool %q: no override store", p.name)
	}
	found := false
	for _, e := range p.Endpoints() {
		if e.Addr == addr && !e.Draining() {
			found = true
			break
		}
	}
	if !found {
		return Override{}, fmt.Errorf("pool %q: %w %s", p.name, ErrUnknownBackend, addr)
	}
	o := set.Update(p.name, addr, change)
	p.log.Info("backend override", "backend", addr, "drain", o.Drain, "disable", o.Disable, "weight", o.Weight)
	return o, p.Refresh(ctx)
}

// errPoolStopped: the pool's goroutine is gone.
var errPoolStopped = errors.New("pool stopped")

// Refresh makes the pool rebuild its picker (reading the overrides again)
// and returns once the new picker is published.
func (p *Pool) Refresh(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case p.pokes <- done:
	case <-ctx.Done():
		return ctx.Err()
	case <-p.done:
		return errPoolStopped
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.done:
		return errPoolStopped
	}
}
