package app_test

// End-to-end tests over real loopback sockets: real backends (testkit or raw
// TCP), a real holdfast App, real clients.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// rawBackend is a TCP server on 127.0.0.1:0 that parses each request with
// net/http (so the test sees exactly what holdfast sent) and answers with the
// raw bytes respond returns. respond returning "" closes the connection
// without an answer.
type rawBackend struct {
	Addr  string
	conns atomic.Int64
	reqs  chan *http.Request
}

func startRawBackend(t *testing.T, respond func(r *http.Request) string) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &rawBackend{Addr: ln.Addr().String(), reqs: make(chan *http.Request, 64)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.conns.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				for range 100 {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, r.Body)
					select {
					case b.reqs <- r:
					default:
					}
					out := respond(r)
					if out == "" {
						return
					}
					if _, err := io.WriteString(c, out); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range open {
			_ = c.Close() // holdfast keeps idle upstream connections open
		}
		mu.Unlock()
		wg.Wait()
	})
	return b
}

// rawRoundTrip writes raw bytes to addr and reads one response.
func rawRoundTrip(t *testing.T, addr, raw string) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading response to %.40q: %v", raw, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, string(body)
}

func adminGet(t *testing.T, a *testkit.App, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + a.AdminAddr().String() + path)
	if err != nil {
		t.Fatalf("admin %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// waitReady waits until every pool of the app has a routable backend.
func waitReady(t *testing.T, a *testkit.App) {
	t.Helper()
	testkit.WaitFor(t, 5*time.Second, "app ready", a.Ready)
}

func TestBalancingShares(t *testing.T) {
	cases := []struct {
		name    string
		balance string
		weights []int
		n       int64
		slack   float64 // allowed relative deviation from the weighted share
	}{
		{"round_robin weighted is exact", "round_robin", []int{1, 2, 3}, 600, 0},
		{"round_robin equal is exact", "round_robin", []int{1, 1, 1, 1}, 400, 0},
		{"random weighted is near", "random", []int{1, 3}, 800, 0.2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var backends []string
			total := 0
			for i, w := range c.weights {
				b := testkit.StartBackend(t, fmt.Sprintf("b%d", i))
				backends = append(backends, fmt.Sprintf("{ address: %q, weight: %d }", b.Addr, w))
				total += w
			}
			a := testkit.StartApp(t, fmt.Sprintf(`
listeners: [{ name: web, listen: "127.0.0.1:0", pool: api }]
pools:
  - name: api
    balance: %s
    health: { type: none }
    backends: [%s]
`, c.balance, strings.Join(backends, ", ")))
			waitReady(t, a)
			url := a.URL("web", "/")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res := testkit.Load(ctx, 4, c.n, func(_ int64, r *fasthttp.Request) { r.SetRequestURI(url) })
			if res.OK != c.n {
				t.Fatalf("want %d OK: %s", c.n, res)
			}
			for i, w := range c.weights {
				want := float64(c.n) * float64(w) / float64(total)
				got := float64(res.ByBody[fmt.Sprintf("b%d\n", i)])
				if d := got - want; d > want*c.slack || -d > want*c.slack {
					t.Errorf("b%d (weight %d) served %v of %d, want %v (±%.0f%%); all: %v", i, w, got, c.n, want, c.slack*100, res.ByBody)
				}
			}
		})
	}
}

func TestRouting(t *testing.T) {
	names := []string{"def", "api", "wild", "static", "v2"}
	pools := ""
	for _, n := range names {
		b := testkit.StartBackend(t, n)
		pools += fmt.Sprintf("  - { name: %s, health: { type: none }, backends: [%q] }\n", n, b.Addr)
	}
	a := testkit.StartApp(t, `
listeners:
  - name: web
    listen: "127.0.0.1:0"
    pool: def
    routes:
      - { host: api.example.com, path_prefix: /v2/, pool: v2 }
      - { host: api.example.com, pool: api }
      - { host: "*.example.org", pool: wild }
      - { path_prefix: /static/, pool: static }
pools:
`+pools)
	waitReady(t, a)
	cases := []struct {
		name, host, path, want string
	}{
		{"exact host", "api.example.com", "/users", "api"},
		{"exact host, any case, with port", "API.Example.COM:8080", "/users", "api"},
		{"exact host and prefix beats host alone (first match)", "api.example.com", "/v2/users", "v2"},
		{"prefix needs its trailing slash", "api.example.com", "/v2", "api"},
		{"wildcard host", "shop.example.org", "/", "wild"},
		{"wildcard host, deeper", "a.b.example.org", "/", "wild"},
		{"wildcard does not match the bare domain", "example.org", "/", "def"},
		{"wildcard does not match a lookalike", "shopexample.org", "/", "def"},
		{"path prefix on any host", "other.net", "/static/app.js", "static"},
		{"path prefix is a prefix, not a substring", "other.net", "/x/static/app.js", "def"},
		{"default pool", "other.net", "/", "def"},
	}
	client := &fasthttp.Client{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(a.URL("web", c.path))
			req.UseHostHeader = true
			req.Header.SetHost(c.host)
			if err := client.DoTimeout(req, resp, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(resp.Body())); resp.StatusCode() != 200 || got != c.want {
				t.Errorf("Host %s path %s: %d %q, want 200 from %s", c.host, c.path, resp.StatusCode(), got, c.want)
			}
		})
	}
}

