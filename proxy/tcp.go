package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holdfast-lb/holdfast/balancer"
	"github.com/holdfast-lb/holdfast/metrics"
)

// TCPOptions configure an L4 listener.
type TCPOptions struct {
	Name        string
	IdleTimeout time.Duration
	Log         *slog.Logger
	Metrics     *metrics.Metrics
}

// TCP proxies each accepted connection to a backend of its target and
// copies bytes both ways, passing half-closes on. Safe for concurrent use.
type TCP struct {
	opts   TCPOptions
	target atomic.Pointer[Target]
	log    *slog.Logger

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewTCP builds an L4 listener for target t.
func NewTCP(o TCPOptions, t *Target) *TCP {
	p := &TCP{opts: o, log: o.Log, conns: map[net.Conn]struct{}{}}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.target.Store(t)
	return p
}

// SetTarget swaps the pool new connections go to (reload).
func (p *TCP) SetTarget(t *Target) { p.target.Store(t) }

// Serve accepts connections on ln until Shutdown.
func (p *TCP) Serve(ln net.Listener) error {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				t := time.NewTimer(delay)
				<-t.C
				continue
			}
			// A bad PROXY header and the like fail one connection only.
			p.log.Debug("accept failed", "err", err)
			continue
		}
		delay = 0
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return nil
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go func() {
			defer p.wg.Done()
			p.handle(c)
			p.mu.Lock()
			delete(p.conns, c)
			p.mu.Unlock()
		}()
	}
}

// Shutdown stops accepting and waits for open connections to finish until
// ctx ends, then closes the rest.
func (p *TCP) Shutdown(ctx context.Context) {
	p.mu.Lock()
	p.closed = true
	if p.ln != nil {
		_ = p.ln.Close()
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		p.mu.Lock()
		for c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		<-done
	}
}

func (p *TCP) handle(client net.Conn) {
	defer client.Close()
	t := p.target.Load()
	cfg := t.cfg.Load()
	hash := uint64(0)
	if cfg.HashKind != HashNone {
		if a, ok := client.RemoteAddr().(*net.TCPAddr); ok {
			hash = balancer.HashBytes(a.IP)
		}
	}
	var tried [4]*balancer.Endpoint
	n := 0
	var backend net.Conn
	var ep *balancer.Endpoint
	for attempt := 0; ; attempt++ {
		ep = t.Pool.Picker().Pick(hash, tried[:n])
		if ep == nil {
			p.log.Debug("no routable backend", "pool", t.Name)
			return
		}
		if n < len(tried) {
			tried[n] = ep
			n++
		}
		up := ep.Upstream.(*Upstream)
		if up.cfg.MaxConns > 0 && ep.Conns() >= int64(up.cfg.MaxConns) {
			if attempt < cfg.Retry.Attempts {
				continue
			}
			return
		}
		c, err := up.dial(ep.Addr, up.cfg.ConnectTimeout)
		if err == nil {
			if up.cfg.SendProxy != "" {
				if err = writeProxyHeader(c, up.cfg.SendProxy, client.RemoteAddr(), client.LocalAddr()); err != nil {
					_ = c.Close()
				}
			}
		}
		if err == nil {
			backend = c
			ep.Success()
			break
		}
		ep.Failure()
		if attempt >= cfg.Retry.Attempts || !cfg.Retry.OnConnectFailure || !t.withdraw() {
			p.log.Debug("backend connect failed", "pool", t.Name, "backend", ep.Addr, "err", err)
			return
		}
		if t.retryConnect != nil {
			t.retryConnect.Inc()
		}
	}
	t.deposit(cfg.Retry.Budget)
	defer backend.Close()
	ep.Begin()
	start := time.Now()
	defer func() { ep.End(time.Since(start)) }()

	errc := make(chan error, 2)
	go func() { errc <- p.pipe(backend, client) }()
	go func() { errc <- p.pipe(client, backend) }()
	for range 2 {
		if err := <-errc; err != nil {
			// An error (not a clean EOF) ends both directions.
			_ = client.Close()
			_ = backend.Close()
		}
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// pipe copies src to dst until EOF, then half-closes dst so the peer sees
// the FIN while the other direction keeps flowing. With an idle timeout,
// each read must come within it.
func (p *TCP) pipe(dst, src net.Conn) error {
	idle := p.opts.IdleTimeout
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var lastSet time.Time
	for {
		if idle > 0 {
			// Refresh the deadline at most every 1/4 idle, not every read.
			if now := time.Now(); now.Sub(lastSet) > idle/4 {
				_ = src.SetReadDeadline(now.Add(idle))
				_ = dst.SetWriteDeadline(now.Add(idle))
				lastSet = now
			}
		}
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				closeWrite(dst)
				return nil
			}
			return err
		}
	}
}

func closeWrite(c net.Conn) {
	for {
		switch x := c.(type) {
		case interface{ CloseWrite() error }:
			_ = x.CloseWrite()
			return
		case interface{ Unwrap() net.Conn }:
			c = x.Unwrap()
		default:
			_ = c.Close()
			return
		}
	}
}
