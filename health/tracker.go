package health

import (
	"fmt"
	"strconv"
	"time"
)

// State is where a backend stands, as the balancer and the metrics see it.
type State int

// The states of a backend. Only Healthy is routable (outside panic mode).
const (
	// Healthy: checks pass; the backend takes traffic.
	Healthy State = iota
	// Unhealthy: active checks failed `fall` times in a row (or the first check failed).
	Unhealthy
	// HeldDown: the backend flapped and must stay steady through a whole hold.
	HeldDown
	// Ejected: live traffic failed it; it sits out for the ejection time.
	Ejected
	// Draining: removed from discovery (terminal), or drained by the
	// operator (the balancer's override; never a Tracker state then).
	Draining
	// Disabled: taken out of service by the operator (the balancer's
	// override; never a Tracker state).
	Disabled
)

// AllStates lists every State, in order, for the holdfast_backend_state gauge.
var AllStates = []State{Healthy, Unhealthy, HeldDown, Ejected, Draining, Disabled}

// String returns the SPEC metric label value: "healthy", "unhealthy",
// "held_down", "ejected" or "draining".
func (s State) String() string {
	switch s {
	case Healthy:
		return "healthy"
	case Unhealthy:
		return "unhealthy"
	case HeldDown:
		return "held_down"
	case Ejected:
		return "ejected"
	case Draining:
		return "draining"
	case Disabled:
		return "disabled"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// decayFactor sets how long a backend must stay quiet before its hold level
// and its ejection count start again from the bottom: decayFactor × MaxHold
// after the last hold ended with no new hold, decayFactor × MaxEjection after
// the last ejection ended with no new ejection.
const decayFactor = 2

// Policy is one pool's health settings (SPEC pools[].health.rise/fall/flap
// and pools[].outlier). Zero values turn the matching feature off: flap
// damping needs FlapWindow, MaxTransitions and Hold all positive; ejection
// needs ConsecutiveFailures and Ejection positive.
type Policy struct {
	// Rise and Fall are how many check results in a row flip the check state
	// up or down (values below 1 count as 1).
	Rise, Fall int

	// More than MaxTransitions healthy/unhealthy crossings within FlapWindow
	// hold the backend down for Hold, doubling per repeat up to MaxHold.
	FlapWindow     time.Duration
	MaxTransitions int
	Hold, MaxHold  time.Duration

	// ConsecutiveFailures is the outlier threshold the caller counts on live
	// traffic; 0 turns ejection off (Eject is then a no-op).
	ConsecutiveFailures int
	// The n-th consecutive ejection lasts Ejection×n, at most MaxEjection.
	Ejection, MaxEjection time.Duration
}

func (p Policy) normalized() Policy {
	p.Rise = max(p.Rise, 1)
	p.Fall = max(p.Fall, 1)
	p.MaxHold = max(p.MaxHold, p.Hold)
	p.MaxEjection = max(p.MaxEjection, p.Ejection)
	return p
}

func (p Policy) flapDamping() bool {
	return p.FlapWindow > 0 && p.MaxTransitions > 0 && p.Hold > 0
}

// Tracker is one backend's health state machine.
//
// A Tracker is NOT safe for concurrent use: the balancer's pool goroutine is
// its only caller. It never reads the clock; every method that depends on time
// takes `now`, and timers (ejection end, hold end) fire only when the caller
// calls Tick (or Check/Eject) at or after Next().
//
// Transitions count every crossing of the backend's underlying health — the
// check state after rise/fall, combined with ejection — so a check-driven
// fall or rise, an ejection, and the return when an ejection ends each count
// one. Entering or leaving a hold is not a crossing by itself. Crossings while
// held count in Transitions but not towards the next hold: the hold is already
// the penalty, and the flap window starts empty when a hold starts.
//
// Hold decay: the hold level (how many times Hold has doubled) resets to zero
// once 2×MaxHold has passed since the last hold ended without a new hold
// starting. Ejection decay is the same rule: the ejection count resets once
// 2×MaxEjection has passed since the last ejection ended without a new one.
// Decay is applied lazily whenever the Tracker is given a `now`, so it needs
// no timer of its own.
type Tracker struct {
	p Policy

	checked     bool // a check result has arrived
	checkUp     bool // check state after rise/fall
	okRun       int  // passing checks in a row
	failRun     int  // failed checks in a row
	checkReason string

	ejectedUntil time.Time // zero: not ejected
	ejections    int       // consecutive ejections, for Ejection×n
	lastEjectEnd time.Time
	ejectReason  string

	heldUntil   time.Time     // zero: not held
	holdDur     time.Duration // length of the current hold; a restart reuses it
	holdLevel   int           // the next hold lasts Hold<<holdLevel (capped)
	lastHoldEnd time.Time
	holdReason  string

	drained bool

	transitions int
	window      []time.Time // crossings inside FlapWindow while not held

	note  string // why the backend came back from a hold or an ejection
	state State  // visible state, recomputed after every event
}

// NewTracker returns a Tracker for p, starting Healthy so a new backend takes
// traffic at once. The first check result applies immediately (a backend that
// fails its first check goes Unhealthy without waiting for Fall) and is not
// counted as a transition; later results need Rise/Fall in a row.
func NewTracker(p Policy, now time.Time) *Tracker {
	_ = now // the start time carries no state today; kept for symmetry with the other methods
	return &Tracker{p: p.normalized(), checkUp: true, checkReason: "not checked yet"}
}

// SetPolicy swaps in a reloaded policy and keeps all state: check counters,
// transition history, a running hold or ejection (which keep their end
// times), hold level and ejection count. New lengths apply from the next hold,
// hold restart or ejection.
func (t *Tracker) SetPolicy(p Policy) { t.p = p.normalized() }

// State returns the current state.
func (t *Tracker) State() State { return t.state }

// Routable reports whether the backend may take traffic: State() == Healthy.
func (t *Tracker) Routable() bool { return t.state == Healthy }

// ChecksPassing reports the underlying check state after rise/fall, which
// keeps updating in every state (a held or ejected backend may be passing).
func (t *Tracker) ChecksPassing() bool { return t.checkUp }

// Transitions returns the number of healthy/unhealthy crossings so far (for
// holdfast_backend_transitions_total).
func (t *Tracker) Transitions() int { return t.transitions }

// HoldLevel returns how many times the next hold doubles Hold: the next hold
// lasts Hold × 2^HoldLevel, at most MaxHold. Each hold raises it until MaxHold
// is reached; decay resets it to 0.
func (t *Tracker) HoldLevel() int { return t.holdLevel }

// Ejections returns the consecutive-ejection count since the last decay
// (it stops growing once Ejection×n reaches MaxEjection); the next ejection
// lasts Ejection × (Ejections()+1), at most MaxEjection.
func (t *Tracker) Ejections() int { return t.ejections }

// HoldRemaining returns how long the current hold has left at now, or 0 when
// the backend is not held down.
func (t *Tracker) HoldRemaining(now time.Time) time.Duration {
	if t.heldUntil.IsZero() || t.drained {
		return 0
	}
	return max(t.heldUntil.Sub(now), 0)
}

// Reason returns a short human reason for the current state, such as
// "3 failed checks: connection refused", "flapping: 5 transitions in 60s,
// held for 30s" or "ejected: 5 consecutive failures". It may change without a
// state change (a new error while Unhealthy, a hold restart).
func (t *Tracker) Reason() string {
	switch t.state {
	case Draining:
		return "removed from discovery"
	case HeldDown:
		return t.holdReason
	case Ejected:
		return t.ejectReason
	}
	if t.note != "" {
		return t.note
	}
	return t.checkReason
}

// Next returns when Tick must next be called: the earliest pending hold or
// ejection end. The zero time means no timer is pending.
func (t *Tracker) Next() time.Time {
	if t.drained {
		return time.Time{}
	}
	return earliest(t.heldUntil, t.ejectedUntil)
}

// Drain marks the backend as removed from discovery. Draining is terminal:
// afterwards Check, Eject and Tick change nothing and Next is zero.
func (t *Tracker) Drain() {
	t.drained = true
	t.state = Draining
}

// Check applies an active-check result and reports whether State changed.
// See CheckErr to give the failure's cause to Reason.
func (t *Tracker) Check(ok bool, now time.Time) (changed bool) {
	return t.observe(ok, "", now)
}

// CheckErr is Check with the probe's error: nil is a pass, and a failure's
// message appears in Reason ("3 failed checks: connection refused").
func (t *Tracker) CheckErr(err error, now time.Time) (changed bool) {
	if err == nil {
		return t.observe(true, "", now)
	}
	return t.observe(false, err.Error(), now)
}

func (t *Tracker) observe(ok bool, msg string, now time.Time) bool {
	if t.drained {
		return false
	}
	before := t.state
	t.advance(now)
	wasUp := t.up()
	if ok {
		t.okRun++
		t.failRun = 0
	} else {
		t.failRun++
		t.okRun = 0
	}
	switch {
	case !t.checked:
		t.checked = true
		t.checkUp = ok
		t.note = ""
		if ok {
			t.checkReason = "first check passed"
		} else {
			t.checkReason = withMsg("first check failed", msg)
		}
		wasUp = t.up() // settling the initial assumption is not a crossing
	case ok && !t.checkUp && t.okRun >= t.p.Rise:
		t.checkUp = true
		t.note = ""
		t.checkReason = plural(t.okRun, "passing check")
	case !ok && t.checkUp && t.failRun >= t.p.Fall:
		t.checkUp = false
		t.note = ""
		t.checkReason = withMsg(plural(t.failRun, "failed check"), msg)
	case !ok && !t.checkUp:
		t.checkReason = withMsg(plural(t.failRun, "failed check"), msg) // keep the count and cause fresh
	}
	if !ok && !t.heldUntil.IsZero() {
		t.restartHold(now, withMsg("failed check", msg))
	}
	t.crossed(wasUp, now)
	return t.settle(before)
}

// Eject applies an outlier ejection: live traffic reached ConsecutiveFailures
// (the caller has already applied the pool's max_ejected cap with
// EjectionAllowed). A Healthy backend becomes Ejected for Ejection×n, at most
// MaxEjection, where n counts consecutive ejections; this is a transition and
// may start a hold. On a HeldDown backend it restarts the hold, like a failed
// check. It is a no-op when ejection is off (ConsecutiveFailures 0 or Ejection
// 0) and on a backend that is Unhealthy, already Ejected or Draining. It
// reports whether State changed.
func (t *Tracker) Eject(now time.Time) (changed bool) {
	if t.drained || t.p.ConsecutiveFailures <= 0 || t.p.Ejection <= 0 {
		return false
	}
	before := t.state
	t.advance(now)
	switch {
	case !t.heldUntil.IsZero():
		t.restartHold(now, plural(t.p.ConsecutiveFailures, "live-traffic failure"))
	case t.ejectedUntil.IsZero() && t.checkUp:
		wasUp := t.up()
		if t.p.Ejection*time.Duration(t.ejections) < t.p.MaxEjection {
			t.ejections++ // once MaxEjection is reached the count stops growing: no overflow
		}
		d := min(t.p.Ejection*time.Duration(t.ejections), t.p.MaxEjection)
		t.ejectedUntil = now.Add(d)
		t.ejectReason = fmt.Sprintf("ejected: %d consecutive failures (ejection %d, %s)",
			t.p.ConsecutiveFailures, t.ejections, fmtDur(d))
		t.crossed(wasUp, now)
	}
	return t.settle(before)
}

// Tick fires the timers that are due at now — ejection end, hold end — and
// applies decay. It reports whether State changed. Calling it early or often
// is harmless.
func (t *Tracker) Tick(now time.Time) (changed bool) {
	if t.drained {
		return false
	}
	before := t.state
	t.advance(now)
	return t.settle(before)
}

// up is the backend's underlying health, whose crossings are transitions.
func (t *Tracker) up() bool { return t.checkUp && t.ejectedUntil.IsZero() }

func (t *Tracker) visible() State {
	switch {
	case t.drained:
		return Draining
	case !t.heldUntil.IsZero():
		return HeldDown
	case !t.ejectedUntil.IsZero():
		return Ejected
	case t.checkUp:
		return Healthy
	}
	return Unhealthy
}

func (t *Tracker) settle(before State) bool {
	t.state = t.visible()
	return t.state != before
}

// advance fires due timers in time order, each at its own scheduled time (so
// a late Tick does not stretch the flap window), then applies decay.
func (t *Tracker) advance(now time.Time) {
	for {
		hold, ej := t.heldUntil, t.ejectedUntil
		holdDue := !hold.IsZero() && !now.Before(hold)
		ejDue := !ej.IsZero() && !now.Before(ej)
		switch {
		case ejDue && (!holdDue || !hold.Before(ej)):
			wasUp := t.up()
			t.ejectedUntil = time.Time{}
			t.lastEjectEnd = ej
			if t.up() != wasUp {
				t.note = "ejection ended"
			}
			t.crossed(wasUp, ej)
			continue
		case holdDue:
			t.heldUntil = time.Time{}
			t.lastHoldEnd = hold
			t.note = ""
			if t.up() {
				t.note = "hold of " + fmtDur(t.holdDur) + " ended, checks passing"
			}
			continue
		}
		break
	}
	if t.holdLevel > 0 && t.heldUntil.IsZero() && !t.lastHoldEnd.IsZero() &&
		now.Sub(t.lastHoldEnd) >= decayFactor*t.p.MaxHold {
		t.holdLevel = 0
	}
	if t.ejections > 0 && t.ejectedUntil.IsZero() && !t.lastEjectEnd.IsZero() &&
		now.Sub(t.lastEjectEnd) >= decayFactor*t.p.MaxEjection {
		t.ejections = 0
	}
}

// crossed records a transition if the underlying health changed since wasUp,
// and starts a hold when the flap window overflows.
func (t *Tracker) crossed(wasUp bool, at time.Time) {
	if t.up() == wasUp {
		return
	}
	t.transitions++
	if !t.heldUntil.IsZero() || !t.p.flapDamping() {
		t.window = t.window[:0]
		return
	}
	cut := 0
	for cut < len(t.window) && at.Sub(t.window[cut]) >= t.p.FlapWindow {
		cut++
	}
	t.window = append(t.window[:0], t.window[cut:]...)
	t.window = append(t.window, at)
	if len(t.window) > t.p.MaxTransitions {
		t.startHold(at)
	}
}

func (t *Tracker) startHold(at time.Time) {
	d := t.p.Hold
	for i := 0; i < t.holdLevel && d < t.p.MaxHold; i++ {
		d *= 2
	}
	d = min(d, t.p.MaxHold)
	if d < t.p.MaxHold {
		t.holdLevel++ // once MaxHold is reached the level stops growing: no overflow
	}
	t.holdDur = d
	t.heldUntil = at.Add(d)
	t.holdReason = fmt.Sprintf("flapping: %d transitions in %s, held for %s",
		len(t.window), fmtDur(t.p.FlapWindow), fmtDur(d))
	t.window = t.window[:0]
}

// restartHold starts the current hold over: the backend must stay steady
// through a whole hold before it returns.
func (t *Tracker) restartHold(now time.Time, cause string) {
	t.heldUntil = now.Add(t.holdDur)
	t.holdReason = "flapping: hold of " + fmtDur(t.holdDur) + " restarted by " + cause
}

func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero(), a.Before(b):
		return a
	}
	return b
}

func withMsg(s, msg string) string {
	if msg == "" {
		return s
	}
	return s + ": " + msg
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// fmtDur writes durations the way operators say them: 60s, 90s, 10m, 1.5s.
func fmtDur(d time.Duration) string {
	switch {
	case d >= 2*time.Minute && d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return d.String()
}
