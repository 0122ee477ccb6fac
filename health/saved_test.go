package health

import (
	"testing"
	"time"
)

// A held-down tracker saved and restored into a new process's tracker is
// still held until the saved end, and is routable again only after it.
func TestTrackerSaveRestore(t *testing.T) {
	tr := NewTracker(fastPolicy(), t0)
	tr.Check(true, t0)
	hold := holdAfterFlap(t, tr, t0.Add(s))
	if tr.State() != HeldDown {
		t.Fatalf("state %v after flapping, want held_down", tr.State())
	}
	saved := tr.Save()
	restartAt := saved.HeldUntil.Add(-hold / 2)
	up := saved
	up.ChecksPassing = true

	cases := []struct {
		name  string
		saved Saved
		at    time.Time
		want  State
	}{
		{"hold still running", saved, restartAt, HeldDown},
		{"hold ran out while down, checks were passing", up, saved.HeldUntil.Add(s), Healthy},
		{"hold ran out while down, checks were failing", Saved{HeldUntil: saved.HeldUntil, HoldFor: hold}, saved.HeldUntil.Add(s), Unhealthy},
		{"unhealthy stays unhealthy", Saved{ChecksPassing: false}, t0, Unhealthy},
		{"ejection still running", Saved{ChecksPassing: true, EjectedUntil: t0.Add(10 * s), Ejections: 1}, t0, Ejected},
		{"fresh", Saved{ChecksPassing: true}, t0, Healthy},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := NewTracker(fastPolicy(), c.at)
			n.Restore(c.saved, c.at)
			if n.State() != c.want {
				t.Fatalf("restored state %v, want %v (reason %q)", n.State(), c.want, n.Reason())
			}
			if c.want == HeldDown {
				if got := n.HoldRemaining(c.at); got != hold/2 {
					t.Errorf("hold remaining %v, want %v", got, hold/2)
				}
				if n.HoldLevel() != saved.HoldLevel {
					t.Errorf("hold level %d, want %d", n.HoldLevel(), saved.HoldLevel)
				}
				n.Check(true, c.at.Add(s))
				if n.Routable() {
					t.Error("one passing check ended a restored hold")
				}
				n.Tick(saved.HeldUntil)
				if !n.Routable() {
					t.Errorf("state %v after the saved hold end, want healthy", n.State())
				}
			}
		})
	}
}
