// Package discovery produces complete backend sets for a pool: static members
// from the config, or DNS A/AAAA/SRV lookups that keep the last good set when
// DNS misbehaves.
package discovery

import (
	"context"
	"slices"
	"strings"
)

// Backend is one member of a discovered set.
type Backend struct {
	// Address is host:port, with the host an IP literal.
	Address string
	// Weight shapes the share of traffic (>= 1).
	Weight int
	// Priority is the SRV priority: the lowest value serves, higher values are
	// fallbacks. Static backends have priority 0.
	Priority int
}

// Source pushes whole backend sets, never diffs. Run blocks until ctx ends,
// calling update with every new set (update is never called concurrently by
// one Source and never with an empty set).
type Source interface {
	Run(ctx context.Context, update func([]Backend)) error
}

// Static is a Source for members listed in the config.
type Static struct {
	Backends []Backend
}

var _ Source = (*Static)(nil)

// Run publishes the static set once and waits for ctx to end.
func (s *Static) Run(ctx context.Context, update func([]Backend)) error {
	if len(s.Backends) > 0 {
		update(slices.Clone(s.Backends))
	}
	<-ctx.Done()
	return nil
}

// SortBackends orders a set by priority then address, so that equal sets
// compare equal whatever order DNS returned them in.
func SortBackends(bs []Backend) {
	slices.SortFunc(bs, func(a, b Backend) int {
		if a.Priority != b.Priority {
			return a.Priority - b.Priority
		}
		return strings.Compare(a.Address, b.Address)
	})
}
