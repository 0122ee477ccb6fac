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
	// AccessLog writes one JSON line per connection, when it ends, to
	// AccessLogQueue (required when AccessLog is on).
	AccessLog      bool
	AccessLogQueue *LogQueue
}

// TCP proxies each accepted connection to a backend of its target and
// copies bytes both ways, passing half-closes on. Safe for concurrent use.
type TCP struct {
	opts   TCPOptions
	target atomic.Pointer[Target]
	log    *slog.Logger
	logOn  atomic.Bool

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
	p.logOn.Store(o.AccessLog && o.AccessLogQueue != nil)
	return p
}

// SetAccessLog turns the per-connection access log on or off (reload).
func (p *TCP) SetAccessLog(on bool) { p.logOn.Store(on && p.opts.AccessLogQueue != nil) }

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

// connLog is what a TCP connection's access-log line reports.
type connLog struct {
	start    time.Time
	pool     string
	ep       *balancer.Endpoint
	attempts int
	moved    [2]int64 // client→backend, backend→client
	flags    uint8
}

// TCP access-log flags, in the order of tcpFlagNames.
const (
	tcpNoBackend = 1 << iota
	tcpProxyRefused
	tcpUpstreamFailed
	tcpIdleTimeout
	tcpError
)

var tcpFlagNames = [...]string{"no_backend", "proxy_refused", "upstream_failed", "idle_timeout", "error"}

func (p *TCP) handle(client net.Conn) {
	defer client.Close()
	cl := connLog{start: time.Now()}
	if p.logOn.Load() {
		defer p.accessLog(client, &cl)
	}
	p.serveConn(client, &cl)
}

// accessLog writes c's line: listener, pool, backend, client, bytes_in
// (client to backend), bytes_out, duration_ms, attempts, flags.
func (p *TCP) accessLog(client net.Conn, c *connLog) {
	q := p.opts.AccessLogQueue
	l := q.Line()
	l.head(time.Now(), "connection")
	l.strs("listener", p.opts.Name)
	l.strs("pool", c.pool)
	backend := ""
	if c.ep != nil {
		backend = c.ep.Addr
	}
	l.strs("backend", backend)
	l.key("client")
	l.b = append(l.b, '"')
	if a, ok := client.RemoteAddr().(*net.TCPAddr); ok {
		l.b = appendIP(l.b, a.IP)
	}
	l.b = append(l.b, '"')
	l.int("bytes_in", c.moved[0])
	l.int("bytes_out", c.moved[1])
	l.ms("duration_ms", time.Since(c.start))
	l.int("attempts", int64(c.attempts))
	l.key("flags")
	l.b = append(l.b, '[')
	n := 0
	for i, f := range tcpFlagNames {
		if c.flags&(1<<i) != 0 {
			if n > 0 {
				l.b = append(l.b, ',')
			}
			n++
			l.b = append(l.b, '"')
			l.b = append(l.b, f...)
			l.b = append(l.b, '"')
		}
	}
	l.b = append(l.b, ']')
	l.end()
	q.Submit(l)
}

