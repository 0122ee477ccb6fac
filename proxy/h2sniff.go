package proxy

import (
	"bytes"
	"net"
	"syscall"
	"time"
	"unsafe"
)

// h2Preface is what an HTTP/2 client with prior knowledge sends first
// (RFC 9113 §3.4). No HTTP/1.x request starts with it.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// sniffPreface tells an h2c prior-knowledge connection from an HTTP/1.x
// one by its first bytes, and gives back a connection that still starts
// with them. A plain socket is peeked (MSG_PEEK): the HTTP/1.1 connection
// fasthttp gets is the very one accepted, unwrapped, so parking and the
// direct socket calls stay as they were. A PROXY-protocol connection has
// the bytes pushed back in front of what it already buffered. Anything
// else, and the rare first packet that is a strict prefix of the preface,
// is read and replayed by a small wrapper.
func sniffPreface(c net.Conn, timeout time.Duration) (net.Conn, bool, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	if cc, ok := c.(*countedConn); ok && cc.direct {
		var buf [len(h2Preface)]byte
		n, err := cc.io.peekWait(buf[:])
		if err != nil {
			return c, false, err
		}
		switch {
		case n == 0: // EOF: fasthttp sees it and closes
			return c, false, nil
		case !bytes.HasPrefix([]byte(h2Preface), buf[:n]):
			return c, false, nil
		case n == len(buf):
			return c, true, nil
		}
		// A strict prefix of the preface: read it for real below.
	}
	var buf [len(h2Preface)]byte
	n := 0
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if !bytes.HasPrefix([]byte(h2Preface), buf[:n]) || err != nil {
			if err != nil && n == 0 {
				return c, false, err
			}
			break
		}
	}
	h2 := n == len(buf) && string(buf[:]) == h2Preface
	if pc, ok := c.(*ppConn); ok {
		pc.rest = append(append([]byte(nil), buf[:n]...), pc.rest...)
		return c, h2, nil
	}
	return &replayConn{Conn: c, rest: append([]byte(nil), buf[:n]...)}, h2, nil
}

// replayConn serves bytes already read from its connection before the
// connection's own.
type replayConn struct {
	net.Conn
	rest []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.rest) > 0 {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// Unwrap gives the connection underneath (linger on close).
func (c *replayConn) Unwrap() net.Conn { return c.Conn }

// peekWait waits until the socket is readable (within its read deadline)
// and peeks up to len(p) bytes without consuming them; 0 is EOF.
func (s *sockIO) peekWait(p []byte) (int, error) {
	var n uintptr
	var errno syscall.Errno
	err := s.rc.Read(func(fd uintptr) bool {
		for {
			n, _, errno = syscall.Syscall6(syscall.SYS_RECVFROM, fd,
				uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
			if errno != syscall.EINTR {
				return errno != syscall.EAGAIN
			}
		}
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
