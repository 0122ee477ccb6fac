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

// prefaceKind is what a plain connection opened with.
type prefaceKind uint8

const (
	prefaceHTTP1 prefaceKind = iota // anything else: fasthttp answers it
	prefaceH2                       // the h2 client preface
	// prefaceBad: the preface's request line ("PRI * HTTP/2.0") followed
	// by something else. No HTTP/1.x request uses the PRI method (RFC
	// 9113 §3.4 reserves it); it is an h2 client gone wrong, and an
	// invalid preface ends the connection, with no HTTP/1.1 answer.
	prefaceBad
)

// prefaceLine is the preface's request line, up to where an HTTP/1.x
// request line would end.
const prefaceLine = "PRI * HTTP/2.0\r\n"

func kindOf(b []byte) prefaceKind {
	switch {
	case string(b) == h2Preface:
		return prefaceH2
	case len(b) >= len(prefaceLine) && string(b[:len(prefaceLine)]) == prefaceLine:
		return prefaceBad
	}
	return prefaceHTTP1
}

// sniffPreface tells an h2c prior-knowledge connection from an HTTP/1.x
// one by its first bytes, and gives back a connection that still starts
// with them. A plain socket is peeked (MSG_PEEK): the HTTP/1.1 connection
// fasthttp gets is the very one accepted, unwrapped, so parking and the
// direct socket calls stay as they were. A PROXY-protocol connection has
// the bytes pushed back in front of what it already buffered. Anything
// else, and the rare first packet that is a strict prefix of the preface,
// is read and replayed by a small wrapper.
func sniffPreface(c net.Conn, timeout time.Duration) (net.Conn, prefaceKind, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	if cc, ok := c.(*countedConn); ok && cc.direct {
		var buf [len(h2Preface)]byte
		n, err := cc.io.peekWait(buf[:])
		if err != nil {
			return c, prefaceHTTP1, err
		}
		switch {
		case n == 0: // EOF: fasthttp sees it and closes
			return c, prefaceHTTP1, nil
		case !bytes.HasPrefix([]byte(h2Preface), buf[:n]) || n == len(buf):
			return c, kindOf(buf[:n]), nil
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
				return c, prefaceHTTP1, err
			}
			break
		}
	}
	kind := kindOf(buf[:n])
	if pc, ok := c.(*ppConn); ok {
		pc.rest = append(append([]byte(nil), buf[:n]...), pc.rest...)
		return c, kind, nil
	}
	return &replayConn{Conn: c, rest: append([]byte(nil), buf[:n]...)}, kind, nil
}

// goawayProtocolError is a GOAWAY frame: last stream 0, PROTOCOL_ERROR.
var goawayProtocolError = [...]byte{0, 0, 8, 0x7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x1}

// refusePreface ends a connection whose preface is invalid: a connection
// error of type PROTOCOL_ERROR (RFC 9113 §3.5), so one GOAWAY saying so,
// and no answer in either protocol. The close lingers (the client's
// unread bytes would otherwise turn it into a reset that can destroy the
// GOAWAY in flight).
func refusePreface(c net.Conn) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write(goawayProtocolError[:])
	lingerOnClose(c)
	_ = c.Close()
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
	peek := func(fd uintptr) bool {
		for {
			n, _, errno = syscall.RawSyscall6(syscall.SYS_RECVFROM, fd,
				uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
			if errno != syscall.EINTR {
				return errno != syscall.EAGAIN
			}
		}
	}
	err := s.rc.Read(peek)
	for s.again(true, &err) {
		err = s.rc.Read(peek)
	}
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
