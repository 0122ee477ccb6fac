package proxy

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/valyala/fasthttp"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func ctxFrom(ip string, hdr ...string) *fasthttp.RequestCtx {
	var ctx fasthttp.RequestCtx
	var req fasthttp.Request
	ctx.Init(&req, &net.TCPAddr{IP: net.ParseIP(ip), Port: 1}, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		ctx.Request.Header.Set(hdr[i], hdr[i+1])
	}
	return &ctx
}

func TestLimiterTokenBucket(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	l := newLimiter(&RateLimit{Rate: 2, Burst: 3, Key: "client_ip", Now: clk.Now}, c)
	a, b := ctxFrom("192.0.2.1"), ctxFrom("192.0.2.2")
	steps := []struct {
		name    string
		advance time.Duration
		ctx     *fasthttp.RequestCtx
		ok      bool
		retry   int
	}{
		{"burst 1", 0, a, true, 0},
		{"burst 2", 0, a, true, 0},
		{"burst 3", 0, a, true, 0},
		{"over", 0, a, false, 1},
		{"another key has its own bucket", 0, b, true, 0},
		{"half a token later: still over", 250 * time.Millisecond, a, false, 1},
		{"one token after 500ms at 2/s", 250 * time.Millisecond, a, true, 0},
		{"and only one", 0, a, false, 1},
		{"refills up to burst, not beyond", time.Hour, a, true, 0},
		{"burst 2 after refill", 0, a, true, 0},
		{"burst 3 after refill", 0, a, true, 0},
		{"over after refill", 0, a, false, 1},
	}
	for _, s := range steps {
		clk.Add(s.advance)
		ok, retry := l.allow(s.ctx)
		if ok != s.ok || retry != s.retry {
			t.Fatalf("%s: allow = %v, retry %d; want %v, %d", s.name, ok, retry, s.ok, s.retry)
		}
	}
	if got := counterValue(t, c); got != 4 {
		t.Errorf("limited counter %v, want 4", got)
	}
	slow := newLimiter(&RateLimit{Rate: 0.1, Burst: 1, Now: clk.Now}, nil)
	slow.allow(a)
	if _, retry := slow.allow(a); retry != 10 {
		t.Errorf("Retry-After at 0.1/s: %d, want 10", retry)
	}
}

func TestLimiterHeaderKey(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := newLimiter(&RateLimit{Rate: 1, Burst: 1, Key: "header:X-Api-Key", Now: clk.Now}, nil)
	if ok, _ := l.allow(ctxFrom("192.0.2.1", "X-Api-Key", "k1")); !ok {
		t.Fatal("first k1 refused")
	}
	if ok, _ := l.allow(ctxFrom("192.0.2.9", "x-api-key", "k1")); ok {
		t.Error("k1 from another IP got a new bucket: the key is the header")
	}
	if ok, _ := l.allow(ctxFrom("192.0.2.1", "X-Api-Key", "k2")); !ok {
		t.Error("k2 shares k1's bucket")
	}
	if ok, _ := l.allow(ctxFrom("192.0.2.1")); !ok {
		t.Error("no header: keyed by client IP, which has its own bucket")
	}
}

// Many distinct keys never grow the table, and a busy key keeps its state
// under a flood of one-shot keys most of the time.
func TestLimiterBoundedMemory(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := newLimiter(&RateLimit{Rate: 1, Burst: 1, MaxKeys: 256, Now: clk.Now}, nil)
	for i := range 100000 {
		ip := net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)).String()
		l.allow(ctxFrom(ip))
	}
	total := 0
	for i := range l.shards {
		total += len(l.shards[i].slots)
	}
	if total != 256 {
		t.Errorf("%d slots after 100000 keys, want 256", total)
	}
}

// End to end through the handler and real loopback backends: 429 with
// Retry-After past the burst, the access-log flag, the metric, and the
// route's own requests passing again once the clock moves.
func TestRateLimitedRoute(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	r := newRig(t, rigOptions{routeRate: &RateLimit{Rate: 1, Burst: 2, Key: "client_ip", Now: clk.Now}})
	ctx := newCtx()
	want := []int{200, 200, 429}
	send := func() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.SetRequestURI("/v1/users")
		ctx.Request.Header.SetHost("api.example.com")
		r.h.serve(ctx)
	}
	for i, code := range want {
		send()
		if got := ctx.Response.StatusCode(); got != code {
			t.Fatalf("request %d: %d, want %d", i, got, code)
		}
	}
	if ra := string(ctx.Response.Header.Peek("Retry-After")); ra != "1" {
		t.Errorf("Retry-After %q, want 1", ra)
	}
	m := r.h.opts.Metrics
	if got := counterValue(t, m.RateLimited.WithLabelValues("web", "*.example.com/v1/")); got != 1 {
		t.Errorf("holdfast_rate_limited_total %v, want 1", got)
	}
	clk.Add(time.Second)
	send()
	if got := ctx.Response.StatusCode(); got != 200 {
		t.Errorf("after a second: %d, want 200", got)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// A reload keeps a route's buckets: the same limit goes on where it was; a
// higher burst does not hand a drained client a fresh burst, a lower one
// caps at once, a new rate refills at the new rate; a changed key starts
// afresh.
func TestRateLimitSurvivesReload(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	limit := func(rate float64, burst int, key string) *RateLimit {
		return &RateLimit{Rate: rate, Burst: burst, Key: key, Now: clk.Now}
	}
	r := newRig(t, rigOptions{routeRate: limit(1, 3, "client_ip")})
	target := r.h.routes.Load().def.target
	reload := func(rl *RateLimit) {
		r.h.SetRoutes(NewRoutes("web", target, []Route{
			{Host: "static.example.com", Target: target},
			{Host: "*.example.com", PathPrefix: "/v1/", Target: target, RateLimit: rl},
		}, nil))
	}
	ctx := newCtx()
	status := func() int {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.SetRequestURI("/v1/users")
		ctx.Request.Header.SetHost("api.example.com")
		r.h.serve(ctx)
		return ctx.Response.StatusCode()
	}
	// run sends n requests and returns how many passed.
	run := func(n int) int {
		ok := 0
		for range n {
			switch s := status(); s {
			case 200:
				ok++
			case 429:
			default:
				t.Fatalf("status %d", s)
			}
		}
		return ok
	}
	steps := []struct {
		name    string
		reload  *RateLimit // nil: none
		advance time.Duration
		send    int
		want    int
	}{
		{"burst of 3 spent before the reload", nil, 0, 5, 3},
		{"same limit reloaded: still spent", limit(1, 3, "client_ip"), 0, 2, 0},
		{"a second later: one token", nil, time.Second, 2, 1},
		{"burst raised to 10: no new burst for a drained client", limit(1, 10, "client_ip"), 0, 2, 0},
		{"refills to the new burst", nil, time.Minute, 12, 10},
		{"rate raised to 5/s: refills at 5/s", limit(5, 10, "client_ip"), time.Second, 10, 5},
		{"refill to 10 before lowering", nil, time.Minute, 0, 0},
		{"burst lowered to 2: capped at once", limit(5, 2, "client_ip"), 0, 5, 2},
		{"key changed: afresh (full burst)", limit(5, 2, "header:X-Api-Key"), 0, 5, 2},
	}
	for _, s := range steps {
		if s.reload != nil {
			reload(s.reload)
		}
		clk.Add(s.advance)
		if got := run(s.send); got != s.want {
			t.Fatalf("%s: %d of %d passed, want %d", s.name, got, s.send, s.want)
		}
	}
}
