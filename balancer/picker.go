package balancer

// Picker chooses an endpoint for one request. Implementations are immutable
// snapshots: Pick is safe for concurrent use, takes no lock and never blocks.
type Picker interface {
	// Pick returns an endpoint, avoiding those in tried where the set allows,
	// or nil when there is none. hash is the request's affinity key
	// (consistent_hash and maglev; others ignore it).
	Pick(hash uint64, tried []*Endpoint) *Endpoint
}

// member is an endpoint with its effective weight in this snapshot.
type member struct {
	ep     *Endpoint
	weight float64
}

func triedHas(tried []*Endpoint, e *Endpoint) bool {
	for _, t := range tried {
		if t == e {
			return true
		}
	}
	return false
}

// emptyPicker has no endpoint: requests get 503.
type emptyPicker struct{}

func (emptyPicker) Pick(uint64, []*Endpoint) *Endpoint { return nil }

var _ Picker = emptyPicker{}

// newPicker builds the picker for an algorithm over members.
func newPicker(algo string, ms []member) Picker {
	if len(ms) == 0 {
		return emptyPicker{}
	}
	switch algo {
	case "least_conn":
		return newLeastConn(ms)
	case "p2c":
		return newP2C(ms, false)
	case "p2c_ewma":
		return newP2C(ms, true)
	case "random":
		return newRandom(ms)
	case "consistent_hash":
		return newRing(ms)
	case "maglev":
		return newMaglev(ms)
	default:
		return newRoundRobin(ms)
	}
}
