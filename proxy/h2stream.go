package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
)

// An h2 stream is proxied by the HTTP/1.1 code path: its request is put
// in a fasthttp.RequestCtx of its own and handed to serveExchange, which
// routes, limits, rewrites, balances, retries, counts and logs it exactly
// as it does a request read by fasthttp; the answer in ctx.Response is
// then written back on the stream. Bodies stream both ways.

// h2Stream is one stream's state, pooled.
type h2Stream struct {
	ctx   fasthttp.RequestCtx
	conn  h2Conn
	tconn h2TLSConn
	body  h2Body
	buf   [32 << 10]byte
}

var h2Streams = sync.Pool{New: func() any {
	s := &h2Stream{}
	s.tconn.h2Conn = &s.conn
	return s
}}

// h2Conn stands for the client connection in the stream's RequestCtx: it
// has the connection's addresses, and its deadlines are the stream's own
// (http.ResponseController), so the read and write timeouts bound the
// stream's silences as they bound an HTTP/1.1 connection's. Reads and
// writes never go through it.
type h2Conn struct {
	laddr, raddr net.Addr
	rc           *http.ResponseController
	r            *http.Request
	// grpc: the body is not in the RequestCtx; the h2 upstream side
	// sends r.Body itself, as it arrives (h2upstream.go).
	grpc bool
}

func (c *h2Conn) Read([]byte) (int, error)    { return 0, io.EOF }
func (c *h2Conn) Write(p []byte) (int, error) { return 0, net.ErrClosed }
func (c *h2Conn) Close() error                { return nil }
func (c *h2Conn) LocalAddr() net.Addr         { return c.laddr }
func (c *h2Conn) RemoteAddr() net.Addr        { return c.raddr }
func (c *h2Conn) SetDeadline(t time.Time) error {
	_ = c.rc.SetReadDeadline(t)
	return c.rc.SetWriteDeadline(t)
}
func (c *h2Conn) SetReadDeadline(t time.Time) error  { return c.rc.SetReadDeadline(t) }
func (c *h2Conn) SetWriteDeadline(t time.Time) error { return c.rc.SetWriteDeadline(t) }

// h2TLSConn is h2Conn on a TLS connection: fasthttp's IsTLS sees it.
type h2TLSConn struct {
	*h2Conn
	state tls.ConnectionState
}

func (c *h2TLSConn) Handshake() error                     { return nil }
func (c *h2TLSConn) ConnectionState() tls.ConnectionState { return c.state }

// h2ConnOf finds the h2 stream behind a RequestCtx's connection; nil for
// an HTTP/1.x connection.
func h2ConnOf(c net.Conn) *h2Conn {
	switch v := c.(type) {
	case *h2Conn:
		return v
	case *h2TLSConn:
		return v.h2Conn
	}
	return nil
}

// h2Body is a stream's request body. Its eof field is what reqBody's
// chunkedEnded reads to tell a whole body from a cut one (by name).
type h2Body struct {
	r   io.Reader
	eof bool
}

func (b *h2Body) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// ctxTime is the offset of RequestCtx's unexported time field: the
// request's arrival, which fasthttp sets only for requests it reads
// itself, and from which the backend latency and the access log's
// duration are measured. TestH2CtxTime fails if the field moves.
var ctxTime = func() uintptr {
	f, ok := reflect.TypeFor[fasthttp.RequestCtx]().FieldByName("time")
	if !ok || f.Type != reflect.TypeFor[time.Time]() {
		return 0
	}
	return f.Offset
}()

func setCtxTime(ctx *fasthttp.RequestCtx, t time.Time) {
	if ctxTime != 0 {
		*(*time.Time)(unsafe.Add(unsafe.Pointer(ctx), ctxTime)) = t
	}
}

