// Package proxy is holdfast's data path: HTTP listeners proxying requests in
// place with fasthttp, and TCP listeners copying bytes both ways.
package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
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
	// TLS, when set, holds the pool's client TLS settings: every new
	// connection is TLS when it holds a config.
	TLS *UpstreamTLS
	// Log receives handshake failures; nil: slog.Default().
	Log *slog.Logger
	// Protocol is how requests reach the backend: "" or "http" for
	// HTTP/1.1, "h2" (over TLS, by ALPN) or "h2c" (prior knowledge).
	Protocol string
}

// UpstreamTLS is a pool's client TLS settings, shared by the clients of
// all its backends and swapped whole on reload (certificates re-read):
// connections made from then on use the new settings. Safe for
// concurrent use.
type UpstreamTLS struct {
	cfg atomic.Pointer[tls.Config]
}

// NewUpstreamTLS holds c; nil means plain TCP.
func NewUpstreamTLS(c *tls.Config) *UpstreamTLS {
	t := &UpstreamTLS{}
	t.Set(c)
	return t
}

// Set replaces the settings (nil: plain TCP from now on).
func (t *UpstreamTLS) Set(c *tls.Config) { t.cfg.Store(c) }

// Config returns the current settings, nil when TLS is off.
func (t *UpstreamTLS) Config() *tls.Config {
	if t == nil {
		return nil
	}
	return t.cfg.Load()
}

// TLSError is an upstream TLS handshake that failed: a certificate that
// does not verify, a name that does not match, a refused client
// certificate. It is a connect failure: no request byte was sent.
type TLSError struct {
	Backend string
	Err     error
}

func (e *TLSError) Error() string { return "tls handshake with " + e.Backend + ": " + e.Err.Error() }
func (e *TLSError) Unwrap() error { return e.Err }

// Upstream is the per-backend HTTP client attached to a balancer.Endpoint.
// Safe for concurrent use.
type Upstream struct {
	ep     *balancer.Endpoint
	hc     *fasthttp.HostClient
	cfg    UpstreamConfig
	active atomic.Int64  // connections checked out by a request
	demand demand        // the most checked out at once, lately (idleFull)
	slots  chan struct{} // one per open connection, up to MaxConns; nil: unlimited
	// dialFn replaces net.DialTimeout (tests inject failures).
	dialFn func(addr string, timeout time.Duration) (net.Conn, error)
	// sessions resumes TLS sessions with this backend.
	sessions tls.ClientSessionCache
	log      *slog.Logger
	h2       *h2Upstream // protocol h2 or h2c; nil: HTTP/1.1
}

var _ balancer.Upstream = (*Upstream)(nil)

// upstreamOf is the one place the data path turns an endpoint's Upstream
// back into holdfast's client. Endpoints of pools built by app always
// carry one (their NewUpstream hook is proxy.NewUpstream).
func upstreamOf(ep *balancer.Endpoint) *Upstream {
	u, _ := ep.Upstream.(*Upstream)
	return u
}

// NewUpstream builds the client for ep.
func NewUpstream(ep *balancer.Endpoint, cfg UpstreamConfig) *Upstream {
	u := &Upstream{ep: ep, cfg: cfg, log: cfg.Log}
	if u.log == nil {
		u.log = slog.Default()
	}
	if cfg.TLS != nil {
		u.sessions = tls.NewLRUClientSessionCache(8)
	}
	if cfg.MaxConns > 0 {
		u.slots = make(chan struct{}, cfg.MaxConns)
	}
	if cfg.Protocol == "h2" || cfg.Protocol == "h2c" {
		u.h2 = newH2Upstream(u, cfg.Protocol == "h2")
	}
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
		DialTimeout:                   u.dial,
	}
	return u
}

// Close closes the idle connections; the ones in use close as they finish.
func (u *Upstream) Close() {
	u.hc.CloseIdleConnections()
	if u.h2 != nil {
		u.h2.close()
	}
}

// Conns is the number of open connections to the backend.
func (u *Upstream) Conns() int { return u.hc.ConnsCount() }