func (p *TCP) serveConn(client net.Conn, cl *connLog) {
	t := p.target.Load()
	cl.pool = t.Name
	if err := proxyHeaderErr(client); err != nil {
		p.log.Debug("connection refused", "err", err)
		cl.flags |= tcpProxyRefused
		return
	}
	var early []byte // client bytes read along with its PROXY header
	if pc, ok := client.(*ppConn); ok {
		early = pc.takeRest()
	}
	fromClient := len(early)
	cfg := t.cfg.Load()
	hash := uint64(0)
	if cfg.HashKind != HashNone {
		if a, ok := client.RemoteAddr().(*net.TCPAddr); ok {
			hash = balancer.HashBytes(a.IP)
		}
	}
	var backend net.Conn
	start := cl.start
	o := t.run(cfg, hash, start, attemptReq{idempotent: true, hold: true}, func(ep *balancer.Endpoint) (stage, int) {
		c, err := upstreamOf(ep).dialTunnel()
		if err != nil {
			return stageOf(err), 0
		}
		backend = c
		return stageOK, 0
	})
	// For the dashboard a tcp pool answers connections: 2xx once one
	// reached a backend, with the time that took.
	if o.st == stageOK {
		t.Pool.Traffic.Status(balancer.Out2xx, o.elapsed)
	} else {
		t.Pool.Traffic.Status(outcomeOf(o.st), o.elapsed)
	}
	cl.ep, cl.attempts = o.ep, o.attempts
	if o.st != stageOK {
		p.log.Debug("no backend for connection", "pool", t.Name, "client", client.RemoteAddr().String(), "stage", o.st)
		cl.flags |= tcpNoBackend
		return
	}
	ep := o.ep
	defer backend.Close()
	defer func() { ep.End(time.Since(start)) }()
	up := upstreamOf(ep)
	if up.cfg.SendProxy != "" {
		h, err := proxyHeader(up.cfg.SendProxy, client.RemoteAddr(), client.LocalAddr())
		if err != nil {
			p.log.Debug("PROXY header", "pool", t.Name, "err", err)
			cl.flags |= tcpError
			return
		}
		early = append(h, early...)
	}
	if len(early) > 0 {
		if _, err := backend.Write(early); err != nil {
			ep.Failure()
			cl.flags |= tcpUpstreamFailed
			return
		}
	}
	err := tunnel(client, backend, p.opts.IdleTimeout, &cl.moved)
	cl.moved[0] += int64(fromClient) // read with the PROXY header, written above
	if err != nil {
		p.log.Debug("connection ended", "pool", t.Name, "backend", ep.Addr, "err", err)
		if errors.Is(err, errIdle) {
			cl.flags |= tcpIdleTimeout
		} else {
			cl.flags |= tcpError
		}
	}
}

// errIdle ends a tunnel in which no byte moved for the idle timeout.
var errIdle = errors.New("idle timeout")

// tunnel copies bytes between a and b in both directions until both have
// ended. A clean EOF on one side is passed on as a half-close (the other
// direction keeps flowing); an error on either side closes both. Between
// two TCP sockets the kernel's splice path does the copying.
//
// With idle > 0, both connections are closed once no byte has moved either
// way for idle (noticed within idle/4 after). Splice is kept: rather than a
// deadline refreshed per read, each direction's copy is cut every idle/4
// by a read deadline to record what it read, a timer checks, and before
// it closes it asks the kernel whether either peer acknowledged bytes
// since (a copy blocked writing to a slow reader records nothing itself).
//
// moved, when not nil, receives the bytes copied a→b ([0]) and b→a ([1]).
func tunnel(a, b net.Conn, idle time.Duration, moved *[2]int64) error {
	t := &tunnelState{idle: idle}
	if idle > 0 {
		now := time.Now().UnixNano()
		t.last[0].Store(now)
		t.last[1].Store(now)
		// A direction blocked writing to a slow reader records nothing
		// until its write completes; the kernel's count of bytes the peer
		// acknowledged shows that progress.
		socks := [2]net.Conn{socketOf(a), socketOf(b)}
		var acked [2]uint64
		for i, c := range socks {
			acked[i], _ = bytesAcked(c)
		}
		fire := func() {
			now := time.Now().UnixNano()
			last := max(t.last[0].Load(), t.last[1].Load())
			moved := false
			for i, c := range socks {
				if n, ok := bytesAcked(c); ok && n != acked[i] {
					acked[i], moved = n, true
				}
			}
			if moved && now-last >= int64(idle) {
				last = now
				t.last[0].Store(now)
			}
			if wait := time.Duration(last + int64(idle) - now); wait > 0 {
				t.mu.Lock()
				if !t.done {
					t.timer.Reset(wait)
				}
				t.mu.Unlock()
				return
			}
			t.idled.Store(true)
			hardClose(a)
			hardClose(b)
		}
		t.mu.Lock()
		t.timer = time.AfterFunc(idle, fire)
		t.mu.Unlock()
		defer func() {
			t.mu.Lock()
			t.done = true
			t.timer.Stop()
			t.mu.Unlock()
		}()
	}
	errc := make(chan error, 1)
	go func() { errc <- t.copy(0, b, a) }()
	err := t.copy(1, a, b)
	if err2 := <-errc; err == nil {
		err = err2
	}
	if moved != nil {
		*moved = t.moved
	}
	if t.idled.Load() {
		return errIdle
	}
	return err
}

