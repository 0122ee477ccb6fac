package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gatedWriter blocks every Write until open is closed: a stdout nobody
// reads.
type gatedWriter struct {
	open    chan struct{}
	entered chan struct{} // closed at the first Write
	once    sync.Once
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *gatedWriter) Write(b []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.open
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(b)
}

// A blocked writer fills the queue; further lines wait (counted as blocked
// time) instead of being dropped, and once the writer moves again every
// line comes out exactly once, in submission order per goroutine.
func TestLogQueueBackpressureLosesNothing(t *testing.T) {
	w := &gatedWriter{open: make(chan struct{}), entered: make(chan struct{})}
	blocked := prometheus.NewCounter(prometheus.CounterOpts{Name: "blocked_seconds_total"})
	q := NewLogQueue(w, 4, blocked)
	const writers, per = 4, 50
	line := func(g, i int) {
		l := q.Line()
		l.b = append(l.b, `{"g":`...)
		l.b = strconv.AppendInt(l.b, int64(g), 10)
		l.b = append(l.b, `,"i":`...)
		l.b = strconv.AppendInt(l.b, int64(i), 10)
		l.end()
		q.Submit(l)
	}
	line(-1, 0)
	<-w.entered // the writer goroutine is stuck in Write
	var wg sync.WaitGroup
	submitted := make(chan struct{})
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				line(g, i)
			}
		}()
	}
	go func() { wg.Wait(); close(submitted) }()
	deadline := time.Now().Add(5 * time.Second)
	for len(q.ch) < cap(q.ch) {
		if time.Now().After(deadline) {
			t.Fatal("queue never filled")
		}
		runtime.Gosched()
	}
	select {
	case <-submitted:
		t.Fatal("200 lines went into a 4-line queue with the writer blocked: lines were dropped or buffered without bound")
	default: // the submitters wait, as they should
	}
	close(w.open)
	<-submitted
	q.Close()
	if q.Blocked() <= 0 || counterValue(t, blocked) <= 0 {
		t.Errorf("blocked time %v, metric %v: want both > 0", q.Blocked(), counterValue(t, blocked))
	}
	next := map[int]int{}
	sc := bufio.NewScanner(bytes.NewReader(w.buf.Bytes()))
	n := 0
	for sc.Scan() {
		var v struct{ G, I int }
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if v.G >= 0 {
			if v.I != next[v.G] {
				t.Fatalf("goroutine %d: line %d after %d", v.G, v.I, next[v.G]-1)
			}
			next[v.G]++
		}
		n++
	}
	if n != writers*per+1 {
		t.Errorf("%d lines written, want %d", n, writers*per+1)
	}
}

// Lines submitted after Close are written at once, not lost.
func TestLogQueueAfterClose(t *testing.T) {
	var buf bytes.Buffer
	q := NewLogQueue(&buf, 0, nil)
	l := q.Line()
	l.b = append(l.b, "one\n"...)
	q.Submit(l)
	q.Close()
	l = q.Line()
	l.b = append(l.b, "two\n"...)
	q.Submit(l)
	q.Flush()
	q.Close()
	if buf.String() != "one\ntwo\n" {
		t.Errorf("got %q", buf.String())
	}
}

// Whatever bytes a client sends, the line stays valid JSON with the
// value decoded back (invalid UTF-8 as U+FFFD).
func TestLogLineJSONEscaping(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"plain", "curl/8.0", "curl/8.0"},
		{"quotes and backslash", `a"b\c`, `a"b\c`},
		{"control bytes", "a\nb\x00c\x1b\x7f", "a\nb\x00c\x1b\x7f"},
		{"utf-8", "café ☕", "café ☕"},
		{"invalid utf-8", "a\xffb\xc3", "a\ufffdb\ufffd"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var l logBuf
			l.head(time.Unix(0, 0), "request")
			l.str("v", []byte(c.in))
			l.strs("s", c.in)
			l.ms("d", 1234567*time.Microsecond)
			l.end()
			var v struct {
				V, S string
				D    float64
			}
			if err := json.Unmarshal(l.b, &v); err != nil {
				t.Fatalf("%q: %v", l.b, err)
			}
			if v.V != c.want || v.S != c.want || v.D != 1234.567 {
				t.Errorf("decoded %q %q %v, want %q and 1234.567", v.V, v.S, v.D, c.want)
			}
		})
	}
}

// Close returns only once every queued line is written, even when the
// writer is stuck at the moment Close is called.
func TestLogQueueCloseWritesEverything(t *testing.T) {
	w := &gatedWriter{open: make(chan struct{}), entered: make(chan struct{})}
	q := NewLogQueue(w, 0, nil)
	const n = 100
	for i := range n {
		l := q.Line()
		l.b = strconv.AppendInt(l.b, int64(i), 10)
		l.b = append(l.b, '\n')
		q.Submit(l)
	}
	<-w.entered
	closed := make(chan struct{})
	go func() { q.Close(); close(closed) }()
	for range 100 {
		runtime.Gosched()
	}
	select {
	case <-closed:
		t.Fatal("Close returned while lines were still queued behind a stuck writer")
	default:
	}
	close(w.open)
	<-closed
	w.mu.Lock()
	defer w.mu.Unlock()
	if got := bytes.Count(w.buf.Bytes(), []byte("\n")); got != n {
		t.Errorf("%d lines written by Close, want %d", got, n)
	}
}
