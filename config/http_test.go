package config_test

import (
	"strings"
	"testing"

	"github.com/holdfast-lb/holdfast/config"
)

// The HTTP-semantics keys of SPEC.md parse as written there.
func TestParseHTTPSemanticsKeys(t *testing.T) {
	token := writeToken(t, "s3cret\n")
	cfg, err := config.Parse([]byte(`
admin: { listen: "127.0.0.1:9901", token_file: ` + token + `, pprof: true }
listeners:
  - name: web
    listen: "127.0.0.1:0"
    pool: p
    proxy_protocol: true
    trusted_proxies: [10.0.0.0/8, "192.168.1.7", "fd00::/8"]
    upgrades: [websocket, tcp-tunnel]
    path: { encoded_slash: keep }
    max_header_bytes: 32KiB
    max_body_bytes: 1MiB
    timeouts: { header: 3s }
pools:
  - name: p
    backends: [127.0.0.1:9001]
    retries: { buffer_body: 128KiB }
`))
	if err != nil {
		t.Fatalf("rejected:\n%v", err)
	}
	l, p := cfg.Listeners[0], cfg.Pools[0]
	cases := []struct {
		name      string
		got, want any
	}{
		{"token_file", cfg.Admin.TokenFile, token},
		{"pprof", cfg.Admin.Pprof, true},
		{"trusted_proxies", strings.Join(l.TrustedProxies, ","), "10.0.0.0/8,192.168.1.7,fd00::/8"},
		{"upgrades", strings.Join(l.Upgrades, ","), "websocket,tcp-tunnel"},
		{"encoded_slash", l.Path.EncodedSlash, "keep"},
		{"max_header_bytes KiB", l.MaxHeaderBytes, config.Size(32 << 10)},
		{"max_body_bytes MiB", l.MaxBodyBytes, config.Size(1 << 20)},
		{"header timeout", l.Timeouts.Header.D().String(), "3s"},
		{"buffer_body", p.Retries.BufferBody, config.Size(128 << 10)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %v, want %v", c.got, c.want)
			}
		})
	}
	if w := config.Warnings(cfg); len(w) != 0 {
		t.Errorf("warnings with trusted_proxies set: %v", w)
	}
}

func TestParseHTTPSemanticsRejects(t *testing.T) {
	cases := []struct {
		name, doc, path string
	}{
		{"bad CIDR", `trusted_proxies: [10.0.0.0/33]`, "listeners[0].trusted_proxies[0]"},
		{"not an address", `trusted_proxies: [lb.example.com]`, "listeners[0].trusted_proxies[0]"},
		{"h2c upgrade", `upgrades: [websocket, h2c]`, "listeners[0].upgrades[1]"},
		{"encoded_slash value", `path: { encoded_slash: decode }`, "listeners[0].path.encoded_slash"},
		{"bad size", `max_body_bytes: 12parsecs`, "listeners[0].max_body_bytes"},
		{"negative size", `max_body_bytes: -1`, "listeners[0].max_body_bytes"},
		{"zero header timeout", `timeouts: { header: 0s }`, "listeners[0].timeouts.header"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := "listeners:\n  - name: web\n    listen: \"127.0.0.1:0\"\n    pool: p\n    " + c.doc +
				"\npools: [{ name: p, backends: [127.0.0.1:9001] }]\n"
			_, err := config.Parse([]byte(doc))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, fe := range config.Errors(err) {
				if fe.Path == c.path {
					return
				}
			}
			t.Errorf("no error at %s:\n%v", c.path, err)
		})
	}
}

func TestWarnProxyProtocolWithoutTrust(t *testing.T) {
	cfg, err := config.Parse([]byte(`
listeners: [{ name: web, listen: "127.0.0.1:0", pool: p, proxy_protocol: true }]
pools: [{ name: p, backends: [127.0.0.1:9001] }]
`))
	if err != nil {
		t.Fatal(err)
	}
	w := config.Warnings(cfg)
	if len(w) != 1 || !strings.Contains(w[0], "listeners[0].proxy_protocol") || !strings.Contains(w[0], "trusted_proxies") {
		t.Errorf("warnings = %q, want one naming listeners[0].proxy_protocol and trusted_proxies", w)
	}
}
