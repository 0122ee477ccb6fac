package health

import "time"

// shareEpsilon absorbs float error in share×count ("29%" of 100 is
// 28.999999999999996 in float64), so a share lands on the count users expect.
const shareEpsilon = 1e-9

// EjectionAllowed reports whether one more backend of a pool may be ejected
// while `ejected` of its `total` backends already are, under the pool's
// outlier.max_ejected share (a fraction in [0, 1]).
//
// At most floor(maxEjected × total) backends are ejected at once, except that
// a pool of two or more backends may always eject one when maxEjected > 0
// (so "10%" of a 3-backend pool still ejects a bad backend). A one-backend pool
// never ejects: it would only leave the pool empty, and panic mode would route
// to the backend anyway. maxEjected <= 0 never ejects.
func EjectionAllowed(ejected, total int, maxEjected float64) bool {
	if maxEjected <= 0 || total < 2 {
		return false
	}
	limit := max(int(maxEjected*float64(total)+shareEpsilon), 1)
	return ejected+1 <= min(limit, total)
}

// Panic reports whether a pool is in panic mode: fewer than threshold × total
// of its backends are routable, so the balancer should route to every backend
// rather than crush the few left. threshold <= 0 or an empty pool never panics;
// a pool at exactly the threshold share does not panic.
func Panic(routable, total int, threshold float64) bool {
	if threshold <= 0 || total <= 0 {
		return false
	}
	return float64(routable) < threshold*float64(total)-shareEpsilon
}

// slowStartFloor is the share of its weight a backend gets the moment it
// becomes healthy under slow start.
const slowStartFloor = 0.1

// SlowStartWeight is base scaled for a backend that became healthy at since:
// it ramps linearly from 10% of base at since to all of base once window has
// passed. A zero window or zero since (no slow start) gives base; a since
// after now (clock skew) gives the 10% floor.
func SlowStartWeight(base int, since, now time.Time, window time.Duration) float64 {
	b := float64(base)
	if window <= 0 || since.IsZero() {
		return b
	}
	elapsed := now.Sub(since)
	switch {
	case elapsed >= window:
		return b
	case elapsed <= 0:
		return b * slowStartFloor
	}
	return b * (slowStartFloor + (1-slowStartFloor)*float64(elapsed)/float64(window))
}
