package proxy

import (
	"bytes"
	"errors"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/balancer"
	"github.com/holdfast-lb/holdfast/metrics"
)

// Route sends matching requests to a target. Host is exact, "*.suffix", or
// empty for any; PathPrefix empty matches every path.
type Route struct {
	Host       string
	PathPrefix string
	Target     *Target
}

type route struct {
	exact   []byte // lower-case host, or nil
	suffix  []byte // ".example.com" for "*.example.com"
	prefix  []byte
	target  *Target
	metrics *metrics.RequestSet
}

// Routes is a listener's routing table: first match wins, else Default.
type Routes struct {
	routes []route
	def    route
}

// NewRoutes builds a routing table for listener name.
func NewRoutes(listener string, def *Target, rs []Route, m *metrics.Metrics) *Routes {
	mk := func(t *Target) *metrics.RequestSet {
		if m == nil {
			return nil
		}
		return m.ForRequests(listener, t.Name)
	}
	out := &Routes{def: route{target: def, metrics: mk(def)}}
	for _, r := range rs {
		x := route{target: r.Target, metrics: mk(r.Target), prefix: []byte(r.PathPrefix)}
		h := strings.ToLower(r.Host)
		switch {
		case strings.HasPrefix(h, "*."):
			x.suffix = []byte(h[1:])
		case h != "":
			x.exact = []byte(h)
		}
		out.routes = append(out.routes, x)
	}
	return out
}

func (rt *Routes) match(host, path []byte) *route {
	if i := bytes.LastIndexByte(host, ':'); i >= 0 && !bytes.HasSuffix(host, []byte("]")) {
		host = host[:i]
	}
	for i := range rt.routes {
		r := &rt.routes[i]
		if r.exact != nil && !asciiEqualFold(host, r.exact) {
			continue
		}
		if r.suffix != nil && (len(host) <= len(r.suffix) || !asciiEqualFold(host[len(host)-len(r.suffix):], r.suffix)) {
			continue
		}
		if len(r.prefix) > 0 && !bytes.HasPrefix(path, r.prefix) {
			continue
		}
		return r
	}
	return &rt.def
}

func asciiEqualFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		c := a[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != b[i] {
			return false
		}
	}
	return true
}

// HTTPOptions configure an HTTP listener.
type HTTPOptions struct {
	Name           string
	MaxHeaderBytes int
	MaxBodyBytes   int64
	ReadTimeout    time.Duration
	WriteTimeout   time.Duration
	IdleTimeout    time.Duration
	AccessLog      bool
	// AccessLogger receives one JSON line per request when AccessLog is on;
	// nil writes JSON to standard output, as SPEC.md says.
	AccessLogger *slog.Logger
	Log          *slog.Logger
	Metrics      *metrics.Metrics
}

// HTTP is one HTTP listener's server. Safe for concurrent use; the routing
// table is swapped atomically on reload.
type HTTP struct {
	opts        HTTPOptions
	routes      atomic.Pointer[Routes]
	srv         *fasthttp.Server
	accessLogOn atomic.Bool
	draining    atomic.Bool
	log         *slog.Logger
	tunnels     tunnelSet // upgraded connections (websocket.go)
}

