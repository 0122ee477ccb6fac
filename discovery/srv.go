package discovery

import (
	"context"
	"net"
	"strconv"
	"sync"

	"github.com/miekg/dns"
)

// srvTargetWorkers bounds concurrent follow-up A/AAAA queries for SRV targets
// that came without glue, so an answer of hundreds of targets does not flood
// the resolver.
const srvTargetWorkers = 16

// lookupSRV resolves an SRV name to backends: one per (target address, port),
// carrying the SRV priority and weight. SRV weight 0 becomes Weight 1: RFC
// 2782 gives weight 0 "a very small chance" of selection, not none, and
// Backend.Weight must be >= 1. Targets are resolved from the Additional
// section when the server sent glue, otherwise by follow-up A and AAAA
// queries. A target without addresses (NXDOMAIN or empty) is left out; a
// target whose query fails fails the whole lookup, so a flaky resolver
// cannot shrink the set one target at a time. Target "." means "no service"
// (RFC 2782) and is skipped.
func (d *DNS) lookupSRV(ctx context.Context, name string) ([]Backend, uint32, error) {
	reply, err := d.resolver.Query(ctx, name, dns.TypeSRV)
	if err != nil {
		return nil, 0, err
	}
	srvs, glue, ttl, result := srvAnswer(reply, name)
	if result != ResultOK {
		return nil, negativeTTL(reply), &LookupError{Name: dns.Fqdn(name), Type: "SRV", Result: result}
	}

	// Targets without glue are asked for, once each.
	var missing []string
	seen := map[string]bool{}
	for _, s := range srvs {
		t := dns.CanonicalName(s.Target)
		if _, ok := glue[t]; !ok && !seen[t] {
			seen[t] = true
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		resolved, minTTL, err := d.resolveTargets(ctx, missing)
		if err != nil {
			return nil, 0, err
		}
		for t, ips := range resolved {
			glue[t] = ips
		}
		if len(resolved) > 0 && minTTL < ttl {
			ttl = minTTL
		}
	}

	out := srvBackends(srvs, glue)
	if len(out) == 0 {
		return nil, ttl, &LookupError{Name: dns.Fqdn(name), Type: "SRV", Result: ResultEmpty}
	}
	return out, ttl, nil
}

// srvAnswer extracts the usable SRV records of name from reply, the glue
// addresses by canonical target name, the smallest TTL among the records
// used, and a result: ResultOK, ResultNXDomain or ResultEmpty. It never
// panics on any reply that unpacked, which FuzzAnswer checks.
func srvAnswer(reply *dns.Msg, name string) (srvs []*dns.SRV, glue map[string][]string, ttl uint32, result string) {
	glue = map[string][]string{}
	if reply == nil {
		return nil, glue, 0, ResultEmpty
	}
	if reply.Rcode == dns.RcodeNameError {
		return nil, glue, 0, ResultNXDomain
	}
	first := true
	for _, rr := range records(reply, dns.Fqdn(name), dns.TypeSRV) {
		s, ok := rr.(*dns.SRV)
		if !ok || s.Target == "." || s.Target == "" {
			continue
		}
		srvs = append(srvs, s)
		if first || s.Hdr.Ttl < ttl {
			ttl, first = s.Hdr.Ttl, false
		}
	}
	if len(srvs) == 0 {
		return nil, glue, 0, ResultEmpty
	}
	targets := map[string]bool{}
	for _, s := range srvs {
		targets[dns.CanonicalName(s.Target)] = true
	}
	for _, rr := range reply.Extra {
		h := rr.Header()
		t := dns.CanonicalName(h.Name)
		if !targets[t] {
			continue
		}
		var ip net.IP
		switch v := rr.(type) {
		case *dns.A:
			ip = v.A
		case *dns.AAAA:
			ip = v.AAAA
		default:
			continue
		}
		if ip == nil || ip.IsUnspecified() {
			continue
		}
		glue[t] = append(glue[t], ip.String())
		if h.Ttl < ttl {
			ttl = h.Ttl
		}
	}
	return srvs, glue, ttl, ResultOK
}

// resolveTargets asks A and AAAA for every target with a bounded number of
// workers. Targets with no address are absent from the map; the first
// failure (not NXDOMAIN or empty) fails the whole call.
func (d *DNS) resolveTargets(ctx context.Context, targets []string) (map[string][]string, uint32, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		out      = map[string][]string{}
		minTTL   uint32
		haveTTL  bool
		firstErr error
		wg       sync.WaitGroup
	)
	jobs := make(chan string)
	for range min(srvTargetWorkers, len(targets)) {
		wg.Go(func() {
			for t := range jobs {
				ips, ttl, err := d.addresses(ctx, t)
				mu.Lock()
				switch r := ResultOf(err); {
				case err == nil:
					out[t] = ips
					if !haveTTL || ttl < minTTL {
						minTTL, haveTTL = ttl, true
					}
				case destructive(r):
					d.log.Debug("SRV target has no address", "pool", d.cfg.Pool, "name", t, "result", r)
				case firstErr == nil:
					firstErr = err
					cancel()
				}
				mu.Unlock()
			}
		})
	}
	for _, t := range targets {
		if ctx.Err() != nil {
			break
		}
		jobs <- t
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return nil, 0, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	return out, minTTL, nil
}

// srvBackends turns SRV records and their targets' addresses into a sorted,
// deduplicated set; targets without addresses contribute nothing.
func srvBackends(srvs []*dns.SRV, addrs map[string][]string) []Backend {
	out := make([]Backend, 0, len(srvs))
	for _, s := range srvs {
		w := int(s.Weight)
		if w == 0 {
			w = 1 // RFC 2782: weight 0 is a very small share, not none
		}
		for _, ip := range addrs[dns.CanonicalName(s.Target)] {
			out = append(out, Backend{
				Address:  net.JoinHostPort(ip, strconv.Itoa(int(s.Port))),
				Weight:   w,
				Priority: int(s.Priority),
			})
		}
	}
	return dedupe(out)
}
