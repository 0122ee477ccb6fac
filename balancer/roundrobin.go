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

// exactScheduleWork bounds len(ws) × total for the exact smooth order
// (O(members × schedule)); above it, edfSchedule.
const exactScheduleWork = 1 << 18

// smoothSchedule expands weights into nginx's smooth order: each step adds
// every weight to its current value, picks the largest, and subtracts the
// total from it. That is O(members × schedule length), 10^8 steps at
// 10,000 backends, so large pools get edfSchedule instead: the same
// proportions, as evenly interleaved, in O(schedule × log members).
func smoothSchedule(ms []member, ws []int) []*Endpoint {
	total := 0
	for _, w := range ws {
		total += w
	}
	if len(ws)*total > exactScheduleWork {
		return edfSchedule(ms, ws, total)
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

// edfSchedule is earliest-deadline-first over the members: member i's k-th
// turn is due at (k+1)/w_i, ties to the lower index, kept in a binary
// heap. Each member gets exactly w_i turns in the cycle, spread evenly.
func edfSchedule(ms []member, ws []int, total int) []*Endpoint {
	type turn struct{ k, i int }  // member i's next turn is its k-th
	due := func(a, b turn) bool { // a before b
		l, r := (a.k+1)*ws[b.i], (b.k+1)*ws[a.i]
		return l < r || (l == r && a.i < b.i)
	}
	h := make([]turn, len(ws))
	for i := range h {
		h[i] = turn{0, i}
	}
	down := func(j int) {
		for {
			c := 2*j + 1
			if c >= len(h) {
				return
			}
			if c+1 < len(h) && due(h[c+1], h[c]) {
				c++
			}
			if !due(h[c], h[j]) {
				return
			}
			h[j], h[c] = h[c], h[j]
			j = c
		}
	}
	for j := len(h)/2 - 1; j >= 0; j-- {
		down(j)
	}
	out := make([]*Endpoint, 0, total)
	for len(out) < total {
		t := h[0]
		out = append(out, ms[t.i].ep)
		t.k++
		if t.k >= ws[t.i] { // its turns are done: out of the heap
			h[0] = h[len(h)-1]
			h = h[:len(h)-1]
		} else {
			h[0] = t
		}
		if len(h) > 0 {
			down(0)
		}
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
