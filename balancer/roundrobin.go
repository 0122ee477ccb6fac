package balancer

import (
	"sync/atomic"
)

// maxSchedule bounds the precomputed round-robin schedule.
const maxSchedule = 4096

// RoundRobin is nginx's smooth weighted round robin, precomputed: the
// schedule of one full cycle is built when the snapshot is made, and Pick
// walks it with one atomic counter, so picks take no lock.
type RoundRobin struct {
	schedule []*Endpoint
	next     atomic.Uint64
	n        int // distinct endpoints
}

var _ Picker = (*RoundRobin)(nil)

func intWeights(ms []member) []int {
	ws := make([]int, len(ms))
	sum := 0
	for i, m := range ms {
		w := int(m.weight*10 + 0.5) // one decimal of slow-start precision
		if w < 1 {
			w = 1
		}
		ws[i] = w
		sum += w
	}
	g := ws[0]
	for _, w := range ws[1:] {
		g = gcd(g, w)
	}
	for i := range ws {
		ws[i] /= g
	}
	sum /= g
	if sum > maxSchedule {
		for i := range ws {
			ws[i] = max(1, ws[i]*maxSchedule/sum)
		}
	}
	return ws
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// smoothSchedule expands weights into nginx's smooth order: each step adds
// every weight to its current value, picks the largest, and subtracts the
// total from it.
func smoothSchedule(ms []member, ws []int) []*Endpoint {
	total := 0
	for _, w := range ws {
		total += w
	}
	cur := make([]int, len(ws))
	out := make([]*Endpoint, 0, total)
	for range total {
		best := 0
		for i, w := range ws {
			cur[i] += w
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		out = append(out, ms[best].ep)
	}
	return out
}

func newRoundRobin(ms []member) *RoundRobin {
	return &RoundRobin{schedule: smoothSchedule(ms, intWeights(ms)), n: len(ms)}
}

// Pick returns the next endpoint of the cycle not in tried.
func (r *RoundRobin) Pick(_ uint64, tried []*Endpoint) *Endpoint {
	i := r.next.Add(1) - 1
	l := uint64(len(r.schedule))
	e := r.schedule[i%l]
	if len(tried) == 0 || r.n == 1 {
		return e
	}
	for k := uint64(1); k <= l && triedHas(tried, e); k++ {
		e = r.schedule[(i+k)%l]
	}
	return e
}
