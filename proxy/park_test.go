//go:build linux

package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// parkApp starts holdfast with one HTTP listener "web" in front of one
// backend; listenerExtra goes into the listener's flow mapping.
func parkApp(t *testing.T, listenerExtra string) (*testkit.App, *testkit.Backend) {
	t.Helper()
	be := testkit.StartBackend(t, "b")
	a := startL4(t, fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: p, %s }
pools:
  - { name: p, backends: [%s], health: { type: none } }
`, listenerExtra, be.Addr))
	return a, be
}

func parked(t *testing.T, a *testkit.App) float64 {
	return testkit.Metric(t, a.Registry(), "holdfast_listener_idle_connections", map[string]string{"listener": "web"})
}

func waitParked(t *testing.T, a *testkit.App, n float64) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, fmt.Sprintf("%v parked connections", n), func() bool { return parked(t, a) == n })
}

// keepAliveClient is one client connection sending requests one at a time.
type keepAliveClient struct {
	c  net.Conn
	br *bufio.Reader
}

func dialKeepAlive(t *testing.T, a *testkit.App, preface []byte) *keepAliveClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", a.ListenerAddr("web").String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if len(preface) > 0 {
		if _, err := c.Write(preface); err != nil {
			t.Fatal(err)
		}
	}
	return &keepAliveClient{c: c, br: bufio.NewReader(c)}
}

// get sends a GET and reads its response.
func (k *keepAliveClient) get(t *testing.T, path string) *fasthttp.Response {
	t.Helper()
	if err := k.send(path); err != nil {
		t.Fatalf("send: %v", err)
	}
	resp, err := k.read()
	if err != nil {
		t.Fatalf("response to %s: %v", path, err)
	}
	return resp
}

func (k *keepAliveClient) send(path string) error {
	_ = k.c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err := io.WriteString(k.c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
	return err
}

func (k *keepAliveClient) read() (*fasthttp.Response, error) {
	_ = k.c.SetDeadline(time.Now().Add(5 * time.Second))
	resp := &fasthttp.Response{}
	if err := resp.Read(k.br); err != nil {
		return nil, err
	}
	return resp, nil
}

// closedByServer waits for the server to close the connection.
func (k *keepAliveClient) closedByServer(within time.Duration) error {
	_ = k.c.SetReadDeadline(time.Now().Add(within))
	var b [1]byte
	n, err := k.br.Read(b[:])
	if err == io.EOF {
		return nil
	}
	return fmt.Errorf("read %d bytes, err %v; want EOF", n, err)
}

// A keep-alive connection idle past the grace is parked, then wakes on its
// next request, which is answered on the same TCP connection; it parks
// again after.
func TestParkedConnectionWakes(t *testing.T) {
	a, be := parkApp(t, "timeouts: { park: 20ms, idle: 30s }")
	k := dialKeepAlive(t, a, nil)
	local := k.c.LocalAddr().String()
	for i := range 3 {
		resp := k.get(t, fmt.Sprintf("/r%d", i))
		if resp.StatusCode() != 200 || resp.ConnectionClose() {
			t.Fatalf("request %d: status %d, close %v", i, resp.StatusCode(), resp.ConnectionClose())
		}
		waitParked(t, a, 1)
	}
	if k.c.LocalAddr().String() != local || be.Requests() != 3 {
		t.Fatalf("backend saw %d requests, want 3 on one connection", be.Requests())
	}
}

// Requests sent around the moment of parking (a pipelined pair, bytes
// landing as the grace runs out) are all answered, none lost.
func TestParkRaceLosesNoBytes(t *testing.T) {
	a, _ := parkApp(t, "timeouts: { park: 1ms, idle: 30s }")
	k := dialKeepAlive(t, a, nil)
	for i := range 300 {
		// Spin for a varying share of the grace so some requests land
		// before, some during and some after the park.
		until := time.Now().Add(time.Duration(i%7) * 300 * time.Microsecond)
		for time.Now().Before(until) {
		}
		if i%10 == 0 { // pipelined: two at once
			if err := k.send("/a"); err != nil {
				t.Fatal(err)
			}
		}
		if err := k.send("/b"); err != nil {
			t.Fatal(err)
		}
		n := 1
		if i%10 == 0 {
			n = 2
		}
		for j := range n {
			resp, err := k.read()
			if err != nil {
				t.Fatalf("iteration %d response %d: %v", i, j, err)
			}
			if resp.StatusCode() != 200 {
				t.Fatalf("iteration %d: status %d", i, resp.StatusCode())
			}
		}
	}
}

// A parked connection is closed once the listener's idle timeout passes.
func TestParkedConnectionIdleTimeout(t *testing.T) {
	a, _ := parkApp(t, "timeouts: { park: 20ms, idle: 300ms }")
	k := dialKeepAlive(t, a, nil)
	k.get(t, "/")
	answered := time.Now()
	waitParked(t, a, 1)
	if err := k.closedByServer(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(answered); d < 300*time.Millisecond {
		t.Fatalf("closed %v after the response, before the 300ms idle timeout", d)
	}
	waitParked(t, a, 0)
	testkit.WaitFor(t, 5*time.Second, "connection gauge at 0", func() bool {
		return testkit.Metric(t, a.Registry(), "holdfast_listener_connections", map[string]string{"listener": "web"}) == 0
	})
}

// During a drain a parked client that wakes is answered with
// Connection: close; the ones still parked are closed at its end.
func TestDrainClosesParked(t *testing.T) {
	a, _ := parkApp(t, "timeouts: { park: 20ms, idle: 30s, drain: 5s }")
	waking := dialKeepAlive(t, a, nil)
	sleeping := dialKeepAlive(t, a, nil)
	waking.get(t, "/")
	sleeping.get(t, "/")
	waitParked(t, a, 2)
	addr := a.ListenerAddr("web").String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Shutdown(t.Context())
	}()
	// The listener stops accepting after the drain has begun.
	testkit.WaitFor(t, 5*time.Second, "listener closed", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		_ = c.Close()
		return false
	})
	resp := waking.get(t, "/late")
	if resp.StatusCode() != 200 || !resp.ConnectionClose() {
		t.Fatalf("woken during the drain: status %d, Connection: close %v; want 200 and close", resp.StatusCode(), resp.ConnectionClose())
	}
	if err := sleeping.closedByServer(10 * time.Second); err != nil {
		t.Fatalf("parked connection at the end of the drain: %v", err)
	}
	<-done
}

// Parked connections hold no goroutine: 200 idle keep-alive clients leave
// the goroutine count where it was, and the gauge counts them.
func TestParkedConnectionsHoldNoGoroutine(t *testing.T) {
	a, _ := parkApp(t, "timeouts: { park: 10ms, idle: 30s }")
	warm := dialKeepAlive(t, a, nil)
	warm.get(t, "/")
	waitParked(t, a, 1)
	base := runtime.NumGoroutine()
	const n = 200
	clients := make([]*keepAliveClient, n)
	for i := range clients {
		clients[i] = dialKeepAlive(t, a, nil)
		clients[i].get(t, "/")
	}
	waitParked(t, a, n+1)
	// fasthttp's idle workers (MaxIdleWorkerDuration) exit within seconds.
	testkit.WaitFor(t, 15*time.Second, "goroutines back near the baseline", func() bool {
		return runtime.NumGoroutine() <= base+20
	})
	// And every one of them still works.
	for i, k := range clients {
		if resp := k.get(t, "/again"); resp.StatusCode() != 200 {
			t.Fatalf("client %d after parking: status %d", i, resp.StatusCode())
		}
	}
}

// A PROXY-protocol connection parks after its header is consumed and
// keeps the client address the header announced after it wakes.
func TestParkProxyProtocol(t *testing.T) {
	be := testkit.StartBackend(t, "b")
	be.SetHandler(func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyString(string(ctx.Request.Header.Peek("X-Forwarded-For")))
	})
	a := startL4(t, fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: p, proxy_protocol: true, timeouts: { park: 20ms } }
pools:
  - { name: p, backends: [%s], health: { type: none } }
`, be.Addr))
	k := dialKeepAlive(t, a, ppHeader(t, 2))
	for i := range 2 {
		resp := k.get(t, "/")
		if got := string(resp.Body()); !strings.HasSuffix(got, "203.0.113.7") {
			t.Fatalf("request %d: X-Forwarded-For %q, want the PROXY client 203.0.113.7", i, got)
		}
		waitParked(t, a, 1)
	}
}

