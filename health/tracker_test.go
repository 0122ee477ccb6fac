package health

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

const s = time.Second

// testPolicy mirrors the SPEC example with a smaller max_hold/max_ejection.
func testPolicy() Policy {
	return Policy{
		Rise: 2, Fall: 3,
		FlapWindow: 60 * s, MaxTransitions: 4, Hold: 30 * s, MaxHold: 120 * s,
		ConsecutiveFailures: 5, Ejection: 10 * s, MaxEjection: 40 * s,
	}
}

// fastPolicy flips on every result, to make flapping short to write.
func fastPolicy() Policy {
	p := testPolicy()
	p.Rise, p.Fall = 1, 1
	return p
}

type op int

const (
	pass op = iota
	fail
	eject
	tick
)

func (o op) String() string { return [...]string{"pass", "fail", "eject", "tick"}[o] }

// step applies op at t0+at and then expects state; the optional fields are
// checked when set.
type step struct {
	at          time.Duration
	op          op
	want        State
	changed     *bool
	transitions *int
	holdLeft    *time.Duration
	next        *time.Duration // Next() - t0; -1 = zero time
	reason      string         // substring of Reason()
}

func ptr[T any](v T) *T { return &v }

func apply(tr *Tracker, o op, now time.Time) bool {
	switch o {
	case pass:
		return tr.Check(true, now)
	case fail:
		return tr.CheckErr(errors.New("connection refused"), now)
	case eject:
		return tr.Eject(now)
	}
	return tr.Tick(now)
}

func runSteps(t *testing.T, p Policy, steps []step) *Tracker {
	t.Helper()
	tr := NewTracker(p, t0)
	for i, st := range steps {
		now := at(st.at)
		changed := apply(tr, st.op, now)
		where := func() string { return st.op.String() + " at " + st.at.String() }
		if got := tr.State(); got != st.want {
			t.Fatalf("step %d (%s): state %v, want %v (reason %q)", i, where(), got, st.want, tr.Reason())
		}
		if st.changed != nil && changed != *st.changed {
			t.Errorf("step %d (%s): changed %v, want %v", i, where(), changed, *st.changed)
		}
		if st.transitions != nil && tr.Transitions() != *st.transitions {
			t.Errorf("step %d (%s): transitions %d, want %d", i, where(), tr.Transitions(), *st.transitions)
		}
		if st.holdLeft != nil && tr.HoldRemaining(now) != *st.holdLeft {
			t.Errorf("step %d (%s): hold remaining %v, want %v", i, where(), tr.HoldRemaining(now), *st.holdLeft)
		}
		if st.next != nil {
			want := time.Time{}
			if *st.next >= 0 {
				want = at(*st.next)
			}
			if got := tr.Next(); !got.Equal(want) {
				t.Errorf("step %d (%s): next %v, want %v", i, where(), got, want)
			}
		}
		if st.reason != "" && !strings.Contains(tr.Reason(), st.reason) {
			t.Errorf("step %d (%s): reason %q, want it to contain %q", i, where(), tr.Reason(), st.reason)
		}
		if tr.Routable() != (tr.State() == Healthy) {
			t.Errorf("step %d: Routable %v in state %v", i, tr.Routable(), tr.State())
		}
	}
	return tr
}

// flap5 makes five crossings one second apart starting at base, the last
// one a failure, from a Healthy fastPolicy tracker.
func flap5(base time.Duration) []step {
	return []step{
		{at: base, op: fail, want: Unhealthy},
		{at: base + 1*s, op: pass, want: Healthy},
		{at: base + 2*s, op: fail, want: Unhealthy},
		{at: base + 3*s, op: pass, want: Healthy},
		{at: base + 4*s, op: fail, want: HeldDown, changed: ptr(true)},
	}
}

