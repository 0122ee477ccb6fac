package app

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/holdfast-lb/holdfast/balancer"
	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/discovery"
	"github.com/holdfast-lb/holdfast/health"
	"github.com/holdfast-lb/holdfast/state"
)

// stateDebounce is how long after a change the state file is written: a
// burst of changes (a discovery update, a flapping check) is one write.
const stateDebounce = 250 * time.Millisecond

// loadState reads the state file at start. A missing file is a first start;
// a corrupt, foreign or unreadable one is logged once and ignored: holdfast
// starts as if there were none.
func (a *App) loadState(path string) *state.File {
	f, err := state.Read(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		a.log.Info("no state file yet; starting fresh", "state_file", path)
		return nil
	case err != nil:
		a.log.Warn("state file ignored", "state_file", path, "err", err)
		return nil
	}
	a.log.Info("state file read", "state_file", path, "written", f.Written, "pools", len(f.Pools))
	return f
}

// stateSource names where a pool's set comes from, for the state file: a
// saved set is seeded back only into a pool whose discovery asks the same
// question (type, name, port), so a backend from another source is never
// resurrected. Static pools save no set: their config is the set.
func stateSource(p *config.Pool) string {
	d := p.Discovery
	if d == nil {
		return ""
	}
	if d.Type == "etcd" {
		// The prefix is the question; endpoints are only where it is asked
		// (a member added to the cluster changes them).
		return "etcd|" + d.Name
	}
	return fmt.Sprintf("dns|%s|%s|%d", d.Type, d.Name, d.Port)
}

// restoreOptions seeds a new pool's DNS or etcd source with the saved set when the
// source matches.
func restoreOptions(saved *state.File, p *config.Pool, o *balancer.Options) {
	if saved == nil {
		return
	}
	sp, ok := saved.Pools[p.Name]
	if !ok || sp.Source == "" || sp.Source != stateSource(p) || len(sp.Set) == 0 {
		return
	}
	seed := make([]discovery.Backend, len(sp.Set))
	for i, b := range sp.Set {
		seed[i] = discovery.Backend{Address: b.Address, Weight: b.Weight, Priority: b.Priority}
	}
	switch src := o.Source.(type) {
	case *discovery.DNS:
		src.Seed = seed
	case *discovery.Etcd:
		src.Seed = seed
	}
}

// restoredHealth is the saved health of a pool's backends, for
// Pool.RestoreHealth; nil when none.
func restoredHealth(saved *state.File, pool string) map[string]health.Saved {
	if saved == nil {
		return nil
	}
	sp, ok := saved.Pools[pool]
	if !ok || len(sp.Health) == 0 {
		return nil
	}
	out := make(map[string]health.Saved, len(sp.Health))
	for addr, h := range sp.Health {
		d, _ := time.ParseDuration(h.HoldFor) // validated by state.Parse
		out[addr] = health.Saved{ChecksPassing: h.ChecksPassing, HeldUntil: h.HeldUntil, HoldFor: d,
			HoldLevel: h.HoldLevel, HoldReason: h.HoldReason, EjectedUntil: h.EjectedUntil, Ejections: h.Ejections}
	}
	return out
}

// restoreOverrides puts the saved operator overrides back, for the pools the
// config has.
func (a *App) restoreOverrides(saved *state.File, cfg *config.Config) {
	if saved == nil || len(saved.Overrides) == 0 {
		return
	}
	m := map[string]map[string]balancer.Override{}
	for _, p := range cfg.Pools {
		for addr, o := range saved.Overrides[p.Name] {
			if m[p.Name] == nil {
				m[p.Name] = map[string]balancer.Override{}
			}
			m[p.Name][addr] = balancer.Override{Drain: o.Drain, Disable: o.Disable, Weight: o.Weight}
		}
	}
	a.overrides.Restore(m)
}

// State is what a state file would hold now, for handing over to a
// successor process. Safe for concurrent use.
func (a *App) State() *state.File { return a.collectState() }

// collectState is the state file's content now.
func (a *App) collectState() *state.File {
	a.mu.Lock()
	type poolView struct {
		cfg  config.Pool
		pool *balancer.Pool
	}
	pools := make([]poolView, 0, len(a.pools))
	for _, rt := range a.pools {
		pools = append(pools, poolView{rt.cfg, rt.pool})
	}
	a.mu.Unlock()
	f := &state.File{Version: state.Version, Written: time.Now().UTC(), Pools: map[string]state.Pool{},
		Overrides: map[string]map[string]state.Override{}}
	for _, pv := range pools {
		sv := pv.pool.Saved()
		if sv == nil {
			continue
		}
		sp := state.Pool{Source: stateSource(&pv.cfg), Health: map[string]state.Health{}}
		if sp.Source != "" {
			for _, b := range sv.Set {
				sp.Set = append(sp.Set, state.Backend{Address: b.Address, Weight: max(b.Weight, 1), Priority: b.Priority})
			}
		}
		for addr, h := range sv.Health {
			sh := state.Health{ChecksPassing: h.ChecksPassing, HeldUntil: h.HeldUntil, HoldLevel: h.HoldLevel,
				HoldReason: h.HoldReason, EjectedUntil: h.EjectedUntil, Ejections: h.Ejections}
			if h.HoldFor > 0 {
				sh.HoldFor = h.HoldFor.String()
			}
			sp.Health[addr] = sh
		}
		f.Pools[pv.pool.Name()] = sp
	}
	for pool, bs := range a.overrides.Snapshot() {
		m := map[string]state.Override{}
		for addr, o := range bs {
			m[addr] = state.Override{Drain: o.Drain, Disable: o.Disable, Weight: o.Weight}
		}
		f.Overrides[pool] = m
	}
	return f
}

// stateChanged is every pool's Hooks.Changed.
func (a *App) stateChanged() {
	if w := a.stateW; w != nil {
		w.Changed()
	}
}
