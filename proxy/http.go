package proxy

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/balancer"
	"github.com/holdfast-lb/holdfast/metrics"
)

// HTTPOptions configure an HTTP listener.
type HTTPOptions struct {
	Name           string
	MaxHeaderBytes int
	MaxBodyBytes   int64
	// HeaderTimeout bounds the time to receive a request head; ReadTimeout
	// the longest silence while a body arrives; WriteTimeout the longest a
	// write to the client may stay blocked; IdleTimeout the wait for the
	// next request on a keep-alive connection.
	HeaderTimeout time.Duration
	ReadTimeout   time.Duration
	WriteTimeout  time.Duration
	IdleTimeout   time.Duration
	// Park is how long a plain-TCP keep-alive connection waits for its
	// next request on a goroutine before it is parked (park.go): held in
	// an epoll set with no goroutine and no buffer until it is readable.
	// 0: never parked.
	Park time.Duration
	// TrackIdle marks each connection while it waits for its next request,
	// so that LimitListener.EndKeepAlive can close it (a listener on an
	// address that may leave the host); see SetAddressLost.
	TrackIdle bool
	// HTTP2Only: no HTTP/1.x; a plain connection that does not open with
	// the h2 preface, or a TLS one that did not negotiate "h2", is closed.
	HTTP2Only bool
	// Policy is the part of the rules a reload replaces in place.
	Policy    Policy
	AccessLog bool
	// AccessLogQueue takes one line per request when AccessLog is on
	// (JSON, or NCSA combined with AccessLogCombined) to its writer; nil:
	// a queue of the listener's own on standard output, closed by
	// Shutdown.
	AccessLogQueue    *LogQueue
	AccessLogCombined bool
	Log               *slog.Logger
	Metrics           *metrics.Metrics
	// RequestIDs generates X-Request-ID values (Policy.RequestID); nil:
	// one of the listener's own, with a crypto/rand prefix.
	RequestIDs *RequestIDs
}

// Policy holds a listener's request rules that change on reload without a
// new socket.
type Policy struct {
	// TrustedProxies are the peers whose X-Forwarded-Proto and
	// X-Forwarded-Host are kept.
	TrustedProxies TrustList
	// Upgrades are the Upgrade protocols passed through (lower case);
	// nil means websocket only. h2c is never passed.
	Upgrades []string
	// KeepEncodedSlash forwards %2F and %5C as they are instead of 400.
	KeepEncodedSlash bool
	// RequestHeaders and ResponseHeaders edit every request and response
	// of the listener; a route's own rules apply after them.
	RequestHeaders  HeaderRules
	ResponseHeaders HeaderRules
	// RequestID keeps X-Request-ID from TrustedProxies, else replaces it
	// with a new one; it goes upstream and into the access log.
	RequestID bool

	reqOps, respOps *headerOps // compiled by SetPolicy
}

// HTTP is one HTTP listener's server. Safe for concurrent use; the routing
// table is swapped atomically on reload.
type HTTP struct {
	opts        HTTPOptions
	routes      atomic.Pointer[Routes]
	policy      atomic.Pointer[Policy]
	srv         *fasthttp.Server
	accessLogOn atomic.Bool
	combined    atomic.Bool
	draining    atomic.Bool
	addrLost    atomic.Bool // the listener's address left the host (SetAddressLost)
	log         *slog.Logger
	tunnels     tunnelSet // upgraded connections (websocket.go)
	badRequest  prometheus.Counter
	poller      atomic.Pointer[poller] // parked connections; nil: none
	ownQueue    bool                   // AccessLogQueue was made here: Shutdown closes it
	h2          *h2Side                // HTTP/2 connections (h2server.go)
}

