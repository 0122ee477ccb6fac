// Package health decides whether a backend may take traffic.
//
// A Tracker is one backend's state machine: active-check results pass through
// rise/fall counters, live-traffic failures eject it for a while (outlier
// ejection), and a backend that crosses healthy/unhealthy too often is held
// down (flap damping) until it has stayed steady through a whole hold. The
// balancer's per-pool goroutine is the only caller of a pool's Trackers, so a
// Tracker takes no locks and reads time only from the `now` it is given.
//
// Checker and Prober run the active checks; EjectionAllowed, Panic and
// SlowStartWeight are the pool-level rules, kept as pure functions.
package health
