package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/balancer"
)

// isUpgrade reports whether a request asks to switch protocols (WebSocket,
// h2c, ...): an Upgrade header and "upgrade" among the Connection tokens.
// Header names are matched without regard to case, as sent.
func isUpgrade(h *fasthttp.RequestHeader) bool {
	up, conn := false, false
	for k, v := range h.All() {
		switch len(k) {
		case 7:
			if len(v) > 0 && asciiEqualFoldStr(k, "Upgrade") {
				up = true
			}
		case 10:
			if asciiEqualFoldStr(k, "Connection") && hasToken(v, "upgrade") {
				conn = true
			}
		}
	}
	return up && conn
}

// hasToken reports whether the comma-separated list v holds tok (lower
// case), ignoring case and spaces.
func hasToken(v []byte, tok string) bool {
	found := false
	forEachToken(v, func(t []byte) {
		found = found || (len(t) == len(tok) && asciiEqualFoldStr(t, tok))
	})
	return found
}

// wantsUpgrade reports whether the request asks to switch to a protocol
// the listener passes through. Any other Upgrade (h2c always) is served
// as a plain request, its Upgrade header dropped as hop-by-hop.
func wantsUpgrade(hdr *fasthttp.RequestHeader, pol *Policy) bool {
	if !isUpgrade(hdr) {
		return false
	}
	v := bytes.TrimSpace(hdr.Peek(hdrUpgrade))
	if len(v) == 3 && asciiEqualFoldStr(v, "h2c") {
		return false
	}
	for _, p := range pol.Upgrades {
		if len(v) == len(p) && asciiEqualFoldStr(v, p) {
			return true
		}
	}
	return false
}

// upgrade passes an Upgrade request to a backend on a connection of its
// own. If the backend answers 101 the client's connection is taken over
// (fasthttp's Hijack, after the 101 is written) and the two become a byte
// stream both ways until either side closes or the listener's idle
// timeout passes with no byte moved. Any other answer is relayed as an
// ordinary response. Backends are picked, retried and limited by the same
// attempt loop as ordinary requests.
func (h *HTTP) upgrade(ctx *fasthttp.RequestCtx, t *Target, x *exchange, pol *Policy) int {
	req, resp := &ctx.Request, &ctx.Response
	if cl := req.Header.ContentLength(); cl > 0 || cl == -1 {
		// An upgrade carrying a body is served as a plain request (the
		// Upgrade header is dropped as hop-by-hop).
		h.proxy(ctx, t, x, !req.Header.IsHTTP11(), pol)
		return x.status
	}
	var upBuf [64]byte
	upgradeTo := append(upBuf[:0], bytes.TrimSpace(req.Header.Peek(hdrUpgrade))...)
	cfg := t.cfg.Load()
	ct := stripRequestHop(&req.Header)
	if ct.close {
		x.closeAll = true
	}
	req.Header.ResetConnectionClose()
	setForwarded(&req.Header, ctx.RemoteIP(), ctx.IsTLS(), pol.TrustedProxies.Contains(ipAddr(ctx.RemoteIP())), req.Header.Host())
	h.requestRules(ctx, x, pol)
	req.Header.Set("Connection", "Upgrade")
	req.Header.SetBytesV("Upgrade", upgradeTo)
	req.Header.SetProtocolBytes(strHTTP11)
	var hash uint64
	if cfg.HashKind != HashNone {
		hash = requestHash(ctx, cfg)
	}
	var backend net.Conn
	var br *bufio.Reader
	x.out = t.run(cfg, hash, ctx.Time(), attemptReq{idempotent: true, hold: true}, func(ep *balancer.Endpoint) (stage, int) {
		up := upstreamOf(ep)
		c, err := up.dialTunnel()
		if err != nil {
			return stageOf(err), 0
		}
		status, r, err := h.handshake(ctx, up, c)
		if err != nil {
			_ = c.Close()
			resp.Reset()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return stageTimeout, 0
			}
			return stageRead, 0
		}
		backend, br = c, r
		return stageOK, status
	})
	switch x.out.st {
	case stageOK:
	case stageNoBackend, stageQueue, stageLocal:
		plainBytes(ctx, fasthttp.StatusServiceUnavailable, t.msg503)
		return fasthttp.StatusServiceUnavailable
	case stageTimeout:
		plainBytes(ctx, fasthttp.StatusGatewayTimeout, t.msg504)
		return fasthttp.StatusGatewayTimeout
	default:
		plainBytes(ctx, fasthttp.StatusBadGateway, t.msg502)
		return fasthttp.StatusBadGateway
	}
	ep, status := x.out.ep, x.out.status
	start := time.Now()
	if status != fasthttp.StatusSwitchingProtocols {
		_ = backend.Close()
		ep.End(time.Since(start))
		stripResponseHop(&resp.Header)
		return status
	}
	resp.SkipBody = true
	idle := h.opts.IdleTimeout
	log, pool, addr := h.log, t.Name, ep.Addr
	tunnels := &h.tunnels
	ctx.Hijack(func(client net.Conn) {
		defer backend.Close()
		defer func() { ep.End(time.Since(start)) }()
		if !tunnels.add(client, backend) {
			return // the listener is shutting down
		}
		defer tunnels.remove(client)
		// Bytes the backend sent right behind its 101 go first.
		if k := br.Buffered(); k > 0 {
			b, _ := br.Peek(k)
			if _, err := client.Write(b); err != nil {
				return
			}
		}
		if err := tunnel(client, backend, idle, nil); err != nil {
			log.Debug("upgraded connection ended", "pool", pool, "backend", addr, "err", err)
		}
	})
	return status
}

