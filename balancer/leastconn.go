package balancer

import "sync/atomic"

// LeastConn picks the endpoint with the fewest in-flight requests per unit
// of weight, scanning from a rotating start so ties spread evenly.
type LeastConn struct {
	ms    []member
	start atomic.Uint32
}

var _ Picker = (*LeastConn)(nil)

func newLeastConn(ms []member) *LeastConn { return &LeastConn{ms: ms} }

// Pick scans every member once.
func (l *LeastConn) Pick(_ uint64, tried []*Endpoint) *Endpoint {
	n := len(l.ms)
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
