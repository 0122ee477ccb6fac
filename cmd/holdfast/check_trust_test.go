package main

import (
	"strings"
	"testing"
)

// `holdfast check` warns, without failing, when a listener believes PROXY
// headers from anyone.
func TestCheckWarnsOnUntrustedProxyProtocol(t *testing.T) {
	cases := []struct {
		name, trusted string
		warn          bool
	}{
		{"no trusted_proxies", "", true},
		{"trusted_proxies set", ", trusted_proxies: [10.0.0.0/8]", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := writeFile(t, "holdfast.yaml", `
listeners:
  - { name: web, listen: 127.0.0.1:8080, pool: api, proxy_protocol: true`+c.trusted+` }
pools:
  - { name: api, backends: [127.0.0.1:9001] }
`)
			code, _, stderr := runCLI("check", "-c", cfg)
			got := strings.Contains(stderr, "warning: listeners[0].proxy_protocol: true without trusted_proxies")
			if code != 0 || got != c.warn {
				t.Errorf("check = %d, stderr %q; want exit 0 and warning %v", code, stderr, c.warn)
			}
		})
	}
}
