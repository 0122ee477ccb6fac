// Package proxy is holdfast's data path: HTTP listeners proxying requests in
// place with fasthttp, and TCP listeners copying bytes both ways.
package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http/httputil"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"

	"github.com/holdfast-lb/holdfast/balancer"
)

// bufferLimit is the largest response body read whole; larger or
// unknown-length bodies are streamed to the client as they arrive.
const bufferLimit = 1 << 20

// UpstreamConfig bounds the connections to one backend.
type UpstreamConfig struct {
	MaxConns        int
	MaxIdle         int
	QueueTimeout    time.Duration
	ConnectTimeout  time.Duration
	ResponseTimeout time.Duration
	IdleTimeout     time.Duration
	// SendProxy is "", "v1" or "v2": a PROXY header announcing the client
	// is written on each new connection.
	SendProxy string
}

// Upstream is the per-backend HTTP client attached to a balancer.Endpoint.
// Safe for concurrent use.
type Upstream struct {
	ep     *balancer.Endpoint
	hc     *fasthttp.HostClient
	cfg    UpstreamConfig
	active atomic.Int64 // connections checked out by a request
}

// NewUpstream builds the client for ep.
func NewUpstream(ep *balancer.Endpoint, cfg UpstreamConfig) *Upstream {
	u := &Upstream{ep: ep, cfg: cfg}
	u.hc = &fasthttp.HostClient{
		Addr:                          ep.Addr,
		MaxConns:                      cfg.MaxConns,
		MaxConnWaitTimeout:            cfg.QueueTimeout,
		MaxIdleConnDuration:           cfg.IdleTimeout,
		ReadTimeout:                   cfg.ResponseTimeout,
		WriteTimeout:                  cfg.ResponseTimeout,
		DisablePathNormalizing:        true,
		DisableHeaderNamesNormalizing: true,
		NoDefaultUserAgentHeader:      true,
		MaxIdemponentCallAttempts:     1, // holdfast retries itself, on another backend
		RetryIfErr:                    func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
		ConnPoolStrategy:              fasthttp.LIFO,
		ReadBufferSize:                16 << 10,
		WriteBufferSize:               16 << 10,
		Transport:                     u,
		DialTimeout:                   u.dial,
	}
	return u
}

// Close closes the idle connections; the ones in use close as they finish.
func (u *Upstream) Close() { u.hc.CloseIdleConnections() }

// Conns is the number of open connections to the backend.
func (u *Upstream) Conns() int { return u.hc.ConnsCount() }

// upConn counts itself on the endpoint while open.
type upConn struct {
	net.Conn
	ep     *balancer.Endpoint
	used   bool
	wrote  bool // a request went out; the next read waits for its answer
	closed atomic.Bool
	// born is when the connection was made (with a monotonic reading);
	// deadline is the current read/write deadline as an offset from born,
	// 0 when none. Offsets cost one monotonic clock read per check, where
	// time.Now reads two clocks.
	born     time.Time
	deadline time.Duration
	// io issues the socket calls directly when direct is set.
	io     sockIO
	direct bool
	// sent counts the bytes written and acked0 is the kernel's count of
	// acknowledged bytes at dial, to tell whether the backend received a
	// request (see unacked).
	sent, acked0 uint64
}

func (c *upConn) Write(b []byte) (int, error) {
	var n int
	var err error
	if c.direct {
		n, err = c.io.write(b)
	} else {
		n, err = c.Conn.Write(b)
	}
	c.sent += uint64(n)
	c.wrote = true
	return n, err
}

// Read yields once after a write before reading: the backend needs a few
// microseconds to answer, and letting the other ready goroutines run first
// turns an EAGAIN read, a park and a netpoll wake-up into one read that
// succeeds. With nothing else runnable, Gosched returns at once.
func (c *upConn) Read(p []byte) (int, error) {
	if c.wrote {
		c.wrote = false
		runtime.Gosched()
	}
	if c.direct {
		return c.io.read(p)
	}
	return c.Conn.Read(p)
}

// unacked reports whether bytes written on c were never acknowledged by the
// backend's TCP: then it never received the whole request and cannot have
// acted on it, whatever the method. A backend that read the request and
// then died or closed acknowledged it (its FIN carries the ACK, processed
// before the EOF is seen); one whose socket was gone when the request
// arrived answered with a RST, which acknowledges nothing. This is the
// race the peek before reuse cannot close: the backend dies between the
// peek and the write.
func (c *upConn) unacked() bool {
	acked, ok := bytesAcked(c.Conn)
	return ok && acked-c.acked0 < c.sent
}

