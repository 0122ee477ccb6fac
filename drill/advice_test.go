package drill

import (
	"strings"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/config"
)

// soundPool is a pool with the config defaults that matter to the rules.
func soundPool() config.Pool {
	return config.Pool{
		Name:    "api",
		Health:  config.Health{Type: "http", Interval: config.Duration(2 * time.Second), Fall: 3},
		Retries: config.Retries{Attempts: 2, Budget: 0.2, On: []string{"connect_failure", "reset"}},
		Limits:  config.Limits{MaxConnsPerBackend: 512, QueueTimeout: config.Duration(time.Second)},
		Discovery: &config.Discovery{Type: "srv", Name: "_http._tcp.api.", Confirm: 3,
			MinRefresh: config.Duration(time.Second)},
	}
}

func TestAdvise(t *testing.T) {
	with := func(f func(*config.Pool)) config.Pool { p := soundPool(); f(&p); return p }
	cases := []struct {
		name string
		f    finding
		// want are substrings, one per expected advice line, in order;
		// none means no advice at all.
		want     []string
		warnings int
	}{
		{name: "sound pool, nothing failed",
			f: finding{drill: "backend-kill", pool: soundPool(), backends: 3, resolverServers: 2}},
		{name: "unavoidable failures give no advice",
			f: finding{drill: "backend-kill", pool: soundPool(), backends: 3, causes: map[Cause]int{CauseInFlight: 4}}},
		{name: "no retries on a kill",
			f: finding{drill: "backend-kill", pool: with(func(p *config.Pool) { p.Retries.Attempts = 0 }), backends: 3,
				causes: map[Cause]int{CauseUnreached: 5}},
			want: []string{"`retries.attempts: 0`: requests to the killed backend were not retried"}},
		{name: "no retries and no health, failing after settling",
			f: finding{drill: "backend-kill", pool: with(func(p *config.Pool) { p.Retries.Attempts = 0; p.Health.Type = "none" }), backends: 3,
				causes: map[Cause]int{CauseUnreached: 50}, settled: 10},
			want: []string{"`retries.attempts: 0`", "`health.type: none`: the killed backend kept its share"}},
		{name: "flapper without health checks",
			f: finding{drill: "flapping", pool: with(func(p *config.Pool) { p.Health.Type = "none"; p.Retries.On = []string{"connect_failure"} }),
				backends: 3, causes: map[Cause]int{CauseReset: 20}, settled: 3},
			want: []string{"`retries.on` lacks reset: GETs reset by the flapping backend", "`health.type: none`: the flapper kept its share"}},
		{name: "connect failures not retried",
			f: finding{drill: "backend-kill", pool: with(func(p *config.Pool) { p.Retries.On = []string{"reset"} }), backends: 3,
				causes: map[Cause]int{CauseUnreached: 2}},
			want: []string{"`retries.on` lacks connect_failure"}},
		{name: "retries on everything yet failing: the budget",
			f:    finding{drill: "flapping", pool: soundPool(), backends: 3, causes: map[Cause]int{CauseReset: 2}},
			want: []string{"`retries.budget: 20%` / `retries.attempts: 2`"}},
		{name: "one backend killed",
			f:    finding{drill: "backend-kill", pool: soundPool(), backends: 1, causes: map[Cause]int{CauseUnreached: 30}},
			want: []string{"one backend: nothing to fail over to"}},
		{name: "conn-explosion queue",
			f:    finding{drill: "conn-explosion", pool: soundPool(), backends: 3, causes: map[Cause]int{CauseUnreached: 7}, status: map[int]int{503: 7}},
			want: []string{"`limits.max_conns_per_backend: 512` with `queue_timeout: 1s`: 7 requests"}},
		{name: "conn-explosion listener cap",
			f: finding{drill: "conn-explosion", pool: soundPool(), backends: 3, maxConnections: 100,
				causes: map[Cause]int{CauseUnreached: 9}, status: map[int]int{0: 9}},
			want: []string{"listener `max_connections: 100`"}},
		{name: "one resolver server: warning only",
			f:    finding{drill: "servfail", pool: soundPool(), backends: 3, resolverServers: 1},
			want: []string{"warning: pool api: one resolver server: no fallback"}, warnings: 1},
		{name: "two resolver servers: no warning",
			f: finding{drill: "dns-outage", pool: soundPool(), backends: 3, resolverServers: 2}},
		{name: "stale_for shorter than the outage",
			f: finding{drill: "dns-outage", pool: with(func(p *config.Pool) { p.Discovery.StaleFor = config.Duration(10 * time.Second) }),
				backends: 3, resolverServers: 2},
			want: []string{"`discovery.stale_for: 10s`"}, warnings: 1},
		{name: "confirm 1 on an empty answer",
			f:    finding{drill: "empty-answer", pool: with(func(p *config.Pool) { p.Discovery.Confirm = 1 }), backends: 3, resolverServers: 2},
			want: []string{"`discovery.confirm: 1`"}, warnings: 1},
		{name: "unexplained failures are reported, not hidden",
			f:    finding{drill: "bad-reload", pool: soundPool(), backends: 3, causes: map[Cause]int{CauseUnreached: 3}},
			want: []string{"3 requests failed that no config setting explains"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.f.causes == nil {
				c.f.causes = map[Cause]int{}
			}
			got := advise(c.f)
			if len(got) != len(c.want) {
				t.Fatalf("got %d advice lines %q, want %d (%q)", len(got), got, len(c.want), c.want)
			}
			warnings := 0
			for i, a := range got {
				if !strings.Contains(a.String(), c.want[i]) {
					t.Errorf("advice %d = %q, want it to contain %q", i, a, c.want[i])
				}
				if a.Warning {
					warnings++
				}
			}
			if warnings != c.warnings {
				t.Errorf("%d warnings, want %d: %q", warnings, c.warnings, got)
			}
		})
	}
}