// NewHTTP builds an HTTP listener with its routing table.
func NewHTTP(o HTTPOptions, rt *Routes) *HTTP {
	h := &HTTP{opts: o, log: o.Log}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.opts.RequestIDs == nil {
		ids, err := NewRequestIDs(nil)
		if err != nil {
			// crypto/rand does not fail on Linux; a fixed prefix keeps
			// IDs unique within the process all the same.
			h.log.Warn("request ids without a random prefix", "err", err)
			ids = &RequestIDs{}
			copy(ids.prefix[:], "0000000000000000")
		}
		h.opts.RequestIDs = ids
	}
	h.SetPolicy(o.Policy)
	if h.opts.HeaderTimeout <= 0 {
		h.opts.HeaderTimeout = o.ReadTimeout
	}
	if o.Metrics != nil {
		h.badRequest = o.Metrics.ListenerRejected.WithLabelValues(o.Name, "bad_request")
	}
	h.routes.Store(rt)
	h.accessLogOn.Store(o.AccessLog)
	h.combined.Store(o.AccessLogCombined)
	if h.opts.AccessLogQueue == nil {
		h.opts.AccessLogQueue = NewLogQueue(os.Stdout, 0, nil)
		h.ownQueue = true
	}
	h.srv = &fasthttp.Server{
		Handler:      h.serve,
		ErrorHandler: h.serveError,
		// The head must arrive within the header timeout; a body's own
		// reads are bounded by the read timeout, as silence (reqBody).
		HeaderReceived: h.headerReceived,
		Name:           "holdfast",
		ReadBufferSize: o.MaxHeaderBytes,
		// fasthttp reads at most 8 KiB of a body before the handler; the
		// rest is read (or not) by the handler, which closes the connection
		// when it did not read a body to its end.
		StreamRequestBody: true,
		// With streaming, fasthttp reads min(this, 8 KiB) of a body before
		// the handler, under one deadline: 1 byte keeps the read timeout a
		// bound on silence for the whole body (reqBody reads the rest).
		MaxRequestBodySize:           1,
		WriteBufferSize:              16 << 10,
		ReduceMemoryUsage:            true,
		ReadTimeout:                  h.opts.HeaderTimeout,
		WriteTimeout:                 o.WriteTimeout,
		IdleTimeout:                  o.IdleTimeout,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultDate:                true,
		NoDefaultContentType:         true,
		CloseOnShutdown:              true,
		Logger:                       discardLogger{},
	}
	h.h2 = newH2Side(&h.opts, http.HandlerFunc(h.serveH2), h.log)
	if o.TrackIdle || (o.Park > 0 && parkSupported) {
		h.srv.ConnState = h.connState
	}
	// fasthttp's worker pool serves no connection: h2Listener serves each
	// one (Server.ServeConn) on the goroutine that sorted it.
	return h
}

// connState tells a parkable connection when fasthttp starts and ends its
// wait for the next request.
func (h *HTTP) connState(c net.Conn, s fasthttp.ConnState) {
	if s != fasthttp.StateIdle && s != fasthttp.StateActive {
		return
	}
	idle := s == fasthttp.StateIdle
	if h.opts.TrackIdle {
		if cc := counted(c); cc != nil {
			cc.kaIdle.Store(idle)
			if idle && h.addrLost.Load() && cc.endKeepAlive.Load() {
				// Gone idle after EndKeepAlive's sweep (its response went
				// out just before): close it as the sweep would have.
				cc.closeNow()
				return
			}
		}
	}
	if cc := parkable(c); cc != nil {
		cc.keepAliveWait(idle)
	}
}

// SetAddressLost marks that the listener's address left the host (a
// floating IP moved to another node while this one keeps running). The
// caller then calls LimitListener.EndKeepAlive, which closes the idle
// connections; with TrackIdle, the connections it marked get their next
// response with Connection: close, and close if they go idle. Connections
// accepted after it keep alive: they reach this node only while clients
// still have its link address, and new connections made just before
// their neighbour cache moves to the new holder are the ones a switch
// breaks (a reset on a fresh connection is not retried; on a reused one
// it is). Until SetAddressLost(false). Safe to call concurrently.
func (h *HTTP) SetAddressLost(lost bool) { h.addrLost.Store(lost) }

// resume serves a parked connection that became readable.
func (h *HTTP) resume(c net.Conn) {
	go func() {
		if err := h.srv.ServeConn(c); err != nil {
			h.log.Debug("resumed connection failed", "err", err)
		}
	}()
}

// endKeepAlive reports whether LimitListener.EndKeepAlive marked c.
func endKeepAlive(c net.Conn) bool {
	cc := counted(c)
	return cc != nil && cc.endKeepAlive.Load()
}

