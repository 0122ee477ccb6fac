package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Listen binds a TCP listener. With freebind the address may not be on
// this host yet (IP_FREEBIND): a standby binds a floating IP before it moves.
func Listen(ctx context.Context, addr string, freebind bool) (net.Listener, error) {
	lc := net.ListenConfig{}
	if freebind {
		lc.Control = func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_IP, syscall.IP_FREEBIND, 1)
				if serr == nil && (network == "tcp6") {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_IPV6, 78 /* IPV6_FREEBIND */, 1)
					if serr != nil {
						serr = nil // older kernels: IPv4 freebind still applies to v4-mapped
					}
				}
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	return lc.Listen(ctx, "tcp", addr)
}

// LimitListener counts open connections in a gauge and bounds them. With
// an explicit Max it stops accepting while that many are open (the kernel
// backlog holds the rest, as HAProxy's maxconn does); without one, a
// shared ConnCap bounds the process, and a connection past it is accepted
// and closed at once. Accept never returns a resource error (EMFILE,
// ENFILE, ENOBUFS, ENOMEM, ...): it pauses and retries (accept.go), so only
// Close stops it. Safe for concurrent use.
type LimitListener struct {
	net.Listener
	o     LimitOptions
	sem   chan struct{}
	gauge prometheus.Gauge
	open  atomic.Int64
	done  chan struct{}
	once  sync.Once
	acc   acceptState
	// conns are the open connections when LimitOptions.TrackConns is set
	// (CloseIdle); nil otherwise.
	connsMu sync.Mutex
	conns   map[*countedConn]struct{}
}

// NewLimitListener wraps ln.
func NewLimitListener(ln net.Listener, o LimitOptions) *LimitListener {
	l := &LimitListener{Listener: ln, o: o, gauge: o.Gauge, done: make(chan struct{})}
	if o.Max > 0 {
		l.sem = make(chan struct{}, o.Max)
	}
	l.acc.init(&l.o)
	if o.TrackConns {
		l.conns = map[*countedConn]struct{}{}
	}
	return l
}

// EndKeepAlive marks every open connection to close after its current
// response and closes the ones that wait for their next request
// (fasthttp's keep-alive wait, or parked) now; it returns how many it
// closed. Connections accepted later are not marked. Only with
// LimitOptions.TrackConns (nothing otherwise), for connections served by
// an HTTP with HTTPOptions.TrackIdle, which honours the mark while
// HTTP.SetAddressLost is set. Safe for concurrent use.
func (l *LimitListener) EndKeepAlive() int {
	l.connsMu.Lock()
	var idle []*countedConn
	for c := range l.conns {
		c.endKeepAlive.Store(true)
		if c.kaIdle.Load() {
			idle = append(idle, c)
		}
	}
	l.connsMu.Unlock()
	for _, c := range idle {
		c.closeNow()
	}
	return len(idle)
}

// Open is the number of connections open now.
func (l *LimitListener) Open() int64 { return l.open.Load() }

// Accept waits for a free slot, then accepts. A failed accept pauses with
// a bounded backoff and retries; it returns an error only once the
// listener is closed.
func (l *LimitListener) Accept() (net.Conn, error) {
	for {
		if l.sem != nil {
			select {
			case l.sem <- struct{}{}:
			case <-l.done:
				return nil, net.ErrClosed
			}
		}
		c, err := l.Listener.Accept()
		if err != nil {
			if l.sem != nil {
				<-l.sem
			}
			if l.closed() || errors.Is(err, net.ErrClosed) {
				return nil, net.ErrClosed // what fasthttp's Serve takes for a closed listener
			}
			if !l.acc.failed(l.Listener, err, l.done) {
				return nil, net.ErrClosed
			}
			continue
		}
		l.acc.succeeded(l.Listener)
		if l.o.Access != nil && !l.o.Access.admit(peerAddr(c.RemoteAddr())) {
			_ = c.Close()
			if l.sem != nil {
				<-l.sem
			}
			continue
		}
		if !l.admit() {
			_ = c.Close()
			continue
		}
		l.open.Add(1)
		if l.gauge != nil {
			l.gauge.Inc()
		}
		cc := &countedConn{Conn: c, l: l}
		cc.direct = cc.io.init(c)
		if cc.direct {
			cc.io.dl = &cc.dl
		}
		if l.conns != nil {
			l.connsMu.Lock()
			l.conns[cc] = struct{}{}
			l.connsMu.Unlock()
		}
		return cc, nil
	}
}

