package app

import (
	"context"
	"fmt"

	"github.com/holdfast-lb/holdfast/balancer"
)

// Override actions of the admin API and `holdfast backend`.
const (
	ActionDrain   = "drain"
	ActionDisable = "disable"
	ActionEnable  = "enable"
	ActionWeight  = "weight"
)

// maxWeight is the largest weight an operator may set (as in the config).
const maxWeight = 1000

// SetOverride applies an operator action to one backend of a pool and
// returns once the pool routes by it. weight is read by ActionWeight only
// (0 drains). Unknown pools and backends are balancer.ErrUnknownPool and
// balancer.ErrUnknownBackend.
func (a *App) SetOverride(ctx context.Context, pool, addr, action string, weight int) (balancer.Override, error) {
	var change func(balancer.Override) balancer.Override
	switch action {
	case ActionDrain:
		change = func(o balancer.Override) balancer.Override { o.Drain, o.Disable = true, false; return o }
	case ActionDisable:
		change = func(o balancer.Override) balancer.Override { o.Disable, o.Drain = true, false; return o }
	case ActionEnable:
		change = func(o balancer.Override) balancer.Override { o.Drain, o.Disable = false, false; return o }
	case ActionWeight:
		if weight < 0 || weight > maxWeight {
			return balancer.Override{}, fmt.Errorf("weight %d out of range (want 0..%d; 0 drains)", weight, maxWeight)
		}
		change = func(o balancer.Override) balancer.Override {
			if weight == 0 {
				o.Drain = true
				return o
			}
			o.Weight = weight
			return o
		}
	default:
		return balancer.Override{}, fmt.Errorf("unknown action %q (want drain, disable, enable or weight)", action)
	}
	p := a.Pool(pool)
	if p == nil {
		return balancer.Override{}, fmt.Errorf("%w %q", balancer.ErrUnknownPool, pool)
	}
	return p.Override(ctx, addr, change)
}

// Overrides are the operator's overrides in force (a future state file
// persists them through Snapshot and Restore).
func (a *App) Overrides() *balancer.Overrides { return a.overrides }
