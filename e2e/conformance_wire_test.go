package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The wire side of the conformance suite: a strict HTTP/1.1 message parser
// shared by the raw client and the programmable backends, so both ends see
// exactly the bytes a proxy put on the wire and nothing is normalised away.

// hdr is one header field as it was on the wire (name case kept).
type hdr struct{ Name, Value string }

// httpMsg is one parsed request or response.
type httpMsg struct {
	Method, Target, Proto string // request line
	Status                int    // status line
	Reason                string
	Headers               []hdr
	Body                  []byte
	Chunked               bool
	Trailers              []hdr
	CloseDelimited        bool   // response body ran to EOF
	Raw                   []byte // every byte of the message as read
}

// Values returns every value of the header name, compared case-insensitively.
func (m *httpMsg) Values(name string) []string {
	var out []string
	for _, h := range m.Headers {
		if strings.EqualFold(h.Name, name) {
			out = append(out, h.Value)
		}
	}
	return out
}

// Get returns the first value of name, or "".
func (m *httpMsg) Get(name string) string {
	if v := m.Values(name); len(v) > 0 {
		return v[0]
	}
	return ""
}

// Has reports whether the header name is present in any case.
func (m *httpMsg) Has(name string) bool { return len(m.Values(name)) > 0 }

func (m *httpMsg) String() string {
	if m == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%q", m.Raw)
}

// wireReader reads messages from a stream and keeps every consumed byte.
type wireReader struct {
	br  *bufio.Reader
	raw []byte
}

func newWireReader(r io.Reader) *wireReader { return &wireReader{br: bufio.NewReaderSize(r, 64<<10)} }

