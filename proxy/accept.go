package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-lb/holdfast/metrics"
)

// A failed accept pauses the listener for acceptBackoffMin, doubling on
// each failure in a row up to acceptBackoffMax; a connection of the
// listener closing (a descriptor freed) ends the pause early. nginx pauses
// 500ms on EMFILE; Go's net/http 5ms doubling to 1s.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
	// acceptProbe: after a pause, an Accept that neither fails nor
	// returns for this long shows that the listener could take a
	// connection again (Linux fails accept with EMFILE at once, before it
	// looks for a pending connection), even when no client is waiting.
	acceptProbe = 20 * time.Millisecond
	// acceptQuiet: accepts must work this long, with no failure, before
	// the episode is logged as over. Draining a backlog after a flood
	// fails and works by turns for a moment; that is one episode, not
	// many. Readiness does not wait for it: it follows the first accept
	// that works.
	acceptQuiet = time.Second
)

// LimitOptions configure a LimitListener.
type LimitOptions struct {
	// Name is the listener's name, the metrics' listener label.
	Name string
	// Max is the listener's own max_connections: at Max open
	// connections it stops accepting. 0: Cap bounds it.
	Max int
	// Cap is the process-wide bound shared by every listener; a listener
	// without Max refuses (accepts and closes) connections past it.
	// Connections of listeners with Max count in it too. nil: no bound.
	Cap *ConnCap
	// Gauge counts the open connections; nil: none.
	Gauge prometheus.Gauge
	// Metrics receives accept errors and refusals; nil: none.
	Metrics *metrics.Metrics
	// Log gets one line when accepts start failing and one when they
	// work again; nil: slog.Default.
	Log *slog.Logger
	// Access, when set, refuses peers outside the listener's allow/deny
	// lists: each is closed as soon as it is accepted and never counts
	// as an open connection.
	Access *AccessControl
	// TrackConns keeps the set of open connections, for CloseIdle (a
	// listener on a floating IP that may leave the host).
	TrackConns bool
}

// ConnCap bounds the client connections open in the whole process, so that
// holdfast refuses new ones before it runs out of descriptors. Safe for
// concurrent use; SetMax may be called at any time (reload).
type ConnCap struct {
	max  atomic.Int64
	open atomic.Int64
}

// NewConnCap returns a cap of max connections; max <= 0 means no bound.
func NewConnCap(max int) *ConnCap {
	c := &ConnCap{}
	c.SetMax(max)
	return c
}

// SetMax changes the bound; open connections past it stay open.
func (c *ConnCap) SetMax(max int) { c.max.Store(int64(max)) }

// Max is the bound (<= 0: none).
func (c *ConnCap) Max() int { return int(c.max.Load()) }

// Open is the number of client connections open in the process.
func (c *ConnCap) Open() int64 { return c.open.Load() }

// acquire takes a slot, or reports false at the bound.
func (c *ConnCap) acquire() bool {
	n := c.open.Add(1)
	if max := c.max.Load(); max > 0 && n > max {
		c.open.Add(-1)
		return false
	}
	return true
}

// AcceptReason names an accept error as the reason label of
// holdfast_listener_accept_errors_total: emfile, enfile, enobufs, enomem,
// or other.
func AcceptReason(err error) string {
	switch {
	case errors.Is(err, syscall.EMFILE):
		return "emfile"
	case errors.Is(err, syscall.ENFILE):
		return "enfile"
	case errors.Is(err, syscall.ENOBUFS):
		return "enobufs"
	case errors.Is(err, syscall.ENOMEM):
		return "enomem"
	default:
		return "other"
	}
}

