package admin_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-lb/holdfast/admin"
	"github.com/holdfast-lb/holdfast/balancer"
	"github.com/holdfast-lb/holdfast/proxy"
)

// fakeRuntime is a ready process that counts reloads.
type fakeRuntime struct{ reloads atomic.Int64 }

func (*fakeRuntime) NotReady() string                       { return "" }
func (*fakeRuntime) PoolNotReady(string) (string, bool)     { return "", true }
func (*fakeRuntime) Draining() bool                         { return false }
func (*fakeRuntime) Status() []balancer.PoolStatus          { return nil }
func (*fakeRuntime) ListenerStatus() []proxy.ListenerStatus { return nil }
func (f *fakeRuntime) Reload() (string, error) {
	f.reloads.Add(1)
	return "ok", nil
}

const token = "s3cret-token"

// serve starts the admin server for h on 127.0.0.1:0 and returns its
// address.
func serve(t *testing.T, h http.Handler, to admin.Timeouts) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := admin.NewServer(h, to)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String()
}

func start(t *testing.T, s admin.Settings) (string, *fakeRuntime, *admin.Handler) {
	t.Helper()
	rt := &fakeRuntime{}
	h := admin.New(rt, prometheus.NewRegistry(), s)
	return serve(t, h, admin.Timeouts{}), rt, h
}

// call sends one request and returns the status, the body and the
// response headers.
func call(t *testing.T, method, url string, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

func TestToken(t *testing.T) {
	addr, rt, _ := start(t, admin.Settings{Token: token})
	cases := []struct {
		name, method, path string
		hdr                map[string]string
		want               int
	}{
		{"metrics without a token", "GET", "/metrics", nil, 401},
		{"metrics with a wrong token", "GET", "/metrics", bearer("wrong"), 401},
		{"metrics with a prefix of the token", "GET", "/metrics", bearer(token[:4]), 401},
		{"metrics with the token and more", "GET", "/metrics", bearer(token + "x"), 401},
		{"metrics with basic auth", "GET", "/metrics", map[string]string{"Authorization": "Basic " + token}, 401},
		{"metrics with the token", "GET", "/metrics", bearer(token), 200},
		{"scheme is case-insensitive", "GET", "/metrics", map[string]string{"Authorization": "bearer " + token}, 200},
		{"status.json without a token", "GET", "/status.json", nil, 401},
		{"status.json with the token", "GET", "/status.json", bearer(token), 200},
		{"status page with the token", "GET", "/status", bearer(token), 200},
		{"reload without a token", "POST", "/reload", nil, 401},
		{"reload with a wrong token", "POST", "/reload", bearer("wrong"), 401},
		{"unknown path without a token", "GET", "/nope", nil, 401},
		{"unknown path with the token", "GET", "/nope", bearer(token), 404},
		{"healthz is open", "GET", "/healthz", nil, 200},
		{"healthz HEAD is open", "HEAD", "/healthz", nil, 200},
		{"readyz is open", "GET", "/readyz", nil, 200},
		{"readyz with a wrong token is still open", "GET", "/readyz", bearer("wrong"), 200},
		{"POST healthz is not open", "POST", "/healthz", nil, 401},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body, h := call(t, c.method, "http://"+addr+c.path, c.hdr)
			if code != c.want {
				t.Fatalf("%s %s: %d %q, want %d", c.method, c.path, code, body, c.want)
			}
			if code == 401 && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: Bearer (got %q)", h.Get("WWW-Authenticate"))
			}
		})
	}
	if n := rt.reloads.Load(); n != 0 {
		t.Errorf("%d reloads ran without the token", n)
	}
	if code, body, _ := call(t, "POST", "http://"+addr+"/reload", bearer(token)); code != 200 || rt.reloads.Load() != 1 {
		t.Errorf("POST /reload with the token: %d %q, %d reloads; want 200 and 1", code, body, rt.reloads.Load())
	}
}

func TestNoTokenConfigured(t *testing.T) {
	addr, _, _ := start(t, admin.Settings{})
	for _, path := range []string{"/metrics", "/status.json", "/healthz"} {
		if code, body, _ := call(t, "GET", "http://"+addr+path, nil); code != 200 {
			t.Errorf("GET %s without a token configured: %d %q", path, code, body)
		}
	}
}

func TestPprof(t *testing.T) {
	cases := []struct {
		name  string
		pprof bool
		path  string
		want  int
	}{
		{"index off", false, "/debug/pprof/", 404},
		{"heap off", false, "/debug/pprof/heap", 404},
		{"cmdline off", false, "/debug/pprof/cmdline", 404},
		{"index on", true, "/debug/pprof/", 200},
		{"heap on", true, "/debug/pprof/heap?debug=1", 200},
		{"cmdline on", true, "/debug/pprof/cmdline", 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr, _, _ := start(t, admin.Settings{Token: token, Pprof: c.pprof})
			if code, body, _ := call(t, "GET", "http://"+addr+c.path, bearer(token)); code != c.want {
				t.Fatalf("GET %s (pprof %v): %d %.80q, want %d", c.path, c.pprof, code, body, c.want)
			}
			// Enabled or not, profiles need the token.
			if code, _, _ := call(t, "GET", "http://"+addr+c.path, nil); code != 401 {
				t.Errorf("GET %s without the token: %d, want 401", c.path, code)
			}
		})
	}
}

