package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

// Upstream HTTP/2 (pool protocol h2 over the pool's TLS, h2c with prior
// knowledge): the backend's connections are x/net/http2 client
// connections, each shared by many streams. They are dialled by
// Upstream.dial, so they take the backend's connection slots
// (max_conns_per_backend), count in holdfast_backend_connections, and a
// new one waits up to queue_timeout for a slot when every open one has
// as many streams as the backend allows.

// h2Upstream is one backend's HTTP/2 client. Safe for concurrent use.
type h2Upstream struct {
	u      *Upstream
	tr     *http2.Transport
	scheme string
}

func newH2Upstream(u *Upstream, tlsOn bool) *h2Upstream {
	h := &h2Upstream{u: u, scheme: "http"}
	if tlsOn {
		h.scheme = "https"
	}
	h.tr = &http2.Transport{
		AllowHTTP:          true,
		DisableCompression: true,
		DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
			c, err := u.dial(u.ep.Addr, u.cfg.ConnectTimeout)
			if err != nil {
				return nil, err
			}
			return &h2UpConn{c.(*upConn)}, nil
		},
		IdleConnTimeout: u.cfg.IdleTimeout,
		// A connection silent this long is pinged, and closed if the
		// ping goes unanswered as long: a backend that vanished without a
		// FIN is found without waiting for a request to time out.
		ReadIdleTimeout: 30 * time.Second,
		PingTimeout:     10 * time.Second,
	}
	return h
}

func (h *h2Upstream) close() { h.tr.CloseIdleConnections() }

// h2UpConn is an upstream connection as an h2 client connection uses it:
// read by one goroutine while others write, so the reads and writes skip
// upConn's per-request bookkeeping (the bytes-sent count); Close is
// upConn's, which gives the connection slot back.
type h2UpConn struct{ *upConn }

func (c *h2UpConn) Read(p []byte) (int, error) {
	if c.direct {
		return c.io.read(p)
	}
	return c.Conn.Read(p)
}

func (c *h2UpConn) Write(p []byte) (int, error) {
	if c.direct {
		return c.io.write(p)
	}
	return c.Conn.Write(p)
}

// h2ReqBody is a request body as the h2 client reads it; started notes
// that some of it was taken, after which the request cannot go again.
type h2ReqBody struct {
	// b is a copy of the pipeline's body (buffered or streamed), copied
	// back when the h2 client is done with it: holding the pipeline's
	// pointer would move every request's reqBody to the heap, HTTP/1.1
	// ones included.
	b       reqBody
	hasB    bool
	done    chan struct{} // closed once the h2 client finished with b
	once    sync.Once
	r       io.Reader // a body read straight from the client (gRPC)
	inline  *bytes.Reader
	off     int // of b.buf, sent
	started atomic.Bool
	err     atomic.Pointer[error] // the client's side failed
}

func (r *h2ReqBody) Read(p []byte) (int, error) {
	r.started.Store(true)
	switch {
	case r.inline != nil:
		return r.inline.Read(p)
	case r.r != nil:
		n, err := r.r.Read(p)
		if err != nil && err != io.EOF {
			r.fail(err)
		}
		return n, err
	}
	b := &r.b
	if r.off < len(b.buf) {
		n := copy(p, b.buf[r.off:])
		r.off += n
		return n, nil
	}
	if b.src == nil {
		r.finish()
		return 0, io.EOF
	}
	b.started = true
	n, err := b.readClient(p)
	if err != nil {
		if err != io.EOF {
			r.fail(err)
		}
		r.finish()
	}
	return n, err
}

// finish tells roundTrip the h2 client is done with b.
func (r *h2ReqBody) finish() {
	if r.done != nil {
		r.once.Do(func() { close(r.done) })
	}
}

func (r *h2ReqBody) fail(err error) {
	e := error(&clientError{err})
	r.err.CompareAndSwap(nil, &e)
}

// Close is called by the h2 client when it stops sending the body (all
// sent, or the stream ended first).
func (r *h2ReqBody) Close() error {
	r.finish()
	return nil
}