// upConn counts itself on the endpoint while open.
type upConn struct {
	net.Conn
	// raw is the TCP connection: Conn itself, or the one under TLS.
	raw  net.Conn
	ep   *balancer.Endpoint
	u    *Upstream
	used bool
	// suspect: the last response had no body by rule (HEAD, 204, 304); a
	// body the backend sent anyway may still arrive, so the connection is
	// peeked before it is used again.
	suspect bool
	closed  atomic.Bool
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
	// deferSend: the next Write is a request's last (exchange); it is
	// held in pending and sent by the Read of the answer (sockIO.sendRead).
	deferSend bool
	pending   []byte
}

// maxDeferred bounds what a Write may leave in pending: a request head,
// not a body (pending stays allocated with the connection).
const maxDeferred = 4096

func (c *upConn) Write(b []byte) (int, error) {
	if c.direct && c.deferSend && len(c.pending) == 0 && len(b) <= maxDeferred {
		c.deferSend = false
		c.pending = append(c.pending, b...)
		return len(b), nil
	}
	if err := c.sendPending(); err != nil {
		return 0, err
	}
	var n int
	var err error
	if c.direct {
		n, err = c.io.write(b)
	} else {
		n, err = c.Conn.Write(b)
	}
	c.sent += uint64(n)
	return n, err
}

// Read reads the backend's answer. It used to yield (runtime.Gosched)
// after a write, so that the answer would be there by the time the read
// ran: about 5% less CPU per request at saturation, but a yielded
// goroutine waits in the global run queue, and while yielded goroutines
// keep the run queues from emptying, the scheduler never polls the
// network, so connections whose goroutines are parked there wait for
// sysmon's forced poll (10 ms, or far longer when sysmon cannot run):
// the p99 tail of bench/README.md "Where the p99 went".
func (c *upConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		w := c.pending
		c.pending = c.pending[:0]
		sent, n, err := c.io.sendRead(w, p)
		c.sent += uint64(sent)
		return n, err
	}
	if c.direct {
		return c.io.read(p)
	}
	return c.Conn.Read(p)
}

// sendPending sends what a deferred Write left (before any other write).
func (c *upConn) sendPending() error {
	if len(c.pending) == 0 {
		return nil
	}
	n, err := c.io.write(c.pending)
	c.sent += uint64(n)
	c.pending = c.pending[:0]
	return err
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
	acked, ok := bytesAcked(c.raw)
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

// setDeadline sets the deadline d from now, whatever is left of the
// current one (per_try_timeout).
func (c *upConn) setDeadline(d time.Duration) error {
	c.deadline = time.Since(c.born) + d
	return c.Conn.SetDeadline(c.born.Add(c.deadline))
}

func (c *upConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.u.releaseSlot()
		c.ep.ConnClosed()
		if s := c.ep.Stats; s != nil {
			s.Conns.Dec()
		}
	}
	return c.Conn.Close()
}

// errQueueTimeout: every connection to the backend stayed busy for the
// whole queue_timeout.
var errQueueTimeout = errors.New("no free connection to the backend within queue_timeout")

// acquireSlot takes one of the backend's max_conns_per_backend connection
// slots, waiting up to queue_timeout. Pooled HTTP connections, upgraded
// connections and TCP tunnels share the slots, so together they never
// exceed the limit, and there is no check-then-dial race.
func (u *Upstream) acquireSlot() error {
	if u.slots == nil {
		return nil
	}
	select {
	case u.slots <- struct{}{}:
		return nil
	default:
	}
	if u.cfg.QueueTimeout <= 0 {
		return &attemptError{stageQueue, errQueueTimeout}
	}
	t := time.NewTimer(u.cfg.QueueTimeout)
	defer t.Stop()
	select {
	case u.slots <- struct{}{}:
		return nil
	case <-t.C:
		return &attemptError{stageQueue, errQueueTimeout}
	}
}

func (u *Upstream) releaseSlot() {
	if u.slots != nil {
		<-u.slots
	}
}