func TestForwardedHeaders(t *testing.T) {
	b := startRawBackend(t, func(r *http.Request) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" +
			"Connection: X-Upstream-Secret\r\nX-Upstream-Secret: 1\r\n" +
			"Keep-Alive: timeout=99\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\nok"
	})
	a := testkit.StartApp(t, fmt.Sprintf(`
listeners: [{ name: web, listen: "127.0.0.1:0", pool: api }]
pools: [{ name: api, health: { type: none }, backends: [%q] }]
`, b.Addr))
	waitReady(t, a)
	resp, body := rawRoundTrip(t, a.ListenerAddr("web").String(), "GET /fwd?q=1 HTTP/1.1\r\n"+
		"Host: Shop.Example.com\r\n"+
		"X-Forwarded-For: 203.0.113.7\r\n"+
		"Connection: Foo, Bar\r\n"+
		"Foo: secret\r\n"+
		"Bar: secret2\r\n"+
		"Keep-Alive: timeout=5\r\n"+
		"Proxy-Connection: keep-alive\r\n"+
		"TE: trailers\r\n"+
		"X-Kept: yes\r\n"+
		"\r\n")
	var got *http.Request
	select {
	case got = <-b.reqs:
	case <-time.After(5 * time.Second):
		t.Fatal("backend saw no request")
	}

	t.Run("request", func(t *testing.T) {
		cases := []struct {
			header, want string
		}{
			{"X-Forwarded-For", "203.0.113.7, 127.0.0.1"},
			{"X-Forwarded-Proto", "http"},
			{"X-Forwarded-Host", "Shop.Example.com"},
			{"X-Kept", "yes"},
			{"Foo", ""},
			{"Bar", ""},
			{"Keep-Alive", ""},
			{"Proxy-Connection", ""},
			{"Te", "trailers"}, // SPEC: TE is hop-by-hop but for "trailers"
		}
		for _, c := range cases {
			if v := strings.Join(got.Header.Values(c.header), "|"); v != c.want {
				t.Errorf("backend saw %s: %q, want %q", c.header, v, c.want)
			}
		}
		if got.Host != "Shop.Example.com" {
			t.Errorf("backend saw Host %q, want it unchanged", got.Host)
		}
		if got.RequestURI != "/fwd?q=1" {
			t.Errorf("backend saw URI %q", got.RequestURI)
		}
		for _, v := range got.Header.Values("Connection") {
			if strings.Contains(strings.ToLower(v), "foo") || strings.Contains(strings.ToLower(v), "bar") {
				t.Errorf("Connection header naming hop headers reached the backend: %q", v)
			}
		}
	})
	t.Run("response", func(t *testing.T) {
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		for _, h := range []string{"X-Upstream-Secret", "Keep-Alive", "Proxy-Connection"} {
			if v := resp.Header.Get(h); v != "" {
				t.Errorf("client got hop-by-hop %s: %q", h, v)
			}
		}
		if v := resp.Header.Get("Connection"); strings.Contains(strings.ToLower(v), "upstream") {
			t.Errorf("client got the backend's Connection header %q", v)
		}
		if resp.Header.Get("X-Kept") != "yes" {
			t.Errorf("end-to-end header X-Kept lost: %v", resp.Header)
		}
	})
}