// bytesAcked reads tcpi_bytes_acked (Linux 4.2+; false where missing).
func bytesAcked(c net.Conn) (uint64, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info unix.TCPInfo
	size := uint32(unsafe.Sizeof(info))
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, syscall.TCP_INFO,
			uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&size)), 0)
	}); err != nil || errno != 0 {
		return 0, false
	}
	if uintptr(size) < unsafe.Offsetof(info.Bytes_acked)+unsafe.Sizeof(info.Bytes_acked) {
		return 0, false
	}
	return info.Bytes_acked, true
}

// extendDeadline makes sure the connection's deadline is at least about d
// away, resetting it only when less than d−d/16 is left: a timer update per
// request costs more than the response timeout's 1/16 of slack is worth.
// The connection is used by one request at a time, so no lock is needed.
func (c *upConn) extendDeadline(d time.Duration) error {
	now := time.Since(c.born)
	if c.deadline != 0 && c.deadline-now > d-d/16 {
		return nil
	}
	c.deadline = now + d
	return c.Conn.SetDeadline(c.born.Add(c.deadline))
}

func (c *upConn) clearDeadline() {
	c.deadline = 0
	_ = c.Conn.SetDeadline(time.Time{})
}

func (c *upConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.ep.ConnClosed()
		if s := c.ep.Stats; s != nil {
			s.Conns.Dec()
		}
	}
	return c.Conn.Close()
}

func (u *Upstream) dial(addr string, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 || (u.cfg.ConnectTimeout > 0 && u.cfg.ConnectTimeout < timeout) {
		timeout = u.cfg.ConnectTimeout
	}
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, &dialError{err}
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	u.ep.ConnOpened()
	if s := u.ep.Stats; s != nil {
		s.Conns.Inc()
	}
	uc := &upConn{Conn: c, ep: u.ep, born: time.Now()}
	uc.direct = uc.io.init(c)
	uc.acked0, _ = bytesAcked(c)
	return uc, nil
}

// Attempt failure stages, so the proxy knows whether request bytes may have
// reached the backend.
type stage uint8

const (
	stageConnect stage = iota + 1 // no byte left holdfast: safe to retry any request
	stageQueue                    // every connection busy past queue_timeout
	stageWrite                    // sending failed: the backend got no complete request
	stageRead                     // no complete response header arrived
	stageTimeout                  // the backend was too slow
)

type dialError struct{ err error }

