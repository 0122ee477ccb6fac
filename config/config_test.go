package config_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/config"
)

// specExample is the SPEC.md example made self-consistent: the route's pool
// exists, the discovery pool is separate from the static one (a pool takes
// backends or discovery, not both), and no TLS certificate is listed (the
// SPEC's placeholders are empty paths).
const specExample = `admin:
  listen: 127.0.0.1:9901

drain_delay: 0s

resolvers:
  - name: default
    servers: ["10.0.0.2:53", "10.0.0.3:53"]
    timeout: 1s
    attempts: 2

listeners:
  - name: web
    listen: 0.0.0.0:8080
    protocol: http
    pool: api
    routes:
      - { host: "api.example.com", path_prefix: "/v1/", pool: api-v1 }
    proxy_protocol: false
    freebind: false
    max_connections: 0
    max_header_bytes: 16384
    max_body_bytes: 0
    access_log: false
    timeouts: { read: 30s, write: 30s, idle: 90s, drain: 30s }

pools:
  - name: api
    balance: round_robin
    hash_key: client_ip
    backends:
      - 127.0.0.1:9001
      - { address: 127.0.0.1:9002, weight: 2 }
    health:
      type: http
      path: /healthz
      expect_status: "200-399"
      interval: 2s
      timeout: 1s
      rise: 2
      fall: 3
      flap: { window: 60s, max_transitions: 4, hold: 30s, max_hold: 10m }
    outlier: { consecutive_failures: 5, ejection: 10s, max_ejection: 5m, max_ejected: "50%" }
    panic_threshold: "50%"
    slow_start: 0s
    send_proxy_protocol: ""
    retries: { attempts: 2, budget: "20%", on: [connect_failure, reset] }
    limits: { max_conns_per_backend: 512, max_idle_per_backend: 128, queue_timeout: 1s }
    timeouts: { connect: 1s, response: 30s, idle: 60s }
  - name: api-v1
    balance: consistent_hash
    hash_key: header:X-User
    discovery:
      type: srv
      name: _http._tcp.api.service.consul
      port: 0
      resolver: default
      min_refresh: 1s
      max_refresh: 30s
      stale_for: 0s
      max_shrink: "50%"
      confirm: 3
`

func TestParseSpecExample(t *testing.T) {
	cfg, err := config.Parse([]byte(specExample))
	if err != nil {
		t.Fatalf("SPEC example rejected:\n%v", err)
	}
	if len(cfg.Listeners) != 1 || len(cfg.Pools) != 2 || len(cfg.Resolvers) != 1 {
		t.Fatalf("got %d listeners, %d pools, %d resolvers; want 1, 2, 1", len(cfg.Listeners), len(cfg.Pools), len(cfg.Resolvers))
	}
	l := cfg.Listeners[0]
	api, v1 := cfg.Pools[0], cfg.Pools[1]
	checks := []struct {
		name      string
		got, want any
	}{
		{"listener route pool", l.Routes[0].Pool, "api-v1"},
		{"listener route prefix", l.Routes[0].PathPrefix, "/v1/"},
		{"listener drain timeout", l.Timeouts.Drain.D(), 30 * time.Second},
		{"scalar backend address", api.Backends[0].Address, "127.0.0.1:9001"},
		{"scalar backend gets weight 1", api.Backends[0].Weight, 1},
		{"mapping backend address", api.Backends[1].Address, "127.0.0.1:9002"},
		{"mapping backend keeps weight", api.Backends[1].Weight, 2},
		{"flap max_hold", api.Health.Flap.MaxHold.D(), 10 * time.Minute},
		{"outlier max_ejected", float64(api.Outlier.MaxEjected), 0.5},
		{"retry budget", float64(api.Retries.Budget), 0.2},
		{"retry reasons", strings.Join(api.Retries.On, ","), "connect_failure,reset"},
		{"resolver servers", strings.Join(cfg.Resolvers[0].Servers, ","), "10.0.0.2:53,10.0.0.3:53"},
		{"discovery type", v1.Discovery.Type, "srv"},
		{"discovery max_shrink", float64(v1.Discovery.MaxShrink), 0.5},
		{"hash key", v1.HashKey, "header:X-User"},
		// The discovery pool sets no health/limits/timeouts: defaults apply.
		{"default health type", v1.Health.Type, "http"},
		{"default health path", v1.Health.Path, "/healthz"},
		{"default rise", v1.Health.Rise, 2},
		{"default fall", v1.Health.Fall, 3},
		{"default panic threshold", float64(v1.PanicThreshold), 0.5},
		{"default retry attempts", v1.Retries.Attempts, 2},
		{"default max conns", v1.Limits.MaxConnsPerBackend, 512},
		{"default response timeout", v1.Timeouts.Response.D(), 30 * time.Second},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %v, want %v", c.got, c.want)
			}
		})
	}
}

