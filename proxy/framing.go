package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"time"
)

// framingOK checks the request head the way a backend behind holdfast
// would read it, on the raw header lines (the parser has already dropped
// what it resolved on its own): Content-Length with Transfer-Encoding, a
// Transfer-Encoding other than exactly "chunked", an obs-folded line, a
// field name that is not a token. Any of these is a request that two HTTP
// implementations can frame differently (request smuggling), so it is
// answered 400 and the connection closed (RFC 9112 §6.1, §6.3, §5.2).
func framingOK(raw []byte) bool {
	cl, te := false, false
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			i = len(raw)
		}
		line := raw[:i]
		if i < len(raw) {
			raw = raw[i+1:]
		} else {
			raw = nil
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			continue // the blank line ending the head
		}
		if line[0] == ' ' || line[0] == '\t' {
			return false // obs-fold
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return false
		}
		name := line[:colon]
		for _, c := range name {
			if !isTokenChar(c) {
				return false
			}
		}
		switch len(name) {
		case 14:
			if asciiEqualFoldStr(name, "Content-Length") {
				cl = true
			}
		case 17:
			if asciiEqualFoldStr(name, "Transfer-Encoding") {
				if te {
					return false
				}
				te = true
				v := bytes.Trim(line[colon+1:], " \t")
				if len(v) != 7 || !asciiEqualFoldStr(v, "chunked") {
					return false
				}
			}
		}
	}
	return !(cl && te)
}

func isTokenChar(c byte) bool {
	return c < 0x80 && tokenTable[c]
}

var tokenTable = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// errBodyTooLarge is a request body over max_body_bytes.
var errBodyTooLarge = errors.New("request body too large")

// clientError marks a failure on the client's side of an exchange (its
// body ended early, stalled, or was malformed), which never counts against
// a backend.
type clientError struct{ err error }

func (e *clientError) Error() string { return "client: " + e.err.Error() }
func (e *clientError) Unwrap() error { return e.err }

// reqBody is one request's body as the upstream side sends it. A body of
// up to the pool's buffer_body is read whole before the first attempt and
// kept, so every attempt sends all of it; a larger one is streamed from
// the client once, and after any of it went out it cannot be sent again.
// Used by one request at a time.
type reqBody struct {
	buf     []byte    // the whole body (buffered) or what was read of it (streamed)
	src     io.Reader // the client's body; nil when buffered
	conn    net.Conn  // the client connection, for the read timeout
	idle    time.Duration
	readDL  silence // the client connection's read deadline
	max     int64   // max_body_bytes; 0: none
	want    int64   // the Content-Length; -1: chunked
	chunked bool    // streamed without a length: sent chunked
	started bool    // some of the streamed part went to a backend
	eof     bool    // the client's body was read to its end
	read    int64   // bytes read from the client
	err     error   // the client's failure, if any
}

// resendable says whether another attempt can send the whole body again.
func (b *reqBody) resendable() bool { return b.src == nil || !b.started }

var bodyBufPool = sync.Pool{New: func() any { return new([]byte) }}

// silence is a read or write deadline kept d ahead of the last byte moved,
// as a bound on silence. It is reset only when less than d−d/16 of it is
// left: a timer update per chunk costs more than that slack is worth.
type silence struct{ at time.Time }

// due returns the new deadline when it has to move.
func (s *silence) due(d time.Duration) (time.Time, bool) {
	now := time.Now()
	if !s.at.IsZero() && s.at.Sub(now) > d-d/16 {
		return time.Time{}, false
	}
	s.at = now.Add(d)
	return s.at, true
}

// readClient reads from the client's body with the listener's read
// timeout as a bound on silence.
func (b *reqBody) readClient(p []byte) (int, error) {
	if b.conn != nil && b.idle > 0 {
		if at, ok := b.readDL.due(b.idle); ok {
			_ = b.conn.SetReadDeadline(at)
		}
	}
	n, err := b.src.Read(p)
	b.read += int64(n)
	if b.max > 0 && b.read > b.max {
		b.err = &clientError{errBodyTooLarge}
		return n, b.err
	}
	if err == io.EOF && ((b.want >= 0 && b.read < b.want) || (b.want < 0 && !chunkedEnded(b.src))) {
		err = io.ErrUnexpectedEOF // the client went away mid-body
	}
	if err == io.EOF {
		b.eof = true
	} else if err != nil {
		b.err = &clientError{err}
	}
	return n, err
}

// fill reads up to limit bytes of the client's body into b.buf; it returns
// true when the body ended within them (the body is then kept whole).
func (b *reqBody) fill(limit int) (bool, error) {
	for len(b.buf) <= limit {
		b.buf = slices.Grow(b.buf, 4096)
		n, err := b.readClient(b.buf[len(b.buf):cap(b.buf)])
		b.buf = b.buf[:len(b.buf)+n]
		if err == io.EOF {
			b.src = nil
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
	return false, nil
}

// writeTo sends the body on w: the kept bytes, then, when streamed, the
// rest as it comes from the client (chunk-encoded when it had no length).
func (b *reqBody) writeTo(w *bufio.Writer) error {
	if b.src == nil {
		_, err := w.Write(b.buf)
		return err
	}
	b.started = true
	if b.chunked {
		if len(b.buf) > 0 {
			if err := writeChunk(w, b.buf); err != nil {
				return err
			}
		}
	} else if _, err := w.Write(b.buf); err != nil {
		return err
	}
	var scratch [16 << 10]byte
	for {
		n, err := b.readClient(scratch[:])
		if n > 0 {
			var werr error
			if b.chunked {
				werr = writeChunk(w, scratch[:n])
			} else {
				_, werr = w.Write(scratch[:n])
			}
			if werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			if b.chunked {
				_, err := w.WriteString("0\r\n\r\n")
				return err
			}
			return nil
		}
		if err != nil {
			if b.err == nil {
				b.err = &clientError{err}
			}
			return b.err
		}
		// Data the backend may be waiting on goes out as it arrives.
		if err := w.Flush(); err != nil {
			return err
		}
	}
}

// chunkedEnded reports whether fasthttp's chunked request stream ended at
// its last chunk, not at the client's EOF between chunks: both end the
// stream with io.EOF, and only the first is a whole body. fasthttp keeps
// that in an unexported field of the (pinned, v1.74.0) stream type, read
// here by reflection; TestTruncatedChunkedBodyRefused fails if it moves.
func chunkedEnded(r io.Reader) bool {
	v := reflect.ValueOf(r)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return false
	}
	f := v.Elem().FieldByName("eof")
	return f.IsValid() && f.Kind() == reflect.Bool && f.Bool()
}

func writeChunk(w *bufio.Writer, p []byte) error {
	var hex [16]byte
	_, _ = w.Write(strconv.AppendInt(hex[:0], int64(len(p)), 16))
	_, _ = w.WriteString("\r\n")
	_, _ = w.Write(p)
	_, err := w.WriteString("\r\n")
	return err
}

// release returns the buffer to the pool.
func (b *reqBody) release(pb *[]byte) {
	if pb != nil && cap(b.buf) <= 256<<10 {
		*pb = b.buf[:0]
		bodyBufPool.Put(pb)
	}
	*b = reqBody{}
}