// Parked is the number of connections parked now (no goroutine).
func (h *HTTP) Parked() int {
	if p := h.poller.Load(); p != nil {
		return p.Parked()
	}
	return 0
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

// headerReceived gives a request with a body the read timeout for what
// fasthttp reads of it before the handler runs.
func (h *HTTP) headerReceived(hdr *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if cl := hdr.ContentLength(); cl > 0 || cl == -1 {
		return fasthttp.RequestConfig{ReadTimeout: h.opts.ReadTimeout}
	}
	return fasthttp.RequestConfig{}
}

// Drain makes every response from now on close its connection, so a
// keep-alive client moves to a new connection on its next request instead
// of racing the close of an idle one. Safe to call concurrently.
// HTTP/2 connections get a GOAWAY: their streams finish, no new one
// starts.
func (h *HTTP) Drain() {
	h.draining.Store(true)
	h.h2.drain()
}

// SetPolicy swaps the listener's request rules (reload).
func (h *HTTP) SetPolicy(p Policy) {
	if p.Upgrades == nil {
		p.Upgrades = []string{"websocket"}
	}
	p.reqOps = compileHeaderRules(p.RequestHeaders)
	p.respOps = compileHeaderRules(p.ResponseHeaders)
	h.policy.Store(&p)
}

// SetRoutes swaps the routing table (reload). A route's rate-limit
// buckets carry over to the new table's route of the same name (see
// carry). Not for concurrent use with itself (reloads are serialised).
func (h *HTTP) SetRoutes(rt *Routes) {
	if old := h.routes.Load(); old != nil && old != rt {
		rt.carryLimits(old)
	}
	h.routes.Store(rt)
}

// Serve accepts connections on ln until Shutdown. With Park set, plain
// TCP keep-alive connections are parked once idle past it.
func (h *HTTP) Serve(ln net.Listener) error {
	var prepare func(net.Conn)
	if h.opts.Park > 0 && parkSupported {
		var gauge prometheus.Gauge
		if h.opts.Metrics != nil {
			gauge = h.opts.Metrics.ListenerIdle.WithLabelValues(h.opts.Name)
		}
		p, err := newPoller(pollerOptions{Grace: h.opts.Park, Idle: h.opts.IdleTimeout,
			Resume: h.resume, Gauge: gauge, Log: h.log})
		if err != nil {
			h.log.Warn("idle connections keep their goroutine", "err", err)
		} else {
			h.poller.Store(p)
			prepare = func(c net.Conn) { enablePark(p, c) }
		}
	}
	// h2 connections never reach fasthttp, nor parking.
	return h.srv.Serve(h.h2Listen(ln, prepare))
}

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
	if h.badRequest != nil {
		h.badRequest.Inc()
	}
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

// Why holdfast answered a request itself, for the access log.
const (
	flagNoBackend uint16 = 1 << iota
	flagUpstreamTimeout
	flagQueueTimeout
	flagClientAbort
	flagBadRequest
	flagBodyNotRetried
	flagLocalExhaustion
	flagUpstreamFailed
	flagRateLimited
)

var flagNames = [...]string{"no_backend", "upstream_timeout", "queue_timeout", "client_abort",
	"bad_request", "body_not_retried", "local_exhaustion", "upstream_failed", "rate_limited"}

// exchange is one request's state across the handler's steps.
type exchange struct {
	route    *route
	status   int
	out      outcome
	flags    uint16
	closeAll bool // close the client connection after the response
	unread   bool // the request body was not read to its end: linger on close
	ruled    bool // the response header rules were applied already
	idLen    uint8
	id       [maxRequestID]byte // the request's X-Request-ID (Policy.RequestID)
}

// requestID is the request's ID; empty when request_id is off.
func (x *exchange) requestID() []byte { return x.id[:x.idLen] }

// setRequestID keeps the X-Request-ID a trusted proxy sent, or sets a new
// one, and notes it for the log and the {request_id} placeholder.
func (h *HTTP) setRequestID(ctx *fasthttp.RequestCtx, x *exchange, pol *Policy) {
	hdr := &ctx.Request.Header
	if v := hdr.Peek(hdrRequestID); validRequestID(v) && pol.TrustedProxies.Contains(ipAddr(ctx.RemoteIP())) {
		x.idLen = uint8(copy(x.id[:], v))
		return
	}
	id := h.opts.RequestIDs.Append(x.id[:0])
	x.idLen = uint8(len(id))
	hdr.Del(hdrRequestID)
	hdr.SetBytesV(hdrRequestID, id)
}

// serve proxies one request in place: ctx.Request goes upstream as it is
// (its target normalised, hop-by-hop headers removed, X-Forwarded-* set),
// and the upstream response is read straight into ctx.Response.
func (h *HTTP) serve(ctx *fasthttp.RequestCtx) {
	var x exchange
	h.serveExchange(ctx, &x)
}

// serveExchange is serve with the exchange kept by the caller (the h2
// side reads how the request ended).
func (h *HTTP) serveExchange(ctx *fasthttp.RequestCtx, x *exchange) {
	h.handle(ctx, x)
	if !x.ruled {
		h.responseRules(ctx, x)
	}
	if x.closeAll || h.draining.Load() || (h.addrLost.Load() && endKeepAlive(ctx.Conn())) {
		ctx.SetConnectionClose()
	}
	if x.unread {
		lingerOnClose(ctx.Conn())
	}
	if x.route == nil {
		x.route = &h.routes.Load().def
	}
	if rs := x.route.metrics; rs != nil {
		rs.ByClass[metrics.ClassIndex(x.status)].Inc()
		rs.Duration.Observe(x.out.elapsed.Seconds())
	}
	if t := x.route.target; t != nil {
		t.Pool.Traffic.Status(answerOutcome(x), x.out.elapsed)
	}
	if h.accessLogOn.Load() {
		h.accessLog(ctx, x)
	}
}

func (h *HTTP) handle(ctx *fasthttp.RequestCtx, x *exchange) {
	req := &ctx.Request
	hdr := &req.Header
	client10 := !hdr.IsHTTP11()
	if hdr.IsConnect() {
		h.refuse(ctx, x, fasthttp.StatusMethodNotAllowed, "405 Method Not Allowed: holdfast is not a forward proxy\n")
		return
	}
	if p := hdr.Protocol(); !bytes.Equal(p, strHTTP11) && !bytes.Equal(p, strHTTP10) {
		h.refuse(ctx, x, fasthttp.StatusHTTPVersionNotSupported, "505 HTTP Version Not Supported\n")
		return
	}
	if !framingOK(hdr.RawHeaders()) || (!client10 && len(hdr.Host()) == 0) {
		h.refuse(ctx, x, fasthttp.StatusBadRequest, "400 Bad Request: ambiguous framing or no Host\n")
		return
	}
	// The request target: an absolute form names its own host (RFC 9112
	// §3.2.2); the path is normalised once and routed and forwarded as such.
	uri := hdr.RequestURI()
	host := hdr.Host()
	if len(uri) > 7 && uri[0] != '/' && (asciiEqualFoldStr(uri, "http://") || asciiEqualFoldStr(uri, "https://")) {
		rest := uri[bytes.IndexByte(uri, ':')+3:]
		end := bytes.IndexAny(rest, "/?")
		if end < 0 {
			end = len(rest)
		}
		if end == 0 || bytes.IndexByte(rest[:end], '@') >= 0 {
			h.refuse(ctx, x, fasthttp.StatusBadRequest, "400 Bad Request: bad absolute-form target\n")
			return
		}
		hdr.SetHostBytes(rest[:end])
		var tbuf [512]byte
		t := append(tbuf[:0], rest[end:]...)
		if len(t) == 0 || t[0] == '?' {
			t = append(append(tbuf[:0], '/'), rest[end:]...)
		}
		hdr.SetRequestURIBytes(t)
		uri, host = hdr.RequestURI(), hdr.Host()
	}
	if !validHost(host) {
		h.refuse(ctx, x, fasthttp.StatusBadRequest, "400 Bad Request: malformed Host\n")
		return
	}
	path, query := uri, []byte(nil)
	if i := bytes.IndexByte(uri, '?'); i >= 0 {
		path, query = uri[:i], uri[i:]
	}
	pol := h.policy.Load()
	if pol.RequestID {
		h.setRequestID(ctx, x, pol)
	}
	if !(len(path) == 1 && path[0] == '*' && hdr.IsOptions()) {
		var pbuf [512]byte
		np, v := normalizePath(pbuf[:0], path, pol.KeepEncodedSlash)
		switch v {
		case pathBad:
			h.refuse(ctx, x, fasthttp.StatusBadRequest, "400 Bad Request: malformed request target\n")
			return
		case pathEncodedSep:
			h.refuse(ctx, x, fasthttp.StatusBadRequest, "400 Bad Request: encoded slash or backslash in path\n")
			return
		}
		if len(np) != len(path) || (len(np) > 0 && &np[0] != &path[0]) {
			np = append(np, query...)
			hdr.SetRequestURIBytes(np)
			uri = hdr.RequestURI()
			path = uri[:len(uri)-len(query)]
		}
	}
	if (hdr.IsOptions() || hdr.IsTrace()) && h.maxForwards(ctx, x) {
		return
	}
	x.route = h.routes.Load().match(host, path)
	if l := x.route.limit; l != nil {
		if ok, wait := l.allow(ctx); !ok {
			h.rateLimited(ctx, x, wait)
			return
		}
	}
	if rd := x.route.redirect; rd != nil {
		h.redirect(ctx, x, rd, host, uri)
		return
	}
	if x.route.strip {
		var sbuf [512]byte
		np := append(x.route.stripped(sbuf[:0], path), query...)
		hdr.SetRequestURIBytes(np)
	}
	t := x.route.target
	if wantsUpgrade(hdr, pol) {
		x.status = h.upgrade(ctx, t, x, pol)
		return
	}
	h.proxy(ctx, t, x, client10, pol)
}

// redirect answers a redirect route's request with its Location. A body
// the client sent is not read: the connection closes after the answer.
func (h *HTTP) redirect(ctx *fasthttp.RequestCtx, x *exchange, rd *redirect, host, uri []byte) {
	var lbuf [512]byte
	loc := rd.appendLocation(lbuf[:0], ctx.IsTLS(), host, uri)
	resp := &ctx.Response
	resp.Reset()
	resp.SetStatusCode(rd.code)
	resp.Header.SetBytesV("Location", loc)
	resp.Header.SetContentLength(0)
	x.status = rd.code
	if cl := ctx.Request.Header.ContentLength(); cl > 0 || cl == -1 {
		x.closeAll, x.unread = true, true
	}
}

// rateLimited answers 429 with Retry-After: wait seconds.
func (h *HTTP) rateLimited(ctx *fasthttp.RequestCtx, x *exchange, wait int) {
	pool := x.route.poolName()
	plain(ctx, fasthttp.StatusTooManyRequests, "429 Too Many Requests (pool "+pool+")\n")
	var b [20]byte
	ctx.Response.Header.SetBytesV("Retry-After", strconv.AppendInt(b[:0], int64(wait), 10))
	x.status = fasthttp.StatusTooManyRequests
	x.flags |= flagRateLimited
	if cl := ctx.Request.Header.ContentLength(); cl > 0 || cl == -1 {
		x.closeAll, x.unread = true, true
	}
}

// requestRules applies the listener's request header rules, then the
// route's: after hop-by-hop removal and the forwarding headers, so a rule
// has the last word on every header it may touch.
func (h *HTTP) requestRules(ctx *fasthttp.RequestCtx, x *exchange, pol *Policy) {
	pol.reqOps.applyRequest(ctx, x.requestID())
	x.route.reqOps.applyRequest(ctx, x.requestID())
}

// responseRules applies the listener's response header rules, then the
// route's, to whatever answer goes out: a backend's, a redirect, or one
// of holdfast's own errors.
func (h *HTTP) responseRules(ctx *fasthttp.RequestCtx, x *exchange) {
	x.ruled = true
	h.policy.Load().respOps.applyResponse(ctx, x.requestID())
	if x.route != nil {
		x.route.respOps.applyResponse(ctx, x.requestID())
	}
}

// maxForwards applies Max-Forwards to OPTIONS and TRACE (RFC 9110
// §7.6.2): at 0 holdfast answers itself, as the last recipient; above, the
// value goes on decremented. It reports whether the request was answered.
func (h *HTTP) maxForwards(ctx *fasthttp.RequestCtx, x *exchange) bool {
	hdr := &ctx.Request.Header
	v := hdr.Peek("Max-Forwards")
	if len(v) == 0 {
		return false
	}
	n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 31)
	if err != nil {
		return false // not a number: passed on as it came
	}
	if n > 0 {
		hdr.Set("Max-Forwards", strconv.FormatUint(n-1, 10))
		return false
	}
	if hdr.IsTrace() {
		plain(ctx, fasthttp.StatusMethodNotAllowed, "405 Method Not Allowed: TRACE is not answered\n")
		x.status = fasthttp.StatusMethodNotAllowed
		return true
	}
	ctx.Response.Reset()
	ctx.Response.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.Set("Allow", "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS")
	ctx.Response.Header.SetContentLength(0)
	x.status = fasthttp.StatusOK
	return true
}

