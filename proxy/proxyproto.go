package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// ppReadSize bounds a PROXY header (v1 is at most 107 bytes; v2 is 16 bytes
// plus addresses and TLVs): a longer one is refused.
const ppReadSize = 1024

var ppReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, ppReadSize) }}

// errNoProxyHeader is returned for a connection that did not start with a
// PROXY header (or a LOCAL one) in time.
var errNoProxyHeader = errors.New("proxy protocol: missing or malformed header")

// ProxyProtoListener accepts PROXY v1/v2 headers from a fronting balancer
// (parsed by github.com/pires/go-proxyproto). Accept never blocks on a
// client: the header is read by the connection's first Read, RemoteAddr or
// LocalAddr, on the goroutine serving it, within the header timeout. A
// connection without a valid header fails alone. Safe for concurrent use.
type ProxyProtoListener struct {
	net.Listener
	timeout time.Duration
	log     *slog.Logger
}

// NewProxyProtoListener wraps ln. A header must arrive within timeout
// (capped at 10s); the address it carries becomes the connection's
// RemoteAddr, used for X-Forwarded-For, hashing and logs.
func NewProxyProtoListener(ln net.Listener, timeout time.Duration, log *slog.Logger) net.Listener {
	if timeout <= 0 || timeout > 10*time.Second {
		timeout = 10 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	return &ProxyProtoListener{Listener: ln, timeout: timeout, log: log}
}

// Accept returns the next connection, its header not yet read.
func (l *ProxyProtoListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &ppConn{Conn: c, timeout: l.timeout, log: l.log}, nil
}

// ppConn is an accepted connection that starts with a PROXY header.
type ppConn struct {
	net.Conn
	timeout time.Duration
	log     *slog.Logger

	once   sync.Once
	err    error
	hdr    *proxyproto.Header
	rest   []byte                    // bytes read past the header, served first
	readDL atomic.Pointer[time.Time] // the caller's read deadline, restored after the header
}

func (c *ppConn) parse() error {
	c.once.Do(func() {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
		br := ppReaders.Get().(*bufio.Reader)
		br.Reset(c.Conn)
		h, err := proxyproto.Read(br)
		if err == nil && h.Version != 1 && h.Version != 2 {
			err = proxyproto.ErrUnknownProxyProtocolVersion
		}
		if err == nil {
			c.hdr = h
			if n := br.Buffered(); n > 0 {
				b, _ := br.Peek(n)
				c.rest = append([]byte(nil), b...)
			}
		} else {
			c.err = fmt.Errorf("%w: %w", errNoProxyHeader, err)
			c.log.Debug("bad PROXY header", "client", c.Conn.RemoteAddr().String(), "err", err)
		}
		br.Reset(nil)
		ppReaders.Put(br)
		var dl time.Time
		if p := c.readDL.Load(); p != nil {
			dl = *p
		}
		_ = c.Conn.SetReadDeadline(dl)
	})
	return c.err
}

// Read serves the bytes after the header.
func (c *ppConn) Read(b []byte) (int, error) {
	if err := c.parse(); err != nil {
		return 0, err
	}
	if len(c.rest) > 0 {
		n := copy(b, c.rest)
		c.rest = c.rest[n:]
		if len(c.rest) == 0 {
			c.rest = nil
		}
		return n, nil
	}
	return c.Conn.Read(b)
}

// takeRest returns (once) the bytes read past the header, so a copier can
// send them before it reads the socket directly.
func (c *ppConn) takeRest() []byte {
	if c.parse() != nil {
		return nil
	}
	r := c.rest
	c.rest = nil
	return r
}

// RemoteAddr is the client the header announces; the peer's own address
// for a LOCAL header or an unparsable one.
func (c *ppConn) RemoteAddr() net.Addr {
	if c.parse() == nil && c.hdr.Command.IsProxy() && c.hdr.SourceAddr != nil {
		return c.hdr.SourceAddr
	}
	return c.Conn.RemoteAddr()
}

// LocalAddr is the address the client connected to, per the header.
func (c *ppConn) LocalAddr() net.Addr {
	if c.parse() == nil && c.hdr.Command.IsProxy() && c.hdr.DestinationAddr != nil {
		return c.hdr.DestinationAddr
	}
	return c.Conn.LocalAddr()
}

func (c *ppConn) SetReadDeadline(t time.Time) error {
	c.readDL.Store(&t)
	return c.Conn.SetReadDeadline(t)
}

func (c *ppConn) SetDeadline(t time.Time) error {
	c.readDL.Store(&t)
	return c.Conn.SetDeadline(t)
}

// Unwrap gives the accepted connection. Reading it directly is only right
// once takeRest has been called.
func (c *ppConn) Unwrap() net.Conn { return c.Conn }

// proxyHeaderErr reads the PROXY header of c if it carries one, and
// reports whether it was valid.
func proxyHeaderErr(c net.Conn) error {
	if pc, ok := c.(*ppConn); ok {
		return pc.parse()
	}
	return nil
}

// proxyHeader formats a PROXY header announcing the client to a backend.
// An address that is not TCP (or a v4/v6 mismatch) is sent as LOCAL (v1:
// UNKNOWN): the backend then uses the connection's own addresses.
func proxyHeader(version string, src, dst net.Addr) ([]byte, error) {
	v := byte(1)
	if version == "v2" {
		v = 2
	}
	h := proxyproto.HeaderProxyFromAddrs(v, unmapTCP(src), unmapTCP(dst))
	if sa, ok := h.SourceAddr.(*net.TCPAddr); ok {
		if da, ok := h.DestinationAddr.(*net.TCPAddr); ok && (sa.IP.To4() == nil) != (da.IP.To4() == nil) {
			h = proxyproto.HeaderProxyFromAddrs(v, nil, nil)
		}
	}
	b, err := h.Format()
	if err != nil {
		return nil, fmt.Errorf("format PROXY %s header: %w", version, err)
	}
	return b, nil
}

// unmapTCP turns ::ffff:a.b.c.d into a.b.c.d, so an IPv4 client reaching a
// dual-stack listener is announced as TCP4.
func unmapTCP(a net.Addr) net.Addr {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a
	}
	if v4 := ta.IP.To4(); v4 != nil && len(ta.IP) == net.IPv6len {
		return &net.TCPAddr{IP: v4, Port: ta.Port}
	}
	return ta
}
