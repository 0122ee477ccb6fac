package discovery

import (
	"context"
	"net"
	"strconv"

	"github.com/miekg/dns"
)

// lookupA resolves name to A and AAAA records (asked concurrently) and
// returns them as backends on port with weight 1. The A query failing fails
// the lookup; the AAAA query failing does too once this source has seen an
// IPv6 address (a set missing its IPv6 half would look like a shrink).
func (d *DNS) lookupA(ctx context.Context, name string, port int) ([]Backend, uint32, error) {
	ips, ttl, err := d.addresses(ctx, name)
	if err != nil {
		return nil, 0, err
	}
	out := make([]Backend, 0, len(ips))
	for _, ip := range ips {
		out = append(out, Backend{Address: net.JoinHostPort(ip, strconv.Itoa(port)), Weight: 1})
	}
	return dedupe(out), ttl, nil
}

// addresses asks for A and AAAA of name. It returns a *LookupError with
// ResultNXDomain or ResultEmpty when neither has a record.
func (d *DNS) addresses(ctx context.Context, name string) ([]string, uint32, error) {
	type res struct {
		reply *dns.Msg
		err   error
	}
	v6 := make(chan res, 1)
	go func() {
		r, err := d.resolver.Query(ctx, name, dns.TypeAAAA)
		v6 <- res{r, err}
	}()
	r4, err4 := d.resolver.Query(ctx, name, dns.TypeA)
	r6 := <-v6
	if err4 != nil {
		return nil, 0, err4
	}
	ips4, ttl4 := addrRecords(r4, name, dns.TypeA)
	if r6.err != nil {
		// Some resolvers fail AAAA queries for IPv4-only names. While this
		// source has never seen an IPv6 address, the A answer stands on its
		// own; once it has, a missing IPv6 half would look like a shrink,
		// so the lookup fails and the last good set stays.
		if len(ips4) == 0 || d.seenV6.Load() {
			return nil, 0, r6.err
		}
		if d.warnedV6.CompareAndSwap(false, true) {
			d.log.Warn("AAAA query failed; using the A records alone until an IPv6 address is seen",
				"name", dns.Fqdn(name), "err", r6.err)
		}
		return ips4, ttl4, nil
	}
	ips6, ttl6 := addrRecords(r6.reply, name, dns.TypeAAAA)
	if len(ips6) > 0 {
		d.seenV6.Store(true)
	}
	ips := append(ips4, ips6...)
	if len(ips) == 0 {
		result := ResultEmpty
		if r4.Rcode == dns.RcodeNameError && r6.reply.Rcode == dns.RcodeNameError {
			result = ResultNXDomain
		}
		return nil, negativeTTL(r4), &LookupError{Name: dns.Fqdn(name), Type: "A/AAAA", Result: result}
	}
	ttl := ttl4
	if len(ips4) == 0 || len(ips6) > 0 && ttl6 < ttl {
		ttl = ttl6
	}
	return ips, ttl, nil
}

// addrRecords returns the addresses of name (following CNAMEs) in reply and
// their smallest TTL.
func addrRecords(reply *dns.Msg, name string, qtype uint16) ([]string, uint32) {
	var ips []string
	var ttl uint32
	for i, rr := range records(reply, dns.Fqdn(name), qtype) {
		var ip net.IP
		switch v := rr.(type) {
		case *dns.A:
			ip = v.A
		case *dns.AAAA:
			ip = v.AAAA
		}
		if ip == nil || ip.IsUnspecified() {
			continue
		}
		ips = append(ips, ip.String())
		if h := rr.Header(); i == 0 || h.Ttl < ttl {
			ttl = h.Ttl
		}
	}
	return ips, ttl
}

// negativeTTL is how long a negative answer may be cached (RFC 2308: the SOA
// in the authority section, the smaller of its TTL and MINIMUM); 0 if none.
func negativeTTL(reply *dns.Msg) uint32 {
	if reply == nil {
		return 0
	}
	for _, rr := range reply.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return min(soa.Hdr.Ttl, soa.Minttl)
		}
	}
	return 0
}