// Set (a reload) swaps the token and pprof for the next request.
func TestSettingsReload(t *testing.T) {
	addr, _, h := start(t, admin.Settings{Token: "old"})
	h.Set(admin.Settings{Token: "new", Pprof: true})
	steps := []struct {
		name string
		tok  string
		path string
		want int
	}{
		{"old token refused", "old", "/metrics", 401},
		{"new token accepted", "new", "/metrics", 200},
		{"pprof turned on", "new", "/debug/pprof/", 200},
	}
	for _, s := range steps {
		if code, _, _ := call(t, "GET", "http://"+addr+s.path, bearer(s.tok)); code != s.want {
			t.Errorf("%s: %d, want %d", s.name, code, s.want)
		}
	}
}

// A browser page on another site must not drive the API through the
// operator's browser, even when the browser would add a valid token.
func TestCrossOrigin(t *testing.T) {
	addr, rt, _ := start(t, admin.Settings{Token: token})
	auth := func(extra map[string]string) map[string]string {
		h := bearer(token)
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	cases := []struct {
		name, method, path string
		hdr                map[string]string
		want               int
		reloaded           bool
	}{
		{"cross-site POST reload", "POST", "/reload", auth(map[string]string{"Sec-Fetch-Site": "cross-site"}), 403, false},
		{"same-site (other origin) POST reload", "POST", "/reload", auth(map[string]string{"Sec-Fetch-Site": "same-site"}), 403, false},
		{"foreign Origin POST reload", "POST", "/reload", auth(map[string]string{"Origin": "http://evil.example"}), 403, false},
		{"cross-site POST without a token", "POST", "/reload", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, false},
		{"same-origin POST reload", "POST", "/reload", auth(map[string]string{"Sec-Fetch-Site": "same-origin"}), 200, true},
		{"own Origin POST reload", "POST", "/reload", auth(map[string]string{"Origin": "http://" + addr}), 200, true},
		{"user-initiated (typed URL) POST", "POST", "/reload", auth(map[string]string{"Sec-Fetch-Site": "none"}), 200, true},
		{"non-browser POST reload (curl, the CLI)", "POST", "/reload", auth(nil), 200, true},
		{"cross-site GET is a read", "GET", "/status.json", auth(map[string]string{"Sec-Fetch-Site": "cross-site"}), 200, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := rt.reloads.Load()
			code, body, _ := call(t, c.method, "http://"+addr+c.path, c.hdr)
			if code != c.want {
				t.Fatalf("%d %q, want %d", code, body, c.want)
			}
			if got := rt.reloads.Load() - before; got != map[bool]int64{false: 0, true: 1}[c.reloaded] {
				t.Errorf("%d reloads ran, want reloaded=%v", got, c.reloaded)
			}
		})
	}
}

// A client that trickles its request head is cut at the header timeout,
// and other clients are served meanwhile.
func TestSlowHeaderCut(t *testing.T) {
	const headerTimeout = 300 * time.Millisecond
	addr := serve(t, admin.New(&fakeRuntime{}, prometheus.NewRegistry(), admin.Settings{}), admin.Timeouts{Header: headerTimeout})
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	began := time.Now()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: admin\r\n"); err != nil { // no blank line: the head never ends
		t.Fatal(err)
	}
	if code, _, _ := call(t, "GET", "http://"+addr+"/healthz", nil); code != 200 {
		t.Fatalf("another client while one stalls: %d", code)
	}
	// The server must close the stalled connection: our own deadline
	// here is only the test's bound.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(bufio.NewReader(c))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("stalled connection still open after %s (header timeout %s)", time.Since(began).Round(time.Millisecond), headerTimeout)
	}
	if took := time.Since(began); took < headerTimeout {
		t.Fatalf("connection closed after %s, before the header timeout %s", took, headerTimeout)
	}
}

func TestOversizedHeader(t *testing.T) {
	addr, _, _ := start(t, admin.Settings{})
	code, _, _ := call(t, "GET", "http://"+addr+"/healthz", map[string]string{"X-Big": strings.Repeat("a", 2*admin.MaxHeaderBytes)})
	if code != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("oversized head: %d, want 431", code)
	}
}

func TestServerTimeouts(t *testing.T) {
	cases := []struct {
		name string
		in   admin.Timeouts
		want admin.Timeouts
	}{
		{"defaults", admin.Timeouts{}, admin.Timeouts{Header: admin.DefaultHeaderTimeout, Read: admin.DefaultReadTimeout, Write: admin.DefaultWriteTimeout, Idle: admin.DefaultIdleTimeout}},
		{"override one", admin.Timeouts{Header: time.Second}, admin.Timeouts{Header: time.Second, Read: admin.DefaultReadTimeout, Write: admin.DefaultWriteTimeout, Idle: admin.DefaultIdleTimeout}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := admin.NewServer(http.NotFoundHandler(), c.in)
			got := admin.Timeouts{Header: s.ReadHeaderTimeout, Read: s.ReadTimeout, Write: s.WriteTimeout, Idle: s.IdleTimeout}
			if got != c.want || s.MaxHeaderBytes != admin.MaxHeaderBytes {
				t.Fatalf("server timeouts %+v, max header %d; want %+v, %d", got, s.MaxHeaderBytes, c.want, admin.MaxHeaderBytes)
			}
			// pprof refuses a CPU profile not shorter than WriteTimeout.
			if s.WriteTimeout <= 30*time.Second {
				t.Errorf("WriteTimeout %s: the default 30s CPU profile would be refused", s.WriteTimeout)
			}
		})
	}
}
