package balancer

import (
	"fmt"
	"sync"
	"time"

	"github.com/holdfast-lb/holdfast/health"
)

// Event is one change of a pool or a backend, for the dashboard's
// timeline.
type Event struct {
	Time time.Time `json:"time"`
	// Backend is empty for a pool-wide event (panic mode).
	Backend string `json:"backend,omitempty"`
	// Kind is health, hold, ejection, override, discovery or panic.
	Kind   string `json:"kind"`
	From   string `json:"from,omitempty"`
	To     string `json:"to"`
	Reason string `json:"reason,omitempty"`
}

// maxEvents bounds each pool's timeline.
const maxEvents = 100

// eventRing keeps a pool's last maxEvents events. Written on the pool's
// goroutine, read by the status page.
type eventRing struct {
	mu   sync.Mutex
	ring [maxEvents]Event
	head int
	n    int
}

func (r *eventRing) add(ev Event) {
	r.mu.Lock()
	r.ring[r.head] = ev
	r.head = (r.head + 1) % maxEvents
	if r.n < maxEvents {
		r.n++
	}
	r.mu.Unlock()
}

// list returns the events, oldest first.
func (r *eventRing) list() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Event, 0, r.n)
	for i := range r.n {
		out = append(out, r.ring[(r.head-r.n+i+maxEvents)%maxEvents])
	}
	return out
}

// stateEventKind names what moved a backend from one state to another.
func stateEventKind(from, to health.State, e *entry) string {
	switch {
	case to == health.HeldDown || from == health.HeldDown:
		return "hold"
	case to == health.Ejected || from == health.Ejected:
		return "ejection"
	case to == health.Disabled || from == health.Disabled:
		return "override"
	case to == health.Draining && e.draining:
		return "discovery"
	case to == health.Draining || from == health.Draining:
		return "override"
	}
	return "health"
}

// overrideText describes an override for the timeline.
func overrideText(o Override) string {
	switch {
	case o.IsZero():
		return "none"
	case o.Disable:
		return "disable"
	case o.Drain:
		return "drain"
	}
	return fmt.Sprintf("weight %d", o.Weight)
}
