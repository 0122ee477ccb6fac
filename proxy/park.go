package proxy

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// A parkable connection's life: connServing on a goroutine (fasthttp's);
// connParkPending once its keep-alive wait outlasted the park grace and
// fasthttp is about to close it; connParked in the poller's epoll set,
// without a goroutine, until it becomes readable (connServing again) or
// is closed.
const (
	connServing int32 = iota
	connParkPending
	connParked
)

// errParked ends fasthttp's keep-alive wait on a connection that is being
// parked: read before any byte of a next request, fasthttp takes it for a
// keep-alive connection going away, returns from serving it without an
// answer and closes it, which parks it (countedConn.Close).
var errParked = errors.New("keep-alive connection parked")

// parkState is a countedConn's part in parking. idle, graced and idleDL
// belong to the goroutine serving the connection; state is shared with
// the poller and with Close callers; seq, fd and armed are the poller's
// (under its lock).
type parkState struct {
	p     *poller
	outer net.Conn // the connection fasthttp serves (a PROXY-protocol wrapper, or c)
	// idleDL is the idle deadline fasthttp asked for (Unix nanoseconds;
	// 0: none).
	idleDL int64
	state  atomic.Int32
	seq    uint32
	fd     int32
	// idle: fasthttp is waiting for the next request (ConnState idle)
	// and has not read since; graced: the socket's read deadline is the
	// park grace rather than idleDL.
	idle, graced, armed bool
}

// enablePark makes c parkable by p; outer is what fasthttp serves.
func (c *countedConn) enablePark(p *poller, outer net.Conn) {
	if !c.direct {
		return // not a plain TCP socket
	}
	c.pk.p, c.pk.outer, c.pk.fd = p, outer, -1
}

// keepAliveWait marks the start (idle) or the end of fasthttp's wait for
// the next request on the connection. Called on the serving goroutine.
func (c *countedConn) keepAliveWait(idle bool) {
	c.pk.idle, c.pk.graced, c.pk.idleDL = idle, false, 0
}

// SetReadDeadline sets t, except during a keep-alive wait of a parkable
// connection: then t is the idle deadline, kept for the poller, and the
// socket gets the park grace if that comes first.
func (c *countedConn) SetReadDeadline(t time.Time) error {
	if c.pk.idle && c.pk.p != nil {
		c.pk.idleDL = 0
		if !t.IsZero() {
			c.pk.idleDL = t.UnixNano()
		}
		g := time.Now().Add(c.pk.p.grace)
		if t.IsZero() || g.Before(t) {
			c.pk.graced = true
			return c.setReadDeadline(g)
		}
		c.pk.graced = false
	}
	return c.setReadDeadline(t)
}

// idleRead is the first read of a keep-alive wait. Past the grace with no
// byte it parks the connection instead of failing; past the idle deadline
// it fails as any read does.
func (c *countedConn) idleRead(p []byte) (int, error) {
	if !c.pk.graced && c.pk.idleDL == 0 {
		// fasthttp set no deadline (no idle or read timeout): the grace
		// still applies.
		c.pk.graced = true
		if err := c.setReadDeadline(time.Now().Add(c.pk.p.grace)); err != nil {
			return 0, err
		}
	}
	n, err := c.read(p)
	if err == nil || !c.pk.graced || !errors.Is(err, os.ErrDeadlineExceeded) {
		return n, err
	}
	c.pk.graced = false
	if dl := c.pk.idleDL; dl != 0 && time.Now().UnixNano() >= dl {
		return n, err // the idle timeout itself
	}
	// The socket keeps no deadline while parked: the poller's sweep
	// enforces idleDL, and the next serve sets its own.
	if err := c.setReadDeadline(time.Time{}); err != nil {
		return 0, err
	}
	c.pk.state.Store(connParkPending)
	return 0, errParked
}

// parkable finds the countedConn under what fasthttp serves (through a
// PROXY-protocol wrapper) if it can be parked; nil for TLS and the rest.
func parkable(c net.Conn) *countedConn {
	for range 3 {
		switch v := c.(type) {
		case *countedConn:
			if v.pk.p == nil {
				return nil
			}
			return v
		case *ppConn:
			c = v.Conn
		default:
			return nil
		}
	}
	return nil
}

// counted finds the countedConn under what fasthttp serves, through a
// PROXY-protocol wrapper and TLS; nil when there is none.
func counted(c net.Conn) *countedConn {
	for range 3 {
		switch v := c.(type) {
		case *countedConn:
			return v
		case *ppConn:
			c = v.Conn
		case *tls.Conn:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// enablePark makes c parkable by p if it is a plain TCP connection
// (under a PROXY-protocol wrapper or none; TLS keeps its goroutine).
func enablePark(p *poller, c net.Conn) {
	inner := c
	for range 3 {
		switch v := inner.(type) {
		case *countedConn:
			v.enablePark(p, c)
			return
		case *ppConn:
			inner = v.Conn
		default:
			return
		}
	}
}