// NewHTTP builds an HTTP listener with its routing table.
func NewHTTP(o HTTPOptions, rt *Routes) *HTTP {
	h := &HTTP{opts: o, log: o.Log}
	if h.log == nil {
		h.log = slog.Default()
	}
	h.routes.Store(rt)
	h.accessLogOn.Store(o.AccessLog)
	if h.opts.AccessLogger == nil {
		h.opts.AccessLogger = slog.New(slog.NewJSONHandler(os.Stdout, nil))
	}
	maxBody := int(o.MaxBodyBytes)
	if maxBody <= 0 {
		maxBody = math.MaxInt
	}
	h.srv = &fasthttp.Server{
		Handler:                       h.serve,
		ErrorHandler:                  h.serveError,
		Name:                          "holdfast",
		ReadBufferSize:                o.MaxHeaderBytes,
		WriteBufferSize:               16 << 10,
		ReadTimeout:                   o.ReadTimeout,
		WriteTimeout:                  o.WriteTimeout,
		IdleTimeout:                   o.IdleTimeout,
		MaxRequestBodySize:            maxBody,
		StreamRequestBody:             o.MaxBodyBytes <= 0, // fasthttp streams past MaxRequestBodySize: a limited listener reads bodies whole (bounded)
		DisableHeaderNamesNormalizing: true,
		DisablePreParseMultipartForm:  true,
		NoDefaultServerHeader:         true,
		NoDefaultDate:                 true,
		NoDefaultContentType:          true,
		CloseOnShutdown:               true,
		Logger:                        discardLogger{},
	}
	return h
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

// Drain makes every response from now on close its connection, so a
// keep-alive client moves to a new connection on its next request instead
// of racing the close of an idle one. Safe to call concurrently.
func (h *HTTP) Drain() { h.draining.Store(true) }

// SetRoutes swaps the routing table (reload).
func (h *HTTP) SetRoutes(rt *Routes) { h.routes.Store(rt) }

// Serve accepts connections on ln until Shutdown.
func (h *HTTP) Serve(ln net.Listener) error { return h.srv.Serve(ln) }

// Server exposes the fasthttp server (TLS setup, tests).
func (h *HTTP) Server() *fasthttp.Server { return h.srv }

// serveError answers requests fasthttp could not parse.
func (h *HTTP) serveError(ctx *fasthttp.RequestCtx, err error) {
	rt := h.routes.Load()
	pool := rt.def.target.Name
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.As(err, &small):
		plain(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, "431 Request Header Fields Too Large (pool "+pool+")\n")
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		plain(ctx, fasthttp.StatusRequestEntityTooLarge, "413 Request Entity Too Large (pool "+pool+")\n")
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			plain(ctx, fasthttp.StatusRequestTimeout, "408 Request Timeout (pool "+pool+")\n")
		} else {
			plain(ctx, fasthttp.StatusBadRequest, "400 Bad Request (pool "+pool+")\n")
		}
	}
	ctx.SetConnectionClose()
	if rs := rt.def.metrics; rs != nil {
		rs.ByClass[metrics.ClassIndex(ctx.Response.StatusCode())].Inc()
	}
}

func plain(ctx *fasthttp.RequestCtx, code int, body string) {
	ctx.Response.Reset()
	ctx.Response.SetStatusCode(code)
	ctx.Response.Header.SetContentTypeBytes(textPlain)
	ctx.Response.SetBodyString(body)
}

func plainBytes(ctx *fasthttp.RequestCtx, code int, body []byte) {
	ctx.Response.Reset()
	ctx.Response.SetStatusCode(code)
	ctx.Response.Header.SetContentTypeBytes(textPlain)
	ctx.Response.SetBodyRaw(body)
}

var (
	textPlain  = []byte("text/plain; charset=utf-8")
	strHTTP    = []byte("http")
	strHTTPS   = []byte("https")
	hdrXFF     = "X-Forwarded-For"
	hdrXFProto = "X-Forwarded-Proto"
	hdrXFHost  = "X-Forwarded-Host"
)

// serve proxies one request in place: ctx.Request goes upstream as it is
// (less hop-by-hop headers, plus X-Forwarded-*), and the upstream response
// is read straight into ctx.Response.
func (h *HTTP) serve(ctx *fasthttp.RequestCtx) {
	r := h.routes.Load().match(ctx.Request.Header.Host(), ctx.Path())
	t := r.target
	var status int
	var took time.Duration
	if isUpgrade(&ctx.Request.Header) {
		status = h.upgrade(ctx, t)
		took = time.Since(ctx.Time())
	} else {
		status, took = h.proxy(ctx, t)
		if h.draining.Load() {
			ctx.SetConnectionClose()
		}
	}
	if rs := r.metrics; rs != nil {
		rs.ByClass[metrics.ClassIndex(status)].Inc()
		rs.Duration.Observe(took.Seconds())
	}
	if h.accessLogOn.Load() {
		h.accessLog(ctx, t, status)
	}
}

