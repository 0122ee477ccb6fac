package app

import "github.com/holdfast-lb/holdfast/config"

// Plan is what moving from one config to the next changes, by name. plan
// works it out from the two configs alone; apply carries it out. Names
// taken from the new config are in its order, names that leave in the old
// config's order.
type Plan struct {
	// StartPools are new pools: built, started and warmed before any
	// listener routes to them. UpdatePools keep their endpoints and take
	// the new options in place. StopPools left the config: they stop once
	// nothing routes to them.
	StartPools, UpdatePools, StopPools []string
	// Bind are new listeners: a new socket and server. Rebind keep their
	// name but not their socket (address, protocol, limits, timeouts, TLS
	// on or off, ...): a new socket serves and the old one drains.
	// Retarget keep socket and server and take the new routes, pools,
	// policy, access lists and certificates in place. Drain left the
	// config: they drain in the background.
	Bind, Rebind, Retarget, Drain []string
}

// plan compares old (nil: nothing runs yet) with next. It is pure: no
// socket, pool or clock is looked at.
func plan(old, next *config.Config) Plan {
	if old == nil {
		old = &config.Config{}
	}
	var p Plan
	oldPools := map[string]bool{}
	for _, pl := range old.Pools {
		oldPools[pl.Name] = true
	}
	newPools := map[string]bool{}
	for _, pl := range next.Pools {
		newPools[pl.Name] = true
		if oldPools[pl.Name] {
			p.UpdatePools = append(p.UpdatePools, pl.Name)
		} else {
			p.StartPools = append(p.StartPools, pl.Name)
		}
	}
	for _, pl := range old.Pools {
		if !newPools[pl.Name] {
			p.StopPools = append(p.StopPools, pl.Name)
		}
	}
	oldListeners := map[string]config.Listener{}
	for _, l := range old.Listeners {
		oldListeners[l.Name] = l
	}
	newListeners := map[string]bool{}
	for _, l := range next.Listeners {
		newListeners[l.Name] = true
		prev, ok := oldListeners[l.Name]
		switch {
		case !ok:
			p.Bind = append(p.Bind, l.Name)
		case sameSocket(prev, l):
			p.Retarget = append(p.Retarget, l.Name)
		default:
			p.Rebind = append(p.Rebind, l.Name)
		}
	}
	for _, l := range old.Listeners {
		if !newListeners[l.Name] {
			p.Drain = append(p.Drain, l.Name)
		}
	}
	return p
}