// A minimal file gets every SPEC default.
func TestParseDefaults(t *testing.T) {
	cfg, err := config.Parse([]byte(`
listeners:
  - { name: web, listen: "127.0.0.1:0", pool: p }
pools:
  - name: p
    backends: [127.0.0.1:9001, { address: 127.0.0.1:9002 }]
    discovery: ~
  - name: d
    discovery: { type: a, name: api.internal, port: 80 }
`))
	if err != nil {
		t.Fatalf("minimal config rejected:\n%v", err)
	}
	l, p, d := cfg.Listeners[0], cfg.Pools[0], cfg.Pools[1]
	cases := []struct {
		name      string
		got, want any
	}{
		{"admin.listen", cfg.Admin.Listen, "127.0.0.1:9901"},
		{"drain_delay", cfg.DrainDelay.D(), time.Duration(0)},
		{"listener protocol", l.Protocol, "http"},
		{"max_header_bytes", l.MaxHeaderBytes, config.Size(16384)},
		{"max_body_bytes unlimited", l.MaxBodyBytes, config.Size(0)},
		{"header timeout", l.Timeouts.Header.D(), 10 * time.Second},
		{"upgrades", strings.Join(l.Upgrades, ","), "websocket"},
		{"encoded_slash", l.Path.EncodedSlash, "reject"},
		{"buffer_body", p.Retries.BufferBody, config.Size(64 << 10)},
		{"read timeout", l.Timeouts.Read.D(), 30 * time.Second},
		{"idle timeout", l.Timeouts.Idle.D(), 90 * time.Second},
		{"drain timeout", l.Timeouts.Drain.D(), 30 * time.Second},
		{"balance", p.Balance, "round_robin"},
		{"backend weight", p.Backends[0].Weight, 1},
		{"mapping backend without weight", p.Backends[1].Weight, 1},
		{"expect_status", p.Health.ExpectStatus, "200-399"},
		{"health interval", p.Health.Interval.D(), 2 * time.Second},
		{"flap window", p.Health.Flap.Window.D(), time.Minute},
		{"flap max_transitions", p.Health.Flap.MaxTransitions, 4},
		{"flap hold", p.Health.Flap.Hold.D(), 30 * time.Second},
		{"outlier consecutive_failures", p.Outlier.ConsecutiveFailures, 5},
		{"outlier ejection", p.Outlier.Ejection.D(), 10 * time.Second},
		{"outlier max_ejection", p.Outlier.MaxEjection.D(), 5 * time.Minute},
		{"panic_threshold", float64(p.PanicThreshold), 0.5},
		{"retry budget", float64(p.Retries.Budget), 0.2},
		{"retry on", strings.Join(p.Retries.On, ","), "connect_failure,reset"},
		{"max_idle_per_backend", p.Limits.MaxIdlePerBackend, 128},
		{"queue_timeout", p.Limits.QueueTimeout.D(), time.Second},
		{"connect timeout", p.Timeouts.Connect.D(), time.Second},
		{"pool idle timeout", p.Timeouts.Idle.D(), time.Minute},
		{"discovery resolver", d.Discovery.Resolver, "default"},
		{"discovery min_refresh", d.Discovery.MinRefresh.D(), time.Second},
		{"discovery max_refresh", d.Discovery.MaxRefresh.D(), 30 * time.Second},
		{"discovery stale_for forever", d.Discovery.StaleFor.D(), time.Duration(0)},
		{"discovery confirm", d.Discovery.Confirm, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %v, want %v", c.got, c.want)
			}
		})
	}
	if p.Discovery != nil {
		t.Errorf("discovery: ~ should leave the pool static, got %+v", p.Discovery)
	}
}

// Keys present in the file keep their value even when it is the zero value.
func TestParseExplicitZeroKept(t *testing.T) {
	cfg, err := config.Parse([]byte(`
listeners: [{ name: web, listen: "127.0.0.1:0", pool: p }]
pools:
  - name: p
    backends: [127.0.0.1:9001]
    panic_threshold: "0%"
    retries: { attempts: 0, on: [] }
    outlier: { consecutive_failures: 0 }
`))
	if err != nil {
		t.Fatalf("rejected:\n%v", err)
	}
	p := cfg.Pools[0]
	if p.PanicThreshold != 0 || p.Retries.Attempts != 0 || len(p.Retries.On) != 0 || p.Outlier.ConsecutiveFailures != 0 {
		t.Errorf("explicit zeros replaced by defaults: panic=%v attempts=%d on=%v consecutive=%d",
			p.PanicThreshold, p.Retries.Attempts, p.Retries.On, p.Outlier.ConsecutiveFailures)
	}
}