func TestErrorResponses(t *testing.T) {
	slow := testkit.StartBackend(t, "slow")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs before the backend closes
	slow.SetHandler(func(ctx *fasthttp.RequestCtx) {
		select {
		case <-release:
		case <-time.After(5 * time.Second):
		}
	})
	closer := startRawBackend(t, func(*http.Request) string { return "" })
	ok := testkit.StartBackend(t, "ok")
	a := testkit.StartApp(t, fmt.Sprintf(`
listeners:
  - name: web
    listen: "127.0.0.1:0"
    pool: main
    max_header_bytes: 2048
    max_body_bytes: 1024
    routes:
      - { path_prefix: /down/, pool: down }
      - { path_prefix: /reset/, pool: flaky }
      - { path_prefix: /slow/, pool: sluggish }
pools:
  - { name: main, health: { type: none }, backends: [%q] }
  - name: down
    panic_threshold: "0%%"
    health: { type: tcp, interval: 20ms, timeout: 200ms, rise: 1, fall: 1 }
    backends: [%q, %q]
  - name: flaky
    health: { type: none }
    retries: { attempts: 2, on: [connect_failure, reset] }
    backends: [%q]
  - name: sluggish
    health: { type: none }
    timeouts: { response: 200ms }
    backends: [%q]
`, ok.Addr, testkit.FreeAddr(t), testkit.FreeAddr(t), closer.Addr, slow.Addr))
	testkit.WaitFor(t, 5*time.Second, "pool down has no routable backend", func() bool {
		p := a.Pool("down")
		if p == nil {
			return false
		}
		st := p.Status()
		return st.Total == 2 && st.Routable == 0 && st.Backends[0].State == "unhealthy" && st.Backends[1].State == "unhealthy"
	})
	addr := a.ListenerAddr("web").String()
	get := func(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n" }
	cases := []struct {
		name     string
		raw      string
		code     int
		pool     string
		after    func(t *testing.T)
		bodyWant string
	}{
		{name: "503 no routable backend", raw: get("/down/x"), code: 503, pool: "down"},
		{name: "502 upstream failed after retries", raw: get("/reset/x"), code: 502, pool: "flaky", after: func(t *testing.T) {
			if n := closer.conns.Load(); n != 3 {
				t.Errorf("backend saw %d attempts, want 3 (1 + 2 retries)", n)
			}
		}},
		{name: "504 upstream slower than timeouts.response", raw: get("/slow/x"), code: 504, pool: "sluggish", after: func(t *testing.T) {
			if n := slow.Requests(); n != 1 {
				t.Errorf("slow backend got %d requests, want 1 (a timeout is not retried)", n)
			}
		}},
		{name: "400 malformed request", raw: "\x16\x03\x01garbage\r\n\r\n", code: 400, pool: "main"},
		{name: "400 bad request line", raw: "GET\r\n\r\n", code: 400, pool: "main"},
		{name: "431 headers over max_header_bytes", raw: "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 4096) + "\r\n\r\n",
			code: 431, pool: "main"},
		{name: "413 body over max_body_bytes", raw: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n" + strings.Repeat("b", 4096),
			code: 413, pool: "main"},
		{name: "413 chunked body over max_body_bytes", raw: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" +
			strings.Repeat("b", 0x800) + "\r\n0\r\n\r\n", code: 413, pool: "main"},
		{name: "body at the limit passes", raw: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n" + strings.Repeat("b", 1024),
			code: 200, bodyWant: "ok\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := rawRoundTrip(t, addr, c.raw)
			if resp.StatusCode != c.code {
				t.Fatalf("got %d %q, want %d", resp.StatusCode, body, c.code)
			}
			if c.pool != "" {
				if !strings.Contains(body, "pool "+c.pool) || !strings.HasPrefix(body, fmt.Sprint(c.code)) {
					t.Errorf("body %q should start with the code and name pool %s", body, c.pool)
				}
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
					t.Errorf("Content-Type %q, want text/plain", ct)
				}
			}
			if c.bodyWant != "" && body != c.bodyWant {
				t.Errorf("body %q, want %q", body, c.bodyWant)
			}
			if c.after != nil {
				c.after(t)
			}
		})
	}
	t.Run("readyz 200 while one of the listener's pools can route, pool down 503", func(t *testing.T) {
		if code, body := adminGet(t, a, "/readyz"); code != 200 {
			t.Errorf("/readyz %d %q, want 200: pool main behind the listener routes", code, body)
		}
		if code, body := adminGet(t, a, "/readyz?pool=down"); code != 503 {
			t.Errorf("/readyz?pool=down %d %q, want 503", code, body)
		}
		if code, _ := adminGet(t, a, "/healthz"); code != 200 {
			t.Errorf("/healthz %d, want 200: the process serves", code)
		}
	})
}