// validHost reports whether h can be a Host (RFC 9110 §7.2: uri-host
// [":" port]): registered-name characters, an IP literal in brackets, a
// port. Empty is valid here (HTTP/1.0 may omit it).
func validHost(h []byte) bool {
	for _, c := range h {
		if c >= 0x80 || !hostTable[c] {
			return false
		}
	}
	return true
}

var hostTable = func() (t [128]bool) {
	for c := 0; c < 128; c++ {
		t[c] = isUnreserved(byte(c))
	}
	for _, c := range "!$&'()*+,;=:[]%" {
		t[c] = true
	}
	return t
}()

// refuse answers a request holdfast will not pass on, and closes.
func (h *HTTP) refuse(ctx *fasthttp.RequestCtx, x *exchange, code int, msg string) {
	pool := h.routes.Load().def.target.Name
	plain(ctx, code, strings.TrimSuffix(msg, "\n")+" (pool "+pool+")\n")
	x.status, x.closeAll = code, true
	x.flags |= flagBadRequest
	if h.badRequest != nil {
		h.badRequest.Inc()
	}
}

func (h *HTTP) accessLog(ctx *fasthttp.RequestCtx, x *exchange) {
	q := h.opts.AccessLogQueue
	l := q.Line()
	if h.combined.Load() {
		h.combinedLog(l, ctx, x)
		q.Submit(l)
		return
	}
	l.head(time.Now(), "request")
	l.strs("listener", h.opts.Name)
	l.strs("route", x.route.name)
	l.strs("pool", x.route.poolName())
	backend := ""
	if x.out.ep != nil {
		backend = x.out.ep.Addr
	}
	l.strs("backend", backend)
	l.str("method", ctx.Method())
	l.str("host", ctx.Request.Header.Host())
	l.str("path", ctx.Request.Header.RequestURI())
	l.str("proto", requestProto(ctx))
	l.int("status", int64(x.status))
	l.int("bytes_in", int64(ctx.Request.Header.ContentLength()))
	l.int("bytes_out", int64(ctx.Response.Header.ContentLength()))
	l.key("client")
	l.b = append(l.b, '"')
	l.b = appendIP(l.b, ctx.RemoteIP())
	l.b = append(l.b, '"')
	l.str("request_id", x.requestID())
	tlsv := ""
	if ctx.IsTLS() {
		tlsv = "tls"
	}
	l.strs("tls", tlsv)
	l.str("user_agent", ctx.UserAgent())
	l.int("attempts", int64(x.out.attempts))
	l.key("retry_reasons")
	l.b = append(l.b, '[')
	n := 0
	reason := func(r string) {
		if n > 0 {
			l.b = append(l.b, ',')
		}
		n++
		l.b = append(l.b, '"')
		l.b = append(l.b, r...)
		l.b = append(l.b, '"')
	}
	if x.out.retried&retriedConnect != 0 {
		reason("connect_failure")
	}
	if x.out.retried&retriedReset != 0 {
		reason("reset")
	}
	if x.out.retried&retriedStatus != 0 {
		if n > 0 {
			l.b = append(l.b, ',')
		}
		n++
		l.b = append(l.b, `"status_`...)
		l.b = appendInt(l.b, int64(x.out.retryStatus))
		l.b = append(l.b, '"')
	}
	if x.out.retried&retriedTryTimeout != 0 {
		reason("per_try_timeout")
	}
	l.b = append(l.b, ']')
	l.key("flags")
	l.b = append(l.b, '[')
	n = 0
	for i, f := range flagNames {
		if x.flags&(1<<i) != 0 {
			reason(f)
		}
	}
	l.b = append(l.b, ']')
	l.ms("upstream_ms", x.out.elapsed)
	l.ms("duration_ms", time.Since(ctx.Time()))
	l.end()
	q.Submit(l)
}