func concat(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestTracker(t *testing.T) {
	tests := []struct {
		name   string
		policy Policy
		steps  []step
	}{
		{
			name:   "starts healthy, first failed check applies at once",
			policy: testPolicy(),
			steps: []step{
				{at: 0, op: tick, want: Healthy, changed: ptr(false), next: ptr(time.Duration(-1)), reason: "not checked yet"},
				{at: 1 * s, op: fail, want: Unhealthy, changed: ptr(true), transitions: ptr(0), reason: "first check failed: connection refused"},
				{at: 2 * s, op: pass, want: Unhealthy, changed: ptr(false)},
				{at: 3 * s, op: pass, want: Healthy, changed: ptr(true), transitions: ptr(1), reason: "2 passing checks"},
			},
		},
		{
			name:   "first passing check keeps healthy",
			policy: testPolicy(),
			steps: []step{
				{at: 0, op: pass, want: Healthy, changed: ptr(false), transitions: ptr(0), reason: "first check passed"},
			},
		},
		{
			name:   "fall needs fall failures in a row",
			policy: testPolicy(),
			steps: []step{
				{at: 0, op: pass, want: Healthy},
				{at: 1 * s, op: fail, want: Healthy, changed: ptr(false)},
				{at: 2 * s, op: fail, want: Healthy},
				{at: 3 * s, op: pass, want: Healthy}, // breaks the run
				{at: 4 * s, op: fail, want: Healthy},
				{at: 5 * s, op: fail, want: Healthy},
				{at: 6 * s, op: fail, want: Unhealthy, changed: ptr(true), transitions: ptr(1), reason: "3 failed checks: connection refused"},
				{at: 7 * s, op: fail, want: Unhealthy, changed: ptr(false), reason: "4 failed checks"},
			},
		},
		{
			name:   "rise needs rise passes in a row",
			policy: testPolicy(),
			steps: []step{
				{at: 0, op: fail, want: Unhealthy},
				{at: 1 * s, op: pass, want: Unhealthy},
				{at: 2 * s, op: fail, want: Unhealthy}, // breaks the run
				{at: 3 * s, op: pass, want: Unhealthy},
				{at: 4 * s, op: pass, want: Healthy, changed: ptr(true), transitions: ptr(1)},
			},
		},
		{
			name:   "rise and fall below 1 count as 1",
			policy: Policy{},
			steps: []step{
				{at: 0, op: pass, want: Healthy},
				{at: 1 * s, op: fail, want: Unhealthy},
				{at: 2 * s, op: pass, want: Healthy, transitions: ptr(2)},
			},
		},
		{
			name:   "more than max_transitions in the window holds down",
			policy: fastPolicy(),
			steps: concat(
				[]step{{at: 0, op: pass, want: Healthy}},
				flap5(1*s),
				[]step{{at: 5 * s, op: tick, want: HeldDown, transitions: ptr(5), holdLeft: ptr(30 * s), next: ptr(35 * s),
					reason: "flapping: 5 transitions in 60s, held for 30s"}},
			),
		},
		{
			name:   "transitions spread wider than the window do not hold",
			policy: fastPolicy(),
			steps: []step{
				{at: 0, op: pass, want: Healthy},
				{at: 0, op: fail, want: Unhealthy},
				{at: 20 * s, op: pass, want: Healthy},
				{at: 40 * s, op: fail, want: Unhealthy},
				{at: 59 * s, op: pass, want: Healthy},
				{at: 60 * s, op: fail, want: Unhealthy, transitions: ptr(5)}, // the first fell out of the window
				{at: 79 * s, op: pass, want: HeldDown, transitions: ptr(6)},
			},
		},
		{
			name:   "passing checks never cancel a hold; it ends healthy after a whole hold",
			policy: fastPolicy(),
			steps: concat(
				[]step{{at: 0, op: pass, want: Healthy}},
				flap5(1*s), // held at 5s until 35s
				[]step{
					{at: 6 * s, op: pass, want: HeldDown, changed: ptr(false)},
					{at: 20 * s, op: pass, want: HeldDown},
					{at: 34 * s, op: pass, want: HeldDown, holdLeft: ptr(1 * s)},
					{at: 35 * s, op: tick, want: Healthy, changed: ptr(true), holdLeft: ptr(time.Duration(0)),
						next: ptr(time.Duration(-1)), reason: "hold of 30s ended, checks passing"},
				},
			),
		},
		{
			name:   "a failed check during a hold restarts it",
			policy: fastPolicy(),
			steps: concat(
				[]step{{at: 0, op: pass, want: Healthy}},
				flap5(1*s), // held at 5s until 35s
				[]step{
					{at: 20 * s, op: fail, want: HeldDown, next: ptr(50 * s), reason: "restarted by failed check: connection refused"},
					{at: 21 * s, op: pass, want: HeldDown},
					{at: 35 * s, op: tick, want: HeldDown, changed: ptr(false), holdLeft: ptr(15 * s)},
					{at: 50 * s, op: tick, want: Healthy, changed: ptr(true)},
				},
			),
		},
		{
			name:   "a hold ends unhealthy when checks are not passing",
			policy: testPolicy(), // rise 2
			steps: []step{
				{at: 0, op: pass, want: Healthy},
				{at: 0, op: eject, want: Ejected},
				{at: 10 * s, op: tick, want: Healthy},
				{at: 10 * s, op: eject, want: Ejected},
				{at: 30 * s, op: tick, want: Healthy, transitions: ptr(4)},
				{at: 30 * s, op: eject, want: HeldDown, transitions: ptr(5), next: ptr(60 * s)}, // ejection ends first, at 60s too
				{at: 31 * s, op: fail, want: HeldDown, next: ptr(60 * s)},                       // restarts: 31+30 = 61, ejection still 60
				{at: 32 * s, op: fail, want: HeldDown},
				{at: 33 * s, op: fail, want: HeldDown}, // fall reached
				{at: 34 * s, op: pass, want: HeldDown, next: ptr(60 * s)},
				{at: 64 * s, op: tick, want: Unhealthy, reason: "3 failed checks"}, // one pass is below rise 2
				{at: 65 * s, op: pass, want: Healthy},
			},
		},
		{
			name:   "ejection lasts ejection, then returns healthy as two transitions",
			policy: testPolicy(),
			steps: []step{
				{at: 0, op: pass, want: Healthy},
				{at: 1 * s, op: eject, want: Ejected, changed: ptr(true), transitions: ptr(1), next: ptr(11 * s),
					reason: "ejected: 5 consecutive failures (ejection 1, 10s)"},
				{at: 2 * s, op: eject, want: Ejected, changed: ptr(false), next: ptr(11 * s)},
				{at: 10 * s, op: tick, want: Ejected, changed: ptr(false)},
				{at: 11 * s, op: tick, want: Healthy, changed: ptr(true), transitions: ptr(2), reason: "ejection ended"},
			},
		},
		{
			name:   "ejection grows by ejection per repeat up to max_ejection",
			policy: fastPolicy(),
			steps: []step{
				{at: 0, op: eject, want: Ejected, next: ptr(10 * s)},
				{at: 10 * s, op: tick, want: Healthy},
				{at: 10 * s, op: eject, want: Ejected, next: ptr(30 * s)},
				{at: 30 * s, op: tick, want: Healthy},
				{at: 100 * s, op: eject, want: Ejected, next: ptr(130 * s)}, // 70s quiet < 2×40s: no decay
				{at: 130 * s, op: tick, want: Healthy},
				{at: 200 * s, op: eject, want: Ejected, next: ptr(240 * s)},
				{at: 240 * s, op: tick, want: Healthy},
				{at: 300 * s, op: eject, want: Ejected, next: ptr(340 * s), reason: "40s"}, // capped
			},
		},
		{
			name:   "ejection count decays after 2x max_ejection quiet",
			policy: testPolicy(),
			steps: []step{
				{at: 0, op: eject, want: Ejected, next: ptr(10 * s)},
				{at: 10 * s, op: tick, want: Healthy},
				{at: 90 * s, op: eject, want: Ejected, next: ptr(100 * s)}, // 80s = 2×40s quiet
			},
		},
		{
			name:   "checks failing during ejection leave it unhealthy without an extra transition",
			policy: testPolicy(),
			steps: []step{
				{at: 0, op: pass, want: Healthy},
				{at: 1 * s, op: eject, want: Ejected, transitions: ptr(1)},
				{at: 2 * s, op: fail, want: Ejected},
				{at: 3 * s, op: fail, want: Ejected},
				{at: 4 * s, op: fail, want: Ejected, changed: ptr(false)},
				{at: 11 * s, op: tick, want: Unhealthy, changed: ptr(true), transitions: ptr(1), reason: "3 failed checks"},
			},
		},
		{
			name:   "eject is a no-op on an unhealthy backend",
			policy: testPolicy(),
			steps: []step{
				{at: 0, op: fail, want: Unhealthy},
				{at: 1 * s, op: eject, want: Unhealthy, changed: ptr(false), next: ptr(time.Duration(-1))},
			},
		},
		{
			name: "eject is a no-op when ejection is off",
			policy: func() Policy {
				p := testPolicy()
				p.ConsecutiveFailures = 0
				return p
			}(),
			steps: []step{
				{at: 0, op: eject, want: Healthy, changed: ptr(false), transitions: ptr(0)},
			},
		},
		{
			name:   "eject during a hold restarts it",
			policy: fastPolicy(),
			steps: concat(
				[]step{{at: 0, op: pass, want: Healthy}},
				flap5(1*s), // held until 35s
				[]step{
					{at: 6 * s, op: pass, want: HeldDown},
					{at: 30 * s, op: eject, want: HeldDown, next: ptr(60 * s), reason: "5 live-traffic failures"},
					{at: 35 * s, op: tick, want: HeldDown},
					{at: 60 * s, op: tick, want: Healthy},
				},
			),
		},
		{
			name:   "ejection crossings count towards flap damping",
			policy: testPolicy(),
			steps: []step{
				{at: 0, op: eject, want: Ejected},
				{at: 10 * s, op: tick, want: Healthy},
				{at: 11 * s, op: eject, want: Ejected},
				{at: 31 * s, op: tick, want: Healthy, transitions: ptr(4)},
				{at: 32 * s, op: eject, want: HeldDown, transitions: ptr(5), holdLeft: ptr(30 * s)},
				{at: 62 * s, op: tick, want: Healthy, transitions: ptr(6)}, // the ejection ends with the hold: a crossing, not windowed
			},
		},
		{
			name:   "a late tick fires timers at their scheduled times",
			policy: testPolicy(),
			steps: []step{
				{at: 0, op: eject, want: Ejected},
				{at: 500 * s, op: tick, want: Healthy},
				// Ejection ended at 10s: 490s of quiet decays the count.
				{at: 500 * s, op: eject, want: Ejected, next: ptr(510 * s)},
			},
		},
		{
			name:   "flap damping off without max_transitions",
			policy: func() Policy { p := fastPolicy(); p.MaxTransitions = 0; return p }(),
			steps: concat(
				[]step{{at: 0, op: pass, want: Healthy}},
				flap5(1 * s)[:4],
				[]step{{at: 5 * s, op: fail, want: Unhealthy, transitions: ptr(5)}},
			),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { runSteps(t, tc.policy, tc.steps) })
	}
}

// holdAfterFlap flaps tr starting at base and returns the hold it got.
func holdAfterFlap(t *testing.T, tr *Tracker, base time.Time) time.Duration {
	t.Helper()
	for i, ok := range []bool{false, true, false, true, false} {
		tr.Check(ok, base.Add(time.Duration(i)*s))
	}
	now := base.Add(4 * s)
	if tr.State() != HeldDown {
		t.Fatalf("state %v after flapping, want held_down", tr.State())
	}
	return tr.HoldRemaining(now)
}

// endHold waits out the current hold with passing checks and returns when it ended.
func endHold(t *testing.T, tr *Tracker) time.Time {
	t.Helper()
	end := tr.Next()
	tr.Check(true, end.Add(-s))
	if !tr.Tick(end) || tr.State() != Healthy {
		t.Fatalf("hold did not end healthy at %v: %v", end, tr.State())
	}
	return end
}

func TestTrackerHoldDoublesUpToMaxHold(t *testing.T) {
	tests := []struct {
		name  string
		holds int
		want  time.Duration
	}{
		{name: "first hold is hold", holds: 1, want: 30 * s},
		{name: "second hold doubles", holds: 2, want: 60 * s},
		{name: "third hold doubles again", holds: 3, want: 120 * s},
		{name: "fourth hold is capped at max_hold", holds: 4, want: 120 * s},
		{name: "tenth hold stays capped", holds: 10, want: 120 * s},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker(fastPolicy(), t0)
			tr.Check(true, t0)
			now := t0.Add(s)
			var got time.Duration
			for i := range tc.holds {
				got = holdAfterFlap(t, tr, now)
				if i < tc.holds-1 {
					now = endHold(t, tr).Add(s) // flap again right after: no decay
				}
			}
			if got != tc.want {
				t.Errorf("hold %d lasted %v, want %v", tc.holds, got, tc.want)
			}
		})
	}
}

