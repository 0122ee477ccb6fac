package proxy

import (
	"context"
	"crypto/tls"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
)

// HTTP/2 for clients: TLS connections that negotiate "h2" by ALPN and
// plain ones that open with the h2 preface (prior knowledge) are served by
// golang.org/x/net/http2; every other connection goes to fasthttp as
// before. Each h2 stream is then proxied by the same code as an HTTP/1.1
// request (h2stream.go).

// h2MaxStreams is the SETTINGS_MAX_CONCURRENT_STREAMS offered to clients.
// x/net/http2 runs at most that many handlers per connection and closes a
// connection whose client keeps more than 4× that waiting (reset streams
// whose handlers have not finished: the rapid-reset defence).
const h2MaxStreams = 250

// h2ConnKey carries the client connection's h2ConnState into each
// stream's context.
type h2ConnKey struct{}

// A connection whose client reset at least resetFloor streams before
// their answer, and more than half of all its streams, is closed: the
// rapid-reset attack (CVE-2023-44487) where the handlers are quick. When
// they are slow, x/net/http2's own bound applies (at most h2MaxStreams
// handlers, and ENHANCE_YOUR_CALM past 4× that waiting).
const resetFloor = 200

// h2ConnState is one client connection as its streams see it.
type h2ConnState struct {
	c               net.Conn
	streams, resets atomic.Int64
	cut             atomic.Bool
	side            *h2Side
}

// ended counts a stream that ended, reset by the client or not, and
// closes the connection of a client that resets too many.
func (st *h2ConnState) ended(reset bool) {
	n := st.streams.Add(1)
	if !reset {
		return
	}
	if r := st.resets.Add(1); r >= resetFloor && 2*r > n && st.cut.CompareAndSwap(false, true) {
		st.side.log.Warn("h2 client closed: too many streams reset before their answer", "client", st.c.RemoteAddr().String(), "resets", r, "streams", n)
		if st.side.rejected != nil {
			st.side.rejected.Inc()
		}
		_ = st.c.Close()
	}
}

// h2Side is a listener's HTTP/2 server and the connections it serves.
type h2Side struct {
	base     *http.Server  // holds the limits; its Shutdown sends GOAWAY
	srv      *http2.Server // serves the connections
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	idle     chan struct{} // closed and replaced when the last connection ends
	gone     bool          // Shutdown began: no new connection
	log      *slog.Logger
	rejected prometheus.Counter // clients cut off for resets
}

func newH2Side(o *HTTPOptions, h http.Handler, lg *slog.Logger) *h2Side {
	s := &h2Side{conns: map[net.Conn]struct{}{}, idle: make(chan struct{}), log: lg}
	if o.Metrics != nil {
		s.rejected = o.Metrics.ListenerRejected.WithLabelValues(o.Name, "h2_rapid_reset")
	}
	maxHdr := o.MaxHeaderBytes
	if maxHdr <= 0 {
		maxHdr = 8 << 10
	}
	s.base = &http.Server{
		Handler:        h,
		MaxHeaderBytes: maxHdr,
		IdleTimeout:    o.IdleTimeout,
		ErrorLog:       log.New(discardWriter{}, "", 0),
	}
	s.srv = &http2.Server{
		MaxConcurrentStreams: h2MaxStreams,
		// Flow control: 1 MiB per stream and 4 MiB per connection of
		// upload held at once, whatever the client sends.
		MaxUploadBufferPerStream:     1 << 20,
		MaxUploadBufferPerConnection: 4 << 20,
		// Frames of at most 16 KiB, the protocol's default (x/net would
		// offer 1 MiB): what clients and conformance suites expect.
		MaxReadFrameSize: 16 << 10,
		IdleTimeout:      o.IdleTimeout,
		// A write to the client that makes no progress this long ends the
		// connection (write_timeout as a bound on silence, as HTTP/1.1).
		WriteByteTimeout: o.WriteTimeout,
		// A connection silent for the read timeout is pinged; one that
		// does not answer within it is closed.
		ReadIdleTimeout: o.ReadTimeout,
		PingTimeout:     max(o.ReadTimeout, time.Second),
	}
	if err := http2.ConfigureServer(s.base, s.srv); err != nil {
		panic(err) // only fails when called twice on one server
	}
	return s
}

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// serve runs one h2 connection to its end.
func (s *h2Side) serve(c net.Conn, sawPreface bool) {
	s.mu.Lock()
	if s.gone {
		s.mu.Unlock()
		_ = c.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		if len(s.conns) == 0 {
			close(s.idle)
			s.idle = make(chan struct{})
		}
		s.mu.Unlock()
		_ = c.Close()
	}()
	s.srv.ServeConn(wrapH2Fix(c, sawPreface), &http2.ServeConnOpts{
		Context:          context.WithValue(context.Background(), h2ConnKey{}, &h2ConnState{c: c, side: s}),
		BaseConfig:       s.base,
		Handler:          s.base.Handler,
		SawClientPreface: sawPreface,
	})
}