func (h *HTTP) accessLog(ctx *fasthttp.RequestCtx, t *Target, status int) {
	h.opts.AccessLogger.Info("request",
		"listener", h.opts.Name, "pool", t.Name,
		"method", string(ctx.Method()), "host", string(ctx.Host()), "path", string(ctx.Path()),
		"status", status, "client", ctx.RemoteIP().String(),
		"duration_ms", float64(time.Since(ctx.Time()).Microseconds())/1000)
}

func (h *HTTP) proxy(ctx *fasthttp.RequestCtx, t *Target) (int, time.Duration) {
	req, resp := &ctx.Request, &ctx.Response
	cfg := t.cfg.Load()
	t.deposit(cfg.Retry.Budget)

	closeClient := req.Header.ConnectionClose()
	if closeClient {
		req.Header.ResetConnectionClose()
	}
	prepareRequest(ctx)
	var hash uint64
	if cfg.HashKind != HashNone {
		hash = requestHash(ctx, cfg)
	}

	// Endpoints already tried, made on the first retry: a slice handed to
	// Picker.Pick (an interface method) escapes, so a stack array here cost
	// every request an allocation.
	var tried []*balancer.Endpoint
	picker := t.Pool.Picker()
	// Elapsed time since the request was read: each clock read is one
	// monotonic read (time.Since), serving the latency average, the next
	// attempt's start and the request duration.
	var elapsed time.Duration
	status := 0
	for attempt := 0; ; attempt++ {
		ep := picker.Pick(hash, tried)
		if ep == nil {
			plainBytes(ctx, fasthttp.StatusServiceUnavailable, t.msg503)
			status = fasthttp.StatusServiceUnavailable
			elapsed = time.Since(ctx.Time())
			break
		}
		up := ep.Upstream.(*Upstream)
		ep.Begin()
		err := up.hc.Do(req, resp)
		prev := elapsed
		elapsed = time.Since(ctx.Time())
		ep.End(elapsed - prev)
		if err == nil {
			status = resp.StatusCode()
			if status >= 500 {
				ep.Failure()
			} else {
				ep.Success()
			}
			if s := ep.Stats; s != nil {
				s.ByClass[metrics.ClassIndex(status)].Inc()
			}
			resp.Header.ResetConnectionClose()
			stripResponseHop(resp)
			break
		}
		st := stageOf(err)
		if st == stageQueue {
			plainBytes(ctx, fasthttp.StatusServiceUnavailable, t.msg503)
			status = fasthttp.StatusServiceUnavailable
			break
		}
		ep.Failure()
		if s := ep.Stats; s != nil {
			s.ByClass[5].Inc()
		}
		if st == stageTimeout {
			plainBytes(ctx, fasthttp.StatusGatewayTimeout, t.msg504)
			status = fasthttp.StatusGatewayTimeout
			break
		}
		if attempt < cfg.Retry.Attempts && h.retriable(req, st, cfg) && t.withdraw() {
			if st == stageConnect {
				if t.retryConnect != nil {
					t.retryConnect.Inc()
				}
			} else if t.retryReset != nil {
				t.retryReset.Inc()
			}
			if tried == nil {
				tried = make([]*balancer.Endpoint, 0, 4)
			}
			if len(tried) < cap(tried) {
				tried = append(tried, ep)
			}
			picker = t.Pool.Picker()
			continue
		}
		plainBytes(ctx, fasthttp.StatusBadGateway, t.msg502)
		status = fasthttp.StatusBadGateway
		break
	}
	if closeClient {
		ctx.SetConnectionClose()
	}
	return status, elapsed
}

// retriable says whether a failed attempt may go to another backend: a
// request that never left holdfast always may (any method, if its body can
// be sent again); one reset before any response byte only if idempotent.
func (h *HTTP) retriable(req *fasthttp.Request, st stage, cfg *TargetConfig) bool {
	switch st {
	case stageConnect:
		return cfg.Retry.OnConnectFailure
	case stageWrite:
		return cfg.Retry.OnConnectFailure && !req.IsBodyStream()
	case stageRead:
		return cfg.Retry.OnReset && !req.IsBodyStream() && isIdempotent(req)
	}
	return false
}

