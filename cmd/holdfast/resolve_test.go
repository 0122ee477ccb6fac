package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/holdfast-lb/holdfast/discovery/dnstest"
	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// TestCheckResolve runs `holdfast check --resolve` against a real DNS server
// and real backends: it prints each pool's resolved set with health, and
// exits 1 only when a pool would start empty.
func TestCheckResolve(t *testing.T) {
	up := testkit.StartBackend(t, "up")
	srv := dnstest.Start(t)
	_, upPort, _ := strings.Cut(up.Addr, ":")
	srv.Set("_http._tcp.api.test.", dns.TypeSRV,
		"_http._tcp.api.test. 30 IN SRV 10 5 "+upPort+" a.api.test.",
		"a.api.test. 30 IN A 127.0.0.1")
	// A port nothing listens on: its health probe fails.
	srv.Set("_http._tcp.dead.test.", dns.TypeSRV,
		"_http._tcp.dead.test. 30 IN SRV 10 5 1 b.dead.test.",
		"b.dead.test. 30 IN A 127.0.0.1")

	config := func(name string) string {
		return fmt.Sprintf(`
resolvers:
  - { name: local, servers: [%q], timeout: 500ms, attempts: 1 }
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: p }
pools:
  - name: p
    discovery: { type: srv, name: %s, resolver: local }
    health: { type: http, path: /, timeout: 500ms }
`, srv.Addr, name)
	}
	tests := []struct {
		name     string
		srvName  string
		wantCode int
		want     []string
	}{
		{name: "healthy set", srvName: "_http._tcp.api.test.", wantCode: 0,
			want: []string{"pool p (dns srv _http._tcp.api.test.)", "127.0.0.1:" + upPort, "pass"}},
		{name: "every backend failing", srvName: "_http._tcp.dead.test.", wantCode: 1,
			want: []string{"127.0.0.1:1", "fail", "would start EMPTY"}},
		{name: "name does not exist", srvName: "_http._tcp.nothing.test.", wantCode: 1,
			want: []string{"nxdomain", "would start EMPTY"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "holdfast.yaml")
			if err := os.WriteFile(path, []byte(config(tc.srvName)), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			code := run([]string{"--log-level", "error", "check", "-c", path, "--resolve"}, &out, &errb)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, out.String(), errb.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(strings.ToLower(out.String()), strings.ToLower(w)) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
