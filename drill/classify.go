package drill

import "time"

// Cause is why a request failed, as far as the drill can tell from what
// its simulated backends did with it.
type Cause int

const (
	// CauseNone: the request did not fail.
	CauseNone Cause = iota
	// CauseInFlight: a request that is not safe to resend (a POST, a TCP
	// stream) was read by a backend which then failed it: killed in
	// flight, or reset. No proxy can save it without risking a double
	// write, so it is not held against the config.
	CauseInFlight
	// CauseReset: an idempotent request (GET) was read by a backend that
	// then reset it. A retry on reset would have saved it.
	CauseReset
	// CauseUnreached: the request failed although no backend failed it:
	// a connect failure or a dead pooled connection that was not retried,
	// no routable backend (503), a queue or timeout answer, or an error
	// between the client and holdfast.
	CauseUnreached
)

func (c Cause) String() string {
	switch c {
	case CauseNone:
		return "none"
	case CauseInFlight:
		return "in flight on a failed backend"
	case CauseReset:
		return "reset, not retried"
	case CauseUnreached:
		return "never reached a backend"
	}
	return "unknown"
}

// Avoidable reports whether the config could have saved a request that
// failed with this cause.
func (c Cause) Avoidable() bool { return c == CauseReset || c == CauseUnreached }

// resetGrace is how soon after a backend reset its connections a failed
// request that was already in flight counts as having been on one of them.
const resetGrace = time.Second

// classify says why r failed. flags is what the backends recorded for it
// (the ledger); resets are the instants a simulated backend reset its
// connections. A request that is not safe to resend and was in flight
// when a backend reset, and failed right then, counts as in flight even
// when no backend recorded it: its bytes may have reached the dying
// socket, which a proxy cannot tell from "processed".
func classify(r record, flags uint8, resets []time.Time) Cause {
	if !r.failed() {
		return CauseNone
	}
	if flags&seenFailed != 0 {
		if r.idempotent() {
			return CauseReset
		}
		return CauseInFlight
	}
	if !r.idempotent() && r.status != 503 && r.status != 504 {
		for _, t := range resets {
			if !r.start.After(t) && !r.end.Before(t) && r.end.Sub(t) <= resetGrace {
				return CauseInFlight
			}
		}
	}
	return CauseUnreached
}
