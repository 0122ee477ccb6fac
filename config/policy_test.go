package config

import (
	"strings"
	"testing"
)

// The SPEC.md listener and route keys of issue 13 parse as written there.
func TestParsePolicyKeys(t *testing.T) {
	cfg, err := Parse([]byte(`
listeners:
  - name: web
    listen: 127.0.0.1:8080
    pool: api
    routes:
      - { host: "api.example.com", path_prefix: "/v1/", pool: api }
      - { host: "old.example.com", redirect: { scheme: https, host: "api.example.com", code: 308 } }
      - { path_prefix: "/legacy/", strip_prefix: true, pool: api,
          request_headers: { set: { X-Legacy: "1" } },
          rate_limit: { rate: 100, burst: 200, key: client_ip } }
      - { path_prefix: "/h/", pool: api, rate_limit: { rate: 2.5, key: "header:X-Api-Key" },
          response_headers: { remove: [Server] } }
    request_id: true
    allow: [10.0.0.0/8, "::1", "2001:db8::/32"]
    deny: [10.1.0.0/16]
    request_headers: { set: { X-Client: "{client_ip}" }, add: { Via: "holdfast" }, remove: [X-Internal] }
    response_headers: { set: { Strict-Transport-Security: "max-age=31536000" }, add: {}, remove: [] }
    access_log: { format: combined }
  - name: tcp
    listen: 127.0.0.1:8081
    protocol: tcp
    pool: api
    access_log: true
    deny: [192.0.2.0/24]
pools:
  - name: api
    backends: [127.0.0.1:9001]
`))
	if err != nil {
		t.Fatalf("rejected:\n%v", err)
	}
	l, t4 := cfg.Listeners[0], cfg.Listeners[1]
	rd := l.Routes[1].Redirect
	cases := []struct {
		name      string
		got, want any
	}{
		{"request_id", l.RequestID, true},
		{"tcp request_id default off", t4.RequestID, false},
		{"allow", strings.Join(l.Allow, ","), "10.0.0.0/8,::1,2001:db8::/32"},
		{"deny", strings.Join(l.Deny, ","), "10.1.0.0/16"},
		{"request set", l.RequestHeaders.Set["X-Client"], "{client_ip}"},
		{"request add", l.RequestHeaders.Add["Via"], "holdfast"},
		{"request remove", strings.Join(l.RequestHeaders.Remove, ","), "X-Internal"},
		{"response set", l.ResponseHeaders.Set["Strict-Transport-Security"], "max-age=31536000"},
		{"access_log mapping", l.AccessLog, AccessLog{Enabled: true, Format: "combined"}},
		{"access_log bool", t4.AccessLog, AccessLog{Enabled: true, Format: "json"}},
		{"redirect", *rd, Redirect{Scheme: "https", Host: "api.example.com", Code: 308}},
		{"redirect pool", l.Routes[1].Pool, ""},
		{"strip_prefix", l.Routes[2].StripPrefix, true},
		{"route header", l.Routes[2].RequestHeaders.Set["X-Legacy"], "1"},
		{"rate_limit", *l.Routes[2].RateLimit, RateLimit{Rate: 100, Burst: 200, Key: "client_ip"}},
		{"rate_limit defaults", *l.Routes[3].RateLimit, RateLimit{Rate: 2.5, Burst: 3, Key: "header:X-Api-Key"}},
		{"route response remove", l.Routes[3].ResponseHeaders.Remove[0], "Server"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %v, want %v", c.got, c.want)
			}
		})
	}
}

func TestPolicyDefaults(t *testing.T) {
	cfg, err := Parse([]byte(`
listeners:
  - name: web
    listen: 127.0.0.1:8080
    pool: api
    routes: [{ host: a.example, redirect: { scheme: https } }]
pools: [{ name: api, backends: [127.0.0.1:9001] }]
`))
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Listeners[0]
	if !l.RequestID || l.AccessLog != (AccessLog{Format: "json"}) || l.Routes[0].Redirect.Code != 302 {
		t.Errorf("defaults: request_id %v, access_log %+v, redirect code %d", l.RequestID, l.AccessLog, l.Routes[0].Redirect.Code)
	}
}

