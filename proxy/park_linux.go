//go:build linux

package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// poller holds a listener's parked connections: idle keep-alive
// connections that have no goroutine and no buffer while they wait, only
// their socket in an epoll set (EPOLLONESHOT: one wake per park). When one
// becomes readable, or its peer hangs up, it is handed back to resume (a
// new goroutine running fasthttp's ServeConn). A connection whose idle
// deadline passes while parked is closed by a sweep.
//
// The descriptor is only ever used inside RawConn.Control, so Go's netFD
// keeps owning it: a parked connection is closed through its net.Conn, and
// closing removes it from the epoll set.
//
// Safe for concurrent use.
type poller struct {
	epfd int
	// ep is epfd as a pollable file: the loop waits for the epoll set to
	// become readable in the Go netpoller and then takes its events with
	// a non-blocking epoll_wait. Blocking in epoll_wait itself would hold
	// a P in a syscall until sysmon retook it (up to 10-20 ms under load,
	// with GOMAXPROCS=1 a stall of every connection).
	ep     *os.File
	epRaw  syscall.RawConn
	evfd   int // written by close to wake the loop
	grace  time.Duration
	tick   time.Duration // sweep period for idle deadlines
	resume func(net.Conn)
	gauge  prometheus.Gauge
	log    *slog.Logger

	trim func()

	mu     sync.Mutex
	conns  []*countedConn // by descriptor; nil: none parked
	n      int
	seq    uint32
	closed bool
	done   chan struct{}
	// lastPark and trimmedAt (poller goroutine) decide when to trim.
	lastPark int64
	trimAtN  int
	lastTrim time.Time
}

// A burst of connections that went idle leaves their buffers and stacks
// in free heap the Go runtime keeps until a GC (no allocation happens
// while they idle, so none comes). Once trimGrowth more connections are
// parked than at the last trim and parking has been quiet for trimQuiet,
// the poller calls trim (two GCs, for sync.Pool's victim cache, then
// returning free pages), at most every trimEvery.
const (
	trimGrowth = 1024
	trimQuiet  = 500 * time.Millisecond
	trimEvery  = 5 * time.Second
)

// pollerOptions configure a poller.
type pollerOptions struct {
	// Grace is how long a keep-alive connection waits for its next
	// request on a goroutine before it is parked.
	Grace time.Duration
	// Idle is the listener's idle timeout; it sets how often parked
	// connections are checked against their deadlines.
	Idle time.Duration
	// Resume serves a parked connection that became readable; it must not
	// block the poller (start a goroutine).
	Resume func(net.Conn)
	Gauge  prometheus.Gauge // parked connections; nil: none
	Log    *slog.Logger
	// Trim returns free memory to the OS after a burst of parks (see
	// trimGrowth); nil: runtime.GC twice, then debug.FreeOSMemory.
	Trim func()
}

// parkSupported: this build can park connections.
const parkSupported = true

