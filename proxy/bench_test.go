package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sort"
	"syscall"
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
		{"two_rules_and_rate_limit", policyOn},
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

// policyOn is the policy of BenchmarkProxyGETPolicy's second case: two
// header rules (HSTS set on responses, a request header removed) and a
// rate limit that never refuses.
var policyOn = rigOptions{
	policy:    Policy{ResponseHeaders: HeaderRules{Set: map[string]string{"Strict-Transport-Security": "max-age=31536000"}}},
	routeReq:  HeaderRules{Remove: []string{"X-Internal"}},
	routeRate: &RateLimit{Rate: 1e12, Burst: 1 << 30, Key: "client_ip"},
}

// BenchmarkProxyGETPolicyPaired measures the CPU a request costs the whole
// process (proxy and in-process backends; getrusage user+system) without
// and with policyOn, in alternating rounds of policyRound requests each,
// so both see the same machine noise. It reports each side's CPU per
// request, the median of the per-round ratios (policy / none) and their
// spread (p10..p90), and allocations per request of each side.
func BenchmarkProxyGETPolicyPaired(b *testing.B) {
	const policyRound = 400
	none, with := newRig(b, rigOptions{}), newRig(b, policyOn)
	ctxN, ctxP := newCtx(), newCtx()
	for range 200 { // warm both
		none.get(b, ctxN, nil)
		with.get(b, ctxP, nil)
	}
	var ms runtime.MemStats
	round := func(r *rig, ctx *fasthttp.RequestCtx) (cpu time.Duration, allocs uint64) {
		runtime.ReadMemStats(&ms)
		m0 := ms.Mallocs
		c0 := processCPU(b)
		for range policyRound {
			r.get(b, ctx, nil)
		}
		cpu = processCPU(b) - c0
		runtime.ReadMemStats(&ms)
		return cpu, ms.Mallocs - m0
	}
	rounds := max(b.N/policyRound, 5)
	var ratios []float64
	var cpuN, cpuP time.Duration
	var allocN, allocP uint64
	b.ResetTimer()
	for i := range rounds {
		var cn, cp time.Duration
		var an, ap uint64
		if i%2 == 0 { // alternate which goes first
			cn, an = round(none, ctxN)
			cp, ap = round(with, ctxP)
		} else {
			cp, ap = round(with, ctxP)
			cn, an = round(none, ctxN)
		}
		cpuN, cpuP, allocN, allocP = cpuN+cn, cpuP+cp, allocN+an, allocP+ap
		if cn > 0 {
			ratios = append(ratios, float64(cp)/float64(cn))
		}
	}
	b.StopTimer()
	n := float64(rounds * policyRound)
	b.ReportMetric(float64(cpuN.Nanoseconds())/n, "none-cpu-ns/req")
	b.ReportMetric(float64(cpuP.Nanoseconds())/n, "policy-cpu-ns/req")
	sort.Float64s(ratios)
	if len(ratios) > 0 {
		q := func(p float64) float64 { return ratios[int(p*float64(len(ratios)-1))] }
		b.ReportMetric(q(0.5), "cpu-ratio-median")
		b.ReportMetric(q(0.1), "cpu-ratio-p10")
		b.ReportMetric(q(0.9), "cpu-ratio-p90")
	}
	// ReadMemStats allocates nothing itself; the loop's own
	// allocations are the request path's.
	b.ReportMetric(float64(allocN)/n, "none-allocs/req")
	b.ReportMetric(float64(allocP)/n, "policy-allocs/req")
}

// processCPU is the process's user+system CPU time so far.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
