package proxy

import (
	"bufio"
	"io"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultLogQueue is how many access-log lines may wait for the writer
// before a request blocks on the queue (backpressure, never a lost line).
const DefaultLogQueue = 8192

// LogQueue takes access-log lines off the request path: a request formats
// its line into a pooled buffer (Line) and hands it over (Submit); one
// writer goroutine copies lines through a 64 KiB buffer to the writer,
// flushing whenever the queue runs empty. When the writer falls behind
// (stdout blocked) and the queue is full, Submit waits for room: no line
// is dropped, the request pays the wait, and the time it waited is added
// to holdfast_access_log_blocked_seconds_total. Close writes out every
// line queued and makes later lines synchronous writes. Safe for
// concurrent use.
type LogQueue struct {
	w       io.Writer
	ch      chan logItem
	done    chan struct{}
	blocked prometheus.Counter // may be nil
	blockNs atomic.Int64

	mu     sync.RWMutex // Submit holds it shared; Close exclusively
	closed bool
	wmu    sync.Mutex // the writer after Close
	errs   atomic.Int64
}

type logItem struct {
	b     *logBuf
	flush chan struct{} // not nil: a Flush marker
}

// logBuf is one line being formatted; pooled, so a line costs no
// allocation once warm.
type logBuf struct{ b []byte }

var logBufs = sync.Pool{New: func() any { return &logBuf{b: make([]byte, 0, 1024)} }}

// NewLogQueue starts the writer goroutine for w with room for queue lines
// (0: DefaultLogQueue). blocked (may be nil) counts seconds requests spent
// waiting for room.
func NewLogQueue(w io.Writer, queue int, blocked prometheus.Counter) *LogQueue {
	if queue <= 0 {
		queue = DefaultLogQueue
	}
	q := &LogQueue{w: w, ch: make(chan logItem, queue), done: make(chan struct{}), blocked: blocked}
	go q.run()
	return q
}

// Line returns an empty buffer for one line; give it to Submit.
func (q *LogQueue) Line() *logBuf {
	l := logBufs.Get().(*logBuf)
	l.b = l.b[:0]
	return l
}

// Submit queues l (ending in '\n') for the writer and takes ownership of
// it. It waits while the queue is full.
func (q *LogQueue) Submit(l *logBuf) {
	q.mu.RLock()
	if q.closed {
		q.mu.RUnlock()
		q.wmu.Lock()
		q.write(l.b)
		q.wmu.Unlock()
		putLogBuf(l)
		return
	}
	select {
	case q.ch <- logItem{b: l}:
	default:
		start := time.Now()
		q.ch <- logItem{b: l}
		d := time.Since(start)
		q.blockNs.Add(int64(d))
		if q.blocked != nil {
			q.blocked.Add(d.Seconds())
		}
	}
	q.mu.RUnlock()
}

// Blocked is the total time Submit has waited for room.
func (q *LogQueue) Blocked() time.Duration { return time.Duration(q.blockNs.Load()) }

// Flush returns once every line submitted before it is written to the
// writer (tests; Close flushes by itself).
func (q *LogQueue) Flush() {
	q.mu.RLock()
	if q.closed {
		q.mu.RUnlock()
		return
	}
	c := make(chan struct{})
	q.ch <- logItem{flush: c}
	q.mu.RUnlock()
	<-c
}

// Close writes out every queued line and stops the writer goroutine;
// lines submitted afterwards are written synchronously. Idempotent.
func (q *LogQueue) Close() {
	if q == nil {
		return
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.closed = true
	q.wmu.Lock() // held until the goroutine has written everything
	close(q.ch)
	q.mu.Unlock()
	<-q.done
	q.wmu.Unlock()
}

func (q *LogQueue) run() {
	defer close(q.done)
	bw := bufio.NewWriterSize(errCounter{q}, 64<<10)
	for it := range q.ch {
		if it.b != nil {
			_, _ = bw.Write(it.b.b)
			putLogBuf(it.b)
		}
		if it.flush != nil || len(q.ch) == 0 {
			_ = bw.Flush()
			if bw.Buffered() > 0 { // a failed write: drop it rather than stall
				bw.Reset(errCounter{q})
			}
		}
		if it.flush != nil {
			close(it.flush)
		}
	}
	_ = bw.Flush()
}

func (q *LogQueue) write(b []byte) {
	if _, err := q.w.Write(b); err != nil {
		q.errs.Add(1)
	}
}

// errCounter counts failed writes (a closed stdout) instead of stopping.
type errCounter struct{ q *LogQueue }

func (e errCounter) Write(b []byte) (int, error) {
	n, err := e.q.w.Write(b)
	if err != nil {
		e.q.errs.Add(1)
	}
	return n, err
}

func putLogBuf(l *logBuf) {
	if cap(l.b) <= 64<<10 { // an outsized line does not pin memory
		logBufs.Put(l)
	}
}

// JSON line helpers: no reflection, no allocation.

func (l *logBuf) key(k string) {
	if n := len(l.b); n > 0 && l.b[n-1] != '{' {
		l.b = append(l.b, ',')
	}
	l.b = append(l.b, '"')
	l.b = append(l.b, k...)
	l.b = append(l.b, '"', ':')
}

func (l *logBuf) str(k string, v []byte) {
	l.key(k)
	l.b = appendJSONString(l.b, v)
}

func (l *logBuf) strs(k, v string) {
	l.key(k)
	l.b = appendJSONStringS(l.b, v)
}

func (l *logBuf) int(k string, v int64) {
	l.key(k)
	l.b = appendInt(l.b, v)
}

// ms writes d in milliseconds with three decimals.
func (l *logBuf) ms(k string, d time.Duration) {
	l.key(k)
	us := d.Microseconds()
	if us < 0 {
		l.b = append(l.b, '-')
		us = -us
	}
	l.b = appendInt(l.b, us/1000)
	f := us % 1000
	if f != 0 {
		l.b = append(l.b, '.', byte('0'+f/100), byte('0'+f/10%10), byte('0'+f%10))
	}
}

// head opens the line: {"time":…,"level":"INFO","msg":msg (slog's shape).
func (l *logBuf) head(now time.Time, msg string) {
	l.b = append(l.b, `{"time":"`...)
	l.b = now.AppendFormat(l.b, "2006-01-02T15:04:05.000000000Z07:00")
	l.b = append(l.b, `","level":"INFO","msg":"`...)
	l.b = append(l.b, msg...)
	l.b = append(l.b, '"')
}

func (l *logBuf) end() { l.b = append(l.b, '}', '\n') }

func appendInt(b []byte, v int64) []byte {
	var d [20]byte
	i := len(d)
	neg := v < 0
	u := uint64(v)
	if neg {
		u = uint64(-v)
	}
	for {
		i--
		d[i] = byte('0' + u%10)
		u /= 10
		if u == 0 {
			break
		}
	}
	if neg {
		b = append(b, '-')
	}
	return append(b, d[i:]...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends v as a JSON string: quotes, backslashes and
// control bytes escaped, invalid UTF-8 replaced by U+FFFD.
func appendJSONString(b, v []byte) []byte {
	b = append(b, '"')
	for i := 0; i < len(v); {
		c := v[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(v[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, v[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}

func appendJSONStringS(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' {
			return appendJSONString(b, []byte(v)) // rare: names are plain
		}
	}
	b = append(b, '"')
	b = append(b, v...)
	return append(b, '"')
}
