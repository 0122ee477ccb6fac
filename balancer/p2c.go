package balancer

import "math/rand/v2"

// P2C is the power of two choices: two members drawn at random (weighted),
// the less loaded wins. With ewma, load is latency × (in-flight + 1).
type P2C struct {
	draw *Random
	ewma bool
}

var _ Picker = (*P2C)(nil)

func newP2C(ms []member, ewma bool) *P2C { return &P2C{draw: newRandom(ms), ewma: ewma} }

// Pick compares two random members.
func (p *P2C) Pick(h uint64, tried []*Endpoint) *Endpoint {
	a := p.draw.Pick(h, tried)
	if len(p.draw.ms) == 1 {
		return a
	}
	b := p.draw.Pick(h, tried)
	for i := 0; b == a && i < 3; i++ {
		b = p.draw.Pick(h, tried)
	}
	if p.ewma {
		if b.cost() < a.cost() {
			return b
		}
		return a
	}
	if b.inflight.Load() < a.inflight.Load() {
		return b
	}
	return a
}

// Random draws a member with probability proportional to its weight, from
// a table holding each member as many times as its (integer) weight.
type Random struct {
	ms       []member
	schedule []*Endpoint
}

var _ Picker = (*Random)(nil)

func newRandom(ms []member) *Random {
	// Draws are random: the order of the schedule does not matter, only
	// that member i appears w_i times.
	ws := intWeights(ms)
	total := 0
	for _, w := range ws {
		total += w
	}
	schedule := make([]*Endpoint, 0, total)
	for i, w := range ws {
		for range w {
			schedule = append(schedule, ms[i].ep)
		}
	}
	return &Random{ms: ms, schedule: schedule}
}

// Pick draws at random, redrawing a few times to avoid tried members.
func (r *Random) Pick(_ uint64, tried []*Endpoint) *Endpoint {
	l := len(r.schedule)
	e := r.schedule[rand.IntN(l)]
	if len(tried) == 0 || !triedHas(tried, e) {
		return e
	}
	for range 4 {
		if e = r.schedule[rand.IntN(l)]; !triedHas(tried, e) {
			return e
		}
	}
	// Unlucky draws: take the next untried member from a random start, so a
	// retry never lands on a tried backend while an untried one exists.
	start := rand.IntN(len(r.ms))
	for k := range r.ms {
		if m := r.ms[(start+k)%len(r.ms)]; !triedHas(tried, m.ep) {
			return m.ep
		}
	}
	return e
}
