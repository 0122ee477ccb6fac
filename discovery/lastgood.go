package discovery

import "slices"

// LastGood decides which set a pool serves given the answers DNS gives. It
// keeps the last good set through failures, applies growth and small changes
// at once, and applies a destructive answer (one that removes more than
// MaxShrink of the set, or says there are no backends at all) only after
// Confirm identical answers in a row. An answer with no backends never
// applies: a pool never becomes empty because of DNS.
//
// LastGood is not safe for concurrent use; a DNS source owns one.
type LastGood struct {
	// MaxShrink is the share (0..1) of the current set an answer may remove
	// and still apply at once. 0 means every removal must be confirmed.
	MaxShrink float64
	// Confirm is how many identical destructive answers in a row apply one
	// (values below 1 mean 1).
	Confirm int

	set      []Backend // published set, nil before the first success
	pending  []Backend // destructive answer waiting for confirmation
	pendingN int       // how many times in a row pending was answered
}

// Verdict is what LastGood did with an answer.
type Verdict int

const (
	// Unchanged: the answer equals the current set.
	Unchanged Verdict = iota
	// Applied: the answer is the new set (also the first set).
	Applied
	// Held: a destructive answer waits for confirmation; the set is kept.
	Held
	// RefusedEmpty: an answer with no backends was confirmed (or came before
	// any set existed); the set is kept, as it always is for empty answers.
	RefusedEmpty
)

var verdictNames = [...]string{"unchanged", "applied", "held", "refused_empty"}

func (v Verdict) String() string { return verdictNames[v] }

// Set returns the current set (nil before the first success). The caller
// must not modify it.
func (l *LastGood) Set() []Backend { return l.set }

// Pending returns the destructive answer waiting for confirmation and how
// many times in a row it has been seen.
func (l *LastGood) Pending() ([]Backend, int) { return l.pending, l.pendingN }

// Offer submits one successful DNS answer (nil or empty for NXDOMAIN or an
// empty NOERROR). The set must be sorted with SortBackends.
func (l *LastGood) Offer(answer []Backend) Verdict {
	if len(answer) == 0 && l.set == nil {
		return RefusedEmpty
	}
	if l.set == nil {
		l.set = slices.Clone(answer)
		return Applied
	}
	if slices.Equal(answer, l.set) {
		l.resetPending()
		return Unchanged
	}
	if len(answer) > 0 && removedShare(l.set, answer) <= l.MaxShrink {
		l.set = slices.Clone(answer)
		l.resetPending()
		return Applied
	}
	if l.pendingN > 0 && slices.Equal(answer, l.pending) {
		l.pendingN++
	} else {
		l.pending, l.pendingN = slices.Clone(answer), 1
	}
	if l.pendingN < max(l.Confirm, 1) {
		return Held
	}
	if len(answer) == 0 {
		// Confirmed empty: keep the set anyway, and keep counting so the
		// caller can tell it persists.
		return RefusedEmpty
	}
	l.set = l.pending
	l.resetPending()
	return Applied
}

func (l *LastGood) resetPending() { l.pending, l.pendingN = nil, 0 }

// removedShare is the share of cur's addresses that next does not have.
func removedShare(cur, next []Backend) float64 {
	if len(cur) == 0 {
		return 0
	}
	have := make(map[string]bool, len(next))
	for _, b := range next {
		have[b.Address] = true
	}
	removed := 0
	for _, b := range cur {
		if !have[b.Address] {
			removed++
		}
	}
	return float64(removed) / float64(len(cur))
}

// dedupe sorts bs and merges entries with the same address, keeping the
// lowest priority and, within it, the largest weight.
func dedupe(bs []Backend) []Backend {
	SortBackends(bs)
	out := bs[:0]
	seen := map[string]int{}
	for _, b := range bs {
		if i, ok := seen[b.Address]; ok {
			if out[i].Priority == b.Priority && b.Weight > out[i].Weight {
				out[i].Weight = b.Weight
			}
			continue
		}
		seen[b.Address] = len(out)
		out = append(out, b)
	}
	return out
}
