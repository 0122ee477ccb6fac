package app_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

func okBackend(r *http.Request) string {
	return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
}

// nextRequest is the next request the backend received.
func nextRequest(t *testing.T, b *rawBackend) *http.Request {
	t.Helper()
	select {
	case r := <-b.reqs:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("the backend received no request")
		return nil
	}
}

// Redirect routes answer with their Location (never reaching a backend);
// strip_prefix routes forward the path without the prefix.
func TestRedirectAndStripPrefix(t *testing.T) {
	b := startRawBackend(t, okBackend)
	a := testkit.StartApp(t, `
listeners:
  - name: web
    listen: "127.0.0.1:0"
    pool: p
    routes:
      - { host: "old.example.com", redirect: { scheme: https, host: "api.example.com", code: 308 } }
      - { host: "plain.example.com", redirect: { scheme: https } }
      - { host: "moved.example.com", redirect: { path: "/new", code: 301 } }
      - { host: "temp.example.com", redirect: { host: "other.example.com:8443", code: 307 } }
      - { path_prefix: "/legacy/", strip_prefix: true, pool: p }
      - { path_prefix: "/bare", strip_prefix: true, pool: p }
      - { path_prefix: "/keep/", pool: p }
pools: [{ name: p, health: { type: none }, backends: ["`+b.Addr+`"] }]
`)
	waitReady(t, a)
	addr := a.ListenerAddr("web").String()
	redirects := []struct {
		name, host, target string
		code               int
		location           string
	}{
		{"host and scheme, path and query kept", "old.example.com", "/a/b?x=1&y=2", 308, "https://api.example.com/a/b?x=1&y=2"},
		{"scheme only drops the http port", "plain.example.com:8080", "/p?q", 302, "https://plain.example.com/p?q"},
		{"path replaces path and query", "moved.example.com", "/old?x=1", 301, "http://moved.example.com/new"},
		{"host with port, scheme kept", "temp.example.com", "/t", 307, "http://other.example.com:8443/t"},
		{"normalised path is the one kept", "old.example.com", "/a/./c/../d", 308, "https://api.example.com/a/d"},
	}
	for _, c := range redirects {
		t.Run(c.name, func(t *testing.T) {
			resp, _ := rawRoundTrip(t, addr, "GET "+c.target+" HTTP/1.1\r\nHost: "+c.host+"\r\n\r\n")
			if resp.StatusCode != c.code || resp.Header.Get("Location") != c.location {
				t.Errorf("got %d Location %q, want %d %q", resp.StatusCode, resp.Header.Get("Location"), c.code, c.location)
			}
		})
	}
	if n := b.conns.Load(); n != 0 {
		t.Errorf("redirects reached the backend: %d connections", n)
	}
	// A redirect with a body it did not read closes the connection.
	resp, _ := rawRoundTrip(t, addr, "POST /x HTTP/1.1\r\nHost: old.example.com\r\nContent-Length: 5\r\n\r\nhello")
	if resp.StatusCode != 308 || !resp.Close {
		t.Errorf("POST redirect: %d close=%v, want 308 and a closed connection", resp.StatusCode, resp.Close)
	}

	strips := []struct {
		name, target, want string
	}{
		{"prefix with slash", "/legacy/a/b?x=1", "/a/b?x=1"},
		{"prefix is the whole path", "/legacy/", "/"},
		{"prefix without slash", "/bare/z", "/z"},
		{"prefix without slash, exact", "/bare", "/"},
		{"prefix without slash, query", "/bare?q=1", "/?q=1"},
		{"no strip on other routes", "/keep/a", "/keep/a"},
		{"normalised before stripping", "/legacy/x/../%79", "/y"},
	}
	for _, c := range strips {
		t.Run(c.name, func(t *testing.T) {
			resp, _ := rawRoundTrip(t, addr, "GET "+c.target+" HTTP/1.1\r\nHost: x.example\r\n\r\n")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got := nextRequest(t, b).RequestURI; got != c.want {
				t.Errorf("backend saw %q, want %q", got, c.want)
			}
		})
	}
}

// A route's rate_limit from the config: 429 with Retry-After once the
// burst is spent, counted per listener and route; other routes unaffected.
func TestRateLimitConfig(t *testing.T) {
	b := startRawBackend(t, okBackend)
	a := testkit.StartApp(t, `
listeners:
  - name: web
    listen: "127.0.0.1:0"
    pool: p
    routes:
      - { path_prefix: /api/, pool: p, rate_limit: { rate: 0.01, burst: 2, key: client_ip } }
pools: [{ name: p, health: { type: none }, backends: ["`+b.Addr+`"] }]
`)
	waitReady(t, a)
	addr := a.ListenerAddr("web").String()
	for i, want := range []int{200, 200, 429} {
		resp, _ := rawRoundTrip(t, addr, "GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n")
		if resp.StatusCode != want {
			t.Fatalf("request %d: %d, want %d", i, resp.StatusCode, want)
		}
		if want == 429 && resp.Header.Get("Retry-After") != "100" {
			t.Errorf("Retry-After %q, want 100 (one token at 0.01/s)", resp.Header.Get("Retry-After"))
		}
	}
	if resp, _ := rawRoundTrip(t, addr, "GET /other HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 200 {
		t.Errorf("unlimited route: %d", resp.StatusCode)
	}
	if got := testkit.Metric(t, a.Registry(), "holdfast_rate_limited_total", map[string]string{"listener": "web", "route": "/api/"}); got != 1 {
		t.Errorf("holdfast_rate_limited_total %v, want 1", got)
	}
}
