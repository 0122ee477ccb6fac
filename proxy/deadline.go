package proxy

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// lazyDeadlines keeps a client socket's read and write deadlines lazily.
// A socket deadline is a runtime timer, and fasthttp moves a keep-alive
// connection's deadlines three times per request (the park grace, the
// header timeout, the write timeout): each move is a timer update, a few
// percent of the proxy's CPU per request. Here the socket's deadline is
// moved only when the deadline asked for is earlier than the armed one
// (or none is armed), so it may fire early but never late. When it fires
// early, the read or write that saw it re-arms the socket at the deadline
// asked for and goes on (sockIO.read, sockIO.write): a busy keep-alive
// connection pays a timer update about once per grace period instead of
// three per request, and every timeout still fires on time.
//
// A mutex, not atomics: SetReadDeadline(time.Now()) from another
// goroutine (interrupting a blocked read) must not be undone by a re-arm
// racing with it.
type lazyDeadlines struct {
	mu sync.Mutex
	rd lazyDeadline
	wd lazyDeadline
}

// lazyDeadline is one direction's deadline, Unix nanoseconds; 0: none.
type lazyDeadline struct{ want, armed int64 }

func unixNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(t.UnixNano(), 1)
}

func fromUnixNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// set records t as d's deadline and reports whether the socket's must
// move to t (nothing armed, or armed later than t).
func (d *lazyDeadline) set(t time.Time) (move bool) {
	d.want = unixNanos(t)
	if d.want != 0 && (d.armed == 0 || d.armed > d.want) {
		d.armed = d.want
		return true
	}
	return false
}

// SetReadDeadline sets the read deadline (see lazyDeadlines).
func (l *lazyDeadlines) SetReadDeadline(tc *net.TCPConn, t time.Time) error {
	return l.set(tc, true, t)
}

// SetWriteDeadline sets the write deadline (see lazyDeadlines).
func (l *lazyDeadlines) SetWriteDeadline(tc *net.TCPConn, t time.Time) error {
	return l.set(tc, false, t)
}

func (l *lazyDeadlines) set(tc *net.TCPConn, read bool, t time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case read && l.rd.set(t):
		return tc.SetReadDeadline(t)
	case !read && l.wd.set(t):
		return tc.SetWriteDeadline(t)
	}
	return nil
}

// SetDeadline sets both.
func (l *lazyDeadlines) SetDeadline(tc *net.TCPConn, t time.Time) error {
	if err := l.SetReadDeadline(tc, t); err != nil {
		return err
	}
	return l.SetWriteDeadline(tc, t)
}

// early is called when the socket's read (write: false) deadline fired.
// It reports whether that was early: then the socket has been re-armed at
// the deadline asked for (or cleared, if none is) and the call is to be
// retried; false means the deadline asked for has passed.
func (l *lazyDeadlines) early(tc *net.TCPConn, read bool) (bool, error) {
	if l == nil {
		return false, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	d, set := &l.rd, tc.SetReadDeadline
	if !read {
		d, set = &l.wd, tc.SetWriteDeadline
	}
	if d.want != 0 && time.Now().UnixNano() >= d.want {
		return false, nil
	}
	d.armed = d.want
	if err := set(fromUnixNanos(d.want)); err != nil {
		return false, err
	}
	return true, nil
}

// timedOut reports whether err (from a RawConn call: wrapped in a
// *net.OpError "raw-read" or "raw-write") is the socket's deadline firing.
func timedOut(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
