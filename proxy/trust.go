package proxy

import (
	"fmt"
	"net/netip"

	"github.com/holdfast-lb/holdfast/config"
)

// TrustList is a set of CIDRs whose X-Forwarded-* values (and PROXY
// headers) are believed. The zero value trusts nobody. Safe for concurrent
// reads.
type TrustList []netip.Prefix

// ParseTrustList parses CIDRs or single addresses.
func ParseTrustList(cidrs []string) (TrustList, error) {
	out := make(TrustList, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := config.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("trusted_proxies: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}

// Contains reports whether a is in the list; it does not allocate.
func (t TrustList) Contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