// badDoc has one of each error kind; the line numbers below count from its
// first line.
var badDoc = strings.Join([]string{
	/* 1 */ "admin:",
	/* 2 */ "  listen: nonsense",
	/* 3 */ "  colour: blue",
	/* 4 */ "drain_delay: 5parsecs",
	/* 5 */ "listeners:",
	/* 6 */ "  - name: web",
	/* 7 */ "    listen: 127.0.0.1:8080",
	/* 8 */ "    pool: missing",
	/* 9 */ "    routes:",
	/* 10 */ "      - { host: a.example.com, pool: nowhere }",
	/* 11 */ "    timeouts: { read: 1s, bogus: 2s }",
	/* 12 */ "  - name: web",
	/* 13 */ "    listen: 127.0.0.1:99999",
	/* 14 */ "    pool: api",
	/* 15 */ "pools:",
	/* 16 */ "  - name: api",
	/* 17 */ "    backends: [\"127.0.0.1:9001\", \"not-an-address\"]",
	/* 18 */ "    panic_threshold: \"150%\"",
	/* 19 */ "    outlier: { max_ejected: half }",
	/* 20 */ "  - name: api",
	/* 21 */ "    balance: round_robin",
	/* 22 */ "  - name: lonely",
	/* 23 */ "    retries: { attempts: 1, budget: 20 }",
	/* 24 */ "    health: { interval: 2 seconds, flap: { window: 1m, holdd: 1s } }",
}, "\n") + "\n"

func TestParseReportsEveryError(t *testing.T) {
	_, err := config.Parse([]byte(badDoc))
	if err == nil {
		t.Fatal("bad config accepted")
	}
	fes := config.Errors(err)
	want := []struct {
		name, path string
		line       int
		msg        string
	}{
		{"bad admin address", "admin.listen", 2, "bad address"},
		{"unknown key at depth 1", "admin.colour", 3, "unknown key"},
		{"bad duration", "drain_delay", 4, "bad duration"},
		{"unknown pool ref in listener", "listeners[0].pool", 8, `unknown pool "missing"`},
		{"unknown pool ref in route", "listeners[0].routes[0].pool", 10, `unknown pool "nowhere"`},
		{"unknown key at depth 3", "listeners[0].timeouts.bogus", 11, "unknown key"},
		{"duplicate listener name", "listeners[1].name", 12, `duplicate listener name "web"`},
		{"bad listen port", "listeners[1].listen", 13, "bad port"},
		{"bad backend address", "pools[0].backends[1]", 17, "bad address"},
		{"percentage above 100", "pools[0].panic_threshold", 18, "bad percentage"},
		{"percentage without %", "pools[0].outlier.max_ejected", 19, "bad percentage"},
		{"duplicate pool name", "pools[1].name", 20, `duplicate pool name "api"`},
		{"pool with nothing (dup)", "pools[1]", 20, "neither backends nor discovery"},
		{"pool with nothing", "pools[2]", 22, "neither backends nor discovery"},
		{"bare number as percentage", "pools[2].retries.budget", 23, "bad percentage"},
		{"duration with words", "pools[2].health.interval", 24, "bad duration"},
		{"unknown key at depth 4", "pools[2].health.flap.holdd", 24, "unknown key"},
	}
	byPath := map[string][]*config.FieldError{}
	for _, fe := range fes {
		byPath[fe.Path] = append(byPath[fe.Path], fe)
	}
	for _, w := range want {
		t.Run(w.name, func(t *testing.T) {
			for _, fe := range byPath[w.path] {
				if fe.Line == w.line && strings.Contains(fe.Message, w.msg) {
					return
				}
			}
			t.Errorf("missing %s: ...%s... (line %d); got for that path: %v\nall errors:\n%v", w.path, w.msg, w.line, byPath[w.path], err)
		})
	}
	if len(fes) != len(want) {
		t.Errorf("got %d errors, want exactly %d (no duplicates, no cascades):\n%v", len(fes), len(want), err)
	}

	// The error text is one "path: message (line N)" per line, in file order.
	lineRE := regexp.MustCompile(`^\S+: .+ \(line (\d+)\)$`)
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(fes) {
		t.Errorf("error text has %d lines for %d errors:\n%v", len(lines), len(fes), err)
	}
	for i, l := range lines {
		if !lineRE.MatchString(l) {
			t.Errorf("line %d %q is not `path: message (line N)`", i, l)
		}
	}
	for i := 1; i < len(fes); i++ {
		if fes[i].Line < fes[i-1].Line {
			t.Errorf("errors not in file order: %v before %v", fes[i-1], fes[i])
		}
	}
}

