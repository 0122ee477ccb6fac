package balancer

import (
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// vnodes per unit of weight on the hash ring.
const vnodes = 64

// Ring is consistent hashing: each member owns points on a ring in
// proportion to its weight; a key goes to the next point clockwise, so a
// member leaving moves only its own keys.
//
// The hash is fixed and documented, with no per-process seed: member i's
// points are xxhash64 (XXH64, seed 0) of "ADDRESS#0", "ADDRESS#1", ...
// (64 points per unit of weight), and keys hash with HashString/HashBytes.
// Any two instances with the same members therefore build the same ring and
// send every key to the same backend, across restarts too.
type Ring struct {
	points []uint64
	owners []*Endpoint
	// index[b] is the first point whose top indexBits bits are ≥ b: a
	// lookup reads one index entry and searches a few points, instead of
	// binary-searching the whole ring (cache misses: at 10,000 backends
	// the ring is 640,000 points, 5 MB).
	index     []uint32
	indexBits uint
}

var _ Picker = (*Ring)(nil)

type point struct {
	h  uint64
	ep *Endpoint
}

func newRing(ms []member) *Ring {
	total := 0
	for _, m := range ms {
		total += max(1, int(m.weight*vnodes))
	}
	pts := make([]point, 0, total)
	var buf []byte
	for _, m := range ms {
		n := max(1, int(m.weight*vnodes))
		buf = append(buf[:0], m.ep.Addr...)
		buf = append(buf, '#')
		base := len(buf)
		for i := range n {
			buf = strconv.AppendInt(buf[:base], int64(i), 10)
			pts = append(pts, point{xxhash.Sum64(buf), m.ep})
		}
	}
	slices.SortFunc(pts, func(a, b point) int {
		switch {
		case a.h < b.h:
			return -1
		case a.h > b.h:
			return 1
		}
		return 0
	})
	r := &Ring{points: make([]uint64, len(pts)), owners: make([]*Endpoint, len(pts))}
	for i, p := range pts {
		r.points[i], r.owners[i] = p.h, p.ep
	}
	// About 4 points per index bucket.
	for r.indexBits < 24 && 1<<(r.indexBits+2) < len(pts) {
		r.indexBits++
	}
	r.index = make([]uint32, 1<<r.indexBits+1)
	j := 0
	for b := range r.index {
		for j < len(pts) && r.points[j]>>(64-r.indexBits) < uint64(b) {
			j++
		}
		r.index[b] = uint32(j)
	}
	return r
}

// search is the first point ≥ h (len(points) when none).
func (r *Ring) search(h uint64) int {
	if r.indexBits == 0 {
		i, _ := slices.BinarySearch(r.points, h)
		return i
	}
	b := h >> (64 - r.indexBits)
	lo, hi := int(r.index[b]), int(r.index[b+1])
	i, _ := slices.BinarySearch(r.points[lo:hi], h)
	return lo + i
}

// Pick walks clockwise from hash to the first owner not in tried.
func (r *Ring) Pick(h uint64, tried []*Endpoint) *Endpoint {
	i := r.search(h)
	n := len(r.points)
	for k := range n {
		e := r.owners[(i+k)%n]
		if len(tried) == 0 || !triedHas(tried, e) {
			return e
		}
		if k > 4*vnodes {
			break
		}
	}
	return r.owners[i%n]
}

// HashString hashes an affinity key for Pick: xxhash64 (XXH64, seed 0), the
// same in every process. It does not allocate.
func HashString(s string) uint64 { return xxhash.Sum64String(s) }

// HashBytes is HashString of b. It does not allocate.
func HashBytes(b []byte) uint64 { return xxhash.Sum64(b) }
