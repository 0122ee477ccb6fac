package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/holdfast-lb/holdfast/balancer"
	"github.com/holdfast-lb/holdfast/discovery"
	"github.com/holdfast-lb/holdfast/metrics"
)

// rig is one HTTP listener's handler in front of one pool of real loopback
// fasthttp backends, with metrics on: the whole request path except the
// client socket, which tests and benchmarks replace with a reused
// RequestCtx.
type rig struct {
	h    *HTTP
	pool *balancer.Pool
}

var rigBody = []byte(`{"id":7,"name":"holdfast"}`)

// rigOptions shape a rig: how many backends, the balance algorithm, and
// what the backends add to their answers.
type rigOptions struct {
	backends   int
	balance    string
	hashHeader string // consistent_hash key header; "" hashes the client IP
	respHeader [][2]string
	// policy is the listener's; route is the *.example.com/v1/ route's
	// header rules (the one the rig's requests match).
	policy    Policy
	routeReq  HeaderRules
	routeResp HeaderRules
	routeRate *RateLimit
	// accessLog "json" or "combined" turns the access log on, written to
	// io.Discard through a queue.
	accessLog string
}

func newRig(tb testing.TB, o rigOptions) *rig {
	tb.Helper()
	if o.backends == 0 {
		o.backends = 3
	}
	if o.balance == "" {
		o.balance = "round_robin"
	}
	backends := o.backends
	var set []discovery.Backend
	for range backends {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		srv := &fasthttp.Server{
			Handler: func(ctx *fasthttp.RequestCtx) {
				ctx.Response.Header.SetContentType("application/json")
				for _, kv := range o.respHeader {
					ctx.Response.Header.Set(kv[0], kv[1])
				}
				ctx.SetBody(rigBody)
			},
			NoDefaultDate: true,
		}
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.Serve(ln) }()
		tb.Cleanup(func() { _ = srv.Shutdown(); <-done })
		set = append(set, discovery.Backend{Address: ln.Addr().String(), Weight: 1})
	}
	up := UpstreamConfig{MaxConns: 512, MaxIdle: 128, QueueTimeout: time.Second,
		ConnectTimeout: time.Second, ResponseTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	pool, m, log := newTestPool(tb, o.balance, set, up, nil)
	tc := &TargetConfig{Retry: RetryPolicy{Attempts: 2, Budget: 0.2, OnConnectFailure: true, OnReset: true}, BufferBody: 64 << 10}
	if o.balance == "consistent_hash" || o.balance == "maglev" {
		tc.HashKind, tc.HashName = HashClientIP, ""
		if o.hashHeader != "" {
			tc.HashKind, tc.HashName = HashHeader, o.hashHeader
		}
	}
	target := NewTarget(pool, tc, m)
	rt := NewRoutes("web", target, []Route{
		{Host: "static.example.com", Target: target},
		{Host: "*.example.com", PathPrefix: "/v1/", Target: target, RequestHeaders: o.routeReq, ResponseHeaders: o.routeResp, RateLimit: o.routeRate},
	}, m)
	q := NewLogQueue(io.Discard, 0, nil)
	tb.Cleanup(q.Close)
	h := NewHTTP(HTTPOptions{Name: "web", MaxHeaderBytes: 16384, ReadTimeout: time.Minute,
		WriteTimeout: time.Minute, IdleTimeout: time.Minute, Log: log, Metrics: m, Policy: o.policy,
		AccessLog: o.accessLog != "", AccessLogCombined: o.accessLog == "combined", AccessLogQueue: q}, rt)
	return &rig{h: h, pool: pool}
}

