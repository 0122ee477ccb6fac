package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/discovery"
)

// FuzzRequestPath sends random bytes on a client connection through a real
// holdfast HTTP listener to a backend that records, with Go's strict
// net/http parser, every request it receives. Differential check against
// the same parser reading the client's bytes: every request the backend
// received is well-formed and is one of the client's requests, in order,
// with the same method, normalised target, body and end-to-end headers.
// A request holdfast refused never shows up; nothing the client did not
// send as a request (a body's tail, a smuggled second request) ever does.
func FuzzRequestPath(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a/../b?x=1 HTTP/1.1\r\nHost: a\r\nconnection: x-secret\r\nx-secret: 1\r\nx-forwarded-proto: https\r\n\r\n",
		"GET http://other/p HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /%2e%2e/%7e HTTP/1.0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	env := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > 64<<10 {
			return
		}
		got := env.roundTrip(t, raw)
		want := referenceRequests(raw)
		if len(got) > len(want) {
			// The client's EOF may cut a chunked body's trailer section
			// after its last chunk: the body is whole, and holdfast passes
			// the request on without the trailers, where net/http refuses
			// it. Ending the trailer section at one of the last-chunk lines
			// gives the reference its chance.
			locs := lastChunkRE.FindAllIndex(raw, 16)
			for _, loc := range locs {
				end := loc[1]
				if w := referenceRequests(append(raw[:end:end], "\r\n"...)); len(w) >= len(got) {
					want = w
					break
				}
			}
		}
		j := 0
		for _, g := range got {
			if g.err != "" {
				t.Fatalf("backend received a malformed request: %s\nclient bytes: %q", g.err, raw)
			}
			for j < len(want) && !sameRequest(g, want[j]) {
				j++
			}
			if j == len(want) {
				t.Fatalf("backend received a request the client did not send:\n%s\nclient requests: %v\nclient bytes: %q", g, want, raw)
			}
			j++
		}
	})
}

// lastChunkRE finds a last-chunk line (RFC 9112 §7.1).
var lastChunkRE = regexp.MustCompile(`\n0+(;[^\r\n]*)?\r\n`)

// seenRequest is a request as parsed by net/http, reduced to what must
// survive the proxy.
type seenRequest struct {
	method, target, host, body string
	headers                    string // end-to-end headers, canonical, sorted
	err                        string
}

func (r seenRequest) String() string {
	return fmt.Sprintf("%s %s host=%q body=%q headers=%q", r.method, r.target, r.host, r.body, r.headers)
}

func sameRequest(g, w seenRequest) bool {
	return g.method == w.method && g.target == w.target && g.body == w.body && g.headers == w.headers &&
		strings.EqualFold(g.host, w.host)
}

// reduce keeps what a proxy must pass on unchanged.
func reduce(r *http.Request, body []byte, client bool) seenRequest {
	s := seenRequest{method: r.Method, target: r.RequestURI, host: r.Host, body: string(body)}
	hop := map[string]bool{"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Te": true,
		"Trailer": true, "Upgrade": true, "Expect": true, "X-Forwarded-For": true, "X-Forwarded-Proto": true,
		"X-Forwarded-Host": true, "Content-Length": true, "Transfer-Encoding": true, "Max-Forwards": true}
	for _, v := range r.Header.Values("Connection") {
		for _, tok := range strings.Split(v, ",") {
			if tok = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(tok)); tok != "Host" {
				hop[tok] = true
			}
		}
	}
	var lines []string
	for k, vs := range r.Header {
		if !hop[k] {
			lines = append(lines, k+": "+strings.Join(vs, "\x00"))
		}
	}
	sort.Strings(lines)
	s.headers = strings.Join(lines, "\n")
	if client {
		if u := r.URL; u != nil && u.IsAbs() {
			// Absolute form: holdfast forwards the origin form on the
			// target's own host.
			s.host = u.Host
			rest := s.target[strings.Index(s.target, "://")+3:]
			if i := strings.IndexAny(rest, "/?"); i >= 0 {
				s.target = rest[i:]
			} else {
				s.target = "/"
			}
			if strings.HasPrefix(s.target, "?") {
				s.target = "/" + s.target
			}
		}
		path, query, hasQuery := strings.Cut(s.target, "?")
		if s.target != "*" {
			np, v := normalizePath(nil, []byte(path), false)
			if v != pathOK {
				s.target = "\x00refused"
			} else {
				s.target = string(np)
				if hasQuery {
					s.target += "?" + query
				}
			}
		}
	}
	return s
}

// referenceRequests parses the client's bytes as a strict server would.
func referenceRequests(raw []byte) []seenRequest {
	br := bufio.NewReader(bytes.NewReader(raw))
	var out []seenRequest
	for range 64 {
		// RFC 9112 §2.2: empty lines before a request-line are ignored
		// (net/http does not; holdfast's parser does).
		for range 16 {
			b, err := br.Peek(1)
			if err != nil || (b[0] != '\n' && b[0] != '\r') {
				break
			}
			_, _ = br.ReadByte()
		}
		r, err := http.ReadRequest(br)
		if err != nil {
			return out
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			return out
		}
		out = append(out, reduce(r, body, true))
	}
	return out
}