type tunnelState struct {
	idle  time.Duration
	moved [2]int64        // bytes copied by each direction, written by its copy
	last  [2]atomic.Int64 // unix nanoseconds of each direction's last progress
	idled atomic.Bool

	mu    sync.Mutex
	timer *time.Timer
	done  bool
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copy moves src to dst until EOF (then half-closes dst) or an error,
// which closes both connections at once so the other direction ends too.
func (t *tunnelState) copy(dir int, dst, src net.Conn) (err error) {
	defer func() {
		if err != nil {
			hardClose(src)
			hardClose(dst)
		}
	}()
	w, r := writerOf(dst), readerOf(src)
	_, splice := w.(*net.TCPConn)
	if _, ok := r.(*net.TCPConn); !ok {
		splice = false
	}
	var bp *[]byte
	if !splice {
		bp = copyBufs.Get().(*[]byte)
		defer copyBufs.Put(bp)
	}
	move := func() (int64, error) {
		if splice {
			return io.Copy(w, r) // (*net.TCPConn).ReadFrom: splice(2)
		}
		return io.CopyBuffer(writerOnly{w}, readerOnly{r}, *bp)
	}
	if t.idle <= 0 {
		n, err := move()
		t.moved[dir] += n
		if err == nil {
			closeWrite(dst)
		}
		return err
	}
	beat := t.idle / 4
	for {
		// A read deadline cuts the copy at least every beat, even while
		// bytes flow (it is absolute), so progress is seen. A read timeout
		// loses nothing: splice has written out what it read.
		_ = r.SetReadDeadline(time.Now().Add(beat)) // on the socket read, under wrappers
		n, err := move()
		t.moved[dir] += n
		if n > 0 {
			t.last[dir].Store(time.Now().UnixNano())
		}
		if err == nil {
			closeWrite(dst)
			return nil
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || t.idled.Load() {
			return err
		}
	}
}

type writerOnly struct{ io.Writer }
type readerOnly struct{ io.Reader }

// readerOf is what to read c through: the socket itself when nothing is
// buffered above it, so splice applies.
func readerOf(c net.Conn) net.Conn {
	for {
		switch x := c.(type) {
		case *countedConn:
			c = x.Conn
		case *upConn:
			c = x.Conn
		case *ppConn:
			if len(x.rest) > 0 {
				return c
			}
			c = x.Conn
		default:
			return c
		}
	}
}

// writerOf is the socket under c's wrappers (writes pass straight through).
func writerOf(c net.Conn) net.Conn {
	for {
		switch x := c.(type) {
		case *countedConn:
			c = x.Conn
		case *upConn:
			c = x.Conn
		case *ppConn:
			c = x.Conn
		case interface{ UnsafeConn() net.Conn }: // fasthttp's hijacked connection
			c = x.UnsafeConn()
		default:
			return c
		}
	}
}

// socketOf is the TCP socket under c, below TLS too (for TCP_INFO).
func socketOf(c net.Conn) net.Conn {
	c = writerOf(c)
	if x, ok := c.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
		c = writerOf(x.NetConn())
	}
	return c
}

// hardClose closes c, and the connection under a hijacked one (whose own
// Close is a no-op until its handler returns).
func hardClose(c net.Conn) {
	_ = c.Close()
	if h, ok := c.(interface{ UnsafeConn() net.Conn }); ok {
		_ = h.UnsafeConn().Close()
	}
}

// closeWrite passes a FIN on: shuts down c's write side, or closes c when
// it cannot half-close.
func closeWrite(c net.Conn) {
	for {
		switch x := c.(type) {
		case interface{ CloseWrite() error }:
			_ = x.CloseWrite()
			return
		case interface{ Unwrap() net.Conn }:
			c = x.Unwrap()
		case *upConn:
			c = x.Conn
		case interface{ UnsafeConn() net.Conn }:
			c = x.UnsafeConn()
		default:
			_ = c.Close()
			return
		}
	}
}
