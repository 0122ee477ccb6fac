package drill

import (
	"fmt"
	"slices"
	"time"

	"github.com/holdfast-lb/holdfast/config"
)

// Advice is one thing the config would have to change, for one pool (or
// listener). A Warning does not fail the drill: it names a weakness the
// drill survived.
type Advice struct {
	Pool    string
	Text    string
	Warning bool
}

func (a Advice) String() string {
	s := a.Text
	if a.Pool != "" {
		s = "pool " + a.Pool + ": " + s
	}
	if a.Warning {
		s = "warning: " + s
	}
	return s
}

// finding is what one drill saw of one pool: the input of the advice
// rules.
type finding struct {
	drill string
	pool  config.Pool
	// causes counts the failed requests by cause; settled counts the
	// avoidable ones that started after the drill's settle point.
	causes  map[Cause]int
	settled int
	// status counts the failed requests by HTTP status (0: transport error).
	status map[int]int
	// backends is how many backends the pool had; resolverServers how many
	// servers its resolver has (0: static pool).
	backends, resolverServers int
	// maxConnections is the smallest max_connections of a listener in
	// front of the pool (0: unlimited).
	maxConnections int
}

func (f finding) avoidable() int { return f.causes[CauseReset] + f.causes[CauseUnreached] }

func (f finding) retriesOn(what string) bool { return slices.Contains(f.pool.Retries.On, what) }

// failingBackend names the backend a drill broke, for advice texts.
func failingBackend(drill string) string {
	switch drill {
	case "backend-kill":
		return "killed"
	case "flapping":
		return "flapping"
	}
	return "failing"
}

// backendDrill reports whether a drill breaks a backend (rather than DNS,
// the config or the client side).
func backendDrill(drill string) bool { return drill == "backend-kill" || drill == "flapping" }

// realOutage is the length of the outage the dns-outage drill stands for.
const realOutage = 40 * time.Second

// adviceRule is one rule: when it applies to a finding, and what it says.
type adviceRule struct {
	warning bool
	when    func(f finding) bool
	text    func(f finding) string
}

// adviceRules are tried in order; every rule that applies adds its text.
var adviceRules = []adviceRule{
	{
		when: func(f finding) bool { return f.pool.Retries.Attempts == 0 && f.avoidable() > 0 },
		text: func(f finding) string {
			return fmt.Sprintf("`retries.attempts: 0`: requests to the %s backend were not retried", failingBackend(f.drill))
		},
	},
	{
		when: func(f finding) bool {
			return f.pool.Retries.Attempts > 0 && !f.retriesOn("connect_failure") && f.causes[CauseUnreached] > 0 && backendDrill(f.drill)
		},
		text: func(f finding) string {
			return fmt.Sprintf("`retries.on` lacks connect_failure: requests that never reached the %s backend were not retried", failingBackend(f.drill))
		},
	},
	{
		when: func(f finding) bool {
			return f.pool.Retries.Attempts > 0 && !f.retriesOn("reset") && f.causes[CauseReset] > 0
		},
		text: func(f finding) string {
			return fmt.Sprintf("`retries.on` lacks reset: GETs reset by the %s backend were not retried", failingBackend(f.drill))
		},
	},
	{
		when: func(f finding) bool { return f.pool.Health.Type == "none" && f.settled > 0 && backendDrill(f.drill) },
		text: func(f finding) string {
			if f.drill == "flapping" {
				return "`health.type: none`: the flapper kept its share"
			}
			return "`health.type: none`: the killed backend kept its share"
		},
	},
	{
		when: func(f finding) bool {
			return f.pool.Retries.Attempts > 0 && f.retriesOn("connect_failure") && f.retriesOn("reset") &&
				f.avoidable() > 0 && backendDrill(f.drill) && f.backends > 1
		},
		text: func(f finding) string {
			return fmt.Sprintf("`retries.budget: %s` / `retries.attempts: %d`: retries ran out (budget spent, or every attempt hit a failing backend)",
				percent(f.pool.Retries.Budget), f.pool.Retries.Attempts)
		},
	},
	{
		when: func(f finding) bool { return f.backends == 1 && f.avoidable() > 0 && backendDrill(f.drill) },
		text: func(finding) string { return "one backend: nothing to fail over to" },
	},
	{
		when: func(f finding) bool { return f.drill == "conn-explosion" && f.status[503] > 0 },
		text: func(f finding) string {
			return fmt.Sprintf("`limits.max_conns_per_backend: %d` with `queue_timeout: %s`: %d requests waited past the queue and got 503",
				f.pool.Limits.MaxConnsPerBackend, f.pool.Limits.QueueTimeout.D(), f.status[503])
		},
	},
	{
		when: func(f finding) bool { return f.drill == "conn-explosion" && f.maxConnections > 0 && f.status[0] > 0 },
		text: func(f finding) string {
			return fmt.Sprintf("listener `max_connections: %d`: connections beyond it were refused", f.maxConnections)
		},
	},
	{
		warning: true,
		when: func(f finding) bool {
			return (f.drill == "servfail" || f.drill == "dns-outage") && f.resolverServers == 1
		},
		text: func(finding) string { return "one resolver server: no fallback" },
	},
	{
		warning: true,
		when: func(f finding) bool {
			d := f.pool.Discovery
			return f.drill == "dns-outage" && d != nil && d.StaleFor > 0 && d.StaleFor.D() < realOutage
		},
		text: func(f finding) string {
			return fmt.Sprintf("`discovery.stale_for: %s`: shorter than a %s outage (the last good set is kept, and logged as an error)",
				f.pool.Discovery.StaleFor.D(), realOutage)
		},
	},
	{
		warning: true,
		when: func(f finding) bool {
			d := f.pool.Discovery
			return (f.drill == "empty-answer" || f.drill == "nxdomain") && d != nil && d.Confirm <= 1
		},
		text: func(f finding) string {
			return fmt.Sprintf("`discovery.confirm: %d`: one destructive answer shrinks the pool at once", f.pool.Discovery.Confirm)
		},
	},
}

// advise applies adviceRules to f. Avoidable failures no rule explains
// get a line of their own, so a failed drill always says why.
func advise(f finding) []Advice {
	var out []Advice
	explained := false
	for _, r := range adviceRules {
		if r.when(f) {
			out = append(out, Advice{Pool: f.pool.Name, Text: r.text(f), Warning: r.warning})
			explained = explained || !r.warning
		}
	}
	if n := f.avoidable(); n > 0 && !explained {
		out = append(out, Advice{Pool: f.pool.Name, Text: fmt.Sprintf(
			"%d requests failed that no config setting explains (%d never reached a backend, %d reset and not retried): a holdfast bug, please report it",
			n, f.causes[CauseUnreached], f.causes[CauseReset])})
	}
	return out
}

func percent(p config.Percent) string { return fmt.Sprintf("%g%%", float64(p)*100) }