func TestParseRejects(t *testing.T) {
	const base = "listeners: [{ name: web, listen: \"127.0.0.1:0\", pool: p }]\n"
	cases := []struct {
		name, doc, path, msg string
	}{
		{"empty document", "", "(document)", "empty config"},
		{"yaml syntax", "listeners: [\n", "(document)", ""},
		{"no listeners", "pools: [{ name: p, backends: [127.0.0.1:1] }]\n", "listeners", "at least one listener"},
		{"both backends and discovery", base + "pools: [{ name: p, backends: [127.0.0.1:1], discovery: { type: srv, name: x } }]\n",
			"pools[0].discovery", "not both"},
		{"unknown balance", base + "pools: [{ name: p, balance: fastest, backends: [127.0.0.1:1] }]\n", "pools[0].balance", "unknown balance"},
		{"bad hash key", base + "pools: [{ name: p, balance: consistent_hash, hash_key: \"header:\", backends: [127.0.0.1:1] }]\n",
			"pools[0].hash_key", "bad hash_key"},
		{"bad maglev hash key", base + "pools: [{ name: p, balance: maglev, hash_key: \"cookie:\", backends: [127.0.0.1:1] }]\n",
			"pools[0].hash_key", "bad hash_key"},
		{"negative duration", base + "pools: [{ name: p, backends: [127.0.0.1:1], slow_start: -1s }]\n", "pools[0].slow_start", "negative"},
		{"weight out of range", base + "pools: [{ name: p, backends: [{ address: 127.0.0.1:1, weight: 0 }] }]\n",
			"pools[0].backends[0].weight", "out of range"},
		{"duplicate backend", base + "pools: [{ name: p, backends: [127.0.0.1:1, 127.0.0.1:1] }]\n", "pools[0].backends[1]", "duplicate backend"},
		{"unknown key in backend", base + "pools: [{ name: p, backends: [{ address: 127.0.0.1:1, wieght: 2 }] }]\n",
			"pools[0].backends[0]", "unknown key"},
		{"unknown resolver", "resolvers: [{ name: r, servers: [10.0.0.1] }]\n" + base +
			"pools: [{ name: p, discovery: { type: srv, name: x, resolver: other } }]\n", "pools[0].discovery.resolver", `unknown resolver "other"`},
		{"etcd without endpoints", base + "pools: [{ name: p, discovery: { type: etcd, name: /services/p/ } }]\n",
			"pools[0].discovery.endpoints", "needs endpoints"},
		{"etcd without prefix", base + "pools: [{ name: p, discovery: { type: etcd, endpoints: [\"http://127.0.0.1:2379\"] } }]\n",
			"pools[0].discovery.name", "missing etcd key prefix"},
		{"etcd bad endpoint", base + "pools: [{ name: p, discovery: { type: etcd, name: /s/, endpoints: [\"http://nowhere\"] } }]\n",
			"pools[0].discovery.endpoints[0]", "bad address"},
		{"etcd https endpoint", base + "pools: [{ name: p, discovery: { type: etcd, name: /s/, endpoints: [\"https://127.0.0.1:2379\"] } }]\n",
			"pools[0].discovery.endpoints[0]", "https is not supported"},
		{"endpoints on srv", base + "pools: [{ name: p, discovery: { type: srv, name: x, endpoints: [\"http://127.0.0.1:2379\"] } }]\n",
			"pools[0].discovery.endpoints", "type etcd only"},
		{"bad resolver server", "resolvers: [{ name: r, servers: [\"dns.example:53\"] }]\n" + base +
			"pools: [{ name: p, backends: [127.0.0.1:1] }]\n", "resolvers[0].servers[0]", "IP literal"},
		{"wrong type", base + "pools: [{ name: p, backends: [127.0.0.1:1], retries: { attempts: many } }]\n",
			"pools[0].retries.attempts", "whole number"},
		{"list where a mapping goes", "admin: [1]\n" + base + "pools: [{ name: p, backends: [127.0.0.1:1] }]\n", "admin", "want a mapping"},
		{"unknown retry reason", base + "pools: [{ name: p, backends: [127.0.0.1:1], retries: { on: [timeout] } }]\n",
			"pools[0].retries.on[0]", "unknown retry reason"},
		{"bad expect_status", base + "pools: [{ name: p, backends: [127.0.0.1:1], health: { expect_status: \"2xx\" } }]\n",
			"pools[0].health.expect_status", "bad status range"},
		{"wildcard in the middle", "listeners: [{ name: web, listen: \"127.0.0.1:0\", pool: p, routes: [{ host: \"a.*.com\", pool: p }] }]\n" +
			"pools: [{ name: p, backends: [127.0.0.1:1] }]\n", "listeners[0].routes[0].host", "wildcard"},
		{"routes on tcp", "listeners: [{ name: t, listen: \"127.0.0.1:0\", protocol: tcp, pool: p, routes: [{ path_prefix: /, pool: p }] }]\n" +
			"pools: [{ name: p, backends: [127.0.0.1:1] }]\n", "listeners[0].routes", "http listeners only"},
		{"same address twice", "listeners: [{ name: a, listen: \"127.0.0.1:8080\", pool: p }, { name: b, listen: \"127.0.0.1:8080\", pool: p }]\n" +
			"pools: [{ name: p, backends: [127.0.0.1:1] }]\n", "listeners[1].listen", "already used"},
		{"unknown pool protocol", base + "pools: [{ name: p, protocol: spdy, backends: [127.0.0.1:1] }]\n", "pools[0].protocol", "unknown protocol"},
		{"h2 without tls", base + "pools: [{ name: p, protocol: h2, backends: [127.0.0.1:1] }]\n", "pools[0].protocol", "over TLS"},
		{"h2c with tls", base + "pools: [{ name: p, protocol: h2c, tls: { enabled: true }, backends: [127.0.0.1:1] }]\n",
			"pools[0].protocol", "without TLS"},
		{"h2c behind tcp only", "listeners: [{ name: t, listen: \"127.0.0.1:0\", protocol: tcp, pool: p }]\n" +
			"pools: [{ name: p, protocol: h2c, backends: [127.0.0.1:1] }]\n", "pools[0].protocol", "http listeners"},
		{"grpc health on http1", base + "pools: [{ name: p, backends: [127.0.0.1:1], health: { type: grpc } }]\n",
			"pools[0].health.type", "h2 or h2c"},
		{"service on http health", base + "pools: [{ name: p, backends: [127.0.0.1:1], health: { type: tcp, service: x } }]\n",
			"pools[0].health.service", "grpc only"},
		{"header limit too small", "listeners: [{ name: web, listen: \"127.0.0.1:0\", pool: p, max_header_bytes: 10 }]\n" +
			"pools: [{ name: p, backends: [127.0.0.1:1] }]\n", "listeners[0].max_header_bytes", "at least 1024"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(c.doc))
			if err == nil {
				t.Fatalf("accepted: %+v", cfg)
			}
			fes := config.Errors(err)
			for _, fe := range fes {
				if fe.Path == c.path && strings.Contains(fe.Message, c.msg) {
					return
				}
			}
			t.Errorf("want %s: ...%s...; got:\n%v", c.path, c.msg, err)
		})
	}
}