// drain sends GOAWAY on every h2 connection: streams in flight finish,
// no new one starts, and each connection closes when its last stream
// ends.
func (s *h2Side) drain() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the GOAWAYs go out at once; nothing to wait for here
	_ = s.base.Shutdown(ctx)
}

// shutdown drains, waits for the h2 connections to end until ctx is done,
// then closes what is left.
func (s *h2Side) shutdown(ctx context.Context) {
	s.drain()
	for {
		s.mu.Lock()
		s.gone = true
		n, idle := len(s.conns), s.idle
		s.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-idle:
		case <-ctx.Done():
			s.mu.Lock()
			for c := range s.conns {
				_ = c.Close()
			}
			s.mu.Unlock()
			return
		}
	}
}

// h2Listener sorts accepted connections: h2 ones are served by the h2
// side, the rest by fasthttp (Server.ServeConn), each on the goroutine
// that sorted it: the TLS handshake and the sniffing of a plain
// connection run on the connection's own goroutine, never in the accept
// loop, and no connection changes goroutines on its way to fasthttp (one
// goroutine start per connection, not two, and no channel hand-off).
// fasthttp's Serve gets the listener for its shutdown bookkeeping only:
// Accept returns nothing until the listener stops.
type h2Listener struct {
	net.Listener
	h *HTTP
	// prepare readies an HTTP/1.x connection before fasthttp serves it
	// (parking); nil: nothing to do.
	prepare func(net.Conn)
	done    chan struct{} // closed once accepting ended
	err     error
}

// h2Listen starts sorting the connections ln accepts.
func (h *HTTP) h2Listen(ln net.Listener, prepare func(net.Conn)) *h2Listener {
	l := &h2Listener{Listener: ln, h: h, prepare: prepare, done: make(chan struct{})}
	go l.loop()
	return l
}

func (l *h2Listener) loop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			l.err = err
			close(l.done)
			return
		}
		go l.sort(c)
	}
}

// Accept waits until the listener stops; connections are served by sort.
func (l *h2Listener) Accept() (net.Conn, error) {
	<-l.done
	return nil, l.err
}

func (l *h2Listener) sort(c net.Conn) {
	c = l.classify(c)
	if c == nil {
		return
	}
	if l.prepare != nil {
		l.prepare(c)
	}
	// Also after fasthttp stopped accepting (a drain, a hand-over): the
	// request the connection carries gets its answer (with Connection:
	// close) rather than a close without one.
	_ = l.h.srv.ServeConn(c)
}

// classify serves an h2 connection (in a goroutine of its own) and
// returns nil, or returns the HTTP/1.x connection for fasthttp.
func (l *h2Listener) classify(c net.Conn) net.Conn {
	timeout := l.h.opts.HeaderTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if tc, ok := c.(*tls.Conn); ok {
		_ = tc.SetDeadline(time.Now().Add(timeout))
		err := tc.Handshake()
		_ = tc.SetDeadline(time.Time{})
		if err != nil {
			_ = c.Close()
			return nil
		}
		if tc.ConnectionState().NegotiatedProtocol == http2.NextProtoTLS {
			go l.h.h2.serve(c, false)
			return nil
		}
		if l.h.opts.HTTP2Only {
			// A client without ALPN, or one that ignored the offer.
			_ = c.Close()
			return nil
		}
		return c
	}
	sc, kind, err := sniffPreface(c, timeout)
	switch {
	case err != nil:
		_ = c.Close()
		return nil
	case kind == prefaceH2:
		go l.h.h2.serve(sc, false)
		return nil
	case kind == prefaceBad || l.h.opts.HTTP2Only:
		refusePreface(sc)
		return nil
	}
	return sc
}
