package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// keepAliveClient sends HTTP/1.1 requests over one connection opened in
// advance, so it still gets answers from a process that has no
// descriptor left for a new connection.
type keepAliveClient struct {
	addr string
	c    net.Conn
	br   *bufio.Reader
}

func dialKeepAlive(t *testing.T, addr string) *keepAliveClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &keepAliveClient{addr: addr, c: c, br: bufio.NewReader(c)}
}

func (k *keepAliveClient) get(path string) (int, string, error) {
	_ = k.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(k.c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, k.addr); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// metric reads one series from a Prometheus text page; labels as printed,
// e.g. `listener="web",reason="emfile"`. 0 when absent.
func (k *keepAliveClient) metric(t *testing.T, name, labels string) float64 {
	t.Helper()
	code, body, err := k.get("/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	prefix := name + "{" + labels + "} "
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return f
		}
	}
	return 0
}

func (l *logBuffer) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

// flood opens n connections to addr and keeps them open (silent) until
// the returned function closes them.
func flood(t *testing.T, addr string, n int) (closeAll func()) {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	closeAll = func() {
		for _, c := range conns {
			_ = c.Close()
		}
		conns = conns[:0]
	}
	t.Cleanup(closeAll)
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("flood connection %d: %v", len(conns)+1, err)
		}
		conns = append(conns, c)
	}
	return closeAll
}