// fuzzEnv is one holdfast listener in front of one recording backend.
type fuzzEnv struct {
	addr string
	mu   sync.Mutex
	seen []seenRequest
}

func newFuzzEnv(tb testing.TB) *fuzzEnv { return newProxyEnv(tb, 0) }

// newProxyEnv is a fuzzEnv whose listener has max_body_bytes maxBody and
// counts its connections as app's listeners do (LimitListener).
func newProxyEnv(tb testing.TB, maxBody int64) *fuzzEnv {
	env := &fuzzEnv{}
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = bln.Close() })
	go func() {
		for {
			c, err := bln.Accept()
			if err != nil {
				return
			}
			go env.backend(c)
		}
	}()
	up := UpstreamConfig{MaxConns: 64, MaxIdle: 16, QueueTimeout: time.Second,
		ConnectTimeout: time.Second, ResponseTimeout: 2 * time.Second, IdleTimeout: time.Minute}
	pool, m, log := newTestPool(tb, "round_robin", []discovery.Backend{{Address: bln.Addr().String(), Weight: 1}}, up, nil)
	target := NewTarget(pool, &TargetConfig{Retry: RetryPolicy{Attempts: 1, Budget: 0.2, OnConnectFailure: true, OnReset: true}, BufferBody: 64 << 10}, m)
	rt := NewRoutes("web", target, []Route{{Host: "other", Target: target}}, m)
	h := NewHTTP(HTTPOptions{Name: "web", MaxHeaderBytes: 16384, MaxBodyBytes: maxBody, HeaderTimeout: time.Second, ReadTimeout: time.Second,
		WriteTimeout: 2 * time.Second, IdleTimeout: 2 * time.Second, Log: log, Metrics: m}, rt)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ln := NewLimitListener(raw, LimitOptions{Name: "web"})
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Serve(ln) }()
	tb.Cleanup(func() { _ = h.Server().Shutdown(); <-done })
	env.addr = ln.Addr().String()
	return env
}

// backend records each request on c, parsed strictly, and answers it.
func (e *fuzzEnv) backend(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		r, err := http.ReadRequest(br)
		if err == io.EOF {
			return
		}
		var s seenRequest
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return
			}
			s.err = err.Error()
			e.record(s)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			e.record(seenRequest{err: "body: " + err.Error()})
			return
		}
		e.record(reduce(r, body, false))
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
			return
		}
	}
}

func (e *fuzzEnv) record(s seenRequest) {
	e.mu.Lock()
	e.seen = append(e.seen, s)
	e.mu.Unlock()
}

// roundTrip sends raw on a fresh connection, reads until holdfast closes
// it (or a short deadline), and returns what the backend received.
func (e *fuzzEnv) roundTrip(t *testing.T, raw []byte) []seenRequest {
	e.mu.Lock()
	e.seen = nil
	e.mu.Unlock()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	_, _ = c.Write(raw)
	_ = c.(*net.TCPConn).CloseWrite()
	_, _ = io.Copy(io.Discard, c)
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]seenRequest(nil), e.seen...)
}

// A client that stops mid-body (EOF between chunks, or before its
// Content-Length) never has a truncated request reach a backend.
func TestTruncatedChunkedBodyRefused(t *testing.T) {
	env := newFuzzEnv(t)
	cases := []struct{ name, raw string }{
		{"chunked, no chunk", "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"chunked, between chunks", "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"},
		{"chunked, mid-chunk", "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"},
		{"content-length short", "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := env.roundTrip(t, []byte(c.raw)); len(got) != 0 {
				t.Fatalf("backend received %v from a truncated body", got)
			}
		})
	}
	// The whole body still goes through.
	got := env.roundTrip(t, []byte("POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
	if len(got) != 1 || got[0].body != "hello" {
		t.Fatalf("whole chunked body: backend got %v", got)
	}
}

// A client still sending a body holdfast refused (413 before reading it)
// reads the 413: the connection closes lingering (write side shut, the
// rest of the body read and dropped), not with a reset, which would
// make the client's next write fail (curl: "send failure") or, on some
// systems, destroy the response sitting unread on the client's side. The
// client here reads only after it has sent 512 KiB more.
func TestEarlyAnswerSurvivesUnreadBody(t *testing.T) {
	env := newProxyEnv(t, 1000)
	for i := range 3 {
		c, err := net.Dial("tcp", env.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 50000000\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		chunk := bytes.Repeat([]byte("x"), 16<<10)
		for j := range 32 {
			if _, err := c.Write(chunk); err != nil {
				// A reset: an uploading client (curl, a browser) reports a
				// send failure instead of the answer.
				t.Fatalf("round %d: writing the body after %d KiB: %v", i, 16*j, err)
			}
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("round %d: the 413 was lost: %v", i, err)
		}
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !resp.Close {
			t.Fatalf("round %d: %d (close %v), want 413 and close", i, resp.StatusCode, resp.Close)
		}
		_ = c.Close()
	}
	if got := env.seen; len(got) != 0 {
		t.Fatalf("backend received %v", got)
	}
}
