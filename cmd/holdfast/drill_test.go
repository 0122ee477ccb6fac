package main

import (
	"regexp"
	"strings"
	"testing"
)

// soundDrillConfig is SPEC defaults with two resolver servers and a
// DNS-discovered pool; the addresses are never used: the drill replaces
// them with simulated ones on loopback.
const soundDrillConfig = `
resolvers:
  - name: default
    servers: ["10.0.0.2:53", "10.0.0.3:53"]
listeners:
  - name: web
    listen: 0.0.0.0:8080
    pool: api
pools:
  - name: api
    discovery:
      type: srv
      name: _http._tcp.api.service.consul
`

// weakDrillConfig neither retries nor checks health.
const weakDrillConfig = `
listeners:
  - name: web
    listen: 0.0.0.0:8080
    pool: api
pools:
  - name: api
    backends: [10.1.0.1:80, 10.1.0.2:80, 10.1.0.3:80]
    retries: { attempts: 0 }
    health: { type: none }
`

// drillRow finds a drill's row in the table: requests, failed, verdict.
func drillRow(t *testing.T, out, drill string) (requests, failed, verdict string) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(drill) + `\s+(\d+)\s+(\d+)(?: \(\d+ unavoidable\))?\s+\d+\s+(\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no row for %s in:\n%s", drill, out)
	}
	return m[1], m[2], m[3]
}

func TestDrillSoundConfigPasses(t *testing.T) {
	path := writeFile(t, "sound.yaml", soundDrillConfig)
	code, out, errs := runCLI("drill", "-c", path, "--max-incident", "3s", "servfail", "backend-kill")
	if code != 0 {
		t.Fatalf("exit %d, want 0\n%s\n%s", code, out, errs)
	}
	for _, d := range []string{"servfail", "backend-kill"} {
		requests, _, verdict := drillRow(t, out, d)
		if verdict != "pass" {
			t.Errorf("%s: verdict %s, want pass\n%s", d, verdict, out)
		}
		if requests == "0" {
			t.Errorf("%s: no requests sent\n%s", d, out)
		}
	}
}

func TestDrillWeakConfigFailsBackendKill(t *testing.T) {
	path := writeFile(t, "weak.yaml", weakDrillConfig)
	code, out, errs := runCLI("drill", "-c", path, "--max-incident", "3s", "backend-kill")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s\n%s", code, out, errs)
	}
	_, failed, verdict := drillRow(t, out, "backend-kill")
	if verdict != "FAIL" || failed == "0" {
		t.Errorf("backend-kill: failed %s, verdict %s; want failures and FAIL\n%s", failed, verdict, out)
	}
	if !strings.Contains(out, "`retries.attempts: 0`: requests to the killed backend were not retried") {
		t.Errorf("advice does not name retries:\n%s", out)
	}
}

func TestDrillUsage(t *testing.T) {
	good := writeFile(t, "sound.yaml", soundDrillConfig)
	bad := writeFile(t, "bad.yaml", badConfig)
	cases := []struct {
		name string
		args []string
		want int
		msg  string
	}{
		{"unknown drill", []string{"drill", "-c", good, "meteor"}, 2, `unknown drill "meteor"`},
		{"invalid config", []string{"drill", "-c", bad, "servfail"}, 2, "line 3"},
		{"missing config", []string{"drill", "-c", good + ".missing"}, 2, "missing"},
		{"bad flag", []string{"drill", "--max-incident", "soon"}, 2, "invalid value"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := runCLI(c.args...)
			if code != c.want || !strings.Contains(errs, c.msg) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q), stdout %q", code, c.want, errs, c.msg, out)
			}
		})
	}
}

// TestDrillSkipsDNSDrillsWithoutDNS: a static config skips the DNS drills
// and says why, without failing.
func TestDrillSkipsDNSDrillsWithoutDNS(t *testing.T) {
	path := writeFile(t, "static.yaml", validConfig)
	code, out, errs := runCLI("drill", "-c", path, "servfail", "nxdomain")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	if n := strings.Count(out, "skipped: no DNS pool"); n != 2 {
		t.Fatalf("%d skipped rows, want 2:\n%s", n, out)
	}
}
