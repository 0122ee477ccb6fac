package balancer

import (
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/health"
)

// A pool given saved health keeps a held-down backend out at start, saves
// its set and health on every rebuild, tells Changed, and does not apply
// saved health to an address that does not join.
func TestPoolRestoresHealthAndSaves(t *testing.T) {
	src := newPushSource()
	changed := make(chan struct{}, 16)
	p := NewPool(&Options{Name: "api", Source: src, Policy: health.Policy{Rise: 1, Fall: 1}},
		Hooks{Changed: func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		}}, nil, quietLog())
	held := time.Now().Add(time.Hour)
	p.RestoreHealth(map[string]health.Saved{
		"10.0.0.2:80": {ChecksPassing: true, HeldUntil: held, HoldFor: time.Hour, HoldLevel: 1, HoldReason: "flapping"},
		"10.0.0.9:80": {ChecksPassing: false},
	})
	runPool(t, p)
	src.push(t, be("10.0.0.1:80", 1, 0), be("10.0.0.2:80", 1, 0))
	waitFor(t, 5*time.Second, "first set", func() bool { return p.Saved() != nil && len(p.Saved().Set) == 2 })
	if got := serving(p); got != "10.0.0.1:80" {
		t.Errorf("serving %q, want only 10.0.0.1:80: 10.0.0.2:80 was held down", got)
	}
	sv := p.Saved()
	if h := sv.Health["10.0.0.2:80"]; !h.HeldUntil.Equal(held) || h.HoldLevel != 1 {
		t.Errorf("saved health of the held backend %+v, want held until %v", h, held)
	}
	if _, ok := sv.Health["10.0.0.9:80"]; ok {
		t.Error("saved health for an address that never joined")
	}
	select {
	case <-changed:
	default:
		t.Error("Changed not called after a rebuild")
	}
	// The address that left does not come back through the saved health.
	src.push(t, be("10.0.0.1:80", 1, 0))
	waitFor(t, 5*time.Second, "shrunk set", func() bool { return len(p.Saved().Set) == 1 })
	if _, ok := p.Saved().Health["10.0.0.2:80"]; ok {
		t.Error("a removed backend is still saved")
	}
}