func TestPolicyKeysInvalid(t *testing.T) {
	tests := []struct {
		name, listener, want string
	}{
		{"bad allow", `allow: [10.0.0.0/33]`, "listeners[0].allow[0]: bad CIDR \"10.0.0.0/33\" (want e.g. 10.0.0.0/8) (line 5)"},
		{"bad deny", `deny: [nope]`, "listeners[0].deny[0]: bad address \"nope\""},
		{"access_log format", `access_log: { format: clf }`, "listeners[0].access_log: unknown format \"clf\" (want json or combined) (line 5)"},
		{"access_log key", `access_log: { fmt: json }`, "listeners[0].access_log: unknown key \"fmt\""},
		{"access_log scalar", `access_log: yes please`, "listeners[0].access_log: want true, false or {format: json|combined}"},
		{"bad header name", `request_headers: { set: { "X Bad": "1" } }`, "listeners[0].request_headers.set.X Bad: bad header name \"X Bad\" (line 5)"},
		{"owned header", `request_headers: { remove: [content-length] }`, "listeners[0].request_headers.remove[0]: content-length is managed by holdfast"},
		{"unknown placeholder", `response_headers: { add: { X-Who: "{user}" } }`, "listeners[0].response_headers.add.X-Who: unknown placeholder {user}"},
		{"unclosed placeholder", `response_headers: { add: { X-Who: "{host" } }`, "unclosed placeholder"},
		{"set and add", `request_headers: { set: { X-A: "1" }, add: { x-a: "2" } }`, "listeners[0].request_headers.add.x-a: x-a is also in set"},
		{"headers key", `request_headers: { replace: {} }`, "listeners[0].request_headers.replace: unknown key"},
		{"redirect code", `routes: [{ host: a, redirect: { scheme: https, code: 303 } }]`, "listeners[0].routes[0].redirect.code: unknown code 303"},
		{"redirect scheme", `routes: [{ host: a, redirect: { scheme: ftp } }]`, "listeners[0].routes[0].redirect.scheme: unknown scheme \"ftp\""},
		{"redirect empty", `routes: [{ host: a, redirect: { code: 301 } }]`, "listeners[0].routes[0].redirect: a redirect needs scheme, host or path"},
		{"redirect path", `routes: [{ host: a, redirect: { path: x } }]`, "listeners[0].routes[0].redirect.path: must start with /"},
		{"redirect with pool", `routes: [{ host: a, pool: api, redirect: { scheme: https } }]`, "listeners[0].routes[0].pool: a redirect route sends nothing upstream; drop pool"},
		{"strip without prefix", `routes: [{ host: a, pool: api, strip_prefix: true }]`, "listeners[0].routes[0].strip_prefix: needs path_prefix"},
		{"rate zero", `routes: [{ host: a, pool: api, rate_limit: { rate: 0 } }]`, "listeners[0].routes[0].rate_limit.rate: must be greater than 0"},
		{"rate burst", `routes: [{ host: a, pool: api, rate_limit: { rate: 1, burst: 0 } }]`, "listeners[0].routes[0].rate_limit.burst: must be at least 1"},
		{"rate key", `routes: [{ host: a, pool: api, rate_limit: { rate: 1, key: "cookie:x" } }]`, "listeners[0].routes[0].rate_limit.key: bad key \"cookie:x\""},
		{"rate type", `routes: [{ host: a, pool: api, rate_limit: { rate: fast } }]`, "listeners[0].routes[0].rate_limit.rate: want a"},
		{"route pool still needed", `routes: [{ host: a }]`, "listeners[0].routes[0].pool: missing pool"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte("listeners:\n  - name: web\n    listen: 127.0.0.1:8080\n    pool: api\n    " + tc.listener + "\npools: [{ name: api, backends: [127.0.0.1:9001] }]\n"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestPolicyKeysOnTCPListener(t *testing.T) {
	for _, key := range []string{`request_headers: { set: { X-A: "1" } }`, `request_id: true`, `access_log: { format: combined }`} {
		_, err := Parse([]byte("listeners:\n  - name: t\n    listen: 127.0.0.1:8080\n    protocol: tcp\n    pool: api\n    " + key + "\npools: [{ name: api, backends: [127.0.0.1:9001] }]\n"))
		if err == nil || !strings.Contains(err.Error(), "applies to http listeners only") {
			t.Errorf("%s: got %v", key, err)
		}
	}
}
