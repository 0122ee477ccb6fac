package health

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// backend is a fasthttp server on 127.0.0.1:0. Requests to /slow block until
// the test ends; /status/N answers N; anything else answers 200 when the Host
// header is right.
func backend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		path := string(ctx.Path())
		switch {
		case path == "/slow":
			<-release
		case strings.HasPrefix(path, "/status/"):
			code, _ := strconv.Atoi(strings.TrimPrefix(path, "/status/"))
			ctx.SetStatusCode(code)
		case string(ctx.Host()) != "health.example" && path == "/host":
			ctx.SetStatusCode(fasthttp.StatusMisdirectedRequest)
		}
	}}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		close(release)
		_ = srv.Shutdown()
		<-done
	})
	return ln.Addr().String()
}

// refusedAddr returns a loopback address nobody listens on.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func TestHTTPChecker(t *testing.T) {
	addr := backend(t)
	refused := refusedAddr(t)
	ok200 := [][2]int{{200, 299}}
	tests := []struct {
		name    string
		addr    string
		path    string
		expect  [][2]int
		host    string
		timeout time.Duration
		wantErr string // "" = pass
		wantIs  error
	}{
		{name: "status in range", addr: addr, path: "/status/204", expect: ok200},
		{name: "status below range", addr: addr, path: "/status/204", expect: [][2]int{{300, 399}}, wantErr: "status 204 (want 300-399)"},
		{name: "status above range", addr: addr, path: "/status/503", expect: ok200, wantErr: "status 503 (want 200-299)"},
		{name: "second range matches", addr: addr, path: "/status/404", expect: [][2]int{{200, 200}, {404, 404}}},
		{name: "redirect is judged, not followed", addr: addr, path: "/status/302", expect: ok200, wantErr: "status 302 (want 200-299)"},
		{name: "empty expect means 200-399", addr: addr, path: "/status/301"},
		{name: "host header sent", addr: addr, path: "/host", expect: ok200, host: "health.example"},
		{name: "wrong host header", addr: addr, path: "/host", expect: ok200, host: "other.example", wantErr: "status 421"},
		{name: "timeout", addr: addr, path: "/slow", expect: ok200, timeout: 50 * time.Millisecond, wantErr: "timeout", wantIs: context.DeadlineExceeded},
		{name: "connection refused", addr: refused, path: "/", expect: ok200, wantErr: "connection refused", wantIs: syscall.ECONNREFUSED},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			err := NewHTTPChecker(tc.path, tc.expect, tc.host).Check(ctx, tc.addr)
			checkErr(t, err, tc.wantErr, tc.wantIs)
		})
	}
}

// cutShort serves one raw HTTP response per connection: good headers that
// promise 100 bytes, then 5 of them, then a reset (SO_LINGER 0) or a close.
func cutShort(t *testing.T, reset bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 4096)
			_, _ = c.Read(buf) // the probe's request fits one read
			_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello"))
			if tc, ok := c.(*net.TCPConn); ok && reset {
				_ = tc.SetLinger(0)
			}
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

func TestHTTPCheckerBodyCutShort(t *testing.T) {
	tests := []struct {
		name    string
		reset   bool
		wantErr string
	}{
		{name: "reset mid-body", reset: true, wantErr: "response cut short"},
		{name: "closed mid-body", reset: false, wantErr: "response cut short"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := NewHTTPChecker("/healthz", nil, "").Check(ctx, cutShort(t, tc.reset))
			checkErr(t, err, tc.wantErr, nil)
		})
	}
}

func TestHTTPCheckerStatusError(t *testing.T) {
	addr := backend(t)
	err := NewHTTPChecker("/status/500", [][2]int{{200, 200}, {204, 299}}, "").Check(context.Background(), addr)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 500 || err.Error() != "status 500 (want 200,204-299)" {
		t.Fatalf("got %v (%T)", err, err)
	}
}

func TestHTTPCheckerConcurrent(t *testing.T) {
	addr := backend(t)
	c := NewHTTPChecker("/status/200", nil, "")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() { errs <- c.Check(context.Background(), addr) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestTCPChecker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	tests := []struct {
		name    string
		addr    string
		wantErr string
		wantIs  error
	}{
		{name: "listening", addr: ln.Addr().String()},
		{name: "connection refused", addr: refusedAddr(t), wantErr: "connection refused", wantIs: syscall.ECONNREFUSED},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			checkErr(t, NewTCPChecker().Check(ctx, tc.addr), tc.wantErr, tc.wantIs)
		})
	}
}

func TestTCPCheckerCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// A canceled context fails before any connect, whatever the address.
	if err := NewTCPChecker().Check(ctx, "127.0.0.1:9"); err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func checkErr(t *testing.T, err error, want string, is error) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want == "":
		return
	case err == nil:
		t.Fatalf("passed, want error %q", want)
	case !strings.Contains(err.Error(), want):
		t.Errorf("error %q, want it to contain %q", err, want)
	}
	if is != nil && !errors.Is(err, is) {
		t.Errorf("error %v does not wrap %v", err, is)
	}
}