// serveH2 is the http.Handler of every h2 stream.
func (h *HTTP) serveH2(w http.ResponseWriter, r *http.Request) {
	s := h2Streams.Get().(*h2Stream)
	defer h2Streams.Put(s)
	s.conn = h2Conn{rc: http.NewResponseController(w), r: r, laddr: zeroAddr, raddr: zeroAddr}
	if st, ok := r.Context().Value(h2ConnKey{}).(*h2ConnState); ok {
		s.conn.laddr, s.conn.raddr = st.c.LocalAddr(), st.c.RemoteAddr()
		defer func() { st.ended(r.Context().Err() != nil) }()
	}
	var conn net.Conn = &s.conn
	if r.TLS != nil {
		s.tconn.state = *r.TLS
		conn = &s.tconn
	}
	ctx := &s.ctx
	ctx.Init2(conn, discardLogger{}, true)
	setCtxTime(ctx, time.Now())
	defer func() {
		_ = ctx.Response.CloseBodyStream()
		ctx.Request.Reset()
		ctx.Response.Reset()
		s.body = h2Body{}
		s.conn = h2Conn{}
		s.tconn.state = tls.ConnectionState{}
	}()
	req := &ctx.Request
	hdr := &req.Header
	hdr.SetMethod(r.Method)
	hdr.SetRequestURI(r.RequestURI)
	hdr.SetProtocolBytes(strHTTP11) // the pipeline's own; the log says HTTP/2.0
	hdr.SetHost(r.Host)
	var cookies []string
	for k, vs := range r.Header {
		if k == "Cookie" {
			cookies = vs
			continue
		}
		if k == "Host" || k == "Content-Length" {
			continue
		}
		for _, v := range vs {
			hdr.Add(k, v)
		}
	}
	if len(cookies) > 0 {
		// RFC 9113 §8.2.3: split cookie fields are one on HTTP/1.1.
		hdr.Set("Cookie", strings.Join(cookies, "; "))
	}
	grpc := isGRPC(r.Header.Get("Content-Type"))
	if r.Body != nil && r.Body != http.NoBody {
		s.body.r = r.Body
		switch {
		case grpc:
			s.conn.grpc = true
		case r.ContentLength >= 0:
			req.SetBodyStream(&s.body, int(r.ContentLength))
		default:
			req.SetBodyStream(&s.body, -1)
		}
	}
	if grpc && !h.grpcRoutable(w, ctx, r) {
		return
	}
	var x exchange
	h.serveExchange(ctx, &x)
	if grpc && (x.out.attempts == 0 || x.out.st != stageOK) {
		grpcAnswer(w, x.status, ctx.Response.Body())
		return
	}
	h.writeH2(w, s, &ctx.Response)
}

var zeroAddr net.Addr = &net.TCPAddr{}

// writeH2 writes the answer in resp on the stream: its head, then its
// body as it comes (each piece flushed: a server-sent stream or a gRPC
// reply must not wait for a buffer to fill), then any trailers.
func (h *HTTP) writeH2(w http.ResponseWriter, s *h2Stream, resp *fasthttp.Response) {
	wh := w.Header()
	for k, v := range resp.Header.All() {
		if isHop(k) || (len(k) == 14 && asciiEqualFoldStr(k, "Content-Length")) ||
			(len(k) == 17 && asciiEqualFoldStr(k, "Transfer-Encoding")) {
			continue
		}
		wh[http.CanonicalHeaderKey(string(k))] = append(wh[http.CanonicalHeaderKey(string(k))], string(v))
	}
	status := resp.StatusCode()
	bs := resp.BodyStream()
	if bs == nil {
		body := resp.Body()
		if resp.SkipBody {
			if cl := resp.Header.ContentLength(); cl >= 0 {
				wh.Set("Content-Length", strconv.Itoa(cl))
			}
			w.WriteHeader(status)
			return
		}
		if status != http.StatusNoContent && status != http.StatusNotModified {
			wh.Set("Content-Length", strconv.Itoa(len(body)))
		}
		w.WriteHeader(status)
		_, _ = w.Write(body)
		return
	}
	if cl := resp.Header.ContentLength(); cl >= 0 {
		wh.Set("Content-Length", strconv.Itoa(cl))
	}
	w.WriteHeader(status)
	rc := &s.conn
	if _, done := wh["Grpc-Status"]; !done {
		// The head goes at once (a client may wait for it before it
		// sends); a gRPC trailers-only answer must stay one HEADERS
		// frame that ends the stream.
		_ = rc.rc.Flush()
	}
	for {
		n, err := bs.Read(s.buf[:])
		if n > 0 {
			if _, werr := w.Write(s.buf[:n]); werr != nil {
				return
			}
			if err := rc.rc.Flush(); err != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				// The backend's body failed midway: the client's stream is
				// reset rather than ended as if whole.
				panic(http.ErrAbortHandler)
			}
			break
		}
	}
	if t, ok := bs.(interface{ trailer() http.Header }); ok {
		for k, vs := range t.trailer() {
			wh[http.TrailerPrefix+k] = vs
		}
	}
}

// grpcRoutable answers a gRPC call whose route does not lead to an h2
// pool (gRPC is HTTP/2 on both sides) with UNIMPLEMENTED.
func (h *HTTP) grpcRoutable(w http.ResponseWriter, ctx *fasthttp.RequestCtx, r *http.Request) bool {
	path := r.URL.Path
	rt := h.routes.Load().match(ctx.Request.Header.Host(), []byte(path))
	if rt.target != nil && rt.target.cfg.Load().H2 {
		return true
	}
	pool := rt.poolName()
	grpcError(w, grpcUnimplemented, "holdfast: route of pool "+pool+" does not reach an HTTP/2 pool (protocol: h2 or h2c)")
	return false
}

// h2Context is the context an upstream h2 request runs in: the client's
// stream, so that a client reset cancels the backend's stream too.
func h2Context(c net.Conn) context.Context {
	if hc := h2ConnOf(c); hc != nil && hc.r != nil {
		return hc.r.Context()
	}
	return context.Background()
}