func (e *dialError) Error() string { return "connect: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

type attemptError struct {
	stage stage
	err   error
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

func fail(s stage, err error) error {
	var ne net.Error
	if errors.Is(err, fasthttp.ErrTimeout) || (errors.As(err, &ne) && ne.Timeout()) {
		if s == stageConnect {
			return &attemptError{stageConnect, err}
		}
		return &attemptError{stageTimeout, err}
	}
	return &attemptError{s, err}
}

// stageOf classifies an error returned by Do.
func stageOf(err error) stage {
	var ae *attemptError
	if errors.As(err, &ae) {
		return ae.stage
	}
	return stageRead
}

// RoundTrip implements fasthttp.RoundTripper: one attempt, no retries, with
// failures classified by stage.
func (u *Upstream) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (bool, error) {
	idempotent := isIdempotent(req)
	for tries := 0; ; tries++ {
		c, err := hc.AcquireConn(0, false)
		if err != nil {
			if errors.Is(err, fasthttp.ErrNoFreeConns) {
				return false, &attemptError{stageQueue, err}
			}
			return false, fail(stageConnect, err)
		}
		// u.dial is the client's only dialer, so every connection is an upConn.
		uc := c.Conn().(*upConn)
		reused := uc.used
		if reused && !idempotent && tries < 4 && uc.direct && uc.io.peerClosed() {
			hc.CloseConn(c)
			continue
		}
		uc.used = true
		err = u.exchange(hc, c, uc, req, resp)
		if err != nil && reused && tries < 4 && stageOf(err) == stageWrite && !req.IsBodyStream() {
			// A pooled connection the backend had closed (its keep-alive
			// timeout is shorter than ours): the request never reached it.
			// Send it again on another connection to the same backend
			// rather than spend a retry and count a failure against it.
			continue
		}
		return false, err
	}
}

// connOps releases and closes fasthttp's pooled connections, whose type is
// unexported: it is captured once, by inference, as a type parameter.
var connOps = newConnOps((*fasthttp.HostClient).ReleaseConn, (*fasthttp.HostClient).CloseConn)

type connFuncs struct {
	release, close func(*fasthttp.HostClient, any)
}

func newConnOps[C any](rel, cls func(*fasthttp.HostClient, C)) connFuncs {
	return connFuncs{
		release: func(hc *fasthttp.HostClient, cc any) { rel(hc, cc.(C)) },
		close:   func(hc *fasthttp.HostClient, cc any) { cls(hc, cc.(C)) },
	}
}

func (u *Upstream) exchange(hc *fasthttp.HostClient, cc any, uc *upConn, req *fasthttp.Request, resp *fasthttp.Response) error {
	conn := net.Conn(uc)
	u.active.Add(1)
	closeConn := func() {
		u.active.Add(-1)
		connOps.close(hc, cc)
	}
	if t := u.cfg.ResponseTimeout; t > 0 {
		if err := uc.extendDeadline(t); err != nil {
			closeConn()
			return fail(stageWrite, err)
		}
	}
	bw := hc.AcquireWriter(conn)
	err := req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if err != nil {
		closeConn()
		return fail(stageWrite, err)
	}
	br := hc.AcquireReader(conn)
	resp.Header.DisableNormalizing()
	if err := resp.Header.Read(br); err != nil {
		hc.ReleaseReader(br)
		st := stageRead
		if uc.unacked() {
			st = stageWrite // the backend never received the request
		}
		closeConn()
		return fail(st, err)
	}
	for n := 0; resp.StatusCode() >= 100 && resp.StatusCode() < 200 && resp.StatusCode() != fasthttp.StatusSwitchingProtocols; n++ {
		if n > 4 {
			hc.ReleaseReader(br)
			closeConn()
			return fail(stageRead, errors.New("too many interim responses"))
		}
		if err := resp.Header.Read(br); err != nil {
			hc.ReleaseReader(br)
			closeConn()
			return fail(stageRead, err)
		}
	}
	if req.Header.IsHead() || resp.StatusCode() == fasthttp.StatusNoContent || resp.StatusCode() == fasthttp.StatusNotModified {
		resp.SkipBody = true
	}
	cl := resp.Header.ContentLength()
	if resp.SkipBody || (cl >= 0 && cl <= bufferLimit) {
		if !resp.SkipBody {
			if err := resp.ReadBody(br, 0); err != nil {
				hc.ReleaseReader(br)
				closeConn()
				return fail(stageRead, err)
			}
		}
		hc.ReleaseReader(br)
		u.active.Add(-1)
		if resp.ConnectionClose() || req.ConnectionClose() || u.idleFull() {
			connOps.close(hc, cc)
		} else {
			connOps.release(hc, cc)
		}
		return nil
	}
	// Large or unknown length: stream to the client as it arrives.
	s := streamPool.Get().(*bodyStream)
	s.u, s.hc, s.cc, s.br = u, hc, cc, br
	s.reuse = cl >= 0 && !resp.ConnectionClose() && !req.ConnectionClose()
	switch {
	case cl >= 0:
		s.left = int64(cl)
		s.r = nil
	case cl == -1:
		s.left = -1
		s.r = httputil.NewChunkedReader(br)
	default:
		s.left = -1
		s.r = br
	}
	// The body may take long; the client side's write timeout bounds it.
	uc.clearDeadline()
	resp.SetBodyStream(s, cl)
	if cl == -1 {
		resp.Header.SetContentLength(-1)
	}
	return nil
}

func (u *Upstream) idleFull() bool {
	if u.cfg.MaxIdle <= 0 {
		return false
	}
	return u.ep.Conns()-u.active.Load() >= int64(u.cfg.MaxIdle)
}

// bodyStream hands a streamed upstream body to the client side and gives
// the connection back (or closes it) when the body is done.
type bodyStream struct {
	u     *Upstream
	hc    *fasthttp.HostClient
	cc    any
	br    *bufio.Reader
	r     io.Reader // chunked decoder or raw reader; nil: length-limited br
	left  int64
	reuse bool
	err   error
}

var streamPool = sync.Pool{New: func() any { return new(bodyStream) }}

func (s *bodyStream) Read(p []byte) (int, error) {
	if s.r == nil {
		if s.left <= 0 {
			return 0, io.EOF
		}
		if int64(len(p)) > s.left {
			p = p[:s.left]
		}
		n, err := s.br.Read(p)
		s.left -= int64(n)
		if err != nil {
			s.err = err
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
		return n, nil
	}
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// Close returns the connection: to the pool if the body was read whole on a
// keep-alive connection, closed otherwise.
func (s *bodyStream) Close() error {
	done := s.r == nil && s.left == 0 && s.err == nil
	s.hc.ReleaseReader(s.br)
	s.u.active.Add(-1)
	if done && s.reuse && !s.u.idleFull() {
		connOps.release(s.hc, s.cc)
	} else {
		connOps.close(s.hc, s.cc)
	}
	*s = bodyStream{}
	streamPool.Put(s)
	return nil
}

func isIdempotent(req *fasthttp.Request) bool {
	h := &req.Header
	if h.IsGet() || h.IsHead() || h.IsOptions() || h.IsPut() || h.IsDelete() || h.IsTrace() {
		return true
	}
	// A client may vouch for a request (Envoy's x-envoy-retry-on idea, simpler).
	return len(h.Peek("Idempotency-Key")) > 0 || string(h.Peek("X-Holdfast-Idempotent")) == "1"
}