// With park: 0 nothing is parked.
func TestParkOff(t *testing.T) {
	a, _ := parkApp(t, "timeouts: { park: 0s }")
	k := dialKeepAlive(t, a, nil)
	k.get(t, "/")
	for range 3 {
		k.get(t, "/")
	}
	if p := parked(t, a); p != 0 {
		t.Fatalf("%v parked with park: 0", p)
	}
}

// The poller waits for parked connections in Go's netpoller, not in a
// blocking epoll_wait: a goroutine blocked in a syscall holds its P until
// sysmon retakes it (10-20 ms under load), and with GOMAXPROCS=1 that stalls
// every connection. That was the p99 tail of bench/README.md's 2026-12-03
// section.
func TestParkPollerWaitsInNetpoller(t *testing.T) {
	a, _ := parkApp(t, "timeouts: { park: 10ms, idle: 30s }")
	k := dialKeepAlive(t, a, nil)
	k.get(t, "/")
	waitParked(t, a, 1)
	buf := make([]byte, 1<<20)
	testkit.WaitFor(t, 10*time.Second, "the park poller's goroutine in IO wait", func() bool {
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "proxy.(*poller).run") {
				return strings.Contains(strings.SplitN(g, "\n", 2)[0], "[IO wait")
			}
		}
		return false
	})
}
