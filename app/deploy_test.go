package app_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// specMetrics is SPEC.md's metrics table: the names users' dashboards and
// alerts may rely on.
var specMetrics = []string{
	"holdfast_requests_total", "holdfast_request_duration_seconds", "holdfast_backend_up",
	"holdfast_backend_state", "holdfast_backend_requests_total", "holdfast_backend_inflight",
	"holdfast_backend_connections", "holdfast_backend_transitions_total", "holdfast_health_checks_total",
	"holdfast_retries_total", "holdfast_discovery_lookups_total", "holdfast_discovery_stale",
	"holdfast_discovery_backends", "holdfast_discovery_last_success_timestamp_seconds",
	"holdfast_config_reloads_total", "holdfast_config_reload_failures_total", "holdfast_listener_connections",
	"holdfast_listener_idle_connections", "holdfast_listener_rejected_total", "holdfast_rate_limited_total",
	"holdfast_backend_override",
}

// alertExtras are metrics the alert rules use beyond SPEC.md's table,
// each documented in deploy/README.md.
var alertExtras = []string{"holdfast_retry_budget_exhausted_total"}

var metricRE = regexp.MustCompile(`\bholdfast_[a-z0-9_]+`)

// registered lists every metric name a running App registers (described,
// so vectors with no series yet count too).
func registered(t *testing.T, reg *prometheus.Registry) map[string]bool {
	t.Helper()
	ch := make(chan *prometheus.Desc, 256)
	go func() { reg.Describe(ch); close(ch) }()
	names := map[string]bool{}
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		if m := fq.FindStringSubmatch(d.String()); m != nil {
			names[m[1]] = true
		}
	}
	return names
}

// metricsIn returns the holdfast_ metric names an expression refers to,
// a histogram's _bucket, _sum and _count series by the histogram's name.
func metricsIn(expr string, known map[string]bool) []string {
	var out []string
	for _, n := range metricRE.FindAllString(expr, -1) {
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suf); ok && known[base] {
				n = base
			}
		}
		out = append(out, n)
	}
	return out
}

// Every metric that deploy/grafana/holdfast.json and
// deploy/prometheus/holdfast-alerts.yml query exists in a running App's
// registry; the dashboard uses SPEC.md's names only, the alert rules
// SPEC.md's and the documented extras.
func TestDeployMetricNames(t *testing.T) {
	b := testkit.StartBackend(t, "b")
	a := testkit.StartApp(t, `
listeners: [{ name: web, listen: "127.0.0.1:0", pool: api }]
pools: [{ name: api, backends: [`+b.Addr+`] }]
`)
	known := registered(t, a.Registry())
	for _, n := range append(slices.Clone(specMetrics), alertExtras...) {
		if !known[n] {
			t.Errorf("%s (SPEC.md or documented) is not registered by the App", n)
		}
	}

	raw, err := os.ReadFile("../deploy/grafana/holdfast.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("grafana dashboard: %v", err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		exprs = append(exprs, v.Definition)
	}
	used := 0
	for _, e := range exprs {
		for _, n := range metricsIn(e, known) {
			used++
			if !known[n] || !slices.Contains(specMetrics, n) {
				t.Errorf("grafana: %s (in %s) is not a SPEC.md metric the App registers", n, e)
			}
		}
	}
	if used < 20 {
		t.Errorf("the dashboard queries only %d metric references", used)
	}

	raw, err = os.ReadFile("../deploy/prometheus/holdfast-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("alert rules: %v", err)
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			ns := metricsIn(r.Expr, known)
			if len(ns) == 0 {
				t.Errorf("alert %s queries no holdfast metric", r.Alert)
			}
			for _, n := range ns {
				if !known[n] || (!slices.Contains(specMetrics, n) && !slices.Contains(alertExtras, n)) {
					t.Errorf("alert %s: %s is not a SPEC.md (or documented) metric the App registers", r.Alert, n)
				}
			}
		}
	}
	for _, want := range []string{"HoldfastDiscoveryStale", "HoldfastPoolBelowPanicThreshold", "HoldfastBackendHeldDown",
		"HoldfastReloadFailed", "HoldfastRetryBudgetExhausted", "HoldfastRateLimitedSurge"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alert rules lack %s", want)
		}
	}
}