// proxy sends the request to the target's backends and puts the answer in
// ctx.Response.
func (h *HTTP) proxy(ctx *fasthttp.RequestCtx, t *Target, x *exchange, client10 bool, pol *Policy) {
	req, resp := &ctx.Request, &ctx.Response
	hdr := &req.Header
	cfg := t.cfg.Load()

	var body reqBody
	var pb *[]byte
	if cl := hdr.ContentLength(); cl > 0 || cl == -1 {
		pb = bodyBufPool.Get().(*[]byte)
		body.buf = (*pb)[:0]
		if !h.readBody(ctx, t, cfg, x, &body, cl) {
			body.release(pb)
			return
		}
		defer body.release(pb)
	}

	ct := stripRequestHop(hdr)
	if ct.close || hdr.ConnectionClose() {
		x.closeAll = true
	}
	hdr.ResetConnectionClose()
	setForwarded(hdr, ctx.RemoteIP(), ctx.IsTLS(), pol.TrustedProxies.Contains(ipAddr(ctx.RemoteIP())), hdr.Host())
	h.requestRules(ctx, x, pol)
	hdr.SetNoDefaultContentType(true)
	if client10 {
		hdr.SetProtocolBytes(strHTTP11) // holdfast speaks HTTP/1.1 upstream
	}
	var hash uint64
	if cfg.HashKind != HashNone {
		hash = requestHash(ctx, cfg)
	}
	ar := attemptReq{idempotent: isIdempotent(req), resp: resp}
	if pb != nil {
		ar.body = &body
	}
	client, writeIdle := ctx.Conn(), h.opts.WriteTimeout
	start := ctx.Time()
	if pb != nil {
		// A body was read first: the backends' latency starts now, not
		// with the client's upload.
		start = time.Now()
	}
	x.out = t.run(cfg, hash, start, ar, func(ep *balancer.Endpoint) (stage, int) {
		err := upstreamOf(ep).roundTrip(req, resp, &ar, client, writeIdle, cfg.Retry.PerTryTimeout)
		if err != nil {
			resp.Reset()
			return stageOf(err), 0
		}
		return stageOK, resp.StatusCode()
	})
	if client10 {
		hdr.SetProtocol("HTTP/1.0")
	}
	if pb != nil && !body.eof && body.src != nil {
		// The response went out before the body was read to its end: what
		// is left of it must never be parsed as a request.
		x.closeAll, x.unread = true, true
	}
	switch x.out.st {
	case stageOK:
		x.status = x.out.status
		resp.Header.ResetConnectionClose()
		stripResponseHop(&resp.Header)
		h.responseRules(ctx, x) // before closeDelimited writes the head
		if client10 && resp.IsBodyStream() && resp.Header.ContentLength() < 0 {
			h.closeDelimited(ctx)
			x.closeAll = true
		}
		return
	case stageNoBackend:
		x.flags |= flagNoBackend
		x.status = fasthttp.StatusServiceUnavailable
		plainBytes(ctx, x.status, t.msg503)
	case stageQueue:
		x.flags |= flagQueueTimeout
		x.status = fasthttp.StatusServiceUnavailable
		plainBytes(ctx, x.status, t.msg503)
	case stageLocal:
		x.flags |= flagLocalExhaustion
		x.status = fasthttp.StatusServiceUnavailable
		plainBytes(ctx, x.status, t.msg503)
	case stageTimeout, stageTryTimeout:
		x.flags |= flagUpstreamTimeout
		x.status = fasthttp.StatusGatewayTimeout
		plainBytes(ctx, x.status, t.msg504)
	case stageClient:
		x.closeAll, x.unread = true, true
		x.status = h.clientFailure(ctx, t, x, &body)
	default:
		x.flags |= flagUpstreamFailed
		if !ar.resendable() {
			x.flags |= flagBodyNotRetried
		}
		x.status = fasthttp.StatusBadGateway
		plainBytes(ctx, x.status, t.msg502)
	}
}