func newPoller(o pollerOptions) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("park: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("park: epoll set non-blocking: %w", err)
	}
	ep := os.NewFile(uintptr(epfd), "park-epoll") // owns epfd from here
	epRaw, err := ep.SyscallConn()
	if err == nil {
		// A deadline can be set only on a descriptor the netpoller took.
		err = ep.SetReadDeadline(time.Time{})
	}
	if err != nil {
		_ = ep.Close()
		return nil, fmt.Errorf("park: epoll descriptor not pollable: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = ep.Close()
		return nil, fmt.Errorf("park: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		_ = ep.Close()
		_ = unix.Close(evfd)
		return nil, fmt.Errorf("park: epoll_ctl eventfd: %w", err)
	}
	tick := min(max(o.Idle/8, 10*time.Millisecond), time.Second)
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Trim == nil {
		o.Trim = func() { runtime.GC(); debug.FreeOSMemory() }
	}
	p := &poller{epfd: epfd, ep: ep, epRaw: epRaw, evfd: evfd, grace: o.Grace, tick: tick, resume: o.Resume,
		gauge: o.Gauge, log: o.Log, trim: o.Trim, done: make(chan struct{})}
	go p.run()
	return p, nil
}

// park puts c in the epoll set. It reports false once the poller is
// closed (or the socket could not be registered): the caller closes c.
func (p *poller) park(c *countedConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.seq++
	seq := p.seq
	fd := -1
	var cerr error
	err := c.io.rc.Control(func(sfd uintptr) {
		fd = int(sfd)
		// Pad carries the park's sequence number: an event that was
		// already queued for an earlier park of this descriptor (or of a
		// connection closed since, whose number was reused) is ignored.
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(fd), Pad: int32(seq)}
		if c.pk.armed {
			cerr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
			if !errors.Is(cerr, unix.ENOENT) {
				return
			}
		}
		cerr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		p.log.Debug("cannot park connection", "err", err)
		return false
	}
	c.pk.armed = true
	c.pk.seq = seq
	for fd >= len(p.conns) {
		p.conns = append(p.conns, nil)
	}
	p.conns = p.conns[:cap(p.conns)]
	p.conns[fd] = c
	c.pk.fd = int32(fd)
	p.n++
	p.lastPark = time.Now().UnixNano()
	if p.gauge != nil {
		p.gauge.Inc()
	}
	return true
}

// forget removes c if it is parked (it is being closed by someone else).
func (p *poller) forget(c *countedConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.takeLocked(c)
}

// takeLocked removes c from the table; it reports whether c was there.
func (p *poller) takeLocked(c *countedConn) bool {
	fd := int(c.pk.fd)
	if fd < 0 || fd >= len(p.conns) || p.conns[fd] != c {
		return false
	}
	p.conns[fd] = nil
	p.n--
	if p.gauge != nil {
		p.gauge.Dec()
	}
	return true
}

// Parked is the number of connections parked now.
func (p *poller) Parked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

func (p *poller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	next := time.Now().Add(p.tick)
	for {
		n, err := p.wait(events, next)
		if err != nil {
			p.log.Error("park: epoll_wait failed; parked connections are closed", "err", err)
			p.close()
			return
		}
		for i := range max(n, 0) {
			ev := &events[i]
			if int(ev.Fd) == p.evfd {
				return
			}
			p.ready(ev)
		}
		if now := time.Now(); !now.Before(next) {
			p.sweep(now.UnixNano())
			p.maybeTrim(now)
			next = now.Add(p.tick)
		}
	}
}

// wait returns the epoll set's ready events, or 0 once next has passed.
// It blocks in the netpoller, never in epoll_wait (see poller.ep).
func (p *poller) wait(events []unix.EpollEvent, next time.Time) (int, error) {
	if err := p.ep.SetReadDeadline(next); err != nil {
		return 0, fmt.Errorf("park: set deadline: %w", err)
	}
	var n int
	var werr error
	err := p.epRaw.Read(func(fd uintptr) bool {
		for {
			n, werr = unix.EpollWait(int(fd), events, 0)
			if !errors.Is(werr, unix.EINTR) {
				return n != 0 || werr != nil
			}
		}
	})
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("park: wait: %w", err)
	case werr != nil:
		return 0, fmt.Errorf("park: epoll_wait: %w", werr)
	}
	return n, nil
}

// ready hands a parked connection that woke back to be served.
func (p *poller) ready(ev *unix.EpollEvent) {
	fd := int(ev.Fd)
	p.mu.Lock()
	var c *countedConn
	if fd >= 0 && fd < len(p.conns) {
		c = p.conns[fd]
	}
	if c == nil || c.pk.seq != uint32(ev.Pad) || !p.takeLocked(c) {
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	c.pk.state.Store(connServing)
	if ev.Events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		_ = c.Close() // reset or both ways shut: nobody to answer
		return
	}
	p.resume(c.pk.outer)
}

// maybeTrim trims memory once a burst of parks has settled.
func (p *poller) maybeTrim(now time.Time) {
	p.mu.Lock()
	n, last := p.n, p.lastPark
	p.mu.Unlock()
	if n < p.trimAtN {
		p.trimAtN = n // connections left: count growth from here
	}
	if n-p.trimAtN < trimGrowth || now.UnixNano()-last < int64(trimQuiet) || now.Sub(p.lastTrim) < trimEvery {
		return
	}
	p.trimAtN, p.lastTrim = n, now
	go p.trim() // off the loop: wakes are not held up
}

// sweep closes the parked connections whose idle deadline has passed.
func (p *poller) sweep(now int64) {
	var expired []*countedConn
	p.mu.Lock()
	for _, c := range p.conns {
		if c != nil && c.pk.idleDL != 0 && c.pk.idleDL <= now && p.takeLocked(c) {
			expired = append(expired, c)
		}
	}
	p.mu.Unlock()
	for _, c := range expired {
		c.pk.state.Store(connServing)
		_ = c.Close()
	}
}

// close closes every parked connection; connections that try to park
// later are closed instead.
func (p *poller) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	var all []*countedConn
	for _, c := range p.conns {
		if c != nil && p.takeLocked(c) {
			all = append(all, c)
		}
	}
	p.conns = nil
	p.mu.Unlock()
	for _, c := range all {
		c.pk.state.Store(connServing)
		_ = c.Close()
	}
}

// Close closes the parked connections and stops the poller.
func (p *poller) Close() {
	p.close()
	var one = [8]byte{1}
	_, _ = unix.Write(p.evfd, one[:])
	<-p.done
	_ = p.ep.Close()
	_ = unix.Close(p.evfd)
}
