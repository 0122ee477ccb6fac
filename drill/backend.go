package drill

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// idHeader carries each drill request's number to the simulated backends,
// so a failure can be traced to what a backend did with it.
const idHeader = "X-Drill-Id"

// Flags a ledger keeps per request.
const (
	seenReached uint8 = 1 << iota // a backend read the whole request
	seenFailed                    // a backend failed it: killed in flight, or reset by a flapper
)

// ledger records what the simulated backends did with each request, by
// drill id. Safe for concurrent use.
type ledger struct {
	mu   sync.Mutex
	seen map[uint64]uint8
}

func newLedger() *ledger { return &ledger{seen: map[uint64]uint8{}} }

func (l *ledger) mark(id uint64, f uint8) {
	if id == 0 {
		return
	}
	l.mu.Lock()
	l.seen[id] |= f
	l.mu.Unlock()
}

func (l *ledger) get(id uint64) uint8 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[id]
}

// backend is a simulated backend on loopback: HTTP (fasthttp) or a
// line-echo TCP service. It answers after a short latency, and can be
// killed (listener and every connection closed, in-flight requests
// aborted) or put down (every request read is answered by a reset).
// Its methods are safe for concurrent use.
type backend struct {
	addr    string
	led     *ledger
	latency time.Duration
	// health is the status and body checks get (what the pool's health
	// settings expect).
	healthStatus int
	healthBody   string

	ln   net.Listener
	srv  *fasthttp.Server // HTTP backends
	down atomic.Bool      // requests are reset
	dead atomic.Bool      // killed: stays down

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	abort chan struct{} // closed (and replaced) by reset: in-flight requests fail
	// resets are the instants connections were reset, for the
	// classification of requests the backend never saw.
	resets []time.Time
}

// startBackend serves a backend on ln: HTTP unless tcp.
func startBackend(ln net.Listener, tcp bool, led *ledger, latency time.Duration, healthStatus int, healthBody string) *backend {
	b := &backend{addr: ln.Addr().String(), led: led, latency: latency, healthStatus: healthStatus, healthBody: healthBody,
		conns: map[net.Conn]struct{}{}, abort: make(chan struct{})}
	b.ln = &trackedListener{Listener: ln, b: b}
	if tcp {
		go b.acceptTCP()
		return b
	}
	b.srv = &fasthttp.Server{Handler: b.serveHTTP, ReadTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second,
		Logger: quiet{}} // writes to connections a kill closed fail, as they should
	go func() { _ = b.srv.Serve(b.ln) }()
	return b
}

func (b *backend) abortCh() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.abort
}

func (b *backend) serveHTTP(ctx *fasthttp.RequestCtx) {
	id, _ := strconv.ParseUint(string(ctx.Request.Header.Peek(idHeader)), 10, 64)
	if b.down.Load() {
		b.led.mark(id, seenReached|seenFailed)
		ctx.SetConnectionClose()
		_ = ctx.Conn().Close()
		return
	}
	if id == 0 { // a health check, or anything else that is not drill load
		ctx.SetStatusCode(b.healthStatus)
		ctx.SetBodyString(b.healthBody)
		return
	}
	b.led.mark(id, seenReached)
	abort := b.abortCh()
	t := time.NewTimer(b.latency)
	select {
	case <-t.C:
	case <-abort:
		t.Stop()
		b.led.mark(id, seenFailed)
		ctx.SetConnectionClose()
		_ = ctx.Conn().Close()
		return
	}
	ctx.SetBodyString("ok\n")
}

func (b *backend) acceptTCP() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		go b.serveTCP(c)
	}
}

// serveTCP answers each line "drill ID" with "ok ID"; a health check's
// bare connect-and-close ends the loop at once.
func (b *backend) serveTCP(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for range 100_000 {
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		id, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(line, "drill ")), 10, 64)
		if b.down.Load() {
			b.led.mark(id, seenReached|seenFailed)
			return
		}
		b.led.mark(id, seenReached)
		abort := b.abortCh()
		t := time.NewTimer(b.latency)
		select {
		case <-t.C:
		case <-abort:
			t.Stop()
			b.led.mark(id, seenFailed)
			return
		}
		if _, err := fmt.Fprintf(c, "ok %d\n", id); err != nil {
			return
		}
	}
}

// reset closes every open connection and fails the requests in flight.
func (b *backend) reset() {
	b.mu.Lock()
	close(b.abort)
	b.abort = make(chan struct{})
	conns := make([]net.Conn, 0, len(b.conns))
	for c := range b.conns {
		conns = append(conns, c)
	}
	b.resets = append(b.resets, time.Now())
	b.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// kill stops the backend for good, as a crashed process: nothing listens
// on its address any more and every connection is reset.
func (b *backend) kill() {
	b.dead.Store(true)
	b.down.Store(true)
	_ = b.ln.Close()
	b.reset()
}

// setDown starts (true) or ends (false) a phase in which every connection
// is reset; starting one also resets the open connections. A killed
// backend stays down.
func (b *backend) setDown(down bool) {
	if b.dead.Load() {
		return
	}
	b.down.Store(down)
	if down {
		b.reset()
	}
}

// resetTimes returns the instants the backend reset its connections.
func (b *backend) resetTimes() []time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]time.Time(nil), b.resets...)
}

// close stops the backend at the end of a drill.
func (b *backend) close() {
	_ = b.ln.Close()
	b.mu.Lock()
	close(b.abort)
	b.abort = make(chan struct{})
	conns := make([]net.Conn, 0, len(b.conns))
	for c := range b.conns {
		conns = append(conns, c)
	}
	b.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// quiet is a fasthttp.Logger that drops everything.
type quiet struct{}

func (quiet) Printf(string, ...any) {}

// trackedListener records the backend's open connections so a kill or a
// flap can reset them.
type trackedListener struct {
	net.Listener
	b *backend
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, b: l.b}
	l.b.mu.Lock()
	l.b.conns[tc] = struct{}{}
	l.b.mu.Unlock()
	if l.b.dead.Load() {
		_ = tc.Close()
	}
	return tc, nil
}

type trackedConn struct {
	net.Conn
	b    *backend
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.b.mu.Lock()
		delete(c.b.conns, c)
		c.b.mu.Unlock()
	})
	return c.Conn.Close()
}
