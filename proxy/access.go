package proxy

import (
	"fmt"
	"net/netip"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// AccessList is a listener's allow and deny CIDRs. A peer is admitted when
// Allow is empty or holds it, and Deny does not: deny wins. The zero value
// admits everyone. Immutable once parsed; safe for concurrent use.
type AccessList struct {
	allow, deny TrustList
}

// ParseAccessList parses allow and deny lists (CIDRs or single addresses,
// IPv4 or IPv6) with config.ParsePrefix.
func ParseAccessList(allow, deny []string) (AccessList, error) {
	a, err := ParseTrustList(allow)
	if err != nil {
		return AccessList{}, fmt.Errorf("allow: %w", err)
	}
	d, err := ParseTrustList(deny)
	if err != nil {
		return AccessList{}, fmt.Errorf("deny: %w", err)
	}
	return AccessList{allow: a, deny: d}, nil
}

// Empty reports whether the list admits everyone.
func (l AccessList) Empty() bool { return l.allow.Len() == 0 && l.deny.Len() == 0 }

// Admits reports whether peer a may connect. An IPv4-mapped IPv6 address
// matches as IPv4. A peer whose address is unknown (not TCP) is admitted
// only when both lists are empty. It does not allocate.
func (l AccessList) Admits(a netip.Addr) bool {
	if l.Empty() {
		return true
	}
	if !a.IsValid() || l.deny.Contains(a) {
		return false
	}
	return l.allow.Len() == 0 || l.allow.Contains(a)
}

// AccessControl is the access list a LimitListener checks each accepted
// connection against, before TLS, the PROXY header or any goroutine; Set
// swaps it on reload. Safe for concurrent use.
type AccessControl struct {
	list   atomic.Pointer[AccessList]
	denied prometheus.Counter
}

// NewAccessControl starts with list; denied (may be nil) counts refusals,
// e.g. holdfast_listener_rejected_total{reason="denied"}.
func NewAccessControl(list AccessList, denied prometheus.Counter) *AccessControl {
	c := &AccessControl{denied: denied}
	c.Set(list)
	return c
}

// Set replaces the list; connections accepted from now on are checked
// against it.
func (c *AccessControl) Set(list AccessList) { c.list.Store(&list) }

// admit checks peer and counts a refusal.
func (c *AccessControl) admit(a netip.Addr) bool {
	if c.list.Load().Admits(a) {
		return true
	}
	if c.denied != nil {
		c.denied.Inc()
	}
	return false
}
