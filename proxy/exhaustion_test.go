package proxy

import (
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/discovery"
)

// An upstream dial that fails because holdfast is out of descriptors
// (EMFILE) is holdfast's problem, not the backend's: the client gets 503,
// the backend's failure count does not move, no retry is spent, and the
// next request, once descriptors are back, is served by the same backend.
func TestUpstreamEMFILEIsNotBlamed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })

	var exhausted atomic.Bool
	exhausted.Store(true)
	up := UpstreamConfig{MaxConns: 8, MaxIdle: 8, QueueTimeout: time.Second, ConnectTimeout: time.Second,
		ResponseTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	dial := func(addr string, timeout time.Duration) (net.Conn, error) {
		if exhausted.Load() {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}
		}
		return net.DialTimeout("tcp", addr, timeout)
	}
	pool, m, log := newTestPool(t, "round_robin", []discovery.Backend{{Address: ln.Addr().String(), Weight: 1}}, up,
		func(u *Upstream) { u.dialFn = dial })
	target := NewTarget(pool, &TargetConfig{Retry: RetryPolicy{Attempts: 2, Budget: 0.2, OnConnectFailure: true, OnReset: true}, BufferBody: 64 << 10}, m)
	h := NewHTTP(HTTPOptions{Name: "web", MaxHeaderBytes: 16384, ReadTimeout: time.Second,
		WriteTimeout: time.Second, IdleTimeout: time.Second, Log: log, Metrics: m}, NewRoutes("web", target, nil, m))
	rc := newCtx()
	send := func() int {
		rc.Request.Reset()
		rc.Response.Reset()
		rc.Request.SetRequestURI("/")
		rc.Request.Header.SetHost("api")
		h.serve(rc)
		return rc.Response.StatusCode()
	}
	for i := range 20 { // more than outlier ejection would tolerate
		if got := send(); got != fasthttp.StatusServiceUnavailable {
			t.Fatalf("request %d with descriptors exhausted: %d, want 503", i, got)
		}
	}
	ep := pool.Picker().Pick(0, nil)
	if ep == nil {
		t.Fatal("the backend is no longer routable after holdfast's own EMFILE")
	}
	if n := ep.ConsecutiveFailures(); n != 0 {
		t.Errorf("backend blamed for holdfast's EMFILE: %d consecutive failures", n)
	}
	exhausted.Store(false)
	if got := send(); got != fasthttp.StatusOK {
		t.Fatalf("descriptors back: %d, want 200", got)
	}
}
