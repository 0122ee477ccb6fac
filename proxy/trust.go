package proxy

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/holdfast-lb/holdfast/config"
)

// TrustList is a set of peers (a listener's trusted_proxies) whose PROXY
// header and X-Forwarded-* values are believed. The zero value, like an
// empty list, contains nothing. Immutable once parsed; safe for concurrent
// use.
type TrustList struct {
	prefixes []netip.Prefix
}

// ParseTrustList parses CIDRs or single addresses ("10.0.0.0/8",
// "192.168.1.7", "fd00::/8") with config.ParsePrefix. IPv4-mapped IPv6
// prefixes are stored as IPv4, so either spelling matches an IPv4 peer.
func ParseTrustList(cidrs []string) (TrustList, error) {
	t := TrustList{prefixes: make([]netip.Prefix, 0, len(cidrs))}
	for i, s := range cidrs {
		p, err := config.ParsePrefix(s)
		if err != nil {
			return TrustList{}, fmt.Errorf("trusted_proxies[%d]: %w", i, err)
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		t.prefixes = append(t.prefixes, p)
	}
	return t, nil
}

// Len is the number of entries.
func (t TrustList) Len() int { return len(t.prefixes) }

// Contains reports whether a is in the list. An IPv4-mapped IPv6 address
// (a dual-stack socket's view of an IPv4 peer) matches as IPv4; a zone is
// ignored. It does not allocate.
func (t TrustList) Contains(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.Unmap().WithZone("")
	for _, p := range t.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// peerAddr is the IP of a TCP peer address, without allocating; the zero
// Addr for anything else.
func peerAddr(a net.Addr) netip.Addr {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	ip, _ := netip.AddrFromSlice(ta.IP)
	return ip
}