// line reads one CRLF-terminated line; a bare LF is an error (the proxies
// under test must emit CRLF).
func (w *wireReader) line(limit int) (string, error) {
	var b []byte
	for {
		c, err := w.br.ReadByte()
		if err != nil {
			if len(b) > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return string(b), err
		}
		w.raw = append(w.raw, c)
		if c == '\n' {
			if len(b) == 0 || b[len(b)-1] != '\r' {
				return string(b), fmt.Errorf("bare LF after %q", b)
			}
			return string(b[:len(b)-1]), nil
		}
		b = append(b, c)
		if len(b) > limit {
			return string(b), fmt.Errorf("line longer than %d bytes", limit)
		}
	}
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// fields reads header (or trailer) fields up to the empty line.
func (w *wireReader) fields() ([]hdr, error) {
	var hs []hdr
	for i := 0; ; i++ {
		if i > 200 {
			return hs, errors.New("more than 200 header fields")
		}
		l, err := w.line(64 << 10)
		if err != nil {
			return hs, err
		}
		if l == "" {
			return hs, nil
		}
		if l[0] == ' ' || l[0] == '\t' {
			return hs, fmt.Errorf("obs-fold line %q", l)
		}
		k := strings.IndexByte(l, ':')
		if k <= 0 || !isToken(l[:k]) {
			return hs, fmt.Errorf("malformed field line %q", l)
		}
		hs = append(hs, hdr{Name: l[:k], Value: strings.Trim(l[k+1:], " \t")})
	}
}

func (w *wireReader) full(n int) ([]byte, error) {
	b := make([]byte, n)
	k, err := io.ReadFull(w.br, b)
	w.raw = append(w.raw, b[:k]...)
	return b[:k], err
}

// chunked reads a chunked body and its trailers, strictly (hex sizes only).
func (w *wireReader) chunked(m *httpMsg) error {
	for i := 0; ; i++ {
		if i > 1<<20 {
			return errors.New("too many chunks")
		}
		l, err := w.line(1024)
		if err != nil {
			return err
		}
		size := l
		if k := strings.IndexByte(size, ';'); k >= 0 {
			size = size[:k]
		}
		size = strings.TrimRight(size, " \t")
		n, err := strconv.ParseUint(size, 16, 31)
		if err != nil || size == "" || strings.ContainsAny(size[:1], "+-") {
			return fmt.Errorf("bad chunk size line %q", l)
		}
		if n == 0 {
			m.Trailers, err = w.fields()
			return err
		}
		b, err := w.full(int(n))
		m.Body = append(m.Body, b...)
		if err != nil {
			return err
		}
		if l, err := w.line(2); err != nil || l != "" {
			return fmt.Errorf("chunk not followed by CRLF: %q %v", l, err)
		}
	}
}

// framing returns the body length of a message whose headers are in m:
// chunked, a Content-Length, or neither. Ambiguous framing is an error: a
// proxy must never emit it.
func framing(m *httpMsg) (chunked bool, length int64, hasLength bool, err error) {
	te := m.Values("Transfer-Encoding")
	cl := m.Values("Content-Length")
	if len(te) > 0 {
		if len(cl) > 0 {
			return false, 0, false, errors.New("both Transfer-Encoding and Content-Length")
		}
		codings := strings.Split(strings.Join(te, ","), ",")
		if strings.TrimSpace(strings.ToLower(codings[len(codings)-1])) != "chunked" {
			return false, 0, false, fmt.Errorf("Transfer-Encoding %q does not end in chunked", te)
		}
		return true, 0, false, nil
	}
	if len(cl) > 1 {
		return false, 0, false, fmt.Errorf("%d Content-Length fields", len(cl))
	}
	if len(cl) == 1 {
		n, err := strconv.ParseInt(cl[0], 10, 63)
		if err != nil || cl[0] == "" || cl[0][0] < '0' || cl[0][0] > '9' {
			return false, 0, false, fmt.Errorf("bad Content-Length %q", cl[0])
		}
		return false, n, true, nil
	}
	return false, 0, false, nil
}

// readHead reads a request or response head into a new message.
func (w *wireReader) readHead(request bool) (*httpMsg, error) {
	w.raw = nil
	m := &httpMsg{}
	l, err := w.line(64 << 10)
	if err != nil {
		m.Raw = w.raw
		return m, err
	}
	parts := strings.SplitN(l, " ", 3)
	if request {
		if len(parts) != 3 || !strings.HasPrefix(parts[2], "HTTP/1.") {
			m.Raw = w.raw
			return m, fmt.Errorf("malformed request line %q", l)
		}
		m.Method, m.Target, m.Proto = parts[0], parts[1], parts[2]
	} else {
		if len(parts) < 2 || !strings.HasPrefix(parts[0], "HTTP/1.") || len(parts[1]) != 3 {
			m.Raw = w.raw
			return m, fmt.Errorf("malformed status line %q", l)
		}
		m.Proto = parts[0]
		m.Status, err = strconv.Atoi(parts[1])
		if err != nil {
			m.Raw = w.raw
			return m, fmt.Errorf("malformed status line %q", l)
		}
		if len(parts) == 3 {
			m.Reason = parts[2]
		}
	}
	m.Headers, err = w.fields()
	m.Raw = w.raw
	return m, err
}

// readBody reads the body of a message whose head is in m. method is the
// request method a response answers ("" for a request).
func (w *wireReader) readBody(m *httpMsg, request bool, method string) error {
	defer func() { m.Raw = append(m.Raw, w.raw...); w.raw = nil }()
	w.raw = nil
	if !request && (m.Status < 200 || m.Status == 204 || m.Status == 304 || method == "HEAD") {
		return nil
	}
	chunked, n, hasLength, err := framing(m)
	switch {
	case err != nil:
		return err
	case chunked:
		m.Chunked = true
		return w.chunked(m)
	case hasLength:
		m.Body, err = w.full(int(n))
		return err
	case request:
		return nil
	default:
		m.CloseDelimited = true
		b, err := io.ReadAll(w.br)
		w.raw = append(w.raw, b...)
		m.Body = b
		return err
	}
}

// rawClient is a client on a raw TCP connection.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	r    *wireReader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawClient{t: t, conn: c, r: newWireReader(c)}
}

// send writes s as is.
func (c *rawClient) send(s string) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// trySend writes s and reports the error (the proxy may have closed).
func (c *rawClient) trySend(s string) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := io.WriteString(c.conn, s)
	return err
}

// read reads one response (1xx included) to a request with method.
func (c *rawClient) read(method string, timeout time.Duration) (*httpMsg, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	m, err := c.r.readHead(false)
	if err != nil {
		return m, err
	}
	return m, c.r.readBody(m, false, method)
}

// final reads responses up to the first non-1xx one and returns it with
// the interim ones.
func (c *rawClient) final(method string, timeout time.Duration) (*httpMsg, []*httpMsg, error) {
	var interim []*httpMsg
	for range 10 {
		m, err := c.read(method, timeout)
		if err != nil || m.Status >= 200 || m.Status == 101 {
			return m, interim, err
		}
		interim = append(interim, m)
	}
	return nil, interim, errors.New("more than 10 interim responses")
}

// mustFinal is final that fails the test on an error.
func (c *rawClient) mustFinal(method string) *httpMsg {
	c.t.Helper()
	m, _, err := c.final(method, 5*time.Second)
	if err != nil {
		c.t.Fatalf("reading the response to %s: %v (read %s)", method, err, m)
	}
	return m
}

// closedWithin reports whether the peer ends the connection (EOF or
// reset) within d with no further byte; the bytes read otherwise.
func (c *rawClient) closedWithin(d time.Duration) (bool, []byte) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	var got []byte
	buf := make([]byte, 4096)
	for range 1000 {
		n, err := c.r.br.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return false, got
			}
			return len(got) == 0, got
		}
	}
	return false, got
}

