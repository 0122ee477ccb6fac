package app_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/app"
	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/hostaddr"
	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// fakeAddrs is a hostaddr.Source the test drives: each set it is given is
// pushed, and applied is signalled once the App has taken it.
type fakeAddrs struct {
	sets    chan hostaddr.Set
	applied chan struct{}
}

func (f *fakeAddrs) Run(ctx context.Context, update func(hostaddr.Set)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-f.sets:
			update(s)
			f.applied <- struct{}{}
		}
	}
}

func (f *fakeAddrs) push(t *testing.T, addrs ...string) {
	t.Helper()
	s := hostaddr.Set{}
	for _, a := range addrs {
		s[netip.MustParseAddr(a)] = struct{}{}
	}
	select {
	case f.sets <- s:
	case <-time.After(5 * time.Second):
		t.Fatal("address source not running")
	}
	select {
	case <-f.applied:
	case <-time.After(5 * time.Second):
		t.Fatal("address set not applied")
	}
}

// keepAliveConn is a client connection that sends requests one by one.
type keepAliveConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialKeepAlive(t *testing.T, addr string) *keepAliveConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &keepAliveConn{c: c, br: bufio.NewReader(c)}
}

// get sends GET path and returns the response (body read) or the error.
func (k *keepAliveConn) get(path string) (*http.Response, error) {
	_ = k.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(k.c, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return nil, err
	}
	_, err = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp, err
}

// closedByServer reports whether the server closed the idle connection
// within d (a read returns EOF or a reset).
func (k *keepAliveConn) closedByServer(d time.Duration) error {
	_ = k.c.SetReadDeadline(time.Now().Add(d))
	n, err := k.br.Read(make([]byte, 1))
	switch {
	case n > 0:
		return fmt.Errorf("unexpected byte from server")
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), err != nil && strings.Contains(err.Error(), "reset"):
		return nil
	case err != nil:
		return fmt.Errorf("still open after %s: %v", d, err)
	}
	return nil
}

// TestAddressLeftClosesKeepAlive drives the App's host-address source: when
// the listeners' address leaves the host, idle keep-alive connections (on
// a goroutine and parked in epoll) are closed at once, a request in flight
// is answered with Connection: close; connections accepted later keep
// alive, also after it comes back. A listener on the wildcard
// address is untouched.
func TestAddressLeftClosesKeepAlive(t *testing.T) {
	b := testkit.StartBackend(t, "b")
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	b.SetHandler(func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			started <- struct{}{}
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}
		ctx.SetBodyString("b\n")
	})
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
listeners:
  - { name: web, listen: "127.0.0.1:0", pool: api, timeouts: { park: 0s } }
  - { name: parked, listen: "127.0.0.1:0", pool: api, timeouts: { park: 10ms } }
  - { name: any, listen: "0.0.0.0:0", pool: api }
pools: [{ name: api, health: { type: none }, backends: [%q] }]
`, b.Addr)))
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.LogBuffer{}
	src := &fakeAddrs{sets: make(chan hostaddr.Set), applied: make(chan struct{})}
	a := app.New(cfg, app.Options{Log: slog.New(slog.NewTextHandler(logs, nil)), Addresses: src})
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	testkit.WaitFor(t, 5*time.Second, "app ready", a.Ready)
	web, parked := a.ListenerAddr("web").String(), a.ListenerAddr("parked").String()
	_, anyPort, _ := net.SplitHostPort(a.ListenerAddr("any").String())
	anyAddr := net.JoinHostPort("127.0.0.1", anyPort)

	src.push(t, "127.0.0.1", "192.0.2.11") // the address is held (as on the VRRP master)
	mustKeepAlive := func(t *testing.T, k *keepAliveConn, path string) {
		t.Helper()
		resp, err := k.get(path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("GET %s: %d close=%v, want 200 keep-alive", path, resp.StatusCode, resp.Close)
		}
	}
	idle, idleParked, idleAny, busy := dialKeepAlive(t, web), dialKeepAlive(t, parked), dialKeepAlive(t, anyAddr), dialKeepAlive(t, web)
	for _, k := range []*keepAliveConn{idle, idleParked, idleAny, busy} {
		mustKeepAlive(t, k, "/")
	}
	testkit.WaitFor(t, 5*time.Second, "the idle connection of listener parked in epoll", func() bool {
		return strings.Contains(metricsText(t, a), `holdfast_listener_idle_connections{listener="parked"} 1`)
	})
	inflight := make(chan *http.Response, 1)
	go func() {
		resp, err := busy.get("/slow")
		if err != nil {
			t.Errorf("in-flight request: %v", err)
		}
		inflight <- resp
	}()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("slow request never reached the backend")
	}

	src.push(t, "192.0.2.11") // the address moved to the peer
	for name, k := range map[string]*keepAliveConn{"web (on a goroutine)": idle, "parked (in epoll)": idleParked} {
		if err := k.closedByServer(2 * time.Second); err != nil {
			t.Errorf("idle connection of %s: %v", name, err)
		}
	}
	close(release)
	if resp := <-inflight; resp != nil && !resp.Close {
		t.Errorf("in-flight response without Connection: close")
	}
	if err := busy.closedByServer(2 * time.Second); err != nil {
		t.Errorf("connection of the in-flight request after its response: %v", err)
	}
	later := dialKeepAlive(t, web) // accepted after the address left: keeps alive
	mustKeepAlive(t, later, "/")
	mustKeepAlive(t, later, "/")
	mustKeepAlive(t, idleAny, "/") // wildcard listener: untouched
	if l := logs.String(); !strings.Contains(l, `msg="listener address left this host; closing its keep-alive connections" listener=web address=127.0.0.1:0 idle_closed=1`) ||
		!strings.Contains(l, "listener=parked") {
		t.Errorf("log lacks the address-left lines:\n%s", l)
	}

	src.push(t, "127.0.0.1", "192.0.2.11") // back
	again := dialKeepAlive(t, web)
	mustKeepAlive(t, again, "/")
	mustKeepAlive(t, again, "/")
	if !strings.Contains(logs.String(), "listener address back on this host") {
		t.Errorf("log lacks the address-back line:\n%s", logs.String())
	}
}

func metricsText(t *testing.T, a *app.App) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + a.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
