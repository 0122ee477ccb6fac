package proxy

import (
	"net"
	"runtime"
	"sync"
	"time"
)

// h2coalesce gathers what the h2 server writes on a connection and sends
// it from one flusher goroutine, after the goroutines that are runnable at
// that moment have run. x/net/http2 flushes whenever its write queue runs
// empty, so a response's HEADERS and DATA frames, and the frames of the
// streams answered at about the same time, were a sendto each: 3 per
// request where HAProxy's event loop makes 1.4.
//
// Write does not block while less than h2CoalesceMax is pending (x/net's
// flow control bounds what it writes ahead anyway); past it, it waits for
// the flusher. A send that fails fails every later Write and closes the
// connection, which ends the server's reads too. Close sends what is
// pending (within h2CloseFlush) before closing.
type h2coalesce struct {
	c    net.Conn
	mu   sync.Mutex
	room *sync.Cond // signalled when a send finished
	buf  []byte     // pending
	out  []byte     // being sent (the flusher's; swapped with buf)
	err  error
	done bool // Close called
	kick chan struct{}
	exit chan struct{} // closed when the flusher ends
}

const (
	h2CoalesceMax = 256 << 10
	h2CloseFlush  = time.Second
)

func newH2Coalesce(c net.Conn) *h2coalesce {
	w := &h2coalesce{c: c, kick: make(chan struct{}, 1), exit: make(chan struct{})}
	w.room = sync.NewCond(&w.mu)
	go w.run()
	return w
}

func (w *h2coalesce) Write(p []byte) (int, error) {
	w.mu.Lock()
	for w.err == nil && !w.done && len(w.buf) >= h2CoalesceMax {
		w.room.Wait()
	}
	if w.err != nil || w.done {
		err := w.err
		w.mu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return 0, err
	}
	w.buf = append(w.buf, p...)
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default: // a flush is due already
	}
	return len(p), nil
}

func (w *h2coalesce) run() {
	defer close(w.exit)
	for range w.kick {
		// The frames other goroutines are about to write (the DATA after
		// these HEADERS, other streams' answers) join this send.
		runtime.Gosched()
		w.mu.Lock()
		w.out, w.buf = w.buf, w.out[:0]
		out, done := w.out, w.done
		w.mu.Unlock()
		var err error
		if len(out) > 0 {
			_, err = w.c.Write(out)
		}
		w.mu.Lock()
		if err != nil && w.err == nil {
			w.err = err
		}
		w.room.Broadcast()
		empty := len(w.buf) == 0
		w.mu.Unlock()
		if err != nil {
			_ = w.c.Close()
			return
		}
		if done && empty {
			return
		}
	}
}

// Close sends what is pending, then closes the connection. Safe to call
// more than once.
func (w *h2coalesce) Close() error {
	w.mu.Lock()
	first := !w.done
	w.done = true
	w.room.Broadcast()
	w.mu.Unlock()
	if first {
		_ = w.c.SetWriteDeadline(time.Now().Add(h2CloseFlush))
		select {
		case w.kick <- struct{}{}:
		default:
		}
		select {
		case <-w.exit:
		case <-time.After(2 * h2CloseFlush):
		}
	}
	return w.c.Close()
}