// startLimitedHoldfast runs the holdfast binary under an open-files limit
// of nofile with one listener "web" (listenerExtra added to it) on a pool
// with backend, and waits until it serves.
func startLimitedHoldfast(t *testing.T, nofile int, listenerExtra, backend string) (p *hfProc, url, admin string) {
	t.Helper()
	port, adminPort := freePort(t), freePort(t)
	cfg := filepath.Join(t.TempDir(), "holdfast.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
admin: { listen: 127.0.0.1:%d }
listeners:
  - { name: web, listen: 127.0.0.1:%d, pool: api%s }
pools:
  - { name: api, backends: [%s], health: { type: none }, limits: { max_conns_per_backend: 4, max_idle_per_backend: 4 } }
`, adminPort, port, listenerExtra, backend)), 0o600); err != nil {
		t.Fatal(err)
	}
	p = startHoldfastCmd(t, "holdfast", limitedHoldfast(t, nofile, "run", "-c", cfg))
	url = fmt.Sprintf("http://127.0.0.1:%d/", port)
	waitFor(t, 30*time.Second, "holdfast serving", func() bool {
		code, _, err := testkit.Get(url)
		return err == nil && code == 200
	})
	return p, url, fmt.Sprintf("127.0.0.1:%d", adminPort)
}

// getWithin is a GET on a new connection that gives up after d.
func getWithin(url string, d time.Duration) bool {
	code, _, err := fasthttp.GetTimeout(nil, url, d)
	return err == nil && code == 200
}

// TestAcceptRecoversFromEMFILE: holdfast under an open-files limit of 200,
// with a listener whose own max_connections (1000) the limit cannot hold,
// takes 400 connections. Accept fails with EMFILE: /readyz turns 503 with
// the reason, holdfast_listener_accept_errors_total{reason="emfile"}
// counts, the log says it once. When the flood ends the listener serves
// again within a second, by itself, and /readyz is 200.
func TestAcceptRecoversFromEMFILE(t *testing.T) {
	b := testkit.StartBackend(t, "b1")
	p, url, admin := startLimitedHoldfast(t, 200, ", max_connections: 1000", b.Addr)
	adm := dialKeepAlive(t, admin) // a new connection may find no descriptor
	if code, body, err := adm.get("/readyz"); err != nil || code != 200 {
		t.Fatalf("/readyz before the flood: %d %q %v", code, body, err)
	}

	closeFlood := flood(t, strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/"), 400)
	var body string
	waitFor(t, 10*time.Second, "/readyz 503 while the listener cannot accept", func() bool {
		code, b, err := adm.get("/readyz")
		body = b
		return err == nil && code == 503
	})
	if !strings.Contains(body, `listener "web" cannot accept`) || !strings.Contains(body, "emfile") {
		t.Errorf("/readyz body %q does not name the listener and the reason", body)
	}
	if v := adm.metric(t, "holdfast_listener_accept_errors_total", `listener="web",reason="emfile"`); v < 1 {
		t.Errorf("accept_errors_total{reason=emfile} = %v while failing", v)
	}
	if code, js, err := adm.get("/status.json"); err != nil || code != 200 || !strings.Contains(js, `"accepting": false`) {
		t.Errorf("/status.json does not show the listener paused: %d %v\n%s", code, err, js)
	}

	closeFlood()
	start := time.Now()
	waitFor(t, 10*time.Second, "a request served after the flood", func() bool { return getWithin(url, 2*time.Second) })
	d := time.Since(start)
	t.Logf("serving again %s after the flood ended", d)
	if d > time.Second {
		t.Errorf("the listener took %s to serve again after the flood, want < 1s", d)
	}
	waitFor(t, 5*time.Second, "/readyz 200 again", func() bool {
		code, _, err := adm.get("/readyz")
		return err == nil && code == 200
	})
	waitFor(t, 5*time.Second, "the end of the episode logged", func() bool { return p.log.contains("accepting again") })
	if n := p.log.count("accept failing"); n != 1 {
		t.Errorf("%d 'accept failing' log lines for one flood, want 1", n)
	}
	if p.log.contains("listener stopped") {
		t.Error("the listener stopped")
	}
}

// TestConnectionCapBeforeEMFILE: without a max_connections of its own, a
// listener under an open-files limit of 200 is bounded by the cap derived
// from it: 400 connections never make accept fail; those past the cap
// are closed at once and counted; a new admin connection still works and
// /readyz stays 200; after the flood requests are served at once.
func TestConnectionCapBeforeEMFILE(t *testing.T) {
	const clients = 400
	b := testkit.StartBackend(t, "b1")
	p, url, admin := startLimitedHoldfast(t, 200, "", b.Addr)
	closeFlood := flood(t, strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/"), clients)
	adm := dialKeepAlive(t, admin) // opened during the flood: descriptors are left
	var open, rejected float64
	waitFor(t, 10*time.Second, "every flood connection held or refused", func() bool {
		open = adm.metric(t, "holdfast_listener_connections", `listener="web"`)
		rejected = adm.metric(t, "holdfast_listener_rejected_total", `listener="web",reason="max_connections"`)
		return open+rejected >= clients
	})
	// 200 − 64 reserved − 4 upstream (max_conns_per_backend × 1 backend).
	if open != 132 || rejected < clients-132 {
		t.Errorf("open %v, rejected %v; want the cap 132 open and the rest refused", open, rejected)
	}
	if v := adm.metric(t, "holdfast_listener_accept_errors_total", `listener="web",reason="emfile"`); v != 0 {
		t.Errorf("accept errors %v: holdfast ran out of descriptors despite the cap", v)
	}
	if code, body, err := adm.get("/readyz"); err != nil || code != 200 {
		t.Errorf("/readyz at the cap: %d %q %v; refusing at the cap is not being unable to accept", code, body, err)
	}
	closeFlood()
	waitFor(t, 5*time.Second, "served after the flood", func() bool { return getWithin(url, time.Second) })
	if n := p.log.count("process connection cap reached"); n != 1 {
		t.Errorf("%d 'cap reached' log lines for one flood, want 1", n)
	}
}

// TestCheckWarnsUnderLowFileLimit: `holdfast check` under an open-files
// limit of 200 warns on a config whose limits need more, and not on one
// whose limits fit.
func TestCheckWarnsUnderLowFileLimit(t *testing.T) {
	for _, tc := range []struct {
		name, limits string
		warn         bool
	}{
		{"exceeds", "max_connections: 1000", true},
		{"fits", "max_connections: 100", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "holdfast.yaml")
			if err := os.WriteFile(cfg, []byte(`
listeners:
  - { name: web, listen: 127.0.0.1:8080, pool: api, `+tc.limits+` }
pools:
  - { name: api, backends: [127.0.0.1:9001], limits: { max_conns_per_backend: 4, max_idle_per_backend: 4 } }
`), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := limitedHoldfast(t, 200, "check", "-c", cfg).CombinedOutput()
			if err != nil {
				t.Fatalf("check: %v\n%s", err, out)
			}
			if got := strings.Contains(string(out), "more than the open-files limit 200"); got != tc.warn {
				t.Errorf("warned %v, want %v:\n%s", got, tc.warn, out)
			}
		})
	}
}

// TestSlowlorisFlood: 2,000 connections each sending a request head a
// byte at a time stay open in holdfast (none is refused, none is cut
// before the header timeout) while ordinary requests, on new and on
// keep-alive connections, keep a p95 under 50 ms. The flood lasts less
// than the default header timeout, so the test is bounded by the client
// closing the flood, not by holdfast's timeouts; holdfast's count of open
// connections returns to zero after it.
func TestSlowlorisFlood(t *testing.T) {
	const (
		slow        = 2000
		minRequests = 400
		maxRequests = 20000
		measure     = 3 * time.Second // well under the 10s header timeout
	)
	raiseFileLimit(t, 3*slow+1024)
	b := testkit.StartBackend(t, "b1")
	a := testkit.StartApp(t, fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: api }
pools:
  - { name: api, backends: [%s], health: { type: none } }
`, b.Addr))
	addr := a.ListenerAddr("web").String()
	conns := make([]net.Conn, 0, slow)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range slow {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("slowloris connection %d: %v", len(conns)+1, err)
		}
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: "); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	openConns := func() float64 {
		return testkit.Metric(t, a.Registry(), "holdfast_listener_connections", map[string]string{"listener": "web"})
	}
	waitFor(t, 20*time.Second, "every slowloris connection open in holdfast", func() bool { return openConns() >= slow })

	// One more byte on every slow connection every 200ms while measuring.
	stop := make(chan struct{})
	trickled := make(chan int)
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		rounds := 0
		for {
			select {
			case <-stop:
				trickled <- rounds
				return
			case <-tick.C:
			}
			for _, c := range conns {
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = c.Write([]byte("x"))
			}
			rounds++
		}
	}()
	keep := &fasthttp.Client{MaxConnsPerHost: 1, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	url := "http://" + addr + "/"
	lat := make([]time.Duration, 0, minRequests)
	failed := 0
	begin := time.Now()
	for i := 0; i < maxRequests && (i < minRequests || time.Since(begin) < measure); i++ {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI(url)
		if i%2 == 0 {
			req.SetConnectionClose() // a new connection each time
		}
		t0 := time.Now()
		err := keep.DoTimeout(req, resp, 5*time.Second)
		lat = append(lat, time.Since(t0))
		if err != nil || resp.StatusCode() != 200 {
			failed++
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
	close(stop)
	rounds := <-trickled
	stillOpen := openConns()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p50, p95 := lat[len(lat)/2], lat[len(lat)*95/100]
	t.Logf("%d requests during a %d-connection slowloris flood (%d trickle rounds): p50 %s, p95 %s, max %s, failed %d",
		len(lat), slow, rounds, p50, p95, lat[len(lat)-1], failed)
	if failed > 0 {
		t.Errorf("%d of %d requests failed during the flood", failed, len(lat))
	}
	if p95 > 50*time.Millisecond {
		t.Errorf("p95 %s during the flood, want < 50ms", p95)
	}
	if stillOpen < slow {
		t.Errorf("only %v connections open at the end of the measurement: the flood was not in effect throughout", stillOpen)
	}
	for _, c := range conns {
		_ = c.Close()
	}
	conns = nil
	waitFor(t, 20*time.Second, "holdfast's connections closed after the flood", func() bool { return openConns() <= 1 })
}
