package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-lb/holdfast/metrics"
)

// ppReadSize bounds a PROXY header (v1 is at most 107 bytes; v2 is 16 bytes
// plus addresses and TLVs): a longer one is refused.
const ppReadSize = 1024

var ppReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, ppReadSize) }}

// errNoProxyHeader is returned for a connection that did not start with a
// PROXY header (or a LOCAL one) in time.
var errNoProxyHeader = errors.New("proxy protocol: missing or malformed header")

// errUntrustedProxy is returned for a connection whose peer is not in
// trusted_proxies but sent a PROXY header.
var errUntrustedProxy = errors.New("proxy protocol: header from a peer outside trusted_proxies")

// The signatures a PROXY header starts with (v1 text, v2 binary).
const (
	ppSigV1 = "PROXY "
	ppSigV2 = "\r\n\r\n\x00\r\nQUIT\n"
)

// ProxyProtoOptions configure a ProxyProtoListener.
type ProxyProtoOptions struct {
	// Name is the listener's name, the metrics' listener label.
	Name string
	// Timeout bounds the wait for the header (capped at 10s).
	Timeout time.Duration
	Log     *slog.Logger
	// Metrics, when set, counts connections closed for their header in
	// holdfast_listener_rejected_total, reason bad_proxy_header or
	// proxy_untrusted.
	Metrics *metrics.Metrics
	// Trusted are the peers whose header is believed (trusted_proxies).
	// Empty: every peer must send a header, and it is believed.
	Trusted TrustList
}

// ProxyProtoListener accepts PROXY v1/v2 headers from a fronting balancer
// (parsed by github.com/pires/go-proxyproto). Accept never blocks on a
// client: the header is read by the connection's first Read, RemoteAddr or
// LocalAddr, on the goroutine serving it, within the header timeout. A
// connection without a valid header fails alone.
//
// With a trust list, only the peers in it may claim another client's
// address:
//   - a trusted peer must send a header, and it is believed;
//   - an untrusted peer that sends a header (a v1 or v2 signature) is
//     closed and counted as proxy_untrusted: it tried to claim an address
//     it has no standing to claim;
//   - an untrusted peer that sends no header is served as the direct
//     client it is, under its own address. It claims nothing, so nothing
//     is lost by serving it, and clients that bypass the fronting balancer
//     (an internal caller, a health checker) keep working. The first
//     bytes decide, as few as it takes to rule the signatures out (one for
//     an HTTP method or a TLS ClientHello); as on any PROXY listener, the
//     client must speak first, within the header timeout.
//
// Without a trust list every peer must send a header, and it is believed
// (config check warns about that).
//
// Safe for concurrent use; SetTrusted may be called at any time.
type ProxyProtoListener struct {
	net.Listener
	timeout   time.Duration
	log       *slog.Logger
	bad       prometheus.Counter // nil: not counted
	untrusted prometheus.Counter
	trusted   atomic.Pointer[TrustList]
}