// readBody reads a body of up to the pool's buffer_body whole, so a retry
// can send it again, or sets up a larger one to be streamed. It answers
// the client itself (and returns false) when the body is too large, ends
// early, stalls or is malformed.
func (h *HTTP) readBody(ctx *fasthttp.RequestCtx, t *Target, cfg *TargetConfig, x *exchange, b *reqBody, cl int) bool {
	b.max, b.want = h.opts.MaxBodyBytes, int64(cl)
	if b.max > 0 && int64(cl) > b.max {
		x.closeAll, x.unread = true, true
		x.status = fasthttp.StatusRequestEntityTooLarge
		plainBytes(ctx, x.status, t.msg413)
		return false
	}
	b.src = ctx.RequestBodyStream()
	if b.src == nil { // read whole by the server (not streamed)
		b.buf = append(b.buf, ctx.Request.Body()...)
		b.eof = true
		ctx.Request.Header.SetContentLength(len(b.buf))
		return true
	}
	b.conn, b.idle = ctx.Conn(), h.opts.ReadTimeout
	if cl > cfg.BufferBody {
		return true // streamed with its length; never resent once started
	}
	before := 0
	if cl == -1 {
		before = ctx.Request.Header.Len()
	}
	whole, err := b.fill(cfg.BufferBody)
	if cl == -1 {
		// fasthttp reads a chunked body's trailer section into the request
		// header; a kept body goes upstream with a length and no trailers,
		// and a trailer never becomes a header.
		dropTrailers(&ctx.Request.Header, before)
	}
	if err != nil {
		x.closeAll, x.unread = true, true
		x.status = h.clientFailure(ctx, t, x, b)
		return false
	}
	if whole {
		// Kept whole: sent with its length, whatever framing it came in.
		ctx.Request.Header.SetContentLength(len(b.buf))
		return true
	}
	b.chunked = true // a chunked body larger than buffer_body: streamed
	return true
}