// roundTrip is one attempt over h2: the request as the pipeline left it
// goes out on a stream, and the response head comes back into resp, its
// body handed over as a stream (trailers follow it). The response
// timeout, or per_try_timeout, bounds the wait for the head.
func (h *h2Upstream) roundTrip(req *fasthttp.Request, resp *fasthttp.Response, ar *attemptReq, client net.Conn, perTry time.Duration) error {
	hreq, body, err := h.request(req, ar, client)
	if err != nil {
		return &attemptError{stageClient, &clientError{err}}
	}
	ctx, cancel := context.WithCancel(h2Context(client))
	hreq = hreq.WithContext(ctx)
	wait, tryBound := h.u.cfg.ResponseTimeout, false
	if perTry > 0 && (wait <= 0 || perTry < wait) {
		wait, tryBound = perTry, true
	}
	var timedOut atomic.Bool
	var timer *time.Timer
	if wait > 0 {
		timer = time.AfterFunc(wait, func() { timedOut.Store(true); cancel() })
	}
	hresp, err := h.tr.RoundTrip(hreq)
	if timer != nil {
		timer.Stop()
	}
	if body.hasB && (err == nil || body.started.Load()) {
		// The client's body (its connection, the pooled buffer) belongs
		// to the pipeline again when this returns: wait until the h2
		// client has sent it or given up on it (it closes the body then),
		// then hand its state back. A round trip that failed before the
		// body was touched never touches it.
		if err != nil {
			cancel()
		}
		<-body.done
		ar.body.started, ar.body.eof, ar.body.read, ar.body.src = body.b.started, body.b.eof, body.b.read, body.b.src
		if ar.body.err == nil {
			ar.body.err = body.b.err
		}
	}
	if err != nil {
		cancel()
		return h.classify(err, body, timedOut.Load(), tryBound)
	}
	resp.Reset()
	resp.Header.SetNoDefaultContentType(true)
	resp.SetStatusCode(hresp.StatusCode)
	for k, vs := range hresp.Header {
		if k == "Content-Length" {
			continue
		}
		for _, v := range vs {
			resp.Header.Add(k, v)
		}
	}
	st := hresp.StatusCode
	if req.Header.IsHead() || st == http.StatusNoContent || st == http.StatusNotModified {
		resp.SkipBody = true
		if hresp.ContentLength >= 0 && st != http.StatusNoContent {
			resp.Header.SetContentLength(int(hresp.ContentLength))
		}
		_ = hresp.Body.Close()
		cancel()
		return nil
	}
	s := &h2RespBody{resp: hresp, cancel: cancel, idle: h.u.cfg.ResponseTimeout}
	resp.SetBodyStream(s, int(hresp.ContentLength))
	return nil
}

