//go:build !race

package proxy

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// The request path allocates nothing per request once warm: routing, header
// rewriting, picking, the upstream exchange over a pooled loopback
// connection, the response copy and the metrics. (The race detector
// allocates on its own, hence the build tag.)
func TestProxyRequestPathAllocs(t *testing.T) {
	cases := []struct {
		name  string
		opts  rigOptions
		extra func(*fasthttp.Request)
	}{
		{name: "GET round_robin", opts: rigOptions{}},
		{name: "GET least_conn", opts: rigOptions{balance: "least_conn"}},
		{name: "GET p2c_ewma", opts: rigOptions{balance: "p2c_ewma"}},
		{name: "GET consistent_hash by client IP", opts: rigOptions{balance: "consistent_hash"}},
		{name: "GET consistent_hash by header", opts: rigOptions{balance: "consistent_hash", hashHeader: "X-User"},
			extra: func(r *fasthttp.Request) { r.Header.Set("X-User", "alice") }},
		{name: "GET maglev by client IP", opts: rigOptions{balance: "maglev"}},
		{name: "GET maglev by header", opts: rigOptions{balance: "maglev", hashHeader: "X-User"},
			extra: func(r *fasthttp.Request) { r.Header.Set("X-User", "alice") }},
		{name: "GET with hop-by-hop headers", opts: rigOptions{},
			extra: func(r *fasthttp.Request) {
				r.Header.Set("Connection", "keep-alive, X-Trace")
				r.Header.Set("Keep-Alive", "timeout=5")
				r.Header.Set("X-Trace", "1")
			}},
		// Non-idempotent: each reused upstream connection is peeked for a
		// close by the backend before the request goes out.
		{name: "POST on reused connections", opts: rigOptions{},
			extra: func(r *fasthttp.Request) {
				r.Header.SetMethod(fasthttp.MethodPost)
				r.SetBodyString(`{"name":"alice"}`)
			}},
		{name: "GET with two header rules", opts: rigOptions{
			policy:    Policy{ResponseHeaders: HeaderRules{Set: map[string]string{"Strict-Transport-Security": "max-age=31536000"}}},
			routeReq:  HeaderRules{Remove: []string{"x-internal"}},
			routeResp: HeaderRules{Add: map[string]string{"X-Served-By": "holdfast"}}}},
		{name: "GET with placeholder header rules", opts: rigOptions{
			policy: Policy{RequestHeaders: HeaderRules{Set: map[string]string{"X-Client": "{client_ip} via {scheme}://{host}"}}}}},
		{name: "GET with two header rules and a rate limit", opts: rigOptions{
			policy:    Policy{ResponseHeaders: HeaderRules{Set: map[string]string{"Strict-Transport-Security": "max-age=31536000"}}},
			routeReq:  HeaderRules{Remove: []string{"x-internal"}},
			routeRate: &RateLimit{Rate: 1e9, Burst: 1 << 20, Key: "header:X-Api-Key"}},
			extra: func(r *fasthttp.Request) { r.Header.Set("X-Api-Key", "k1") }},
		{name: "GET with a generated request ID", opts: rigOptions{
			policy: Policy{RequestID: true, ResponseHeaders: HeaderRules{Set: map[string]string{"X-Request-ID": "{request_id}"}}}}},
		{name: "GET with the JSON access log", opts: rigOptions{accessLog: "json", policy: Policy{RequestID: true}}},
		{name: "GET with the combined access log", opts: rigOptions{accessLog: "combined"}},
		{name: "GET, backend answers with hop-by-hop headers", opts: rigOptions{respHeader: [][2]string{
			{"Connection", "X-Internal"}, {"X-Internal", "1"}, {"Keep-Alive", "timeout=5"}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, c.opts)
			ctx := newCtx()
			for range 200 { // warm: upstream connections, buffers, pools
				r.get(t, ctx, c.extra)
			}
			allocs := testing.AllocsPerRun(1000, func() { r.get(t, ctx, c.extra) })
			if allocs != 0 {
				t.Errorf("%.1f allocations per proxied request, want 0", allocs)
			}
		})
	}
}