// NewProxyProtoListener wraps ln. The address a header carries becomes the
// connection's RemoteAddr, used for X-Forwarded-For, hashing and logs.
func NewProxyProtoListener(ln net.Listener, o ProxyProtoOptions) *ProxyProtoListener {
	if o.Timeout <= 0 || o.Timeout > 10*time.Second {
		o.Timeout = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	l := &ProxyProtoListener{Listener: ln, timeout: o.Timeout, log: o.Log}
	if o.Metrics != nil {
		l.bad = o.Metrics.ListenerRejected.WithLabelValues(o.Name, "bad_proxy_header")
		l.untrusted = o.Metrics.ListenerRejected.WithLabelValues(o.Name, "proxy_untrusted")
	}
	l.SetTrusted(o.Trusted)
	return l
}

// SetTrusted replaces the trust list for connections whose header is not
// read yet (a reload).
func (l *ProxyProtoListener) SetTrusted(t TrustList) { l.trusted.Store(&t) }

// Accept returns the next connection, its header not yet read.
func (l *ProxyProtoListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &ppConn{Conn: c, l: l}, nil
}

// ppConn is an accepted connection that may start with a PROXY header.
type ppConn struct {
	net.Conn
	l *ProxyProtoListener

	once   sync.Once
	err    error
	hdr    *proxyproto.Header        // nil: a direct client (no header)
	rest   []byte                    // bytes read past the header, served first
	readDL atomic.Pointer[time.Time] // the caller's read deadline, restored after the header
}

func (c *ppConn) parse() error {
	c.once.Do(func() {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.l.timeout))
		br := ppReaders.Get().(*bufio.Reader)
		br.Reset(c.Conn)
		c.err = c.readHeader(br)
		if c.err == nil {
			if n := br.Buffered(); n > 0 {
				b, _ := br.Peek(n)
				c.rest = append([]byte(nil), b...)
			}
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

// readHeader reads the PROXY header, or for an untrusted peer just enough
// to know it sent none (see ProxyProtoListener). What claimed nothing is
// closed without being counted: a connection closed before its first byte
// (a balancer's TCP health check, a port scan), or an untrusted peer that
// stays silent past the timeout. A trusted peer that stays silent is
// counted as bad_proxy_header: it owed a header.
func (c *ppConn) readHeader(br *bufio.Reader) error {
	peer := c.Conn.RemoteAddr()
	if _, err := br.Peek(1); errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: closed before its first byte", errNoProxyHeader)
	}
	if trust := c.l.trusted.Load(); trust.Len() > 0 && !trust.Contains(peerAddr(peer)) {
		sig, err := startsWithProxySignature(br)
		switch {
		case err != nil:
			return fmt.Errorf("proxy protocol: first bytes from an untrusted peer: %w", err)
		case sig:
			inc(c.l.untrusted)
			c.l.log.Debug("PROXY header from an untrusted peer", "client", peer.String())
			return errUntrustedProxy
		}
		return nil
	}
	h, err := proxyproto.Read(br)
	if err == nil && h.Version != 1 && h.Version != 2 {
		err = proxyproto.ErrUnknownProxyProtocolVersion
	}
	if err != nil {
		inc(c.l.bad)
		c.l.log.Debug("bad PROXY header", "client", peer.String(), "err", err)
		return fmt.Errorf("%w: %w", errNoProxyHeader, err)
	}
	c.hdr = h
	return nil
}

func inc(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
}

// startsWithProxySignature reads only as many bytes as it takes to tell
// whether the stream opens with a PROXY v1 or v2 signature.
func startsWithProxySignature(br *bufio.Reader) (bool, error) {
	for n := 1; ; n++ {
		b, err := br.Peek(n)
		if err != nil {
			return false, err
		}
		v1 := n <= len(ppSigV1) && string(b) == ppSigV1[:n]
		v2 := n <= len(ppSigV2) && string(b) == ppSigV2[:n]
		switch {
		case !v1 && !v2:
			return false, nil
		case v1 && n == len(ppSigV1), v2 && n == len(ppSigV2):
			return true, nil
		}
	}
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

// Write sends b unless the header was refused: a peer whose header was
// bad or untrusted gets the connection closed, not an answer (an HTTP
// server would otherwise write it a 400).
func (c *ppConn) Write(b []byte) (int, error) {
	if err := c.parse(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
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
// for a LOCAL header, an unparsable one, or none (an untrusted peer served
// directly).
func (c *ppConn) RemoteAddr() net.Addr {
	if c.parse() == nil && c.hdr != nil && c.hdr.Command.IsProxy() && c.hdr.SourceAddr != nil {
		return c.hdr.SourceAddr
	}
	return c.Conn.RemoteAddr()
}

// LocalAddr is the address the client connected to, per the header.
func (c *ppConn) LocalAddr() net.Addr {
	if c.parse() == nil && c.hdr != nil && c.hdr.Command.IsProxy() && c.hdr.DestinationAddr != nil {
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
