package config

import (
	"fmt"
	"math"
)

// ReservedDescriptors are the open files holdfast keeps for what is
// neither a client nor an upstream connection: the admin listener and its
// clients, DNS queries, health checks, the state file, logs and the
// runtime's own (epoll, pipes, timers).
const ReservedDescriptors = 64

// UpstreamConns is the most upstream connections the pools may hold at
// once: max_conns_per_backend × static backends, summed over pools.
// bounded is false when some pool finds its backends by discovery (their
// number is not known in advance); n then covers the static pools only.
func UpstreamConns(c *Config) (n int, bounded bool) {
	bounded = true
	for _, p := range c.Pools {
		if p.Discovery != nil {
			bounded = false
			continue
		}
		n += p.Limits.MaxConnsPerBackend * len(p.Backends)
	}
	return n, bounded
}

// ClientConnCap is the default bound on client connections in the whole
// process under an open-files limit of nofile (0: unknown, no bound):
//
//	avail = nofile − ReservedDescriptors
//	cap   = avail − min(UpstreamConns, avail/2)
//
// Each client connection may hold one upstream connection, so at most half
// of what is left goes to upstream connections, less when the pools cannot
// open that many. With cap client connections open holdfast still has the
// descriptors for its upstream connections and its own work, so it closes
// a client connection past the cap at once instead of failing accept (or
// a dial) with EMFILE.
func ClientConnCap(c *Config, nofile uint64) int {
	if nofile == 0 {
		return 0
	}
	limit := int(min(nofile, math.MaxInt32))
	avail := limit - ReservedDescriptors
	if avail < 2 {
		avail = limit / 2 // a tiny limit: keep half anyway
	}
	up, bounded := UpstreamConns(c)
	reserve := avail / 2
	if bounded {
		reserve = min(up, reserve)
	}
	return max(avail-reserve, 1)
}

// DescriptorWarnings warns when the configured limits cannot all be
// reached under an open-files limit of nofile: the listeners'
// max_connections, the pools' max_conns_per_backend × static backends and
// ReservedDescriptors together exceed it, so holdfast would run out of
// descriptors (EMFILE) before it reached its own limits. nofile 0 means
// unknown: no warning.
func DescriptorWarnings(c *Config, nofile uint64) []string {
	if nofile == 0 {
		return nil
	}
	clients := 0
	for _, l := range c.Listeners {
		clients += l.MaxConnections
	}
	up, _ := UpstreamConns(c)
	total := uint64(clients) + uint64(up) + ReservedDescriptors
	if total <= nofile {
		return nil
	}
	return []string{fmt.Sprintf("limits: listeners' max_connections (%d) + pools' max_conns_per_backend × backends (%d) + %d reserved = %d open files, more than the open-files limit %d: holdfast would run out of descriptors before reaching its limits (raise the limit, e.g. ulimit -n or systemd LimitNOFILE=, or lower the limits)",
		clients, up, ReservedDescriptors, total, nofile)}
}
