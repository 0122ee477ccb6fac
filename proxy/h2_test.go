package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// h2cClient speaks h2 with prior knowledge to a plain listener.
func h2cClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
}

// echoBackend answers with what it saw: method, path, the forwarding
// headers and the body.
func echoBackend(t *testing.T) *testkit.Backend {
	be := testkit.StartBackend(t, "b")
	be.SetHandler(func(ctx *fasthttp.RequestCtx) {
		fmt.Fprintf(ctx, "%s %s proto=%s xff=%s xfp=%s cookie=%s body=", ctx.Method(), ctx.RequestURI(), ctx.Request.Header.Protocol(),
			ctx.Request.Header.Peek("X-Forwarded-For"), ctx.Request.Header.Peek("X-Forwarded-Proto"), ctx.Request.Header.Peek("Cookie"))
		if s := ctx.RequestBodyStream(); s != nil {
			_, _ = io.Copy(ctx, s)
		} else {
			_, _ = ctx.Write(ctx.Request.Body())
		}
		ctx.Response.Header.Set("X-Backend", "b")
	})
	return be
}

func TestH2PriorKnowledge(t *testing.T) {
	be := echoBackend(t)
	a := startL4(t, fmt.Sprintf(`
listeners:
  - name: web
    listen: 127.0.0.1:0
    pool: p
    request_id: true
    response_headers: { set: { X-Served-By: holdfast } }
pools:
  - { name: p, backends: [%s], health: { type: none } }
`, be.Addr))
	c := h2cClient()
	url := a.URL("web", "/a/../b?q=1")
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Add("Cookie", "a=1")
	req.Header.Add("Cookie", "b=2")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
		t.Fatalf("got %s %d", resp.Proto, resp.StatusCode)
	}
	want := "GET /b?q=1 proto=HTTP/1.1 xff=127.0.0.1 xfp=http cookie=a=1; b=2 body="
	if string(body) != want {
		t.Errorf("backend saw %q, want %q", body, want)
	}
	if resp.Header.Get("X-Served-By") != "holdfast" || resp.Header.Get("X-Backend") != "b" || resp.Header.Get("X-Request-Id") != "" {
		t.Errorf("response headers %v", resp.Header)
	}
	// A body of unknown length streams up and back.
	big := bytes.Repeat([]byte("x"), 3<<20)
	resp, err = c.Post(a.URL("web", "/up"), "application/octet-stream", io.MultiReader(bytes.NewReader(big)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.HasSuffix(body, big) {
		t.Fatalf("POST: %d, %d bytes back", resp.StatusCode, len(body))
	}
	// HTTP/1.1 still works on the same listener.
	if code, b, err := testkit.Get(a.URL("web", "/h1")); err != nil || code != 200 || !strings.HasPrefix(b, "GET /h1 proto=HTTP/1.1") {
		t.Fatalf("HTTP/1.1: %d %q %v", code, b, err)
	}
	if n := testkit.Metric(t, a.Registry(), "holdfast_requests_total", map[string]string{"listener": "web", "code": "2xx"}); n != 3 {
		t.Errorf("holdfast_requests_total{code=2xx} = %v, want 3", n)
	}
	// curl with prior knowledge.
	out, err := exec.Command("curl", "-sS", "-i", "--http2-prior-knowledge", "--max-time", "10", a.URL("web", "/curl")).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "HTTP/2 200") || !strings.Contains(string(out), "GET /curl") {
		t.Fatalf("curl --http2-prior-knowledge: %v\n%s", err, out)
	}
}

func TestH2NoBackendAnswers503(t *testing.T) {
	a := startL4(t, `
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: p }
pools:
  - { name: p, backends: [127.0.0.1:1], health: { type: none } }
`)
	resp, err := h2cClient().Get(a.URL("web", "/"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 502 || !strings.Contains(string(body), "pool p") {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}

func TestH2OverTLS(t *testing.T) {
	be := echoBackend(t)
	dir := t.TempDir()
	crt, key, _ := writeCert(t, dir, "web", 1, "web.test")
	a := startL4(t, fmt.Sprintf(`
listeners:
  - name: web
    listen: 127.0.0.1:0
    pool: p
    tls: [ { cert_file: %s, key_file: %s } ]
pools:
  - { name: p, backends: [%s], health: { type: none } }
`, crt, key, be.Addr))
	addr := a.ListenerAddr("web").String()
	_, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command("curl", "-sS", "-i", "--http2", "--cacert", crt, "--resolve", "web.test:"+port+":127.0.0.1",
		"--max-time", "10", "https://web.test:"+port+"/tls").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "HTTP/2 200") || !strings.Contains(string(out), "GET /tls proto=HTTP/1.1 xff=127.0.0.1 xfp=https") {
		t.Fatalf("curl --http2: %v\n%s", err, out)
	}
	// A client that offers only http/1.1 gets it.
	out, err = exec.Command("curl", "-sS", "-i", "--http1.1", "--cacert", crt, "--resolve", "web.test:"+port+":127.0.0.1",
		"--max-time", "10", "https://web.test:"+port+"/h1").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "HTTP/1.1 200") {
		t.Fatalf("curl --http1.1: %v\n%s", err, out)
	}
}

// TestH2BehindProxyProtocol: h2c prior knowledge after a PROXY header is
// still h2, and the client address is the one the header names; an
// HTTP/1.1 request after a header still works.
func TestH2BehindProxyProtocol(t *testing.T) {
	be := echoBackend(t)
	a := startL4(t, fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: p, proxy_protocol: true, trusted_proxies: [127.0.0.1/32] }
pools:
  - { name: p, backends: [%s], health: { type: none } }
`, be.Addr))
	addr := a.ListenerAddr("web").String()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, _ string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			_, err = io.WriteString(conn, "PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n")
			return conn, err
		},
	}}
	resp, err := c.Get("http://web/pp")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || !strings.Contains(string(body), "xff=203.0.113.7") {
		t.Fatalf("h2 after PROXY: %s %q", resp.Proto, body)
	}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(conn, "PROXY TCP4 203.0.113.8 127.0.0.1 5555 80\r\nGET /h1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	out, _ := io.ReadAll(conn)
	if !bytes.HasPrefix(out, []byte("HTTP/1.1 200")) || !bytes.Contains(out, []byte("xff=203.0.113.8")) {
		t.Fatalf("HTTP/1.1 after PROXY: %q", out)
	}
}
