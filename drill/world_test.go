package drill

import (
	"net"
	"strings"
	"testing"

	"github.com/holdfast-lb/holdfast/config"
)

const mixedConfig = `
resolvers:
  - name: two
    servers: ["10.0.0.2", "10.0.0.3:53"]
listeners:
  - name: web
    listen: 0.0.0.0:8080
    allow: [10.0.0.0/8]
    routes:
      - { host: "*.example.com", path_prefix: "/v1/", pool: v1, rate_limit: { rate: 10, burst: 10 } }
      - { host: "old.example.com", redirect: { scheme: https, host: "api.example.com", code: 308 } }
    pool: api
  - name: db
    listen: 10.9.9.9:5432
    protocol: tcp
    pool: pg
pools:
  - name: api
    discovery: { type: srv, name: _http._tcp.api.service.consul, resolver: two }
  - name: v1
    discovery: { type: a, name: v1.internal, port: 80, resolver: two }
    health: { port: 8081 }
  - name: pg
    backends: [10.3.0.1:5432, { address: 10.3.0.2:5432, weight: 3 }]
`

func loopback(t *testing.T, what, hostport string) {
	t.Helper()
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("%s: %q: %v", what, hostport, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		t.Errorf("%s: %q is not on loopback", what, hostport)
	}
}

// TestRewriteLoopbackOnly: after the rewrite, nothing in the config the
// drill starts points off loopback, and the shape is kept: as many
// resolver servers and static backends, weights, discovery names.
func TestRewriteLoopbackOnly(t *testing.T) {
	cfg, err := config.Parse([]byte(mixedConfig))
	if err != nil {
		t.Fatal(err)
	}
	w, err := newWorld(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	w.rewrite(cfg)
	loopback(t, "admin", cfg.Admin.Listen)
	for _, l := range cfg.Listeners {
		loopback(t, "listener "+l.Name, l.Listen)
		if len(l.Allow) > 0 {
			t.Errorf("listener %s: allow kept: %v", l.Name, l.Allow)
		}
	}
	if cfg.Listeners[0].Routes[0].RateLimit != nil {
		t.Error("rate limit kept")
	}
	names := map[string]int{}
	for _, r := range cfg.Resolvers {
		names[r.Name] = len(r.Servers)
		for _, s := range r.Servers {
			loopback(t, "resolver "+r.Name, s)
		}
	}
	if names["two"] != 2 {
		t.Errorf("resolver two has %d servers, want 2", names["two"])
	}
	pg := cfg.Pools[2]
	if len(pg.Backends) != 2 || pg.Backends[1].Weight != 3 {
		t.Errorf("pg backends: %+v", pg.Backends)
	}
	for _, b := range pg.Backends {
		loopback(t, "pg backend", b.Address)
	}
	if cfg.Pools[1].Health.Port != 0 {
		t.Error("health port kept: checks would go where no simulated backend listens")
	}
	if cfg.Pools[0].Discovery.Name != "_http._tcp.api.service.consul" {
		t.Errorf("discovery name changed: %q", cfg.Pools[0].Discovery.Name)
	}
	for _, sp := range w.pools {
		for _, b := range sp.backends {
			loopback(t, "simulated backend of "+sp.name, b.addr)
		}
	}
	if len(w.notes) == 0 || !strings.Contains(strings.Join(w.notes, "\n"), "allow/deny off") {
		t.Errorf("notes do not say what changed: %q", w.notes)
	}
}

func TestTargets(t *testing.T) {
	cfg, err := config.Parse([]byte(mixedConfig))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]target{}
	for _, tg := range targets(cfg) {
		got[tg.listener+"/"+tg.pool] = tg
	}
	if len(got) != 3 {
		t.Fatalf("targets: %+v, want web/api, web/v1, db/pg", got)
	}
	if v1 := got["web/v1"]; v1.host != "drill.example.com" || !strings.HasPrefix(v1.path, "/v1/") {
		t.Errorf("web/v1 target %+v does not match its route", v1)
	}
	if pg := got["db/pg"]; !pg.tcp {
		t.Errorf("db/pg target %+v is not tcp", pg)
	}
	if api := got["web/api"]; routeOf(cfg.Listeners[0], api.host, api.path) != "api" {
		t.Errorf("web/api target %+v routes elsewhere", api)
	}
}
