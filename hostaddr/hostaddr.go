// Package hostaddr follows which addresses this host holds on its network
// interfaces, so that a listener bound to a floating IP (keepalived, with
// freebind) learns when the address moves to another host while holdfast
// keeps running.
//
// A Source pushes complete sets (never diffs); a Tracker turns successive
// sets into transitions of the addresses being watched.
package hostaddr

import (
	"context"
	"net/netip"
)

// Set is the addresses held on the host's non-loopback interfaces. An
// address kept on lo as well (deploy/keepalived/vip-local.sh keeps the
// floating IP there on every node, so a node that hands it over still
// answers what reaches it) does not count: on lo it leads no client here.
type Set map[netip.Addr]struct{}

// Has reports whether a is in the set.
func (s Set) Has(a netip.Addr) bool { _, ok := s[a.Unmap()]; return ok }

// Source watches the host's addresses. Run calls update with the whole
// current set at start and after every change, until ctx ends; it returns
// nil then, or an error when it cannot watch at all.
type Source interface {
	Run(ctx context.Context, update func(Set)) error
}

// Watched reports whether a listener bound to addr (host:port) follows its
// address: a specific IP, not the wildcard (0.0.0.0, ::), which never
// leaves. (A loopback address is never in a Set, so it never leaves
// either.)
func Watched(addr string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.Addr{}, false
	}
	ip := ap.Addr().Unmap()
	if ip.IsUnspecified() || ip.IsMulticast() {
		return netip.Addr{}, false
	}
	return ip, true
}

// Tracker decides, from successive sets, when a watched address left the
// host and when it came back: an address leaves when it was in the last
// set and is not in this one. An address that was not held (a standby's
// floating IP, bound with freebind) has not left. The zero value is
// ready; not safe for concurrent use.
type Tracker struct {
	last Set
	left map[netip.Addr]bool // reported in left, not back yet
}

// Update takes the addresses watched now and the current set; it returns
// the watched addresses that left since the last Update and those that
// came back after leaving. Each address is reported once per transition.
func (t *Tracker) Update(watched []netip.Addr, s Set) (left, back []netip.Addr) {
	if t.left == nil {
		t.left = map[netip.Addr]bool{}
	}
	seen := make(map[netip.Addr]bool, len(watched))
	for _, a := range watched {
		a = a.Unmap()
		if seen[a] {
			continue
		}
		seen[a] = true
		now := s.Has(a)
		switch {
		case !now && t.last.Has(a) && !t.left[a]:
			t.left[a] = true
			left = append(left, a)
		case now && t.left[a]:
			delete(t.left, a)
			back = append(back, a)
		}
	}
	for a := range t.left {
		if !seen[a] {
			delete(t.left, a) // no longer watched
		}
	}
	t.last = s
	return left, back
}
