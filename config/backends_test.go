package config

import (
	"strings"
	"testing"
)

// The pool keys of SPEC.md as written there: tls, the health check's
// host/headers/tls/port/expect_body, retries on status codes.
func TestBackendKeysFromSpec(t *testing.T) {
	cfg, err := Parse([]byte(`
listeners: [{ name: web, listen: 127.0.0.1:8080, pool: api }]
pools:
  - name: api
    tls:
      enabled: false
      server_name: ""
      ca_file: ""
      cert_file: ""
      key_file: ""
      insecure_skip_verify: false
    health:
      type: http
      path: /healthz
      host: app.internal
      headers: { X-Check: "1" }
      tls: false
      port: 8081
      expect_status: "200-399"
      expect_body: "OK"
    retries: { attempts: 2, budget: "20%", on: [connect_failure, reset, "503", "502"], per_try_timeout: 300ms, buffer_body: 64KiB }
    backends: [127.0.0.1:9001]
`))
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.Pools[0].Health
	if h.Host != "app.internal" || h.Headers["X-Check"] != "1" || h.Port != 8081 || h.ExpectBody != "OK" {
		t.Errorf("health: %+v", h)
	}
	if on := cfg.Pools[0].Retries.On; len(on) != 4 || on[2] != "503" {
		t.Errorf("retries.on: %v", on)
	}
}

func TestBackendKeysInvalid(t *testing.T) {
	tests := []struct {
		name, pool, want string
	}{
		{"4xx is not retried", `retries: { on: ["404"] }`, `pools[0].retries.on[0]: unknown retry reason "404"`},
		{"not a code", `retries: { on: ["5xx"] }`, `pools[0].retries.on[0]: unknown retry reason "5xx"`},
		{"tls settings without enabled", `tls: { ca_file: /x.pem }`, "pools[0].tls.enabled: tls settings are given but tls.enabled is false"},
		{"missing CA file", `tls: { enabled: true, ca_file: /nonexistent/ca.pem }`, "pools[0].tls: ca_file: open /nonexistent/ca.pem"},
		{"half a client certificate", `tls: { enabled: true, cert_file: /x.crt }`, "pools[0].tls: cert_file and key_file are both needed"},
		{"check over TLS without pool TLS", `health: { tls: true }`, "pools[0].health.tls: needs the pool's tls.enabled"},
		{"bad port", `health: { port: 70000 }`, "pools[0].health.port: out of range"},
		{"body on a tcp check", `health: { type: tcp, expect_body: OK }`, "pools[0].health: host, headers and expect_body apply to type http only"},
		{"header map", `health: { headers: [a] }`, "pools[0].health.headers: want a mapping"},
		{"per try above response", `retries: { per_try_timeout: 40s }`, "pools[0].retries.per_try_timeout: must not exceed timeouts.response"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte("listeners: [{ name: web, listen: 127.0.0.1:8080, pool: api }]\npools:\n  - name: api\n    backends: [127.0.0.1:9001]\n    " + tc.pool + "\n"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestHealthDefaultFollowsProtocol(t *testing.T) {
	for _, tc := range []struct{ proto, want string }{{"tcp", "tcp"}, {"http", "http"}} {
		cfg, err := Parse([]byte("listeners: [{ name: l, listen: 127.0.0.1:8080, protocol: " + tc.proto + ", pool: p }]\npools: [{ name: p, backends: [127.0.0.1:1] }]\n"))
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Pools[0].Health.Type; got != tc.want {
			t.Errorf("%s listener: health.type %q, want %q", tc.proto, got, tc.want)
		}
	}
}