func requestHash(ctx *fasthttp.RequestCtx, cfg *TargetConfig) uint64 {
	switch cfg.HashKind {
	case HashHeader:
		if v := ctx.Request.Header.Peek(cfg.HashName); len(v) > 0 {
			return balancer.HashBytes(v)
		}
	case HashCookie:
		if v := ctx.Request.Header.Cookie(cfg.HashName); len(v) > 0 {
			return balancer.HashBytes(v)
		}
	}
	return balancer.HashBytes(ctx.RemoteIP())
}

// hopHeaders are removed in both directions (RFC 9110 §7.6.1).
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "TE", "Trailer", "Upgrade"}

func isHop(k []byte) bool {
	switch len(k) {
	case 2, 7, 10, 16, 18, 19:
	default:
		return false
	}
	for _, h := range hopHeaders {
		if len(h) == len(k) && asciiEqualFoldStr(k, h) {
			return true
		}
	}
	return false
}

func asciiEqualFoldStr(a []byte, b string) bool {
	for i := range a {
		x, y := a[i]|0x20, b[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}

// prepareRequest strips hop-by-hop headers and sets X-Forwarded-*.
func prepareRequest(ctx *fasthttp.RequestCtx) {
	hdr := &ctx.Request.Header
	found := false
	for k := range hdr.All() {
		if isHop(k) {
			found = true
			break
		}
	}
	if found {
		stripNamed(hdr.Peek("Connection"), hdr.DelBytes)
		for _, k := range hopHeaders {
			hdr.Del(k)
		}
	}
	var buf [256]byte
	b := buf[:0]
	if prior := hdr.Peek(hdrXFF); len(prior) > 0 {
		b = append(b, prior...)
		b = append(b, ", "...)
	}
	b = appendIP(b, ctx.RemoteIP())
	hdr.SetBytesV(hdrXFF, b)
	if ctx.IsTLS() {
		hdr.SetBytesV(hdrXFProto, strHTTPS)
		ctx.Request.URI().SetSchemeBytes(strHTTP)
	} else {
		hdr.SetBytesV(hdrXFProto, strHTTP)
	}
	hdr.SetBytesV(hdrXFHost, hdr.Host())
	// Host goes upstream as the client sent it: without this, fasthttp
	// rewrites it from the parsed URI, lower-cased.
	ctx.Request.UseHostHeader = true
}

// stripNamed removes the headers a Connection header lists.
func stripNamed(conn []byte, del func([]byte)) {
	for len(conn) > 0 {
		var tok []byte
		if i := bytes.IndexByte(conn, ','); i >= 0 {
			tok, conn = conn[:i], conn[i+1:]
		} else {
			tok, conn = conn, nil
		}
		tok = bytes.TrimSpace(tok)
		if len(tok) > 0 && !(len(tok) == 5 && asciiEqualFoldStr(tok, "close")) {
			del(tok) // DelBytes: a string(tok) here cost an allocation per token
		}
	}
}

// stripResponseHop is prepareRequest's hop-by-hop pass for the response
// header. It is written out twice on purpose: a shared helper over both
// header types (generic, or taking their methods as func values) costs 4-6
// heap allocations per request, which TestProxyRequestPathAllocs forbids.
func stripResponseHop(resp *fasthttp.Response) {
	hdr := &resp.Header
	found := false
	for k := range hdr.All() {
		if isHop(k) {
			found = true
			break
		}
	}
	if found {
		stripNamed(hdr.Peek("Connection"), hdr.DelBytes)
		for _, k := range hopHeaders {
			hdr.Del(k)
		}
	}
}

func appendIP(b []byte, ip net.IP) []byte {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return append(b, "unknown"...)
	}
	return a.Unmap().AppendTo(b)
}

// SetAccessLog turns the access log on or off (reload).
func (h *HTTP) SetAccessLog(on bool) { h.accessLogOn.Store(on) }
