package config

import (
	"strings"
	"testing"
)

func TestBalanceDefaultFollowsProtocol(t *testing.T) {
	tests := []struct {
		name, listeners, want string
	}{
		{name: "tcp only", want: "least_conn",
			listeners: "  - { name: db, listen: 127.0.0.1:5432, protocol: tcp, pool: p }\n"},
		{name: "http", want: "round_robin",
			listeners: "  - { name: web, listen: 127.0.0.1:8080, pool: p }\n"},
		{name: "tcp and http", want: "round_robin",
			listeners: "  - { name: db, listen: 127.0.0.1:5432, protocol: tcp, pool: p }\n  - { name: web, listen: 127.0.0.1:8080, pool: p }\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte("listeners:\n" + tc.listeners + "pools:\n  - { name: p, backends: [127.0.0.1:1] }\n"))
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Pools[0].Balance; got != tc.want {
				t.Errorf("balance = %q, want %q", got, tc.want)
			}
		})
	}
	cfg, err := Parse([]byte("listeners:\n  - { name: db, listen: 127.0.0.1:5432, protocol: tcp, pool: p }\npools:\n  - { name: p, balance: random, backends: [127.0.0.1:1] }\n"))
	if err != nil || cfg.Pools[0].Balance != "random" {
		t.Errorf("an explicit balance must win: %v %v", cfg, err)
	}
}

func TestSendProxyProtocolNeedsTCPListeners(t *testing.T) {
	doc := func(proto string) string {
		return "listeners:\n  - { name: l, listen: 127.0.0.1:8080, protocol: " + proto + ", pool: p }\n" +
			"pools:\n  - { name: p, send_proxy_protocol: v2, backends: [127.0.0.1:1] }\n"
	}
	if _, err := Parse([]byte(doc("tcp"))); err != nil {
		t.Fatalf("tcp listener: %v", err)
	}
	_, err := Parse([]byte(doc("http")))
	if err == nil || !strings.Contains(err.Error(), "pools[0].send_proxy_protocol: applies to pools behind tcp listeners only") {
		t.Fatalf("http listener: got %v", err)
	}
}

// SPEC.md shows `tls: [{cert_file: "", key_file: ""}]` as the default: an
// entry with neither file means no TLS; one with a single file is an error.
func TestEmptyTLSEntryMeansNoTLS(t *testing.T) {
	cfg, err := Parse([]byte(`listeners:
  - { name: web, listen: 127.0.0.1:8080, pool: p, tls: [ { cert_file: "", key_file: "" } ] }
pools:
  - { name: p, backends: [127.0.0.1:1] }
`))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cfg.Listeners[0].TLS); n != 0 {
		t.Errorf("%d TLS entries kept, want 0", n)
	}
	_, err = Parse([]byte(`listeners:
  - { name: web, listen: 127.0.0.1:8080, pool: p, tls: [ { cert_file: "a.pem" } ] }
pools:
  - { name: p, backends: [127.0.0.1:1] }
`))
	if err == nil || !strings.Contains(err.Error(), "listeners[0].tls[0]: cert_file and key_file are both needed (line 2)") {
		t.Errorf("half a TLS entry: %v", err)
	}
}

func TestHTTP2OnlyNeedsHTTPListeners(t *testing.T) {
	doc := func(proto string) string {
		return "listeners:\n  - { name: l, listen: 127.0.0.1:8080, protocol: " + proto + ", pool: p, http2_only: true }\n" +
			"pools:\n  - { name: p, backends: [127.0.0.1:1] }\n"
	}
	cfg, err := Parse([]byte(doc("http")))
	if err != nil || !cfg.Listeners[0].HTTP2Only {
		t.Fatalf("http listener: %v", err)
	}
	_, err = Parse([]byte(doc("tcp")))
	if err == nil || !strings.Contains(err.Error(), "listeners[0].http2_only: http2_only applies to http listeners only") {
		t.Fatalf("tcp listener: got %v", err)
	}
}