// dialTunnel opens a connection of its own (an upgrade, a TCP tunnel),
// within the backend's connection slots.
func (u *Upstream) dialTunnel() (net.Conn, error) {
	c, err := u.dial(u.ep.Addr, u.cfg.ConnectTimeout)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (u *Upstream) dial(addr string, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 || (u.cfg.ConnectTimeout > 0 && u.cfg.ConnectTimeout < timeout) {
		timeout = u.cfg.ConnectTimeout
	}
	if err := u.acquireSlot(); err != nil {
		return nil, err
	}
	var c net.Conn
	var err error
	if u.dialFn != nil {
		c, err = u.dialFn(addr, timeout)
	} else {
		c, err = net.DialTimeout("tcp", addr, timeout)
	}
	if err != nil {
		u.releaseSlot()
		return nil, &dialError{err}
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	raw := c
	if tc := u.cfg.TLS.Config(); tc != nil {
		if c, err = u.handshake(c, tc, addr, timeout); err != nil {
			_ = raw.Close()
			u.releaseSlot()
			return nil, &dialError{err}
		}
	}
	u.ep.ConnOpened()
	if s := u.ep.Stats; s != nil {
		s.Conns.Inc()
	}
	uc := &upConn{Conn: c, raw: raw, ep: u.ep, u: u, born: time.Now()}
	// TLS records are not the request's bytes: no direct syscalls (a
	// peek would also take a session ticket for bytes nobody asked for).
	uc.direct = uc.io.init(c)
	uc.acked0, _ = bytesAcked(raw)
	return uc, nil
}

// handshake runs the TLS client handshake on c within the connect
// timeout. The name verified (and sent as SNI) is the configured
// server_name, else the backend's host.
func (u *Upstream) handshake(c net.Conn, base *tls.Config, addr string, timeout time.Duration) (net.Conn, error) {
	cfg := base.Clone()
	if cfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
	}
	cfg.ClientSessionCache = u.sessions
	if u.h2 != nil {
		cfg.NextProtos = []string{http2.NextProtoTLS}
	}
	tc := tls.Client(c, cfg)
	if timeout > 0 {
		_ = c.SetDeadline(time.Now().Add(timeout))
	}
	if err := tc.Handshake(); err != nil {
		u.log.Warn("upstream tls handshake failed", "pool", u.ep.Pool, "backend", u.ep.Addr, "server_name", cfg.ServerName, "err", err)
		return nil, &TLSError{Backend: u.ep.Addr, Err: err}
	}
	if u.h2 != nil && tc.ConnectionState().NegotiatedProtocol != http2.NextProtoTLS {
		err := errors.New("the backend did not negotiate h2 by ALPN")
		u.log.Warn("upstream tls handshake failed", "pool", u.ep.Pool, "backend", u.ep.Addr, "err", err)
		return nil, &TLSError{Backend: u.ep.Addr, Err: err}
	}
	_ = c.SetDeadline(time.Time{})
	return tc, nil
}

// connOps releases and closes fasthttp's pooled connections, whose type is
// unexported: it is captured once, by inference, as a type parameter.
var connOps = newConnOps((*fasthttp.HostClient).AcquireConn, (*fasthttp.HostClient).ReleaseConn, (*fasthttp.HostClient).CloseConn)

type connFuncs struct {
	acquire        func(*fasthttp.HostClient) (any, net.Conn, error)
	release, close func(*fasthttp.HostClient, any)
}

func newConnOps[C interface{ Conn() net.Conn }](acq func(*fasthttp.HostClient, time.Duration, bool) (C, error), rel, cls func(*fasthttp.HostClient, C)) connFuncs {
	return connFuncs{
		acquire: func(hc *fasthttp.HostClient) (any, net.Conn, error) {
			c, err := acq(hc, 0, false)
			if err != nil {
				return nil, nil, err
			}
			return c, c.Conn(), nil
		},
		release: func(hc *fasthttp.HostClient, cc any) { rel(hc, cc.(C)) },
		close:   func(hc *fasthttp.HostClient, cc any) { cls(hc, cc.(C)) },
	}
}

// roundTrip is one attempt: req's head and body go to the backend on a
// pooled connection and the response head is read into resp, its body
// read whole or handed over as a stream. ar.body may be nil (no body, or the
// body is in req). client and writeIdle let a streamed response keep the
// client's write deadline moving while bytes flow. Failures are classified
// by stage (stageOf).
//
// perTry, when set, bounds the attempt until its response head (and a
// body read whole): running past it is stageTryTimeout.
func (u *Upstream) roundTrip(req *fasthttp.Request, resp *fasthttp.Response, ar *attemptReq, client net.Conn, writeIdle, perTry time.Duration) error {
	if u.h2 != nil {
		return u.h2.roundTrip(req, resp, ar, client, perTry)
	}
	hc := u.hc
	body, idempotent := ar.body, ar.idempotent
	for tries := 0; ; tries++ {
		cc, conn, err := connOps.acquire(hc)
		if err != nil {
			if errors.Is(err, fasthttp.ErrNoFreeConns) {
				return &attemptError{stageQueue, err}
			}
			var de *dialError
			if errors.As(err, &de) {
				return fail(stageConnect, de.err)
			}
			return fail(stageConnect, err)
		}
		// u.dial is the client's only dialer, so every connection is an upConn.
		uc := conn.(*upConn)
		reused := uc.used
		if reused && tries < 4 && uc.direct && (uc.suspect || !idempotent) && uc.io.peerClosed() {
			// Closed by the backend while idle, or holding bytes nobody
			// asked for (a body after a HEAD, 204 or 304): never reused.
			connOps.close(hc, cc)
			continue
		}
		uc.used, uc.suspect = true, false
		err = u.exchange(cc, uc, req, resp, body, client, writeIdle, perTry)
		if err != nil && reused && tries < 4 && stageOf(err) == stageWrite && (body == nil || body.resendable()) {
			// A pooled connection the backend had closed (its keep-alive
			// timeout is shorter than ours): the request never reached it.
			// Send it again on another connection to the same backend
			// rather than spend a retry and count a failure against it.
			resp.Reset()
			continue
		}
		return err
	}
}

func (u *Upstream) exchange(cc any, uc *upConn, req *fasthttp.Request, resp *fasthttp.Response, body *reqBody, client net.Conn, writeIdle, perTry time.Duration) error {
	hc := u.hc
	conn := net.Conn(uc)
	u.demand.saw(u.active.Add(1))
	closeConn := func() {
		u.active.Add(-1)
		connOps.close(hc, cc)
	}
	tryBound := perTry > 0 && (u.cfg.ResponseTimeout <= 0 || perTry < u.cfg.ResponseTimeout)
	if tryBound {
		if err := uc.setDeadline(perTry); err != nil {
			closeConn()
			return fail(stageWrite, err)
		}
	} else if t := u.cfg.ResponseTimeout; t > 0 {
		if err := uc.extendDeadline(t); err != nil {
			closeConn()
			return fail(stageWrite, err)
		}
	}
	var inline []byte // a body held by req itself (not read from a client)
	if body == nil {
		if inline = req.Body(); len(inline) > 0 {
			req.Header.SetContentLength(len(inline))
		}
	}
	bw := hc.AcquireWriter(conn)
	err := req.Header.Write(bw)
	if err == nil {
		if body != nil && (body.src != nil || len(body.buf) > 0) {
			err = body.writeTo(bw)
		} else if len(inline) > 0 {
			_, err = bw.Write(inline)
		}
	}
	if err == nil {
		// The request's last bytes go out with the read of its answer
		// (sockIO.sendRead): that read then waits for the answer rather
		// than first trying the socket for nothing.
		uc.deferSend = body == nil
		err = bw.Flush()
		uc.deferSend = false
	}
	hc.ReleaseWriter(bw)
	if err != nil {
		if body != nil && body.err != nil {
			closeConn()
			return fail(stageClient, body.err)
		}
		if body == nil || !body.started {
			closeConn()
			return fail(stageWrite, err)
		}
		// The backend stopped reading a streamed body: it may have
		// answered already (413, 401...). That answer is relayed if it is
		// there; the connection is not reused either way.
		req.Header.SetConnectionClose()
	}
	br := hc.AcquireReader(conn)
	if err := readHead(resp, br); err != nil {
		hc.ReleaseReader(br)
		st := stageRead
		if uc.unacked() {
			st = stageWrite // the backend never received the request
		}
		closeConn()
		if tryBound && isTimeout(err) {
			return &attemptError{stageTryTimeout, err}
		}
		return fail(st, err)
	}
	status := resp.StatusCode()
	if status == fasthttp.StatusSwitchingProtocols {
		hc.ReleaseReader(br)
		closeConn()
		return fail(stageRead, errors.New("101 Switching Protocols to a request that did not ask to upgrade"))
	}
	if req.Header.IsHead() || status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified {
		resp.SkipBody = true
	}
	cl := resp.Header.ContentLength()
	if status == fasthttp.StatusNoContent || (status == fasthttp.StatusNotModified && cl == -1) {
		resp.Header.SetContentLength(0) // no framing to pass on
		cl = 0
	}
	if resp.SkipBody || (cl >= 0 && cl <= bufferLimit) {
		if !resp.SkipBody {
			if err := resp.ReadBody(br, 0); err != nil {
				hc.ReleaseReader(br)
				closeConn()
				if tryBound && isTimeout(err) {
					return &attemptError{stageTryTimeout, err}
				}
				return fail(stageRead, err)
			}
		}
		// Bytes beyond the response mean the backend and holdfast frame its
		// messages differently: the connection is never reused. A body on
		// a HEAD, 204 or 304 may still be on its way: the connection is
		// peeked before its next use.
		extra := br.Buffered() > 0
		uc.suspect = resp.SkipBody
		hc.ReleaseReader(br)
		u.active.Add(-1)
		if extra || resp.ConnectionClose() || req.Header.ConnectionClose() || u.idleFull() {
			connOps.close(hc, cc)
		} else {
			connOps.release(hc, cc)
		}
		return nil
	}
	// Large or unknown length: stream to the client as it arrives.
	s := streamPool.Get().(*bodyStream)
	s.u, s.cc, s.uc, s.br, s.resp = u, cc, uc, br, resp
	s.client, s.writeIdle = client, writeIdle
	s.reuse = !resp.ConnectionClose() && !req.Header.ConnectionClose()
	switch {
	case cl >= 0:
		s.mode, s.left = modeLength, int64(cl)
	case cl == -1:
		s.mode = modeChunked
	default:
		s.mode, s.reuse = modeClose, false // close-delimited (HTTP/1.0 style)
	}
	resp.SetBodyStream(s, cl)
	if cl < 0 {
		resp.Header.SetContentLength(-1)
	}
	return nil
}

// readHead reads the response head, skipping interim (1xx) responses but
// 101.
func readHead(resp *fasthttp.Response, br *bufio.Reader) error {
	for n := 0; ; n++ {
		if err := resp.Header.Read(br); err != nil {
			return err
		}
		st := resp.StatusCode()
		if st >= 200 || st == fasthttp.StatusSwitchingProtocols {
			return nil
		}
		if n >= 4 {
			return errors.New("too many interim responses")
		}
	}
}

// idleFull reports whether a connection coming back from a request is to
// be closed rather than kept: MaxIdle connections would already sit idle
// beyond the recent demand, the most requests in flight at once over the
// last one to two seconds. Measured against the connections checked out at
// this instant instead, a pool under load, whose requests spend part of
// their time queued in holdfast rather than at the backend, closed and
// redialled connections on every swing of that count (with 256 clients on
// one backend and the default 128: 10% more CPU per request, and p99 1.4×).
func (u *Upstream) idleFull() bool {
	if u.cfg.MaxIdle <= 0 {
		return false
	}
	return u.ep.Conns()-u.demand.recent(u.active.Load()) >= int64(u.cfg.MaxIdle)
}

// demand keeps the peak of a count over the current and the previous
// window of demandWindow. Safe for concurrent use; a peak lost to a race
// between two updates only makes the pool close a connection sooner.
type demand struct {
	peak, prev atomic.Int64
	since      atomic.Int64 // window start, nanoseconds since monoStart
	calls      atomic.Uint32
}

const demandWindow = time.Second

// demandClockEvery: the clock is read on one release in this many (a
// window is then at least that many releases long).
const demandClockEvery = 64

// monoStart anchors the monotonic readings of demand (one clock read, not
// time.Now's two).
var monoStart = time.Now()

// saw records a value of the count.
func (d *demand) saw(n int64) {
	if n > d.peak.Load() {
		d.peak.Store(n)
	}
}

// recent is the peak over the current and the previous window; now is the
// count at present (it starts the next window's peak).
func (d *demand) recent(now int64) int64 {
	if d.calls.Add(1)%demandClockEvery == 0 {
		d.roll(now)
	}
	return max(d.peak.Load(), d.prev.Load(), now)
}

// roll starts the next window once the current one is demandWindow old.
func (d *demand) roll(now int64) {
	t := int64(time.Since(monoStart))
	since := d.since.Load()
	if t-since < int64(demandWindow) || !d.since.CompareAndSwap(since, t) {
		return
	}
	last := d.peak.Swap(now)
	if t-since >= 2*int64(demandWindow) {
		last = now // the last window with a peak is long gone
	}
	d.prev.Store(last)
}

// Body framings of a streamed response.
const (
	modeLength  uint8 = iota + 1 // Content-Length
	modeChunked                  // chunked, decoded here to its end
	modeClose                    // until the backend closes
)

// bodyStream hands a streamed upstream body to the client side and gives
// the connection back (or closes it) when the body is done. The pool's
// response timeout bounds each silence from the backend, and each chunk
// read moves the client's write deadline on, so a stream that keeps moving
// is never cut.
type bodyStream struct {
	u         *Upstream
	cc        any
	uc        *upConn
	br        *bufio.Reader
	resp      *fasthttp.Response
	client    net.Conn
	writeIdle time.Duration
	writeDL   silence // the client connection's write deadline
	mode      uint8
	left      int64 // modeLength: bytes to come; modeChunked: of this chunk
	chunkEnd  bool  // modeChunked: the CRLF after a chunk is due
	done      bool  // the body was read to its end
	reuse     bool
	err       error
	// oneShot streams are closed by their reader (closeDelimited) and then
	// once more by fasthttp: they are not pooled, and close once.
	oneShot, closed bool
}

var streamPool = sync.Pool{New: func() any { return new(bodyStream) }}

func (s *bodyStream) Read(p []byte) (int, error) {
	if s.done {
		return 0, io.EOF
	}
	if s.err != nil {
		return 0, s.err
	}
	if t := s.u.cfg.ResponseTimeout; t > 0 {
		_ = s.uc.extendDeadline(t)
	}
	if s.client != nil && s.writeIdle > 0 {
		if at, ok := s.writeDL.due(s.writeIdle); ok {
			_ = s.client.SetWriteDeadline(at)
		}
	}
	n, err := s.read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

func (s *bodyStream) read(p []byte) (int, error) {
	switch s.mode {
	case modeLength:
		if s.left <= 0 {
			s.done = true
			return 0, io.EOF
		}
		if int64(len(p)) > s.left {
			p = p[:s.left]
		}
		n, err := s.br.Read(p)
		s.left -= int64(n)
		if err == io.EOF {
			return n, io.ErrUnexpectedEOF
		}
		if err == nil && s.left == 0 {
			s.done = true
		}
		return n, err
	case modeClose:
		n, err := s.br.Read(p)
		if err == io.EOF {
			s.done = true
		}
		return n, err
	}
	if s.left == 0 {
		if s.chunkEnd {
			if err := readCRLF(s.br); err != nil {
				return 0, err
			}
			s.chunkEnd = false
		}
		size, err := readChunkSize(s.br)
		if err != nil {
			return 0, err
		}
		if size == 0 {
			if err := readTrailers(s.br, &s.resp.Header); err != nil {
				return 0, err
			}
			s.done = true
			return 0, io.EOF
		}
		s.left, s.chunkEnd = size, true
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.br.Read(p)
	s.left -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Close returns the connection: to the pool if the body was read to its
// end on a keep-alive connection and nothing follows it, closed otherwise.
func (s *bodyStream) Close() error {
	if s.closed {
		return nil
	}
	reuse := s.done && s.reuse && s.br.Buffered() == 0 && !s.u.idleFull()
	if t := s.u.cfg.ResponseTimeout; t > 0 && reuse {
		_ = s.uc.extendDeadline(t)
	}
	s.u.hc.ReleaseReader(s.br)
	s.u.active.Add(-1)
	if reuse {
		connOps.release(s.u.hc, s.cc)
	} else {
		connOps.close(s.u.hc, s.cc)
	}
	if s.oneShot {
		s.closed = true
		return nil
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