// ListenerStatus is a listener as /status shows it.
type ListenerStatus struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	Protocol string `json:"protocol"`
	// Connections open now; MaxConnections is the listener's own bound
	// (0: none), ProcessCap the process-wide one it shares (0: none).
	Connections int64 `json:"connections"`
	// IdleConnections are keep-alive connections parked waiting for a
	// request (holdfast_listener_idle_connections).
	IdleConnections int64 `json:"idle_connections"`
	MaxConnections  int   `json:"max_connections"`
	ProcessCap      int   `json:"process_cap"`
	// Accepting is false while accepts fail; PausedFor says since when
	// and AcceptError with what.
	Accepting    bool   `json:"accepting"`
	PausedFor    string `json:"paused_for,omitempty"`
	AcceptError  string `json:"accept_error,omitempty"`
	AcceptErrors int64  `json:"accept_errors"`
	// Refused counts connections closed at once at the process cap.
	Refused int64 `json:"refused"`
}

// Status reports the listener's connections and accept health.
func (l *LimitListener) Status() ListenerStatus {
	st := ListenerStatus{Name: l.o.Name, Address: l.Addr().String(), Connections: l.Open(), MaxConnections: l.o.Max,
		Accepting: true, AcceptErrors: l.acc.total.Load(), Refused: l.acc.refused.Load()}
	if l.o.Cap != nil {
		st.ProcessCap = max(l.o.Cap.Max(), 0)
	}
	if d, msg, failing := l.acc.failing(); failing {
		st.Accepting, st.PausedFor, st.AcceptError = false, d.Round(time.Millisecond).String(), msg
	}
	return st
}

// NotAccepting explains why the listener has been unable to accept for
// longer than grace, or returns "" when it accepts (or failed for less).
func (l *LimitListener) NotAccepting(grace time.Duration) string {
	d, msg, failing := l.acc.failing()
	if !failing || d <= grace {
		return ""
	}
	return fmt.Sprintf("listener %q cannot accept connections for %s: %s", l.o.Name, d.Round(time.Millisecond), msg)
}

// admit counts an accepted connection against the process cap, or
// refuses it (false: the caller closes it).
func (l *LimitListener) admit() bool {
	c := l.o.Cap
	if c == nil {
		return true
	}
	if l.sem != nil {
		// An explicit max_connections is the operator's own bound.
		c.open.Add(1)
		return true
	}
	if c.acquire() {
		l.acc.admitted(c)
		return true
	}
	l.acc.refuse(c)
	return false
}

// release undoes admit and the listener's slot when a connection closes.
func (l *LimitListener) release() {
	if l.o.Cap != nil {
		l.o.Cap.open.Add(-1)
	}
	if l.sem != nil {
		<-l.sem
	}
	// A descriptor is free: a paused accept may retry now.
	select {
	case l.acc.wake <- struct{}{}:
	default:
	}
}

// acceptState is a listener's accept health: the current episode of
// failed accepts, if any, and the refusals at the process cap.
type acceptState struct {
	log      *slog.Logger
	m        *metrics.Metrics
	name     string
	rejected prometheus.Counter
	wake     chan struct{}

	total        atomic.Int64 // failed accepts, ever
	failingSince atomic.Int64 // unix nanoseconds; 0 while accepting

	mu          sync.Mutex
	delay       time.Duration
	probing     bool      // a deadline is set on the listener
	episode     time.Time // first failure of the episode being logged; zero: none
	lastFailure time.Time
	failures    int64 // in the logged episode
	lastErr     string
	quiet       *time.Timer // ends the logged episode after acceptQuiet

	refusing    atomic.Bool
	refused     atomic.Int64
	refusedMark int64 // refused when the current refusing run began
}

func (s *acceptState) init(o *LimitOptions) {
	s.log, s.m, s.name = o.Log, o.Metrics, o.Name
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.m != nil {
		s.rejected = s.m.ListenerRejected.WithLabelValues(o.Name, "max_connections")
	}
	s.wake = make(chan struct{}, 1)
}

type deadliner interface{ SetDeadline(time.Time) error }