// request builds the h2 request from the pipeline's fasthttp request.
func (h *h2Upstream) request(req *fasthttp.Request, ar *attemptReq, client net.Conn) (*http.Request, *h2ReqBody, error) {
	uri := string(req.Header.RequestURI())
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil, nil, fmt.Errorf("request target %q: %w", uri, err)
	}
	u.Scheme, u.Host = h.scheme, h.u.ep.Addr
	hreq := &http.Request{
		Method:     string(req.Header.Method()),
		URL:        u,
		Host:       string(req.Header.Host()),
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     make(http.Header, req.Header.Len()),
	}
	for k, v := range req.Header.All() {
		switch {
		case isHop(k) && !(len(k) == 2 && string(v) == "trailers"),
			len(k) == 4 && asciiEqualFoldStr(k, "Host"),
			len(k) == 14 && asciiEqualFoldStr(k, "Content-Length"),
			len(k) == 17 && asciiEqualFoldStr(k, "Transfer-Encoding"):
			continue
		}
		key := http.CanonicalHeaderKey(string(k))
		hreq.Header[key] = append(hreq.Header[key], string(v))
	}
	body := &h2ReqBody{}
	switch hc := h2ConnOf(client); {
	case hc != nil && hc.grpc:
		body.r = hc.r.Body
		hreq.ContentLength = -1
		hreq.Header.Set("Te", "trailers")
	case ar.body != nil && ar.body.src == nil:
		// A buffered body goes out from a copy: x/net/http2 may still be
		// writing it after the handler returned and the pipeline's buffer
		// went back to its pool (a backend that answered early).
		body.inline = bytes.NewReader(bytes.Clone(ar.body.buf))
		hreq.ContentLength = int64(len(ar.body.buf))
	case ar.body != nil:
		body.b, body.hasB, body.done = *ar.body, true, make(chan struct{})
		hreq.ContentLength = ar.body.want
		if ar.body.src == nil || !ar.body.chunked && ar.body.want < 0 {
			hreq.ContentLength = int64(len(ar.body.buf))
		}
		if ar.body.src != nil && ar.body.chunked {
			hreq.ContentLength = -1
		}
	default:
		inline := req.Body()
		if len(inline) == 0 {
			return hreq, body, nil // hreq.Body nil: no DATA frame
		}
		body.inline = bytes.NewReader(bytes.Clone(inline)) // as above: fasthttp reuses the request
		hreq.ContentLength = int64(len(inline))
	}
	hreq.Body = body
	return hreq, body, nil
}

// classify turns an h2 round trip's error into the attempt loop's stage.
// A stream the backend refused (REFUSED_STREAM, or a GOAWAY that names it
// unprocessed, which x/net/http2 retries itself when it can) had no
// effect there: a connect failure, safe to retry anywhere, as long as
// none of its body was taken.
func (h *h2Upstream) classify(err error, body *h2ReqBody, timedOut, tryBound bool) error {
	if p := body.err.Load(); p != nil {
		return &attemptError{stageClient, *p}
	}
	if timedOut {
		if tryBound {
			return &attemptError{stageTryTimeout, err}
		}
		return &attemptError{stageTimeout, err}
	}
	var ae *attemptError
	var de *dialError
	if errors.As(err, &ae) || errors.As(err, &de) {
		return err // from Upstream.dial: queue, connect, TLS
	}
	var se http2.StreamError
	if errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream && !body.started.Load() {
		return &attemptError{stageConnect, err}
	}
	if errors.Is(err, context.Canceled) {
		return &attemptError{stageClient, &clientError{err}} // the client reset its stream
	}
	if !body.started.Load() && isUnprocessed(err) {
		return &attemptError{stageConnect, err}
	}
	return &attemptError{stageRead, err}
}

// isUnprocessed reports the x/net/http2 errors for a request that never
// went out on a connection (it was closing, or went away first).
func isUnprocessed(err error) bool {
	var ga http2.GoAwayError
	if errors.As(err, &ga) {
		return false // the stream may have been processed
	}
	s := err.Error()
	return s == "http2: client connection lost" || s == "http2: client conn not usable" ||
		s == "http2: client connection force closed via ClientConn.Close" ||
		s == "http2: Transport received Server's graceful shutdown GOAWAY"
}

// h2RespBody streams an h2 response body to the client side; the
// response timeout bounds each silence from the backend. Its trailers
// are there once it was read to its end.
type h2RespBody struct {
	resp   *http.Response
	cancel context.CancelFunc
	idle   time.Duration
	timer  *time.Timer
	mu     sync.Mutex
	closed bool
}

func (s *h2RespBody) Read(p []byte) (int, error) {
	if s.idle > 0 {
		if s.timer == nil {
			s.timer = time.AfterFunc(s.idle, s.cancel)
		} else {
			s.timer.Reset(s.idle)
		}
	}
	n, err := s.resp.Body.Read(p)
	if s.timer != nil && err != nil {
		s.timer.Stop()
	}
	return n, err
}

// trailer is the response's trailer section (after EOF).
func (s *h2RespBody) trailer() http.Header { return s.resp.Trailer }

func (s *h2RespBody) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
	}
	err := s.resp.Body.Close()
	s.cancel()
	return err
}