// handshake sends the request on backend and reads the response header;
// a response other than 101 is read whole. It returns the status and the
// reader holding any bytes that followed the header.
func (h *HTTP) handshake(ctx *fasthttp.RequestCtx, up *Upstream, backend net.Conn) (int, *bufio.Reader, error) {
	req, resp := &ctx.Request, &ctx.Response
	if d := up.cfg.ResponseTimeout; d > 0 {
		_ = backend.SetDeadline(time.Now().Add(d))
	}
	bw := bufio.NewWriterSize(backend, 4096)
	if up.cfg.SendProxy != "" {
		hdr, err := proxyHeader(up.cfg.SendProxy, ctx.RemoteAddr(), ctx.LocalAddr())
		if err != nil {
			return 0, nil, err
		}
		_, _ = bw.Write(hdr)
	}
	if err := req.Write(bw); err != nil {
		return 0, nil, err
	}
	if err := bw.Flush(); err != nil {
		return 0, nil, err
	}
	br := bufio.NewReaderSize(backend, 4096)
	if err := readHead(resp, br); err != nil {
		return 0, nil, err
	}
	status := resp.StatusCode()
	if status != fasthttp.StatusSwitchingProtocols {
		if status != fasthttp.StatusNoContent && status != fasthttp.StatusNotModified {
			if err := resp.ReadBody(br, 0); err != nil {
				return 0, nil, err
			}
		}
		resp.Header.ResetConnectionClose()
		return status, br, nil
	}
	_ = backend.SetDeadline(time.Time{})
	return status, br, nil
}

// tunnelSet tracks a listener's upgraded connections, which fasthttp no
// longer counts once hijacked, so a drain can wait for them and then close
// them. The zero value is ready; safe for concurrent use.
type tunnelSet struct {
	mu      sync.Mutex
	m       map[net.Conn]net.Conn // client → backend
	wg      sync.WaitGroup
	closing bool
}

func (ts *tunnelSet) add(client, backend net.Conn) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.closing {
		return false
	}
	if ts.m == nil {
		ts.m = map[net.Conn]net.Conn{}
	}
	ts.m[client] = backend
	ts.wg.Add(1)
	return true
}

func (ts *tunnelSet) remove(client net.Conn) {
	ts.mu.Lock()
	delete(ts.m, client)
	ts.mu.Unlock()
	ts.wg.Done()
}

// drain refuses new tunnels, waits for open ones to end until ctx is done,
// then closes the rest.
func (ts *tunnelSet) drain(ctx context.Context) {
	ts.mu.Lock()
	ts.closing = true
	ts.mu.Unlock()
	done := make(chan struct{})
	go func() { ts.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	ts.mu.Lock()
	for c, b := range ts.m {
		hardClose(c)
		_ = b.Close()
	}
	ts.mu.Unlock()
	<-done
}

// Tunnels is the number of upgraded (WebSocket and the like) connections
// open on the listener.
func (h *HTTP) Tunnels() int {
	h.tunnels.mu.Lock()
	defer h.tunnels.mu.Unlock()
	return len(h.tunnels.m)
}

// Shutdown stops the listener: it closes parked connections and stops
// accepting, lets requests in flight and upgraded connections finish until
// ctx is done, then closes what is left.
func (h *HTTP) Shutdown(ctx context.Context) error {
	if p := h.poller.Load(); p != nil {
		p.Close() // parked connections: the end of the drain
	}
	h.h2.drain()
	err := h.srv.ShutdownWithContext(ctx)
	h.tunnels.drain(ctx)
	h.h2.shutdown(ctx)
	if h.ownQueue {
		h.opts.AccessLogQueue.Close() // the last lines are written
	}
	return err
}