// failed records a failed accept and pauses; false when done closed
// meanwhile.
func (s *acceptState) failed(ln net.Listener, err error, done <-chan struct{}) bool {
	now := time.Now()
	s.mu.Lock()
	if s.probing && errors.Is(err, os.ErrDeadlineExceeded) {
		s.mu.Unlock()
		s.end(ln, now)
		return true
	}
	reason := AcceptReason(err)
	s.total.Add(1)
	if s.m != nil {
		s.m.ListenerAcceptErr.WithLabelValues(s.name, reason).Inc()
	}
	if s.failingSince.Load() == 0 {
		s.failingSince.Store(now.UnixNano())
		s.delay = acceptBackoffMin
	} else {
		s.delay = min(2*s.delay, acceptBackoffMax)
	}
	if s.episode.IsZero() {
		s.episode, s.failures = now, 0
		s.log.Warn("accept failing; listener paused, retrying with backoff", "reason", reason, "err", err)
	}
	if s.quiet != nil {
		s.quiet.Stop()
	}
	s.failures++
	s.lastFailure = now
	s.lastErr = reason + ": " + err.Error()
	d := s.delay
	s.mu.Unlock()

	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.wake:
	case <-done:
		return false
	}
	if dl, ok := ln.(deadliner); ok && dl.SetDeadline(time.Now().Add(acceptProbe)) == nil {
		s.mu.Lock()
		s.probing = true
		s.mu.Unlock()
	}
	return true
}

// succeeded ends a failing episode, if any, after an accept worked.
func (s *acceptState) succeeded(ln net.Listener) {
	if s.failingSince.Load() == 0 {
		return
	}
	s.end(ln, time.Now())
}

func (s *acceptState) end(ln net.Listener, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.probing {
		if dl, ok := ln.(deadliner); ok {
			_ = dl.SetDeadline(time.Time{})
		}
		s.probing = false
	}
	if s.failingSince.Swap(0) == 0 {
		return
	}
	if s.quiet == nil {
		s.quiet = time.AfterFunc(acceptQuiet, s.quietEnd)
	} else {
		s.quiet.Reset(acceptQuiet)
	}
}

// quietEnd logs the end of an episode once accepts have worked for
// acceptQuiet.
func (s *acceptState) quietEnd() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.episode.IsZero() || s.failingSince.Load() != 0 || time.Since(s.lastFailure) < acceptQuiet {
		return
	}
	s.log.Info("accepting again", "failures", s.failures,
		"failing_for", s.lastFailure.Sub(s.episode).Round(time.Millisecond).String(), "last_err", s.lastErr)
	s.episode = time.Time{}
}

// failing reports how long accepts have been failing, and the last error.
func (s *acceptState) failing() (time.Duration, string, bool) {
	since := s.failingSince.Load()
	if since == 0 {
		return 0, "", false
	}
	s.mu.Lock()
	msg := s.lastErr
	s.mu.Unlock()
	return time.Since(time.Unix(0, since)), msg, true
}

// refuse counts a connection closed at the process cap; the first of a run
// is logged.
func (s *acceptState) refuse(c *ConnCap) {
	n := s.refused.Add(1)
	if s.rejected != nil {
		s.rejected.Inc()
	}
	if s.refusing.CompareAndSwap(false, true) {
		s.mu.Lock()
		s.refusedMark = n - 1
		s.mu.Unlock()
		s.log.Warn("process connection cap reached; closing new connections at once", "cap", c.Max(), "open", c.Open())
	}
}

// admitted ends a refusing run once the process is well below its cap
// (not at the first free slot, so that a load hovering at the cap logs
// once, not on every connection).
func (s *acceptState) admitted(c *ConnCap) {
	if !s.refusing.Load() || c.Open() > int64(c.Max())*9/10 {
		return
	}
	if s.refusing.CompareAndSwap(true, false) {
		s.mu.Lock()
		n := s.refused.Load() - s.refusedMark
		s.mu.Unlock()
		s.log.Info("below the process connection cap again", "cap", c.Max(), "refused", n)
	}
}
