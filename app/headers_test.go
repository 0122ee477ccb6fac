package app_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// Header rules, end to end: the listener's then the route's, on requests
// (as the backend received them) and on responses (as the client got
// them), any case, placeholders expanded, holdfast's own answers included.
func TestHeaderRules(t *testing.T) {
	b := startRawBackend(t, func(r *http.Request) string {
		return "HTTP/1.1 200 OK\r\nServer: secret/1.2\r\nX-Upstream: 1\r\nContent-Length: 2\r\n\r\nok"
	})
	a := testkit.StartApp(t, `
listeners:
  - name: web
    listen: "127.0.0.1:0"
    pool: p
    request_id: false
    request_headers:
      set: { X-Client: "{client_ip}", x-env: prod }
      add: { Via: "1.1 holdfast" }
      remove: [X-Internal]
    response_headers:
      set: { Strict-Transport-Security: "max-age=31536000" }
      remove: [server]
    routes:
      - { host: redir.example, redirect: { scheme: https } }
      - path_prefix: /r/
        pool: p
        request_headers: { set: { X-Env: route }, remove: [x-secret] }
        response_headers: { add: { X-Route: "{scheme}://{host}" }, remove: [X-UPSTREAM] }
pools: [{ name: p, health: { type: none }, backends: ["`+b.Addr+`"] }]
`)
	waitReady(t, a)
	addr := a.ListenerAddr("web").String()
	send := func(path, host string) *http.Response {
		resp, _ := rawRoundTrip(t, addr, "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\n"+
			"x-internal: a\r\nX-Secret: b\r\nX-ENV: client\r\nVia: 1.0 front\r\nConnection: keep-alive\r\n\r\n")
		return resp
	}

	t.Run("listener rules", func(t *testing.T) {
		resp := send("/", "h.example")
		r := nextRequest(t, b)
		checks := []struct{ name, got, want string }{
			{"remove, other case", r.Header.Get("X-Internal"), ""},
			{"set replaces the client's value", strings.Join(r.Header.Values("X-Env"), "|"), "prod"},
			{"add appends", strings.Join(r.Header.Values("Via"), "|"), "1.0 front|1.1 holdfast"},
			{"placeholder", r.Header.Get("X-Client"), "127.0.0.1"},
			{"untouched", r.Header.Get("X-Secret"), "b"},
			{"response set", resp.Header.Get("Strict-Transport-Security"), "max-age=31536000"},
			// The backend's Server goes; holdfast's own name is sent
			// when a response has none (fasthttp's Server.Name).
			{"response remove", resp.Header.Get("Server"), "holdfast"},
			{"response untouched", resp.Header.Get("X-Upstream"), "1"},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
			}
		}
	})
	t.Run("route rules after the listener's", func(t *testing.T) {
		resp := send("/r/x", "h.example:81")
		r := nextRequest(t, b)
		checks := []struct{ name, got, want string }{
			{"route set wins", strings.Join(r.Header.Values("X-Env"), "|"), "route"},
			{"route remove", r.Header.Get("X-Secret"), ""},
			{"listener remove still applies", r.Header.Get("X-Internal"), ""},
			{"response placeholders", resp.Header.Get("X-Route"), "http://h.example:81"},
			{"route response remove", resp.Header.Get("X-Upstream"), ""},
			{"listener response set", resp.Header.Get("Strict-Transport-Security"), "max-age=31536000"},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
			}
		}
	})
	t.Run("holdfast's own answers", func(t *testing.T) {
		resp := send("/", "redir.example")
		if resp.StatusCode != 302 || resp.Header.Get("Strict-Transport-Security") == "" {
			t.Errorf("redirect: %d, HSTS %q", resp.StatusCode, resp.Header.Get("Strict-Transport-Security"))
		}
	})
}

// roundTripFrom is rawRoundTrip from a given loopback source address.
func roundTripFrom(t *testing.T, local, addr, raw string) *http.Response {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// X-Request-ID: kept from a trusted proxy, generated for anyone else (a
// client's own value replaced), unique, sent upstream.
func TestRequestID(t *testing.T) {
	b := startRawBackend(t, okBackend)
	a := testkit.StartApp(t, `
listeners:
  - { name: web, listen: "127.0.0.1:0", pool: p, trusted_proxies: [127.0.0.2] }
  - { name: off, listen: "127.0.0.1:0", pool: p, request_id: false }
pools: [{ name: p, health: { type: none }, backends: ["`+b.Addr+`"] }]
`)
	waitReady(t, a)
	hexID := regexp.MustCompile(`^[0-9a-f]{32}$`)
	req := func(id string) string {
		s := "GET / HTTP/1.1\r\nHost: x\r\n"
		if id != "" {
			s += "X-Request-ID: " + id + "\r\n"
		}
		return s + "\r\n"
	}
	web := a.ListenerAddr("web").String()
	seen := map[string]bool{}
	for _, from := range []string{"127.0.0.1", "127.0.0.1", "127.0.0.3"} {
		roundTripFrom(t, from, web, req(""))
		got := nextRequest(t, b).Header.Get("X-Request-ID")
		if !hexID.MatchString(got) || seen[got] {
			t.Errorf("from %s with none: backend saw %q, want a new 32-hex id", from, got)
		}
		seen[got] = true
	}
	roundTripFrom(t, "127.0.0.1", web, req("spoofed"))
	if got := nextRequest(t, b).Header.Get("X-Request-ID"); got == "spoofed" || !hexID.MatchString(got) {
		t.Errorf("untrusted client's id: backend saw %q, want it replaced", got)
	}
	roundTripFrom(t, "127.0.0.2", web, req("edge-42"))
	if got := nextRequest(t, b).Header.Get("X-Request-ID"); got != "edge-42" {
		t.Errorf("trusted proxy's id: backend saw %q, want edge-42", got)
	}
	roundTripFrom(t, "127.0.0.1", a.ListenerAddr("off").String(), req(""))
	if got := nextRequest(t, b).Header.Get("X-Request-ID"); got != "" {
		t.Errorf("request_id: false: backend saw %q, want none", got)
	}
}