// recorded is one request as a backend read it.
type recorded struct {
	Conn int // index of the backend connection it arrived on, from 0
	Msg  *httpMsg
	Err  error // malformed or incomplete
}

// rawBackend is a programmable backend on a raw listener. It records every
// request it reads (and every byte of every connection) so a case can
// assert what reached it.
type rawBackend struct {
	t      *testing.T
	name   string
	ln     net.Listener
	Addr   string
	handle func(c *backendConn)

	mu    sync.Mutex
	conns [][]byte // every byte received, by connection
	reqs  []recorded
	wg    sync.WaitGroup
}

// backendConn is one accepted connection of a rawBackend.
type backendConn struct {
	b   *rawBackend
	Idx int
	net.Conn
	r *wireReader
}

type recordingConn struct {
	net.Conn
	b   *rawBackend
	idx int
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.b.mu.Lock()
		c.b.conns[c.idx] = append(c.b.conns[c.idx], p[:n]...)
		c.b.mu.Unlock()
	}
	return n, err
}

// startBackend starts a backend whose handle runs once per connection;
// nil serves okHandler("name").
func startBackend(t *testing.T, name string, handle func(c *backendConn)) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if handle == nil {
		handle = serveEach(okResponder(name))
	}
	b := &rawBackend{t: t, name: name, ln: ln, Addr: ln.Addr().String(), handle: handle}
	var open sync.Map
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			idx := len(b.conns)
			b.conns = append(b.conns, nil)
			b.mu.Unlock()
			open.Store(c, true)
			rc := &recordingConn{Conn: c, b: b, idx: idx}
			bc := &backendConn{b: b, Idx: idx, Conn: rc, r: newWireReader(rc)}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer open.Delete(c)
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				b.handle(bc)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		open.Range(func(k, _ any) bool { _ = k.(net.Conn).Close(); return true })
		b.wg.Wait()
	})
	return b
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// head reads the next request head (and records it); nil at EOF.
func (c *backendConn) head() (*httpMsg, error) {
	m, err := c.r.readHead(true)
	if err != nil && len(m.Raw) == 0 {
		return nil, err // the connection ended between requests
	}
	if err != nil {
		c.record(m, err)
	}
	return m, err
}

// body reads the body of m and records the request.
func (c *backendConn) body(m *httpMsg) error {
	err := c.r.readBody(m, true, "")
	c.record(m, err)
	return err
}

// next reads a whole request, answering 100 Continue first if it asks.
func (c *backendConn) next() (*httpMsg, error) {
	m, err := c.head()
	if err != nil {
		return m, err
	}
	if strings.EqualFold(m.Get("Expect"), "100-continue") {
		c.write("HTTP/1.1 100 Continue\r\n\r\n")
	}
	return m, c.body(m)
}

func (c *backendConn) record(m *httpMsg, err error) {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	c.b.reqs = append(c.b.reqs, recorded{Conn: c.Idx, Msg: m, Err: err})
}

func (c *backendConn) write(s string) {
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c.Conn, s)
}

// reset closes the connection with an RST (SO_LINGER 0).
func (c *backendConn) reset() {
	if tc, ok := c.Conn.(*recordingConn).Conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Conn.Close()
}

// requests returns what the backend has read so far.
func (b *rawBackend) requests() []recorded {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]recorded(nil), b.reqs...)
}

// received reports whether any connection carried sub anywhere in its bytes.
func (b *rawBackend) received(sub string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		if bytes.Contains(c, []byte(sub)) {
			return true
		}
	}
	return false
}

// waitRequests waits until the backend has recorded n requests.
func (b *rawBackend) waitRequests(t *testing.T, n int, timeout time.Duration) []recorded {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("%d requests at backend %s", n, b.name), func() bool {
		return len(b.requests()) >= n
	})
	return b.requests()
}

// responder answers one request on a backend connection; false closes it.
type responder func(c *backendConn, m *httpMsg) bool

// serveEach reads requests in turn and answers each with r.
func serveEach(r responder) func(c *backendConn) {
	return func(c *backendConn) {
		for range 1000 {
			m, err := c.next()
			if err != nil || !r(c, m) {
				return
			}
		}
	}
}

// okResponder answers 200 with the body "name" and Content-Length.
func okResponder(name string) responder {
	return func(c *backendConn, m *httpMsg) bool {
		c.write(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s", len(name), name))
		return true
	}
}

// fixedResponder writes resp as is to every request.
func fixedResponder(resp string) responder {
	return func(c *backendConn, m *httpMsg) bool {
		c.write(resp)
		return true
	}
}