// newTestPool runs a pool of the static backends set, each reached through
// an Upstream with up (adjusted by wrap when not nil), and waits until all
// are routable.
func newTestPool(tb testing.TB, balance string, set []discovery.Backend, up UpstreamConfig, wrap func(*Upstream)) (*balancer.Pool, *metrics.Metrics, *slog.Logger) {
	tb.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := metrics.New(prometheus.NewRegistry())
	pool := balancer.NewPool(&balancer.Options{Name: "api", Balance: balance, PanicThreshold: 0.5,
		Source: &discovery.Static{Backends: set}, SourceKey: "static"},
		balancer.Hooks{
			NewUpstream: func(ep *balancer.Endpoint) balancer.Upstream {
				u := NewUpstream(ep, up)
				if wrap != nil {
					wrap(u)
				}
				return u
			},
			CloseUpstream: func(ep *balancer.Endpoint) { ep.Upstream.Close() },
		}, m, log)
	ctx, cancel := context.WithCancel(context.Background())
	go pool.Run(ctx)
	tb.Cleanup(func() { cancel(); <-pool.Done() })
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for pool.Routable() < len(set) {
		if time.Now().After(deadline) {
			tb.Fatal("pool never became routable")
		}
		<-tick.C
	}
	return pool, m, log
}

// newCtx is a RequestCtx as a client connection from 192.0.2.10 gets it.
func newCtx() *fasthttp.RequestCtx {
	var ctx fasthttp.RequestCtx
	var req fasthttp.Request
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 10), Port: 40000}, nil)
	return &ctx
}

// get proxies one GET through the handler, as fasthttp's server would call
// it for a request it has just read.
func (r *rig) get(tb testing.TB, ctx *fasthttp.RequestCtx, extra func(*fasthttp.Request)) {
	ctx.Request.Reset()
	ctx.Response.Reset()
	ctx.Request.Header.SetMethod(fasthttp.MethodGet)
	ctx.Request.SetRequestURI("/v1/users?id=7")
	ctx.Request.Header.SetHost("api.example.com")
	ctx.Request.Header.Set("User-Agent", "bench/1.0")
	ctx.Request.Header.Set("Accept", "application/json")
	ctx.Request.Header.Set("X-Forwarded-For", "203.0.113.9")
	if extra != nil {
		extra(&ctx.Request)
	}
	r.h.serve(ctx)
	if ctx.Response.StatusCode() != fasthttp.StatusOK || len(ctx.Response.Body()) != len(rigBody) {
		tb.Fatalf("proxied GET: %d %q", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}

// BenchmarkProxyGET measures the proxy's request path (routing, header
// rewriting, picking, upstream exchange over loopback, metrics) for a small
// GET, in parallel.
func BenchmarkProxyGET(b *testing.B) {
	r := newRig(b, rigOptions{})
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := newCtx()
		for pb.Next() {
			r.get(b, ctx, nil)
		}
	})
}

// BenchmarkProxyGETPolicy is BenchmarkProxyGET with and without two
// header rules and a rate limit (issue 13: allocation-free, within 10% of
// CPU per request). Compare the two sub-benchmarks' ns/op.
func BenchmarkProxyGETPolicy(b *testing.B) {
	for _, c := range []struct {
		name string
		o    rigOptions
	}{
		{"none", rigOptions{}},
		{"two_rules_and_rate_limit", rigOptions{
			policy:    Policy{ResponseHeaders: HeaderRules{Set: map[string]string{"Strict-Transport-Security": "max-age=31536000"}}},
			routeReq:  HeaderRules{Remove: []string{"X-Internal"}},
			routeRate: &RateLimit{Rate: 1e12, Burst: 1 << 30, Key: "client_ip"}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := newRig(b, c.o)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := newCtx()
				for pb.Next() {
					r.get(b, ctx, nil)
				}
			})
		})
	}
}

// BenchmarkProxyGETServer is the same request through the fasthttp server
// too: a real client on an in-memory connection.
func BenchmarkProxyGETServer(b *testing.B) {
	r := newRig(b, rigOptions{})
	ln := fasthttputilListener(b, r.h)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := &fasthttp.HostClient{Addr: "holdfast", Dial: func(string) (net.Conn, error) { return ln.Dial() }}
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		for pb.Next() {
			req.Reset()
			req.SetRequestURI("http://api.example.com/v1/users?id=7")
			if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
				b.Fatalf("%v %d", err, resp.StatusCode())
			}
		}
	})
}

// fasthttputilListener serves h on an in-memory listener for the test.
func fasthttputilListener(tb testing.TB, h *HTTP) *fasthttputil.InmemoryListener {
	ln := fasthttputil.NewInmemoryListener()
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Serve(ln) }()
	tb.Cleanup(func() { _ = h.Server().Shutdown(); <-done })
	return ln
}