func TestTrackerHoldDecay(t *testing.T) {
	// Decay rule: 2×max_hold (240s here) after a hold ends with no new hold,
	// the next hold starts from `hold` again.
	tests := []struct {
		name  string
		quiet time.Duration // from the end of the second hold to the start of the third
		want  time.Duration
	}{
		{name: "flap again soon doubles", quiet: 5 * s, want: 120 * s},
		{name: "just under 2x max_hold still doubles", quiet: 239 * s, want: 120 * s},
		{name: "2x max_hold quiet resets to hold", quiet: 240 * s, want: 30 * s},
		{name: "long quiet resets to hold", quiet: time.Hour, want: 30 * s},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker(fastPolicy(), t0)
			tr.Check(true, t0)
			holdAfterFlap(t, tr, t0.Add(s))
			end := endHold(t, tr)
			holdAfterFlap(t, tr, end.Add(s))
			end = endHold(t, tr)
			if got := holdAfterFlap(t, tr, end.Add(tc.quiet-4*s)); got != tc.want {
				t.Errorf("hold %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTrackerDrain(t *testing.T) {
	tests := []struct {
		name string
		op   op
	}{
		{name: "pass", op: pass},
		{name: "fail", op: fail},
		{name: "eject", op: eject},
		{name: "tick", op: tick},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker(testPolicy(), t0)
			tr.Eject(t0) // a pending timer must not fire after drain
			tr.Drain()
			if tr.State() != Draining || tr.Routable() || !tr.Next().IsZero() {
				t.Fatalf("after Drain: state %v routable %v next %v", tr.State(), tr.Routable(), tr.Next())
			}
			if apply(tr, tc.op, t0.Add(time.Hour)) || tr.State() != Draining {
				t.Errorf("%v changed a draining backend to %v", tc.op, tr.State())
			}
			if tr.Reason() != "removed from discovery" {
				t.Errorf("reason %q", tr.Reason())
			}
		})
	}
}

func TestTrackerSetPolicyKeepsState(t *testing.T) {
	tr := NewTracker(fastPolicy(), t0)
	tr.Check(true, t0)
	holdAfterFlap(t, tr, t0.Add(s)) // held 5s..35s
	p := fastPolicy()
	p.Hold, p.MaxHold = 5*s, 5*s
	tr.SetPolicy(p)
	if tr.State() != HeldDown || tr.HoldRemaining(t0.Add(5*s)) != 30*s || tr.Transitions() != 5 {
		t.Fatalf("reload lost state: %v, hold %v, transitions %d", tr.State(), tr.HoldRemaining(t0.Add(5*s)), tr.Transitions())
	}
	tr.Check(false, t0.Add(10*s)) // the restart uses the running hold's length
	if got := tr.HoldRemaining(t0.Add(10 * s)); got != 30*s {
		t.Errorf("restarted hold %v, want 30s", got)
	}
}

func TestStateString(t *testing.T) {
	want := []string{"healthy", "unhealthy", "held_down", "ejected", "draining", "disabled"}
	if len(AllStates) != len(want) {
		t.Fatalf("AllStates has %d states", len(AllStates))
	}
	for i, st := range AllStates {
		t.Run(want[i], func(t *testing.T) {
			if st.String() != want[i] || int(st) != i {
				t.Errorf("state %d: %q", int(st), st.String())
			}
		})
	}
	if got := State(42).String(); got != "state(42)" {
		t.Errorf("unknown state: %q", got)
	}
}