func TestParseEtcdDiscovery(t *testing.T) {
	cfg, err := config.Parse([]byte("listeners: [{ name: web, listen: \"127.0.0.1:0\", pool: p }]\n" +
		"pools: [{ name: p, discovery: { type: etcd, name: /services/p/, endpoints: [\"http://127.0.0.1:2379\", \"127.0.0.2:2379\"] } }]\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Pools[0].Discovery
	if d.Type != "etcd" || d.Name != "/services/p/" || len(d.Endpoints) != 2 || d.Confirm != 3 || float64(d.MaxShrink) != 0.5 {
		t.Errorf("etcd discovery parsed as %+v", d)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load(t.TempDir() + "/nope.yaml")
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Errorf("got %v, want an error naming the file", err)
	}
}

func TestParseAcceptsMaglev(t *testing.T) {
	cfg, err := config.Parse([]byte(`
listeners:
  - { name: web, listen: "127.0.0.1:0", pool: p }
pools:
  - { name: p, balance: maglev, hash_key: "header:X-User", backends: [127.0.0.1:9001, 127.0.0.1:9002] }
`))
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.Pools[0]; p.Balance != "maglev" || p.HashKey != "header:X-User" {
		t.Errorf("balance %q hash_key %q, want maglev and header:X-User", p.Balance, p.HashKey)
	}
}
