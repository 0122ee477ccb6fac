// Package testkit starts real backends, a real holdfast App and bounded
// client load on loopback, for end-to-end tests across packages.
package testkit

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/app"
	"github.com/holdfast-lb/holdfast/config"
)

// Backend is an HTTP server on 127.0.0.1:0. Handler may be swapped while it
// runs. Safe for concurrent use.
type Backend struct {
	Addr     string
	Name     string
	ln       net.Listener
	srv      *fasthttp.Server
	handler  atomic.Pointer[fasthttp.RequestHandler]
	requests atomic.Int64
	done     chan struct{}
}

// StartBackend starts a backend that answers 200 "NAME\n" and stops at the
// end of the test.
func StartBackend(tb testing.TB, name string) *Backend {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("backend %s: %v", name, err)
	}
	return ServeBackend(tb, name, ln)
}

// ServeBackend serves a backend on ln.
func ServeBackend(tb testing.TB, name string, ln net.Listener) *Backend {
	b := &Backend{Addr: ln.Addr().String(), Name: name, ln: ln, done: make(chan struct{})}
	b.SetHandler(func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyString(name + "\n")
	})
	b.srv = &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			b.requests.Add(1)
			(*b.handler.Load())(ctx)
		},
		DisableHeaderNamesNormalizing: true,
		StreamRequestBody:             true,
		MaxRequestBodySize:            1 << 30,
	}
	go func() { defer close(b.done); _ = b.srv.Serve(ln) }()
	tb.Cleanup(b.Close)
	return b
}

// SetHandler replaces the backend's handler.
func (b *Backend) SetHandler(h fasthttp.RequestHandler) { b.handler.Store(&h) }

// Requests is how many requests the backend has received.
func (b *Backend) Requests() int64 { return b.requests.Load() }

// Close stops the backend and closes its connections.
func (b *Backend) Close() {
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.srv.Shutdown()
	<-b.done
}

// App is a running holdfast for a test.
type App struct {
	*app.App
	Path string
}

// StartApp writes yaml to a temp file, loads it and starts holdfast. Listen
// addresses may use port 0; the admin listener defaults to 127.0.0.1:0.
func StartApp(tb testing.TB, yaml string) *App {
	tb.Helper()
	if !strings.Contains(yaml, "admin:") {
		yaml = "admin: { listen: 127.0.0.1:0 }\n" + yaml
	}
	path := WriteConfig(tb, yaml)
	cfg, err := config.Load(path)
	if err != nil {
		tb.Fatalf("config: %v", err)
	}
	a := app.New(cfg, app.Options{Log: Logger(tb), ConfigPath: path})
	if err := a.Start(context.Background()); err != nil {
		tb.Fatalf("start: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	return &App{App: a, Path: path}
}

// WriteConfig writes a config file into the test's temp dir.
func WriteConfig(tb testing.TB, yaml string) string {
	tb.Helper()
	path := tb.TempDir() + "/holdfast.yaml"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// URL is http://ADDR of a listener plus path.
func (a *App) URL(listener, path string) string {
	return "http://" + a.ListenerAddr(listener).String() + path
}

// Logger logs to the test at warn level and above, or everything when
// HOLDFAST_TEST_LOG=debug.
func Logger(tb testing.TB) *slog.Logger {
	lv := slog.LevelWarn
	if os.Getenv("HOLDFAST_TEST_LOG") == "debug" {
		lv = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: lv}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// WaitFor polls cond every 10ms until it holds or timeout passes.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// Result is what a load run saw.
type Result struct {
	Sent, OK, Failed int64
	ByStatus         map[int]int64
	ByBody           map[string]int64
	Errors           map[string]int64
}

// Load sends requests from workers goroutines until ctx ends or max
// requests were sent (both bounds always apply). req prepares each request;
// the response's status and body are tallied. Keep-alive, like a real client.
func Load(ctx context.Context, workers int, max int64, req func(i int64, r *fasthttp.Request)) *Result {
	res := &Result{ByStatus: map[int]int64{}, ByBody: map[string]int64{}, Errors: map[string]int64{}}
	var mu sync.Mutex
	var n atomic.Int64
	client := &fasthttp.Client{MaxConnsPerHost: workers * 2, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		MaxIdemponentCallAttempts: 1, RetryIfErr: func(*fasthttp.Request, int, error) (bool, bool) { return false, false }}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := fasthttp.AcquireRequest()
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(r)
			defer fasthttp.ReleaseResponse(resp)
			for ctx.Err() == nil {
				i := n.Add(1)
				if i > max {
					return
				}
				r.Reset()
				req(i, r)
				err := client.Do(r, resp)
				mu.Lock()
				res.Sent++
				switch {
				case err != nil:
					res.Failed++
					res.Errors[err.Error()]++
				case resp.StatusCode() >= 500:
					res.Failed++
					res.ByStatus[resp.StatusCode()]++
					res.ByBody[string(resp.Body())]++
				default:
					res.OK++
					res.ByStatus[resp.StatusCode()]++
					res.ByBody[string(resp.Body())]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return res
}

// Get is a one-shot GET returning status and body.
func Get(url string) (int, string, error) {
	status, body, err := fasthttp.GetTimeout(nil, url, 5*time.Second)
	return status, string(body), err
}

// String summarises a result for failure messages.
func (r *Result) String() string {
	return fmt.Sprintf("sent=%d ok=%d failed=%d status=%v errors=%v", r.Sent, r.OK, r.Failed, r.ByStatus, r.Errors)
}

// Discard is an io.Writer for quiet commands.
var Discard io.Writer = io.Discard

// Metric sums the series of name in g whose labels include every pair in
// labels (nil: all series), counters and gauges alike; 0 when none match.
func Metric(tb testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// FreeAddr returns a loopback address nothing listens on: a port just
// bound and released.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
