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
	r := &Ring{points: make([]uint64, total), owners: make([]*Endpoint, total)}
	// About 4 points per index bucket.
	for r.indexBits < 24 && 1<<(r.indexBits+2) < total {
		r.indexBits++
	}
	bucket := func(h uint64) uint64 {
		if r.indexBits == 0 {
			return 0
		}
		return h >> (64 - r.indexBits)
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
	// A counting sort by the hash's top bits (the hashes are uniform, so
	// each bucket holds a few points), then each bucket sorted in place:
	// O(points), where a comparison sort of 640,000 points took 100 ms.
	// The counts are the index Pick starts from.
	r.index = make([]uint32, 1<<r.indexBits+1)
	for _, p := range pts {
		r.index[bucket(p.h)+1]++
	}
	for b := 1; b < len(r.index); b++ {
		r.index[b] += r.index[b-1]
	}
	next := slices.Clone(r.index[:len(r.index)-1])
	for _, p := range pts {
		b := bucket(p.h)
		r.points[next[b]], r.owners[next[b]] = p.h, p.ep
		next[b]++
	}
	for b := 0; b+1 < len(r.index); b++ {
		lo, hi := int(r.index[b]), int(r.index[b+1])
		for i := lo + 1; i < hi; i++ { // insertion sort: a handful of points
			for j := i; j > lo && pointLess(r.points[j], r.owners[j], r.points[j-1], r.owners[j-1]); j-- {
				r.points[j], r.points[j-1] = r.points[j-1], r.points[j]
				r.owners[j], r.owners[j-1] = r.owners[j-1], r.owners[j]
			}
		}
	}
	return r
}

// pointLess orders ring points by hash, then (a 64-bit collision) by
// address, so every instance builds the same ring.
func pointLess(h1 uint64, e1 *Endpoint, h2 uint64, e2 *Endpoint) bool {
	return h1 < h2 || (h1 == h2 && e1.Addr < e2.Addr)
}

// search is the first point ≥ h (len(points) when none).
func (r *Ring) search(h uint64) int {
	if r.indexBits == 0 {
		i, _ := slices.BinarySearch(r.points, h)
		return i
	}
	b := h >> (64 - r.indexBits) // index has 1<<indexBits+1 entries
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
