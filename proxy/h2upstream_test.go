package proxy_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// h2Handler answers with the protocol it was spoken to and the body.
func h2Handler(conns *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Proto", r.Proto)
		fmt.Fprintf(w, "%s %s %s xff=%s body=%s", r.Proto, r.Method, r.RequestURI, r.Header.Get("X-Forwarded-For"), b)
	})
}

// TestUpstreamH2C: HTTP/1.1 and h2 clients reach an h2c-only backend;
// its connections are few and shared (max_conns_per_backend holds).
func TestUpstreamH2C(t *testing.T) {
	var conns atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h2c.NewHandler(h2Handler(&conns), &http2.Server{}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	a := startL4(t, fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: p }
pools:
  - { name: p, protocol: h2c, backends: [%s], health: { type: none }, limits: { max_conns_per_backend: 2, max_idle_per_backend: 2 } }
`, ln.Addr()))
	code, body, err := testkit.Get(a.URL("web", "/h1?x=1"))
	if err != nil || code != 200 || body != "HTTP/2.0 GET /h1?x=1 xff=127.0.0.1 body=" {
		t.Fatalf("HTTP/1.1 client: %d %q %v", code, body, err)
	}
	out, err := exec.Command("curl", "-sS", "--max-time", "10", "--data-binary", "hello", a.URL("web", "/post")).CombinedOutput()
	if err != nil || string(out) != "HTTP/2.0 POST /post xff=127.0.0.1 body=hello" {
		t.Fatalf("curl POST: %v %q", err, out)
	}
	c := h2cClient()
	for i := range 50 {
		resp, err := c.Get(a.URL("web", fmt.Sprintf("/n%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "HTTP/2.0 GET /n") {
			t.Fatalf("h2 client: %d %q", resp.StatusCode, b)
		}
	}
	if n := conns.Load(); n < 1 || n > 2 {
		t.Errorf("backend saw %d connections for 52 requests, want 1-2 (shared, max_conns_per_backend 2)", n)
	}
	if n := testkit.Metric(t, a.Registry(), "holdfast_backend_requests_total", map[string]string{"pool": "p", "code": "2xx"}); n != 52 {
		t.Errorf("holdfast_backend_requests_total{code=2xx} = %v, want 52", n)
	}
}

// TestUpstreamH2OverTLS: protocol h2 negotiates h2 by ALPN on the pool's
// TLS; a backend that only offers HTTP/1.1 is a connect failure.
func TestUpstreamH2OverTLS(t *testing.T) {
	be := httptest.NewUnstartedServer(h2Handler(nil))
	be.EnableHTTP2 = true
	be.StartTLS()
	t.Cleanup(be.Close)
	h1 := httptest.NewUnstartedServer(h2Handler(nil))
	h1.TLS = &tls.Config{NextProtos: []string{"http/1.1"}}
	h1.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused ALPN, expected
	h1.StartTLS()
	t.Cleanup(h1.Close)
	a := startL4(t, fmt.Sprintf(`
listeners:
  - name: web
    listen: 127.0.0.1:0
    pool: p
    routes: [ { path_prefix: /old, pool: old } ]
pools:
  - { name: p, protocol: h2, tls: { enabled: true, insecure_skip_verify: true }, backends: [%s], health: { type: none } }
  - { name: old, protocol: h2, tls: { enabled: true, insecure_skip_verify: true }, backends: [%s], health: { type: none } }
`, strings.TrimPrefix(be.URL, "https://"), strings.TrimPrefix(h1.URL, "https://")))
	code, body, err := testkit.Get(a.URL("web", "/x"))
	if err != nil || code != 200 || body != "HTTP/2.0 GET /x xff=127.0.0.1 body=" {
		t.Fatalf("h2 over TLS: %d %q %v", code, body, err)
	}
	code, body, err = testkit.Get(a.URL("web", "/old"))
	if err != nil || code != 502 || !strings.Contains(body, "pool old") {
		t.Fatalf("backend without h2: %d %q %v", code, body, err)
	}
}

// TestUpstreamH2Bodies: request bodies to an h2 pool, kept for retries
// (buffer_body) or streamed past it, arrive whole; a dead h2 pool answers
// a POST 502 without hanging.
func TestUpstreamH2Bodies(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%d", len(b))
	}), &http2.Server{})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	a := startL4(t, fmt.Sprintf(`
listeners:
  - name: web
    listen: 127.0.0.1:0
    pool: p
    routes: [ { path_prefix: /dead, pool: dead } ]
pools:
  - { name: p, protocol: h2c, backends: [%s], health: { type: none }, retries: { buffer_body: 1024 } }
  - { name: dead, protocol: h2c, backends: [127.0.0.1:1], health: { type: none } }
`, ln.Addr()))
	for _, n := range []int{10, 1000, 3 << 20} {
		for _, chunked := range []bool{false, true} {
			var body io.Reader = strings.NewReader(strings.Repeat("x", n))
			if chunked {
				body = io.MultiReader(body) // no length: chunked
			}
			resp, err := http.Post(a.URL("web", "/up"), "application/octet-stream", body)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != fmt.Sprint(n) {
				t.Fatalf("%d bytes (chunked %v): %d %q", n, chunked, resp.StatusCode, b)
			}
		}
	}
	resp, err := http.Post(a.URL("web", "/dead"), "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 502 {
		t.Fatalf("dead h2 pool: %d", resp.StatusCode)
	}
}
