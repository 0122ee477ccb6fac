package health

import "time"

// Saved is the part of a Tracker's state that outlives the process (the
// state file): the check verdict, a running hold or ejection by their
// wall-clock ends, and the escalation levels. Flap-window history and
// rise/fall runs are not kept: a restarted process counts them afresh.
type Saved struct {
	ChecksPassing bool
	HeldUntil     time.Time // zero: not held
	HoldFor       time.Duration
	HoldLevel     int
	HoldReason    string
	EjectedUntil  time.Time // zero: not ejected
	Ejections     int
}

// Save returns the tracker's Saved state. A draining tracker saves as a
// fresh one: the backend left the pool.
func (t *Tracker) Save() Saved {
	if t.drained {
		return Saved{ChecksPassing: true}
	}
	return Saved{ChecksPassing: t.checkUp, HeldUntil: t.heldUntil, HoldFor: t.holdDur, HoldLevel: t.holdLevel,
		HoldReason: t.holdReason, EjectedUntil: t.ejectedUntil, Ejections: t.ejections}
}

// Restore applies s, saved by an earlier process, to a new tracker: a hold
// or ejection that has not run out at now goes on until its saved end, one
// that has is over at once. The next check result still decides at once,
// as a new tracker's first one does. It reports whether State changed.
func (t *Tracker) Restore(s Saved, now time.Time) (changed bool) {
	before := t.state
	t.checkUp = s.ChecksPassing
	if !s.ChecksPassing {
		t.checkReason = "unhealthy before the restart"
	}
	t.heldUntil, t.holdDur, t.holdLevel = s.HeldUntil, s.HoldFor, max(s.HoldLevel, 0)
	t.holdReason = s.HoldReason
	if !t.heldUntil.IsZero() && t.holdReason == "" {
		t.holdReason = "held down before the restart"
	}
	t.ejectedUntil, t.ejections = s.EjectedUntil, max(s.Ejections, 0)
	if !t.ejectedUntil.IsZero() {
		t.ejectReason = "ejected before the restart"
	}
	t.advance(now)
	return t.settle(before)
}