func TestLargeBodies(t *testing.T) {
	const size = 8 << 20
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i*7 + i>>11)
	}
	sum := sha256.Sum256(payload)
	wantHash := hex.EncodeToString(sum[:])

	b := testkit.StartBackend(t, "big")
	b.SetHandler(func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/upload":
			h := sha256.New()
			if s := ctx.RequestBodyStream(); s != nil {
				_, _ = io.Copy(h, s)
			} else {
				h.Write(ctx.PostBody())
			}
			ctx.SetBodyString(hex.EncodeToString(h.Sum(nil)))
		case "/download-length":
			ctx.SetBody(payload)
		case "/download-chunked":
			ctx.SetBodyStream(bytes.NewReader(payload), -1)
		}
	})
	a := testkit.StartApp(t, fmt.Sprintf(`
listeners: [{ name: web, listen: "127.0.0.1:0", pool: api }]
pools: [{ name: api, health: { type: none }, backends: [%q] }]
`, b.Addr))
	waitReady(t, a)
	client := &http.Client{Timeout: 30 * time.Second}

	uploads := []struct {
		name string
		body func() io.Reader
		n    int64
	}{
		{"upload with Content-Length", func() io.Reader { return bytes.NewReader(payload) }, size},
		{"upload chunked", func() io.Reader { return io.MultiReader(bytes.NewReader(payload)) }, -1},
	}
	for _, u := range uploads {
		t.Run(u.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", a.URL("web", "/upload"), u.body())
			req.ContentLength = u.n
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(got) != wantHash {
				t.Errorf("%d, backend hashed %q, want %s", resp.StatusCode, got, wantHash)
			}
		})
	}
	downloads := []struct {
		name, path string
		chunked    bool
	}{
		{"download with Content-Length", "/download-length", false},
		{"download chunked", "/download-chunked", true},
	}
	for _, d := range downloads {
		t.Run(d.name, func(t *testing.T) {
			resp, err := client.Get(a.URL("web", d.path))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			h := sha256.New()
			n, err := io.Copy(h, resp.Body)
			if err != nil {
				t.Fatalf("after %d bytes: %v", n, err)
			}
			if resp.StatusCode != 200 || n != size || hex.EncodeToString(h.Sum(nil)) != wantHash {
				t.Errorf("%d, %d bytes, want 200 and %d intact bytes", resp.StatusCode, n, size)
			}
			if !d.chunked && resp.ContentLength != size {
				t.Errorf("Content-Length %d, want %d", resp.ContentLength, size)
			}
		})
	}
	// The upstream connection is reusable after a streamed body: a small
	// request afterwards still works.
	if status, body, err := testkit.Get(a.URL("web", "/download-length")); err != nil || status != 200 || len(body) != size {
		t.Errorf("after streaming: %d, %d bytes, %v", status, len(body), err)
	}
}

