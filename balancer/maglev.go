package balancer

import (
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// MaglevTableSize is the number of entries in a Maglev lookup table. It is
// prime, as the algorithm needs, and large enough that a backend's share
// stays within a fraction of a percent of its weight for any pool size a
// load balancer sees.
const MaglevTableSize = 65537

// Maglev is Google's Maglev consistent hashing (Eisenbud et al., NSDI 2016):
// every backend has a permutation of the table slots derived from its
// address alone, and the backends take turns claiming their next preferred
// free slot until the table is full. A key goes to table[hash % size].
//
// The table is a pure function of the set of (address, weight) pairs:
// backends are sorted by address before the table is filled, and the
// permutation of a backend comes from xxhash64 (XXH64, seed 0) of its
// address — offset from the upper 32 bits, skip from the lower 32 — so any
// two holdfast instances with the same backends build the same table,
// whatever order discovery returned them in. Removing one of N backends
// moves about 1/N of the keys (its own, plus a small fraction of a percent
// of the others').
//
// Maglev is immutable once built; Pick is safe for concurrent use.
type Maglev struct {
	table []uint16 // index into eps
	eps   []*Endpoint
}

var _ Picker = (*Maglev)(nil)

// maglevMaxBackends bounds the members of one table: indices are uint16 and
// a table needs more slots than backends.
const maglevMaxBackends = 1<<16 - 1

func newMaglev(ms []member) *Maglev {
	ms = slices.Clone(ms)
	slices.SortFunc(ms, func(a, b member) int { return strings.Compare(a.ep.Addr, b.ep.Addr) })
	if len(ms) > maglevMaxBackends {
		ms = ms[:maglevMaxBackends]
	}
	const size = MaglevTableSize
	n := len(ms)
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n) // how far each backend is along its permutation
	credit := make([]float64, n)
	maxW := 0.0
	for i, m := range ms {
		h := xxhash.Sum64String(m.ep.Addr)
		offset[i] = (h >> 32) % size
		skip[i] = (h&0xffffffff)%(size-1) + 1
		maxW = max(maxW, m.weight)
	}
	weight := make([]float64, n)
	for i, m := range ms {
		switch {
		case maxW <= 0: // every weight is zero (slow start at t=0): equal shares
			weight[i] = 1
		case m.weight > 0:
			weight[i] = m.weight / maxW
		default:
			// A tiny share, not none: the member is routable, so a retry
			// that walks the table can still reach it.
			weight[i] = 1.0 / size
		}
	}
	table := make([]uint16, size)
	filled := make([]bool, size)
	eps := make([]*Endpoint, n)
	for i, m := range ms {
		eps[i] = m.ep
	}
	// Weighted population: each round a backend earns weight/maxWeight of a
	// turn and claims one slot per whole turn earned, so the heaviest
	// backend claims one slot every round.
	left := size
	for left > 0 {
		for i := range n {
			credit[i] += weight[i]
			for credit[i] >= 1 && left > 0 {
				credit[i]--
				for {
					c := (offset[i] + next[i]*skip[i]) % size
					next[i]++
					if !filled[c] {
						filled[c] = true
						table[c] = uint16(i)
						left--
						break
					}
				}
			}
		}
	}
	return &Maglev{table: table, eps: eps}
}

// Pick returns the key's owner, or, when the owner was tried, the owner of
// the next table slots in turn (bounded), which spreads a key's retries over
// the other backends in proportion to their shares.
func (g *Maglev) Pick(h uint64, tried []*Endpoint) *Endpoint {
	i := h % MaglevTableSize
	e := g.eps[g.table[i]]
	if len(tried) == 0 || !triedHas(tried, e) {
		return e
	}
	for k := uint64(1); k < 4096; k++ {
		c := g.eps[g.table[(i+k)%MaglevTableSize]]
		if !triedHas(tried, c) {
			return c
		}
	}
	return e
}
