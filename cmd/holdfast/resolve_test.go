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
	"github.com/holdfast-lb/holdfast/internal/etcdtest"
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
			want: []string{"nxdomain", "would start EMPTY", `would start empty: pool "p"`}},
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

// TestCheckResolveEtcd: check --resolve lists an etcd prefix, shows the
// values it skips, and names the pool that would start empty (a prefix with
// no usable value, or etcd unreachable).
func TestCheckResolveEtcd(t *testing.T) {
	up := testkit.StartBackend(t, "up")
	srv := etcdtest.Start(t)
	srv.Put("/svc/api/a", up.Addr)
	srv.Put("/svc/api/junk", "nope")
	srv.Put("/svc/empty/junk", "{}")
	dead := "http://" + testkit.FreeAddr(t)
	path := filepath.Join(t.TempDir(), "holdfast.yaml")
	cfg := fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: api, routes: [{ path_prefix: /e/, pool: empty }, { path_prefix: /d/, pool: down }] }
pools:
  - name: api
    discovery: { type: etcd, name: /svc/api/, endpoints: [%q] }
    health: { type: http, path: /, timeout: 500ms }
  - name: empty
    discovery: { type: etcd, name: /svc/empty/, endpoints: [%q] }
  - name: down
    discovery: { type: etcd, name: /svc/api/, endpoints: [%q] }
`, srv.Endpoint, srv.Endpoint, dead)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run([]string{"--log-level", "error", "check", "-c", path, "--resolve"}, &out, &errb)
	if code != 1 {
		t.Fatalf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	for _, w := range []string{
		"pool api (etcd /svc/api/)", up.Addr, "pass", "skipped value /svc/api/junk: bad address",
		"pool empty (etcd /svc/empty/)", "=> pool empty would start EMPTY",
		"pool down (etcd /svc/api/)", "error: ", "=> pool down would start EMPTY",
		`would start empty: pool "empty", pool "down"`,
	} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out.String())
		}
	}
	if strings.Contains(out.String(), "pool api would start EMPTY") {
		t.Errorf("pool api called empty:\n%s", out.String())
	}
}