func TestDrain(t *testing.T) {
	b := testkit.StartBackend(t, "b")
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	b.SetHandler(func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			started <- struct{}{}
			select {
			case <-release:
			case <-time.After(5 * time.Second):
			}
			ctx.SetBodyString("finished")
			return
		}
		ctx.SetBodyString("b\n")
	})
	a := testkit.StartApp(t, fmt.Sprintf(`
listeners: [{ name: web, listen: "127.0.0.1:0", pool: api, timeouts: { drain: 10s } }]
pools: [{ name: api, health: { type: none }, backends: [%q] }]
`, b.Addr))
	waitReady(t, a)
	if code, _ := adminGet(t, a, "/readyz"); code != 200 {
		t.Fatalf("/readyz %d before drain, want 200", code)
	}
	addr := a.ListenerAddr("web").String()

	type result struct {
		status int
		body   string
		err    error
	}
	inflight := make(chan result, 1)
	go func() {
		s, body, err := fasthttp.GetTimeout(nil, "http://"+addr+"/slow", 10*time.Second)
		inflight <- result{s, string(body), err}
	}()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("slow request never reached the backend")
	}

	stopped := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
		close(stopped)
	}()
	testkit.WaitFor(t, 5*time.Second, "/readyz 503 while draining", func() bool {
		code, _ := adminGet(t, a, "/readyz")
		return code == 503
	})
	testkit.WaitFor(t, 5*time.Second, "new connections refused", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	select {
	case r := <-inflight:
		t.Fatalf("in-flight request ended before its backend answered: %+v", r)
	case <-stopped:
		t.Fatal("Shutdown returned with a request in flight")
	default:
	}

	close(release)
	select {
	case r := <-inflight:
		if r.err != nil || r.status != 200 || r.body != "finished" {
			t.Errorf("in-flight request: %d %q %v, want 200 finished", r.status, r.body, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("in-flight request never completed")
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the last request")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("listener accepts connections after Shutdown")
	}
}

func TestAdminEndpoints(t *testing.T) {
	b1 := testkit.StartBackend(t, "b1")
	b2 := testkit.StartBackend(t, "b2")
	a := testkit.StartApp(t, fmt.Sprintf(`
listeners: [{ name: web, listen: "127.0.0.1:0", pool: api }]
pools: [{ name: api, health: { type: none }, backends: [%q, %q] }]
`, b1.Addr, b2.Addr))
	waitReady(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := a.URL("web", "/")
	if res := testkit.Load(ctx, 2, 20, func(_ int64, r *fasthttp.Request) { r.SetRequestURI(url) }); res.OK != 20 {
		t.Fatalf("traffic: %s", res)
	}

	t.Run("healthz", func(t *testing.T) {
		if code, _ := adminGet(t, a, "/healthz"); code != 200 {
			t.Errorf("%d, want 200", code)
		}
	})
	t.Run("readyz", func(t *testing.T) {
		if code, body := adminGet(t, a, "/readyz"); code != 200 {
			t.Errorf("%d %q, want 200", code, body)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		code, body := adminGet(t, a, "/metrics")
		if code != 200 {
			t.Fatalf("%d", code)
		}
		want := []string{
			`holdfast_requests_total{code="2xx",listener="web",pool="api"} 20`,
			`holdfast_request_duration_seconds_count{listener="web",pool="api"} 20`,
			fmt.Sprintf(`holdfast_backend_requests_total{backend=%q,code="2xx",pool="api"} 10`, b1.Addr),
			fmt.Sprintf(`holdfast_backend_requests_total{backend=%q,code="2xx",pool="api"} 10`, b2.Addr),
			fmt.Sprintf(`holdfast_backend_up{backend=%q,pool="api"} 1`, b1.Addr),
			fmt.Sprintf(`holdfast_backend_state{backend=%q,pool="api",state="healthy"} 1`, b2.Addr),
			fmt.Sprintf(`holdfast_backend_inflight{backend=%q,pool="api"} 0`, b1.Addr),
			`holdfast_listener_connections{listener="web"}`,
			`holdfast_config_reloads_total 0`,
			`holdfast_config_reload_failures_total 0`,
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Errorf("/metrics lacks %s", w)
			}
		}
	})
	t.Run("status.json", func(t *testing.T) {
		code, body := adminGet(t, a, "/status.json")
		if code != 200 {
			t.Fatalf("%d", code)
		}
		var doc struct {
			Ready bool `json:"ready"`
			Pools []struct {
				Name     string `json:"name"`
				Balance  string `json:"balance"`
				Routable int    `json:"routable"`
				Backends []struct {
					Address  string `json:"address"`
					State    string `json:"state"`
					Routable bool   `json:"routable"`
				} `json:"backends"`
			} `json:"pools"`
		}
		if err := json.Unmarshal([]byte(body), &doc); err != nil {
			t.Fatalf("%v in %s", err, body)
		}
		if !doc.Ready || len(doc.Pools) != 1 || doc.Pools[0].Name != "api" || doc.Pools[0].Routable != 2 {
			t.Fatalf("unexpected status: %s", body)
		}
		seen := map[string]bool{}
		for _, be := range doc.Pools[0].Backends {
			if be.State != "healthy" || !be.Routable {
				t.Errorf("backend %s: state %s routable %v", be.Address, be.State, be.Routable)
			}
			seen[be.Address] = true
		}
		if !seen[b1.Addr] || !seen[b2.Addr] || len(seen) != 2 {
			t.Errorf("backends listed %v, want %s and %s", seen, b1.Addr, b2.Addr)
		}
	})
	t.Run("status page", func(t *testing.T) {
		code, body := adminGet(t, a, "/status")
		if code != 200 || !strings.Contains(body, b1.Addr) || !strings.Contains(body, "pool api") {
			t.Errorf("%d, page lacks the pool or a backend", code)
		}
	})
}

// A request whose connection to a backend fails goes to another backend:
// a dead member costs no request.
func TestRetryOnConnectFailure(t *testing.T) {
	b1 := testkit.StartBackend(t, "b1")
	b2 := testkit.StartBackend(t, "b2")
	dead := testkit.FreeAddr(t)
	a := testkit.StartApp(t, fmt.Sprintf(`
listeners: [{ name: web, listen: "127.0.0.1:0", pool: api }]
pools:
  - name: api
    health: { type: none }
    outlier: { consecutive_failures: 0 }
    retries: { attempts: 2, budget: "100%%", on: [connect_failure] }
    backends: [%q, %q, %q]
`, b1.Addr, b2.Addr, dead))
	waitReady(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	url := a.URL("web", "/")
	const n = 300
	res := testkit.Load(ctx, 4, n, func(_ int64, r *fasthttp.Request) {
		r.Header.SetMethod(fasthttp.MethodPost) // any method: the bytes never left holdfast
		r.SetRequestURI(url)
		r.SetBodyString("payload")
	})
	if res.OK != n {
		t.Fatalf("want all %d OK with one dead backend: %s", n, res)
	}
	if got := res.ByBody["b1\n"] + res.ByBody["b2\n"]; got != n {
		t.Errorf("answers %v", res.ByBody)
	}
	_, metrics := adminGet(t, a, "/metrics")
	if !strings.Contains(metrics, `holdfast_retries_total{pool="api",reason="connect_failure"}`) ||
		strings.Contains(metrics, `holdfast_retries_total{pool="api",reason="connect_failure"} 0`) {
		t.Error("retries_total{reason=connect_failure} not counted")
	}
}