// lingerOnClose asks the client connection (under its PROXY or other
// wrappers; not TLS) to close lingering.
func lingerOnClose(c net.Conn) {
	for range 4 {
		switch v := c.(type) {
		case interface{ lingerOnClose() }:
			v.lingerOnClose()
			return
		case interface{ Unwrap() net.Conn }:
			c = v.Unwrap()
		default:
			return
		}
	}
}

// dropTrailers removes the header entries past the first n: the trailer
// fields fasthttp appended while reading a chunked body. Only for chunked
// requests whose trailer section was not empty.
func dropTrailers(hdr *fasthttp.RequestHeader, n int) {
	if hdr.Len() <= n {
		return
	}
	type field struct{ k, v []byte }
	var keep []field
	added := map[string]bool{}
	i := 0
	for k, v := range hdr.All() {
		if i < n {
			keep = append(keep, field{append([]byte(nil), k...), append([]byte(nil), v...)})
		} else {
			added[string(k)] = true
		}
		i++
	}
	for name := range added {
		hdr.Del(name)
	}
	for _, f := range keep {
		if added[string(f.k)] {
			hdr.AddBytesKV(f.k, f.v)
		}
	}
}

// clientFailure answers a request whose body failed on the client's side.
func (h *HTTP) clientFailure(ctx *fasthttp.RequestCtx, t *Target, x *exchange, b *reqBody) int {
	err := b.err
	var ne net.Error
	switch {
	case errors.Is(err, errBodyTooLarge):
		plainBytes(ctx, fasthttp.StatusRequestEntityTooLarge, t.msg413)
		return fasthttp.StatusRequestEntityTooLarge
	case errors.As(err, &ne) && ne.Timeout():
		x.flags |= flagClientAbort
		plain(ctx, fasthttp.StatusRequestTimeout, "408 Request Timeout: the request body stalled (pool "+t.Name+")\n")
		return fasthttp.StatusRequestTimeout
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
		x.flags |= flagClientAbort
		plain(ctx, fasthttp.StatusBadRequest, "400 Bad Request: the request body ended early (pool "+t.Name+")\n")
		return fasthttp.StatusBadRequest
	}
	x.flags |= flagBadRequest
	if h.badRequest != nil {
		h.badRequest.Inc()
	}
	plain(ctx, fasthttp.StatusBadRequest, "400 Bad Request: malformed request body (pool "+t.Name+")\n")
	return fasthttp.StatusBadRequest
}