// Close stops accepting.
func (l *LimitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

func (l *LimitListener) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

type countedConn struct {
	net.Conn
	l      *LimitListener
	once   atomic.Bool
	linger atomic.Bool
	// io issues the socket calls directly when direct is set.
	io     sockIO
	direct bool
	// dl keeps a direct connection's deadlines (lazily; see
	// lazyDeadlines): every deadline goes through SetDeadline,
	// SetReadDeadline and SetWriteDeadline below, never to Conn's.
	dl lazyDeadlines
	// pk is the connection's parking state (park.go); pk.p is nil for a
	// connection that is never parked (TLS, not a socket, parking off).
	pk parkState
	// kaIdle: fasthttp waits for the next request on the connection
	// (HTTP.connState), or it is parked; LimitListener.CloseIdle may close
	// it. Set before any other goroutine reads pk.
	kaIdle atomic.Bool
	// endKeepAlive: LimitListener.EndKeepAlive marked the connection.
	endKeepAlive atomic.Bool
}

// closeNow closes c at once, also when it is parked or about to be.
func (c *countedConn) closeNow() {
	if c.pk.p != nil && c.pk.state.Swap(connServing) == connParked {
		c.pk.p.forget(c)
	}
	_ = c.Close()
}

// Write writes to the client.
func (c *countedConn) Write(p []byte) (int, error) {
	if c.direct {
		return c.io.write(p)
	}
	return c.Conn.Write(p)
}

// SetDeadline sets the read and write deadlines.
func (c *countedConn) SetDeadline(t time.Time) error {
	if c.direct {
		return c.dl.SetDeadline(c.io.tc, t)
	}
	return c.Conn.SetDeadline(t)
}

// SetWriteDeadline sets the write deadline.
func (c *countedConn) SetWriteDeadline(t time.Time) error {
	if c.direct {
		return c.dl.SetWriteDeadline(c.io.tc, t)
	}
	return c.Conn.SetWriteDeadline(t)
}

// setReadDeadline sets the socket's read deadline (SetReadDeadline is
// fasthttp's, with the park grace in it).
func (c *countedConn) setReadDeadline(t time.Time) error {
	if c.direct {
		return c.dl.SetReadDeadline(c.io.tc, t)
	}
	return c.Conn.SetReadDeadline(t)
}

// Read reads from the client. It does not yield before reading (see
// upConn.Read for why).
func (c *countedConn) Read(p []byte) (int, error) {
	if c.pk.idle {
		c.pk.idle = false
		if c.pk.p != nil {
			return c.idleRead(p)
		}
	}
	return c.read(p)
}

func (c *countedConn) read(p []byte) (int, error) {
	if c.direct {
		return c.io.read(p)
	}
	return c.Conn.Read(p)
}

// Lingering close: a response that went out before the request body was
// read ends the connection, but a client still sending its body would get
// a reset for the unread bytes, and a reset can destroy the response in
// flight. So the write side is shut first, and what the client still sends
// is read and dropped for a bounded time and size, then the socket closes
// (nginx's lingering_close).
const (
	lingerTimeout = 2 * time.Second
	lingerBytes   = 1 << 20
)

// lingerOnClose makes the next Close a lingering one.
func (c *countedConn) lingerOnClose() { c.linger.Store(true) }

// Close closes the connection, or parks it when its keep-alive wait ran
// past the park grace (fasthttp closes every connection it is done with),
// or closes it lingering (lingerOnClose).
func (c *countedConn) Close() error {
	if c.linger.CompareAndSwap(true, false) {
		if tc, ok := c.Conn.(*net.TCPConn); ok && tc.CloseWrite() == nil {
			go func() {
				_ = tc.SetReadDeadline(time.Now().Add(lingerTimeout))
				_, _ = io.CopyN(io.Discard, tc, lingerBytes)
				_ = c.Close()
			}()
			return nil
		}
	}
	if c.pk.p != nil {
		if c.pk.state.CompareAndSwap(connParkPending, connParked) {
			if c.pk.p.park(c) {
				return nil
			}
		}
		if c.pk.state.Swap(connServing) == connParked {
			c.pk.p.forget(c) // closed while parked
		}
	}
	if c.once.CompareAndSwap(false, true) {
		if c.l.conns != nil {
			c.l.connsMu.Lock()
			delete(c.l.conns, c)
			c.l.connsMu.Unlock()
		}
		c.l.open.Add(-1)
		if c.l.gauge != nil {
			c.l.gauge.Dec()
		}
		c.l.release()
	}
	return c.Conn.Close()
}

// Unwrap gives the accepted connection (splice, TLS, PROXY protocol).
func (c *countedConn) Unwrap() net.Conn { return c.Conn }
