package proxy_test

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-lb/holdfast/internal/testkit"
	"github.com/holdfast-lb/holdfast/metrics"
	"github.com/holdfast-lb/holdfast/proxy"
)

// failingListener fails Accept with err while failing is set, as a process
// out of descriptors does (at once, whether or not a client waits).
type failingListener struct {
	*net.TCPListener
	failing atomic.Bool
	err     error
	calls   atomic.Int64
}

func (f *failingListener) Accept() (net.Conn, error) {
	f.calls.Add(1)
	if f.failing.Load() {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", f.err)}
	}
	return f.TCPListener.Accept()
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), sub)
}

func newFailingListener(t *testing.T, err error) *failingListener {
	t.Helper()
	ln, lerr := net.Listen("tcp", "127.0.0.1:0")
	if lerr != nil {
		t.Fatal(lerr)
	}
	return &failingListener{TCPListener: ln.(*net.TCPListener), err: err}
}

// acceptLoop accepts until the listener closes, closing each connection,
// and reports the error Accept finally returned.
func acceptLoop(ln net.Listener, accepted *atomic.Int64) <-chan error {
	done := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				done <- err
				return
			}
			accepted.Add(1)
			_ = c.Close()
		}
	}()
	return done
}

// TestAcceptSurvivesResourceErrors: every resource error pauses the
// listener instead of ending its accept loop; the metric counts it under
// its reason; /readyz's check says so after the grace and clears, with no
// client arriving, once the error is gone; the log says it once per
// episode; and Close still stops the loop.
func TestAcceptSurvivesResourceErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		reason string
	}{
		{"emfile", syscall.EMFILE, "emfile"},
		{"enfile", syscall.ENFILE, "enfile"},
		{"enobufs", syscall.ENOBUFS, "enobufs"},
		{"enomem", syscall.ENOMEM, "enomem"},
		{"other", syscall.EPROTO, "other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := metrics.New(reg)
			logs := &syncBuffer{}
			fl := newFailingListener(t, tc.err)
			fl.failing.Store(true)
			ln := proxy.NewLimitListener(fl, proxy.LimitOptions{Name: "web", Metrics: m, Log: slog.New(slog.NewTextHandler(logs, nil))})
			var accepted atomic.Int64
			done := acceptLoop(ln, &accepted)

			const grace = 100 * time.Millisecond
			testkit.WaitFor(t, 5*time.Second, "not accepting past the grace", func() bool {
				return ln.NotAccepting(grace) != ""
			})
			if msg := ln.NotAccepting(grace); !strings.Contains(msg, tc.reason) {
				t.Errorf("NotAccepting = %q, want the reason %q", msg, tc.reason)
			}
			testkit.WaitFor(t, 5*time.Second, "several failures", func() bool { return fl.calls.Load() >= 4 })
			if st := ln.Status(); st.Accepting || st.AcceptErrors < 3 {
				t.Errorf("status while failing = %+v", st)
			}
			got := testkit.Metric(t, reg, "holdfast_listener_accept_errors_total", map[string]string{"listener": "web", "reason": tc.reason})
			if got < 3 {
				t.Errorf("accept errors{reason=%q} = %v, want >= 3", tc.reason, got)
			}
			// Bounded backoff: at most 1s apart, so not a busy loop either.
			if n := fl.calls.Load(); n > 100 {
				t.Errorf("%d accept calls in the episode: not backing off", n)
			}

			fl.failing.Store(false)
			testkit.WaitFor(t, 3*time.Second, "accepting again with no client", func() bool { return ln.NotAccepting(0) == "" })
			dial := func() {
				t.Helper()
				c, err := net.Dial("tcp", fl.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				_ = c.Close()
			}
			dial()
			testkit.WaitFor(t, 3*time.Second, "a connection accepted", func() bool { return accepted.Load() == 1 })
			if n := logs.count("accept failing"); n != 1 {
				t.Errorf("%d 'accept failing' lines for one episode, want 1:\n%s", n, logs.b.String())
			}
			testkit.WaitFor(t, 5*time.Second, "the end of the episode logged", func() bool { return logs.count("accepting again") == 1 })

			// Closed on purpose, even mid-pause: the loop ends.
			fl.failing.Store(true)
			dial() // the pending Accept returns it; the next one fails
			testkit.WaitFor(t, 3*time.Second, "failing again", func() bool { return !ln.Status().Accepting })
			_ = ln.Close()
			select {
			case err := <-done:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("Accept did not return after Close")
			}
		})
	}
}

// TestProcessCapRefuses: past the process cap a listener without its own
// max_connections accepts and closes at once (the client sees EOF, not a
// hang in the backlog) and counts it; a listener with max_connections is
// not refused, and its connections count against the cap.
func TestProcessCapRefuses(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	cap := proxy.NewConnCap(2)
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	mk := func(name string, max int) (*proxy.LimitListener, chan net.Conn) {
		raw, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln := proxy.NewLimitListener(raw, proxy.LimitOptions{Name: name, Max: max, Cap: cap, Metrics: m, Log: log})
		t.Cleanup(func() { _ = ln.Close() })
		conns := make(chan net.Conn, 8)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				conns <- c
			}
		}()
		return ln, conns
	}
	auto, autoConns := mk("auto", 0)
	own, ownConns := mk("own", 5)
	dial := func(ln net.Listener) net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	recv := func(ch chan net.Conn) net.Conn {
		select {
		case c := <-ch:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("no connection accepted")
			return nil
		}
	}
	dial(own)
	o1 := recv(ownConns)
	dial(auto)
	a1 := recv(autoConns)
	if cap.Open() != 2 {
		t.Fatalf("cap open = %d, want 2", cap.Open())
	}
	// At the cap: the next client of "auto" is closed at once.
	c := dial(auto)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("refused client read %d, %v; want EOF or reset at once", n, err)
	}
	if v := testkit.Metric(t, reg, "holdfast_listener_rejected_total", map[string]string{"listener": "auto", "reason": "max_connections"}); v != 1 {
		t.Errorf("rejected{max_connections} = %v, want 1", v)
	}
	// "own" has its own bound: still served past the process cap.
	dial(own)
	o2 := recv(ownConns)
	if st := auto.Status(); st.Refused != 1 || st.ProcessCap != 2 {
		t.Errorf("auto status = %+v", st)
	}
	// Slots free: "auto" serves again, and says so once.
	for _, c := range []net.Conn{o1, o2, a1} {
		_ = c.Close()
	}
	dial(auto)
	recv(autoConns)
	if n := logs.count("cap reached"); n != 1 {
		t.Errorf("%d 'cap reached' lines, want 1", n)
	}
	if n := logs.count("below the process connection cap again"); n != 1 {
		t.Errorf("%d 'below the cap' lines, want 1", n)
	}
}