// closeDelimited sends a response of unknown length to an HTTP/1.0
// client, which cannot take chunked: the body runs until holdfast closes
// the connection.
func (h *HTTP) closeDelimited(ctx *fasthttp.RequestCtx) {
	resp := &ctx.Response
	s, ok := resp.BodyStream().(*bodyStream)
	if !ok {
		return
	}
	s.oneShot = true // closed here; fasthttp's own close later is a no-op
	resp.Header.SetConnectionClose()
	resp.Header.SetContentLength(-2)
	resp.Header.Del("Transfer-Encoding")
	head := resp.Header.AppendBytes(nil)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		defer s.Close()
		if _, err := c.Write(head); err != nil {
			return
		}
		_, _ = io.Copy(c, s)
	})
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

// SetAccessLog turns the access log on or off (reload).
func (h *HTTP) SetAccessLog(on bool) { h.accessLogOn.Store(on) }

// SetAccessLogCombined switches between JSON and the combined format
// (reload).
func (h *HTTP) SetAccessLogCombined(on bool) { h.combined.Store(on) }

// combinedLog writes one NCSA combined line:
// client - - [time] "METHOD target PROTO" status bytes "referer" "user-agent"
func (h *HTTP) combinedLog(l *logBuf, ctx *fasthttp.RequestCtx, x *exchange) {
	b := appendIP(l.b, ctx.RemoteIP())
	b = append(b, " - - ["...)
	b = ctx.Time().AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	b = append(b, "] \""...)
	b = appendLogQuoted(b, ctx.Method())
	b = append(b, ' ')
	b = appendLogQuoted(b, ctx.Request.Header.RequestURI())
	b = append(b, ' ')
	b = appendLogQuoted(b, requestProto(ctx))
	b = append(b, "\" "...)
	b = strconv.AppendInt(b, int64(x.status), 10)
	b = append(b, ' ')
	if n := ctx.Response.Header.ContentLength(); n > 0 {
		b = strconv.AppendInt(b, int64(n), 10)
	} else {
		b = append(b, '-')
	}
	b = append(b, " \""...)
	b = appendLogQuoted(b, ctx.Request.Header.Referer())
	b = append(b, "\" \""...)
	b = appendLogQuoted(b, ctx.UserAgent())
	b = append(b, "\"\n"...)
	l.b = b
}

// appendLogQuoted appends v for a quoted log field: '"', '\\' and bytes
// outside printable ASCII are escaped as \xHH, so a client cannot forge
// a line.
func appendLogQuoted(b, v []byte) []byte {
	const hexd = "0123456789abcdef"
	for _, c := range v {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			b = append(b, '\\', 'x', hexd[c>>4], hexd[c&0xf])
			continue
		}
		b = append(b, c)
	}
	return b
}

// answerOutcome is the dashboard's class of a request's answer: the
// failure holdfast answered for, else the status class.
func answerOutcome(x *exchange) balancer.Outcome {
	switch {
	case x.flags&flagNoBackend != 0:
		return balancer.OutNoBackend
	case x.flags&flagQueueTimeout != 0:
		return balancer.OutQueue
	case x.flags&flagClientAbort != 0:
		return balancer.OutClient
	case x.flags&flagLocalExhaustion != 0:
		return balancer.OutLocal
	case x.flags&flagUpstreamTimeout != 0:
		return balancer.OutTimeout
	case x.flags&flagUpstreamFailed != 0:
		return outcomeOf(x.out.st)
	}
	return balancer.Outcome(metrics.ClassIndex(x.status))
}

var strHTTP2 = []byte("HTTP/2.0")

// requestProto is the protocol the client spoke, for the access log.
func requestProto(ctx *fasthttp.RequestCtx) []byte {
	if h2ConnOf(ctx.Conn()) != nil {
		return strHTTP2
	}
	return ctx.Request.Header.Protocol()
}
