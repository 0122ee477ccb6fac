package e2e

import (
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConformance is the HTTP/1.1 conformance suite: one case per rule of
// SPEC.md ("Headers", "Forwarding headers", "Message framing", "Retries
// never corrupt a body", "Paths", "Timeouts", "Blame", "Upgrades", "Errors
// to clients") and per RFC 9110/9112 proxy requirement, each with raw-socket
// clients and programmable backends that record the exact bytes they got.
//
// By default it runs against holdfast only (make test). With
// CONFORMANCE_TARGETS=holdfast,haproxy,nginx it runs against those too and
// prints a case × target table (make conformance; CONFORMANCE_TABLE=FILE
// also writes the table to FILE).
func TestConformance(t *testing.T) {
	targets := selectedTargets(t)
	results = &confResults{cells: map[string]map[string]string{}, parents: map[string]bool{}}
	t.Cleanup(func() { results.print(t, targets) })
	sem := make(chan struct{}, 6) // cases mostly wait on the network; -parallel would cap them at GOMAXPROCS
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			var wg sync.WaitGroup
			for _, c := range conformanceCases {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sem <- struct{}{}
					defer func() { <-sem }()
					t.Run(c.name, func(t *testing.T) {
						results.track(t)
						c.run(t, tg)
					})
				}()
			}
			wg.Wait()
		})
	}
}

var conformanceCases = []struct {
	name string
	run  func(t *testing.T, tg target)
}{
	{"retry/upload-within-buffer", caseUploadWithinBuffer},
	{"retry/upload-beyond-buffer", caseUploadBeyondBuffer},
	{"framing/unread-body-not-parsed", caseUnreadBodyNotParsed},
	{"framing/cl-and-te", caseAmbiguousFraming},
	{"framing/http10-client-no-chunked", caseHTTP10ClientNoChunked},
	{"framing/upstream-http10-close-delimited", caseUpstreamCloseDelimited},
	{"framing/chunked-response-reused", caseChunkedResponseReused},
	{"framing/extra-bytes-not-reused", caseExtraBytesNotReused},
	{"framing/upstream-cl-and-te", caseUpstreamCLAndTE},
	{"framing/head-content-length-kept", caseHeadContentLength},
	{"framing/interim-1xx-passed", caseInterim1xx},
	{"headers/case-insensitive-forwarding", caseForwardingHeaders},
	{"headers/hop-by-hop", caseHopByHop},
	{"paths", casePaths},
	{"upgrades", caseUpgrades},
	{"timeouts", caseTimeouts},
	{"blame", caseBlame},
	{"expect-100", caseExpect100},
	{"pipelining", casePipelining},
	{"errors", caseErrors},
	{"rfc/max-forwards", caseMaxForwards},
}

// confResults collects pass/FAIL per leaf test for the table.
type confResults struct {
	mu      sync.Mutex
	rows    []string
	cells   map[string]map[string]string // row → target → result
	parents map[string]bool              // tests that have variants: not rows
}

// track records t's outcome when it ends; the row is its name below the target.
func (r *confResults) track(t *testing.T) {
	parts := strings.SplitN(t.Name(), "/", 3)
	if len(parts) < 3 {
		return
	}
	tg, row := parts[1], parts[2]
	if i := strings.LastIndexByte(row, '/'); i > 0 {
		r.mu.Lock()
		r.parents[row[:i]] = true
		r.mu.Unlock()
	}
	t.Cleanup(func() {
		res := "pass"
		switch {
		case t.Failed():
			res = "FAIL"
		case t.Skipped():
			res = "skip"
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.cells[row] == nil {
			r.rows = append(r.rows, row)
			r.cells[row] = map[string]string{}
		}
		r.cells[row][tg] = res
	})
}

// variant runs fn as a named variant of the case t (a row of its own).
func variant(t *testing.T, name string, fn func(t *testing.T)) {
	t.Run(name, func(t *testing.T) {
		results.track(t)
		fn(t)
	})
}

// results is the table of the running TestConformance (variants reach it
// without threading it through every case).
var results *confResults

func (r *confResults) print(t *testing.T, targets []target) {
	rows := make([]string, 0, len(r.rows))
	width := len("case")
	for _, row := range r.rows {
		if r.parents[row] {
			continue
		}
		rows = append(rows, row)
		width = max(width, len(row))
	}
	sort.Strings(rows)
	var b strings.Builder
	fmt.Fprintf(&b, "%-*s", width, "case")
	for _, tg := range targets {
		fmt.Fprintf(&b, "  %-8s", tg.name)
	}
	b.WriteString("\n")
	fails := map[string]int{}
	for _, row := range rows {
		fmt.Fprintf(&b, "%-*s", width, row)
		for _, tg := range targets {
			c := r.cells[row][tg.name]
			if c == "" {
				c = "-"
			}
			if c == "FAIL" {
				fails[tg.name]++
			}
			fmt.Fprintf(&b, "  %-8s", c)
		}
		b.WriteString("\n")
	}
	for _, tg := range targets {
		fmt.Fprintf(&b, "%s: %d of %d cases fail\n", tg.name, fails[tg.name], len(rows))
	}
	if len(targets) > 1 || testing.Verbose() {
		fmt.Print(b.String())
	}
	if p := os.Getenv("CONFORMANCE_TABLE"); p != "" {
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// --- helpers shared by the cases ---

const confHost = "conformance.test"

// request builds a request head: the request line, Host (unless headers
// carry their own or host is "-"), the extra header lines and the blank line.
func request(method, target string, headers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\n", method, target)
	own := false
	for _, h := range headers {
		if strings.HasPrefix(strings.ToLower(h), "host:") {
			own = true
		}
	}
	if !own {
		b.WriteString("Host: " + confHost + "\r\n")
	}
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// pattern is n deterministic body bytes.
func pattern(n int) []byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[(i*7+i/64)%len(alphabet)]
	}
	return b
}

// chunk frames body as chunks of size bytes plus the last chunk.
func chunk(body []byte, size int) string {
	var b strings.Builder
	for len(body) > 0 {
		n := min(size, len(body))
		fmt.Fprintf(&b, "%x\r\n%s\r\n", n, body[:n])
		body = body[n:]
	}
	b.WriteString("0\r\n\r\n")
	return b.String()
}

// onePool is a spec with one pool of the given backends.
func onePool(addrs ...string) proxySpec {
	return proxySpec{Pools: []poolSpec{{Backends: addrs, Retries: -1}}}
}

// statusIn fails unless m's status is one of want.
func statusIn(t *testing.T, m *httpMsg, want ...int) {
	t.Helper()
	for _, w := range want {
		if m.Status == w {
			return
		}
	}
	t.Errorf("status %d, want one of %v; response %s", m.Status, want, m)
}

// noRequestBodyDiffers fails if a backend read a complete request whose
// body is not want: a truncated or spliced body reached an application.
// A request cut off mid-body (the proxy aborted it) is no harm: the
// backend cannot mistake it for a whole one.
func noRequestBodyDiffers(t *testing.T, want []byte, bs ...*rawBackend) {
	t.Helper()
	for _, b := range bs {
		for _, r := range b.requests() {
			switch {
			case r.Err != nil && !errors.Is(r.Err, io.ErrUnexpectedEOF) && !errors.Is(r.Err, io.EOF) && !isConnEnd(r.Err):
				t.Errorf("backend %s got a malformed request: %v: %.300s", b.name, r.Err, r.Msg.Raw)
			case r.Err == nil && string(r.Msg.Body) != string(want):
				t.Errorf("backend %s got a complete request whose %d-byte body differs from the %d bytes sent (head %q)",
					b.name, len(r.Msg.Body), len(want), headOf(r.Msg.Raw))
			}
		}
	}
}

func isConnEnd(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne)
}

func headOf(raw []byte) string {
	if i := strings.Index(string(raw), "\r\n\r\n"); i >= 0 {
		return string(raw[:i])
	}
	if len(raw) > 300 {
		return string(raw[:300])
	}
	return string(raw)
}

// complete returns the requests that arrived whole.
func complete(bs ...*rawBackend) []recorded {
	var out []recorded
	for _, b := range bs {
		for _, r := range b.requests() {
			if r.Err == nil {
				out = append(out, r)
			}
		}
	}
	return out
}

// nothingSeen fails if any backend received sub anywhere.
func nothingSeen(t *testing.T, sub string, bs ...*rawBackend) {
	t.Helper()
	for _, b := range bs {
		if b.received(sub) {
			t.Errorf("backend %s received %q", b.name, sub)
		}
	}
}

// noMoreResponses fails if the client connection yields another byte
// within d (it may be closed or stay silent).
func noMoreResponses(t *testing.T, c *rawClient, d time.Duration) {
	t.Helper()
	if _, got := c.closedWithin(d); len(got) > 0 {
		t.Errorf("the client received more bytes after the response: %q", got)
	}
}

// mustClose fails unless the proxy ends the client connection within d.
func mustClose(t *testing.T, c *rawClient, d time.Duration) {
	t.Helper()
	if closed, got := c.closedWithin(d); !closed {
		t.Errorf("connection still open %s after the response (then read %q)", d, got)
	}
}

// --- retry ---

// firstResets returns handlers for a pool whose first request (whichever
// backend gets it) is read whole and answered with an RST; every later
// request gets 200.
func firstResets() (func(name string) func(*backendConn), *atomic.Int32) {
	var n atomic.Int32
	return func(name string) func(*backendConn) {
		ok := okResponder(name)
		return serveEach(func(c *backendConn, m *httpMsg) bool {
			if n.Add(1) == 1 {
				c.reset()
				return false
			}
			return ok(c, m)
		})
	}, &n
}

// uploadRetried: a pool of two where the first attempt is reset after the
// backend read the whole body. The retry goes to the other backend with the
// whole body (the client gets its 200), or (allowFail: the body was larger
// than buffer_body) the client gets 502 and the other backend nothing
// whole that differs. Never a truncated body.
func uploadRetried(t *testing.T, tg target, size, buffer int, chunked, allowFail bool) {
	handler, _ := firstResets()
	a, b := startBackend(t, "A", handler("A")), startBackend(t, "B", handler("B"))
	spec := onePool(a.Addr, b.Addr)
	spec.Pools[0].BufferBody = buffer
	p := tg.start(t, spec)
	body := pattern(size)
	c := dialRaw(t, p.Addr)
	if chunked {
		c.send(request("PUT", "/upload", "Transfer-Encoding: chunked", "Content-Type: application/octet-stream") + chunk(body, 8192))
	} else {
		c.send(request("PUT", "/upload", fmt.Sprintf("Content-Length: %d", size), "Content-Type: application/octet-stream") + string(body))
	}
	m, _, err := c.final("PUT", 10*time.Second)
	if err != nil {
		t.Fatalf("no response: %v (%s)", err, m)
	}
	noRequestBodyDiffers(t, body, a, b)
	whole := complete(a, b)
	if allowFail && m.Status == 502 {
		if len(whole) > 1 {
			t.Errorf("client got 502 but %d whole requests reached backends", len(whole))
		}
		return
	}
	statusIn(t, m, 200)
	if len(whole) != 2 {
		t.Fatalf("%d whole requests reached the backends, want 2 (the reset one and its retry)", len(whole))
	}
	if len(a.requests()) != 1 || len(b.requests()) != 1 {
		t.Errorf("A read %d requests, B %d: want one each (the retry goes to the other backend)", len(a.requests()), len(b.requests()))
	}
}

func caseUploadWithinBuffer(t *testing.T, tg target) {
	variant(t, "content-length", func(t *testing.T) { uploadRetried(t, tg, 50_000, 0, false, false) })
	variant(t, "chunked", func(t *testing.T) { uploadRetried(t, tg, 50_000, 0, true, false) })
}

func caseUploadBeyondBuffer(t *testing.T, tg target) {
	variant(t, "default-buffer", func(t *testing.T) { uploadRetried(t, tg, 100_000, 0, false, true) })
	variant(t, "default-buffer-chunked", func(t *testing.T) { uploadRetried(t, tg, 100_000, 0, true, true) })
	variant(t, "buffer-128KiB", func(t *testing.T) { uploadRetried(t, tg, 100_000, 128<<10, false, false) })
}

// --- framing ---

// smuggled is the request hidden at the end of a body.
const smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

// caseUnreadBodyNotParsed: a response sent before the request body was read
// closes the connection, so the body's tail is never parsed as a request.
// /upload goes to a pool of its own; the default pool's backend would see
// a smuggled request.
func caseUnreadBodyNotParsed(t *testing.T, tg target) {
	body := strings.Repeat("a", 30041-len(smuggled)) + smuggled
	run := func(t *testing.T, upload string, want ...int) []*rawBackend {
		def := startBackend(t, "default", nil)
		spec := proxySpec{
			Pools:  []poolSpec{{Backends: []string{def.Addr}, Retries: -1}, {Name: "upload", Backends: []string{upload}, Retries: -1}},
			Routes: []routeSpec{{PathPrefix: "/upload", Pool: "upload"}},
		}
		p := tg.start(t, spec)
		c := dialRaw(t, p.Addr)
		_ = c.trySend(request("POST", "/upload", "Content-Length: 30041") + body)
		m := c.mustFinal("POST")
		statusIn(t, m, want...)
		noMoreResponses(t, c, time.Second)
		// A second client request proves the proxy still works and flushes
		// anything it might have queued for the default backend.
		c2 := dialRaw(t, p.Addr)
		c2.send(request("GET", "/after"))
		statusIn(t, c2.mustFinal("GET"), 200)
		nothingSeen(t, "/smuggled", def)
		return []*rawBackend{def}
	}
	variant(t, "refused", func(t *testing.T) { run(t, closedAddr(t), 502, 503) })
	variant(t, "early-413", func(t *testing.T) {
		early := startBackend(t, "early", func(c *backendConn) {
			if _, err := c.r.readHead(true); err != nil {
				return
			}
			c.write("HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
			_ = c.Conn.(*recordingConn).Conn.(*net.TCPConn).CloseWrite()
			_, _ = io.Copy(io.Discard, io.LimitReader(c.Conn, 1<<20)) // a lingering close: the 413 is not lost to an RST
		})
		// The early backend drains the body it did not want (so /smuggled
		// reaches it as body bytes); only the default pool would parse it.
		run(t, early.Addr, 413)
	})
}

// framingVariant is one request with ambiguous or invalid framing.
type framingVariant struct {
	name string
	raw  string
	want []int // acceptable statuses; 2xx means "accepted, and then it must be exact"
	// accepted, when want allows a 2xx: the body the backend must get.
	body string
}

// caseAmbiguousFraming: Content-Length with Transfer-Encoding in any
// disguise, and every other framing a backend could read differently, is
// answered 400 and the connection closed; nothing reaches a backend. Where
// RFC 9112 allows accepting a form (an identical Content-Length list, bare
// LF), the accepted request must reach the backend exactly once, whole and
// well-formed, and the hidden request never.
func caseAmbiguousFraming(t *testing.T, tg target) {
	be := startBackend(t, "B", nil)
	spec := onePool(be.Addr)
	// A head a proxy cannot parse (holdfast: bare LF line ends) may be
	// answered 408 at the header timeout, kept short here.
	spec.HeaderTimeout = 2 * time.Second
	p := tg.start(t, spec)
	// Each variant hides its own request, /smuggled-NAME, so a variant is
	// blamed only for what it smuggled.
	tail := func(name string) string {
		return "0\r\n\r\n" + strings.Replace(smuggled, "/smuggled", "/smuggled-"+name, 1)
	}
	clte := func(name string, headers ...string) framingVariant {
		tl := tail(name)
		return framingVariant{name: name, raw: request("POST", "/v/"+name, append([]string{fmt.Sprintf("Content-Length: %d", len(tl))}, headers...)...) + tl, want: []int{400}}
	}
	tecl := func(name string, headers ...string) framingVariant {
		tl := tail(name)
		return framingVariant{name: name, raw: request("POST", "/v/"+name, append(headers, fmt.Sprintf("Content-Length: %d", len(tl)))...) + tl, want: []int{400}}
	}
	withBody := func(name string, want []int, body string, headers ...string) framingVariant {
		return framingVariant{name: name, raw: request("POST", "/v/"+name, headers...) + body, want: want, body: "hello"}
	}
	vs := []framingVariant{
		clte("cl-then-te", "Transfer-Encoding: chunked"),
		tecl("te-then-cl", "Transfer-Encoding: chunked"),
		tecl("te-chunked-cl-0", "Transfer-Encoding: chunked"),
		clte("te-gzip-chunked", "Transfer-Encoding: gzip, chunked"),
		clte("te-chunked-chunked", "Transfer-Encoding: chunked, chunked"),
		clte("te-xchunked", "Transfer-Encoding: xchunked"),
		clte("te-leading-space", "Transfer-Encoding:  \tchunked"),
		clte("te-trailing-space", "Transfer-Encoding: chunked \t"),
		clte("te-two-headers", "Transfer-Encoding: chunked", "Transfer-Encoding: identity"),
		clte("te-uppercase", "TRANSFER-ENCODING: CHUNKED"),
		{name: "te-http10", raw: strings.Replace(clte("te-http10", "Transfer-Encoding: chunked").raw, "HTTP/1.1", "HTTP/1.0", 1), want: []int{400}},
		withBody("cl-duplicate-differing", []int{400}, "hello!", "Content-Length: 5", "Content-Length: 6"),
		withBody("cl-plus", []int{400}, "hello", "Content-Length: +5"),
		withBody("cl-list", []int{400, 200}, "hello", "Content-Length: 5, 5"),
		withBody("cl-space-before-colon", []int{400}, "hello", "Content-Length : 5"),
		withBody("te-space-before-colon", []int{400}, "5\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding : chunked"),
		withBody("obs-fold", []int{400, 200}, "hello", "Content-Length: 5", "X-Folded: a", " b"),
		withBody("chunk-size-0x", []int{400}, "0x5\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding: chunked"),
		withBody("chunk-size-negative", []int{400}, "-5\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding: chunked"),
		withBody("chunk-ext-oversized", []int{400, 413, 431, 200}, "5;"+strings.Repeat("x", 70_000)+"\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding: chunked"),
		withBody("chunk-size-overflow", []int{400, 413}, "10000000000000005\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding: chunked"),
		{name: "host-missing", raw: "GET /v/host-missing HTTP/1.1\r\n\r\n", want: []int{400}},
		{name: "host-twice", raw: "GET /v/host-twice HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", want: []int{400}},
		// RFC 9112 §2.2 lets a recipient accept bare LF; holdfast's parser
		// does not, and answers 408 once timeouts.header passes: never a
		// desync, never a request with another meaning.
		{name: "bare-lf", raw: "POST /v/bare-lf HTTP/1.1\nHost: x\nContent-Length: 5\n\nhello", want: []int{400, 408, 200}, body: "hello"},
	}
	for _, v := range vs {
		variant(t, v.name, func(t *testing.T) {
			c := dialRaw(t, p.Addr)
			_ = c.trySend(v.raw)
			m, _, err := c.final("POST", 5*time.Second)
			if err != nil {
				t.Fatalf("no well-formed response: %v (read %s)", err, m)
			}
			statusIn(t, m, v.want...)
			nothingSeen(t, "/smuggled-"+v.name, be)
			var got []recorded
			for _, r := range be.requests() {
				if strings.Contains(r.Msg.Target, "/v/"+v.name) {
					got = append(got, r)
				}
			}
			if m.Status >= 200 && m.Status < 300 {
				if len(got) != 1 || got[0].Err != nil || string(got[0].Msg.Body) != v.body {
					t.Errorf("accepted, so exactly one whole request with body %q must reach the backend; got %d: %+v", v.body, len(got), got)
				}
				return
			}
			for _, r := range got {
				if r.Err == nil {
					t.Errorf("rejected with %d, yet a whole request reached the backend: %q", m.Status, headOf(r.Msg.Raw))
				}
			}
			mustClose(t, c, 2*time.Second)
		})
	}
}

// chunkedResponse is a chunked response carrying body, with a trailer.
func chunkedResponse(body string) string {
	return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n" +
		chunk([]byte(body), 7)[:len(chunk([]byte(body), 7))-2] + "X-Checksum: abc\r\n\r\n"
}

// caseHTTP10ClientNoChunked: an HTTP/1.0 client never gets a chunked body.
func caseHTTP10ClientNoChunked(t *testing.T, tg target) {
	const body = "a body of unknown length, sent chunked by the backend"
	be := startBackend(t, "B", serveEach(fixedResponder(chunkedResponse(body))))
	p := tg.start(t, onePool(be.Addr))
	c := dialRaw(t, p.Addr)
	c.send("GET /ten HTTP/1.0\r\nHost: " + confHost + "\r\n\r\n")
	m := c.mustFinal("GET")
	statusIn(t, m, 200)
	if m.Chunked || m.Has("Transfer-Encoding") {
		t.Errorf("HTTP/1.0 client got Transfer-Encoding %q", m.Values("Transfer-Encoding"))
	}
	if string(m.Body) != body {
		t.Errorf("body %q, want %q", m.Body, body)
	}
	if m.CloseDelimited && m.Has("Content-Length") {
		t.Errorf("close-delimited body with a Content-Length")
	}
}

// caseUpstreamCloseDelimited: an HTTP/1.0 backend without Content-Length
// ends its body by closing; the client gets the whole body, framed, and
// the next request works.
func caseUpstreamCloseDelimited(t *testing.T, tg target) {
	body := string(pattern(20_000))
	be := startBackend(t, "B", func(c *backendConn) {
		if _, err := c.next(); err == nil {
			c.write("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body)
		}
	})
	p := tg.start(t, onePool(be.Addr))
	c := dialRaw(t, p.Addr)
	for i := range 2 {
		c.send(request("GET", fmt.Sprintf("/close-delimited/%d", i)))
		m := c.mustFinal("GET")
		statusIn(t, m, 200)
		if string(m.Body) != body {
			t.Fatalf("request %d: body of %d bytes, want the backend's %d", i, len(m.Body), len(body))
		}
		if m.CloseDelimited || strings.EqualFold(m.Get("Connection"), "close") {
			c = dialRaw(t, p.Addr) // the proxy closed the client connection too: allowed
		}
	}
}

// caseChunkedResponseReused: a chunked response with trailers is read to
// its end and its upstream connection reused for the next request.
func caseChunkedResponseReused(t *testing.T, tg target) {
	const body = "chunked body in several chunks"
	be := startBackend(t, "B", serveEach(fixedResponder(chunkedResponse(body))))
	p := tg.start(t, onePool(be.Addr))
	c := dialRaw(t, p.Addr)
	for i := range 2 {
		c.send(request("GET", fmt.Sprintf("/chunked/%d", i), "TE: trailers"))
		m := c.mustFinal("GET")
		statusIn(t, m, 200)
		if string(m.Body) != body {
			t.Fatalf("request %d: body %q, want %q", i, m.Body, body)
		}
		if i == 0 {
			t.Logf("trailers to a TE: trailers client (informational): %v", m.Trailers)
		}
	}
	rs := be.waitRequests(t, 2, 5*time.Second)
	if len(rs) != 2 || rs[0].Conn != rs[1].Conn {
		var conns []int
		for _, r := range rs {
			conns = append(conns, r.Conn)
		}
		t.Errorf("requests reached the backend on connections %v, want both on one (the chunked response's connection reused)", conns)
	}
}

// caseExtraBytesNotReused: a backend connection that holds bytes nobody
// asked for (after a Content-Length body, a body on HEAD/204/304) is never
// reused: the next request gets a genuine response.
func caseExtraBytesNotReused(t *testing.T, tg target) {
	const spoof = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nspoofd"
	vs := []struct{ name, method, first string }{
		{"after-content-length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + spoof},
		{"head-with-body", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + spoof},
		{"204-with-body", "GET", "HTTP/1.1 204 No Content\r\n\r\n" + spoof},
		{"304-with-body", "GET", "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n" + spoof},
	}
	for _, v := range vs {
		variant(t, v.name, func(t *testing.T) {
			// The backend's first request gets the response with the
			// extra bytes; every later one, on any connection, "fresh".
			var n atomic.Int32
			be := startBackend(t, "B", serveEach(func(c *backendConn, m *httpMsg) bool {
				if n.Add(1) == 1 {
					c.write(v.first)
				} else {
					c.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
				}
				return true
			}))
			p := tg.start(t, onePool(be.Addr))
			c1 := dialRaw(t, p.Addr)
			c1.send(request(v.method, "/first"))
			m := c1.mustFinal(v.method)
			if strings.Contains(string(m.Body), "spoofd") {
				t.Errorf("first response carried the extra bytes: %s", m)
			}
			noMoreResponses(t, c1, 300*time.Millisecond)
			c2 := dialRaw(t, p.Addr)
			c2.send(request("GET", "/second"))
			m2 := c2.mustFinal("GET")
			if string(m2.Body) != "fresh" {
				t.Errorf("second request got %s, want the backend's genuine \"fresh\"", m2)
			}
		})
	}
}

// caseUpstreamCLAndTE: a backend response with both Content-Length and
// chunked must not reach the client that way (RFC 9112 6.3: chunked
// wins, Content-Length is removed), or is answered 502.
func caseUpstreamCLAndTE(t *testing.T, tg target) {
	be := startBackend(t, "B", serveEach(fixedResponder("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")))
	p := tg.start(t, onePool(be.Addr))
	c := dialRaw(t, p.Addr)
	c.send(request("GET", "/clte"))
	m, _, err := c.final("GET", 5*time.Second)
	if err != nil {
		t.Fatalf("response not well-formed: %v: %s", err, m)
	}
	if m.Status == 502 {
		return
	}
	statusIn(t, m, 200, 502)
	if string(m.Body) != "hello" {
		t.Errorf("body %q, want hello (chunked overrides Content-Length)", m.Body)
	}
}

// caseHeadContentLength: the Content-Length of a HEAD response is passed
// as is, with no body, and the connection stays usable.
func caseHeadContentLength(t *testing.T, tg target) {
	be := startBackend(t, "B", serveEach(func(c *backendConn, m *httpMsg) bool {
		if m.Method == "HEAD" {
			c.write("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/plain\r\n\r\n")
			return true
		}
		return okResponder("B")(c, m)
	}))
	p := tg.start(t, onePool(be.Addr))
	c := dialRaw(t, p.Addr)
	c.send(request("HEAD", "/head"))
	m := c.mustFinal("HEAD")
	statusIn(t, m, 200)
	if got := m.Get("Content-Length"); got != "1234" {
		t.Errorf("HEAD response Content-Length %q, want 1234 (the backend's)", got)
	}
	c.send(request("GET", "/after-head"))
	if m := c.mustFinal("GET"); string(m.Body) != "B" {
		t.Errorf("request after HEAD: %s", m)
	}
}

// caseInterim1xx: a 1xx from the backend does not end the exchange: the
// client gets the final response intact (RFC 9110 15.2: a proxy forwards
// 1xx; whether the 103 itself arrived is logged).
func caseInterim1xx(t *testing.T, tg target) {
	be := startBackend(t, "B", serveEach(fixedResponder("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")))
	p := tg.start(t, onePool(be.Addr))
	c := dialRaw(t, p.Addr)
	c.send(request("GET", "/hints"))
	m, interim, err := c.final("GET", 5*time.Second)
	if err != nil {
		t.Fatalf("%v: %s", err, m)
	}
	statusIn(t, m, 200)
	if string(m.Body) != "final" {
		t.Errorf("body %q, want final", m.Body)
	}
	t.Logf("interim responses forwarded (informational): %d", len(interim))
	c.send(request("GET", "/hints2"))
	if m := c.mustFinal("GET"); m.Status != 200 || string(m.Body) != "final" {
		t.Errorf("second request: %s", m)
	}
}

// --- headers ---

// caseForwardingHeaders: X-Forwarded-* sent in lowercase are replaced (or,
// from a trusted proxy, kept) as if they had any other case.
func caseForwardingHeaders(t *testing.T, tg target) {
	run := func(t *testing.T, trusted bool, wantProto, wantHost, wantFor string) {
		be := startBackend(t, "B", nil)
		spec := onePool(be.Addr)
		spec.TrustLoopback = trusted
		p := tg.start(t, spec)
		c := dialRaw(t, p.Addr)
		c.send(request("GET", "/fwd", "Host: app.test:8080", "x-forwarded-proto: https", "x-forwarded-host: evil.test", "x-forwarded-for: 1.2.3.4"))
		statusIn(t, c.mustFinal("GET"), 200)
		rs := be.waitRequests(t, 1, 5*time.Second)
		m := rs[0].Msg
		for _, h := range []struct{ name, want string }{{"X-Forwarded-Proto", wantProto}, {"X-Forwarded-Host", wantHost}} {
			if v := m.Values(h.name); len(v) != 1 || v[0] != h.want {
				t.Errorf("backend got %s %q, want exactly one, %q", h.name, v, h.want)
			}
		}
		xff := m.Values("X-Forwarded-For")
		if len(xff) != 1 {
			t.Errorf("backend got %d X-Forwarded-For headers %q, want one", len(xff), xff)
		}
		entries := strings.Split(strings.Join(xff, ","), ",")
		for i := range entries {
			entries[i] = strings.TrimSpace(entries[i])
		}
		if got := strings.Join(entries, ", "); got != wantFor {
			t.Errorf("X-Forwarded-For %q, want %q (the peer last)", got, wantFor)
		}
	}
	variant(t, "untrusted", func(t *testing.T) { run(t, false, "http", "app.test:8080", "1.2.3.4, 127.0.0.1") })
	variant(t, "trusted", func(t *testing.T) { run(t, true, "https", "evil.test", "1.2.3.4, 127.0.0.1") })
}

// caseHopByHop: hop-by-hop headers, in any case, are removed both ways;
// Host is passed as the client wrote it.
func caseHopByHop(t *testing.T, tg target) {
	be := startBackend(t, "B", serveEach(fixedResponder("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nconnection: x-internal\r\nx-internal: 1\r\nkeep-alive: timeout=5\r\nproxy-connection: keep-alive\r\nupgrade: foo\r\nx-end-to-end: kept\r\n\r\nok")))
	p := tg.start(t, onePool(be.Addr))
	c := dialRaw(t, p.Addr)
	c.send(request("GET", "/hop", "Host: ExAmple.com:8080", "connection: x-secret, keep-alive", "x-secret: 1", "keep-alive: 1",
		"proxy-connection: keep-alive", "te: gzip", "upgrade: foo", "trailer: x", "x-end-to-end: kept"))
	m := c.mustFinal("GET")
	variant(t, "request", func(t *testing.T) {
		rs := be.waitRequests(t, 1, 5*time.Second)
		r := rs[0].Msg
		for _, h := range []string{"x-secret", "keep-alive", "proxy-connection", "upgrade", "trailer"} {
			if r.Has(h) {
				t.Errorf("backend got hop-by-hop %s: %q", h, r.Values(h))
			}
		}
		for _, v := range r.Values("TE") {
			if !strings.EqualFold(strings.TrimSpace(v), "trailers") {
				t.Errorf("backend got TE %q (only trailers may pass)", v)
			}
		}
		for _, v := range r.Values("Connection") {
			if strings.Contains(strings.ToLower(v), "x-secret") {
				t.Errorf("backend got Connection %q", v)
			}
		}
		if v := r.Values("Host"); len(v) != 1 || v[0] != "ExAmple.com:8080" {
			t.Errorf("backend got Host %q, want ExAmple.com:8080 unchanged", v)
		}
		if r.Get("X-End-To-End") != "kept" {
			t.Errorf("end-to-end header lost")
		}
	})
	variant(t, "response", func(t *testing.T) {
		statusIn(t, m, 200)
		for _, h := range []string{"x-internal", "keep-alive", "proxy-connection", "upgrade"} {
			if m.Has(h) {
				t.Errorf("client got hop-by-hop %s: %q", h, m.Values(h))
			}
		}
		for _, v := range m.Values("Connection") {
			if strings.Contains(strings.ToLower(v), "x-internal") {
				t.Errorf("client got Connection %q", v)
			}
		}
		if m.Get("X-End-To-End") != "kept" {
			t.Errorf("end-to-end response header lost")
		}
	})
}

// --- paths ---

// casePaths: routing and the backend see the same, normalised path.
func casePaths(t *testing.T, tg target) {
	a, admin := startBackend(t, "A", nil), startBackend(t, "admin", nil)
	spec := proxySpec{
		Pools: []poolSpec{{Backends: []string{a.Addr}, Retries: -1}, {Name: "admin", Backends: []string{admin.Addr}, Retries: -1}},
		Routes: []routeSpec{
			{PathPrefix: "/admin/", Pool: "admin"},
			{Host: "other.test", Pool: "admin"},
		},
	}
	p := tg.start(t, spec)
	// seen returns the targets backend b got for requests tagged v.
	seen := func(b *rawBackend, v string) []string {
		var out []string
		for _, r := range b.requests() {
			if strings.HasSuffix(r.Msg.Target, "?v="+v) {
				out = append(out, strings.TrimSuffix(r.Msg.Target, "?v="+v))
			}
		}
		return out
	}
	forwarded := []struct{ name, target, want string }{
		{"dot-dot", "/a/../b", "/b"},
		{"dot", "/a/./b", "/a/b"},
		{"unreserved-decoded", "/%7euser", "/~user"},
	}
	for _, f := range forwarded {
		variant(t, f.name, func(t *testing.T) {
			c := dialRaw(t, p.Addr)
			c.send(request("GET", f.target+"?v="+f.name))
			statusIn(t, c.mustFinal("GET"), 200)
			if got := seen(a, f.name); len(got) != 1 || got[0] != f.want {
				t.Errorf("backend got %q for %s, want %s", got, f.target, f.want)
			}
		})
	}
	variant(t, "encoded-slash-reject", func(t *testing.T) {
		c := dialRaw(t, p.Addr)
		c.send(request("GET", "/x%2Fy?v=reject"))
		statusIn(t, c.mustFinal("GET"), 400)
		if got := append(seen(a, "reject"), seen(admin, "reject")...); len(got) > 0 {
			t.Errorf("an encoded slash reached a backend: %q", got)
		}
	})
	for _, bypass := range []struct{ name, target string }{{"admin-dot-dot", "/public/../admin/"}, {"admin-encoded", "/%61dmin/"}} {
		variant(t, bypass.name, func(t *testing.T) {
			c := dialRaw(t, p.Addr)
			c.send(request("GET", bypass.target+"?v="+bypass.name))
			m := c.mustFinal("GET")
			if got := seen(a, bypass.name); len(got) > 0 {
				t.Errorf("%s reached the default pool as %q: the /admin/ route was bypassed", bypass.target, got)
			}
			if m.Status == 400 {
				return
			}
			statusIn(t, m, 200, 400)
			if got := seen(admin, bypass.name); len(got) != 1 || got[0] != "/admin/" {
				t.Errorf("admin pool got %q, want /admin/ (routing and the backend see the same path)", got)
			}
		})
	}
	variant(t, "absolute-form", func(t *testing.T) {
		c := dialRaw(t, p.Addr)
		c.send(request("GET", "http://other.test/p?v=abs", "Host: ignored.test"))
		statusIn(t, c.mustFinal("GET"), 200)
		var got []string
		for _, r := range admin.requests() {
			if strings.Contains(r.Msg.Target, "v=abs") {
				got = append(got, r.Msg.Target+" Host="+strings.Join(r.Msg.Values("Host"), ","))
			}
		}
		if len(got) != 1 || got[0] != "/p?v=abs Host=other.test" {
			t.Errorf("the other.test route got %q, want [/p?v=abs Host=other.test]", got)
		}
		if len(seen(a, "abs")) > 0 {
			t.Errorf("absolute-form request routed on the Host header")
		}
	})
	variant(t, "encoded-slash-keep", func(t *testing.T) {
		a2, x := startBackend(t, "A", nil), startBackend(t, "x", nil)
		spec := proxySpec{
			Pools:            []poolSpec{{Backends: []string{a2.Addr}, Retries: -1}, {Name: "x", Backends: []string{x.Addr}, Retries: -1}},
			Routes:           []routeSpec{{PathPrefix: "/x/", Pool: "x"}},
			EncodedSlashKeep: true,
		}
		p := tg.start(t, spec)
		c := dialRaw(t, p.Addr)
		c.send(request("GET", "/x%2Fy?v=keep"))
		statusIn(t, c.mustFinal("GET"), 200)
		if got := seen(a2, "keep"); len(got) != 1 || got[0] != "/x%2Fy" {
			t.Errorf("default pool got %q, want /x%%2Fy as sent", got)
		}
		if got := seen(x, "keep"); len(got) > 0 {
			t.Errorf("the /x/ route matched an encoded slash: %q", got)
		}
	})
}

// --- upgrades ---

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// caseUpgrades: only listed protocols are tunnelled; h2c never.
func caseUpgrades(t *testing.T, tg target) {
	// The backend switches to any protocol it is asked for and then echoes
	// bytes upper-cased; otherwise it answers 200 "plain".
	be := startBackend(t, "B", func(c *backendConn) {
		for range 100 {
			m, err := c.next()
			if err != nil {
				return
			}
			up := m.Get("Upgrade")
			if up == "" {
				c.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
				continue
			}
			c.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + up + "\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + wsAccept(m.Get("Sec-WebSocket-Key")) + "\r\n\r\n")
			buf := make([]byte, 64)
			n, _ := c.r.br.Read(buf)
			c.write(strings.ToUpper(string(buf[:n])))
			return
		}
	})
	p := tg.start(t, onePool(be.Addr))
	variant(t, "websocket", func(t *testing.T) {
		c := dialRaw(t, p.Addr)
		c.send(request("GET", "/ws", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"))
		m := c.mustFinal("GET")
		statusIn(t, m, 101)
		if m.Status != 101 {
			return
		}
		c.send("ping")
		_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 4)
		if _, err := io.ReadFull(c.r.br, got); err != nil || string(got) != "PING" {
			t.Errorf("tunnel echoed %q, %v; want PING", got, err)
		}
	})
	variant(t, "unlisted-foo", func(t *testing.T) {
		c := dialRaw(t, p.Addr)
		c.send(request("GET", "/foo", "Upgrade: foo", "Connection: Upgrade"))
		m := c.mustFinal("GET")
		if m.Status == 101 {
			t.Fatalf("Upgrade: foo was tunnelled")
		}
		for _, r := range be.requests() {
			if r.Msg.Target == "/foo" && r.Msg.Has("Upgrade") {
				t.Errorf("backend got Upgrade %q", r.Msg.Values("Upgrade"))
			}
		}
		if m.Status != 200 || string(m.Body) != "plain" {
			t.Errorf("want the backend's normal answer, got %s", m)
		}
	})
	variant(t, "h2c-never", func(t *testing.T) {
		c := dialRaw(t, p.Addr)
		c.send(request("GET", "/h2c", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA", "Connection: Upgrade, HTTP2-Settings"))
		m := c.mustFinal("GET")
		if m.Status == 101 {
			t.Errorf("h2c upgrade tunnelled: %s", m)
		}
	})
}

// --- timeouts ---

// caseTimeouts: timeouts bound silence, not whole messages.
func caseTimeouts(t *testing.T, tg target) {
	const events = 15
	be := startBackend(t, "B", serveEach(func(c *backendConn, m *httpMsg) bool {
		switch m.Target {
		case "/stall":
			c.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
			_, _ = io.Copy(io.Discard, c.Conn) // stall until the proxy or the test ends the connection
			return false
		case "/sse":
			c.write("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for i := range events {
				<-tick.C
				ev := fmt.Sprintf("data: %d\n\n", i)
				c.write(fmt.Sprintf("%x\r\n%s\r\n", len(ev), ev))
			}
			c.write("0\r\n\r\n")
			return true
		}
		c.write(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(m.Body), m.Body))
		return true
	}))
	spec := onePool(be.Addr)
	spec.HeaderTimeout, spec.ReadTimeout, spec.WriteTimeout = time.Second, time.Second, time.Second
	spec.Pools[0].ResponseTimeout = time.Second
	p := tg.start(t, spec)
	variant(t, "header-stall-closed", func(t *testing.T) {
		c := dialRaw(t, p.Addr)
		start := time.Now()
		c.send("GET /slow HTTP/1.1\r\nHost: " + confHost + "\r\nX-Half: ")
		m, err := c.read("GET", 5*time.Second)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("half a header held the connection for 5s (timeouts.header: 1s)")
		}
		if err == nil && m.Status != 408 && m.Status != 400 {
			t.Errorf("got %s, want 408 or a close", m)
		}
		if d := time.Since(start); d > 3500*time.Millisecond {
			t.Errorf("closed after %s, want within ~1-3s", d)
		}
	})
	variant(t, "slow-body-not-cut", func(t *testing.T) {
		const n = events
		c := dialRaw(t, p.Addr)
		c.send(request("POST", "/slow-body", fmt.Sprintf("Content-Length: %d", n)))
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for i := range n {
			<-tick.C
			if err := c.trySend(string(rune('a' + i))); err != nil {
				t.Fatalf("cut after %d body bytes: %v", i, err)
			}
		}
		m := c.mustFinal("POST")
		statusIn(t, m, 200)
		if string(m.Body) != "abcdefghijklmno" {
			t.Errorf("echoed body %q", m.Body)
		}
	})
	variant(t, "response-stall-ends", func(t *testing.T) {
		c := dialRaw(t, p.Addr)
		start := time.Now()
		c.send(request("GET", "/stall"))
		m, _, err := c.final("GET", 6*time.Second)
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatalf("a backend stalled after its headers held the client for 6s (timeouts.response: 1s)")
		case err == nil && m.Status < 500:
			t.Errorf("got a whole %d response from a stalled backend: %s", m.Status, m)
		}
		if d := time.Since(start); d > 3500*time.Millisecond {
			t.Errorf("client connection ended after %s, want within ~3s", d)
		}
	})
	variant(t, "sse-not-cut", func(t *testing.T) {
		c := dialRaw(t, p.Addr)
		c.send(request("GET", "/sse"))
		m, _, err := c.final("GET", 8*time.Second)
		if err != nil {
			t.Fatalf("stream cut: %v after %q", err, m.Body)
		}
		if got := strings.Count(string(m.Body), "data: "); got != events {
			t.Errorf("%d events of %d arrived", got, events)
		}
	})
}

// --- blame ---

// caseBlame: malformed or aborted client bodies never count against the
// backend: after 40 of them it still serves (and, in holdfast, is not
// ejected).
func caseBlame(t *testing.T, tg target) {
	be := startBackend(t, "B", nil)
	spec := onePool(be.Addr)
	spec.Pools[0].Failures = 5
	p := tg.start(t, spec)
	for i := range 40 {
		c := dialRaw(t, p.Addr)
		if i%2 == 0 {
			_ = c.trySend(request("POST", "/bad-chunk", "Transfer-Encoding: chunked") + "5\r\nhello\r\nzz\r\n")
			_, _, _ = c.final("POST", 3*time.Second)
		} else {
			_ = c.trySend(request("POST", "/abort", "Content-Length: 100") + "0123456789")
		}
		_ = c.conn.Close()
	}
	c := dialRaw(t, p.Addr)
	c.send(request("GET", "/after"))
	m := c.mustFinal("GET")
	statusIn(t, m, 200)
	if string(m.Body) != "B" {
		t.Errorf("body %q, want the backend's", m.Body)
	}
	if p.Admin != "" {
		metrics := adminGet(t, p.Admin, "/metrics")
		for _, l := range strings.Split(metrics, "\n") {
			if strings.HasPrefix(l, "holdfast_backend_state{") && strings.Contains(l, `state="ejected"`) && strings.HasSuffix(l, " 1") {
				t.Errorf("backend ejected by client faults: %s", l)
			}
		}
	}
}

// adminGet fetches path from an admin listener with the raw client.
func adminGet(t *testing.T, addr, path string) string {
	t.Helper()
	c := dialRaw(t, addr)
	c.send("GET " + path + " HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
	m := c.mustFinal("GET")
	if m.Status != 200 {
		t.Fatalf("admin %s: %s", path, m)
	}
	return string(m.Body)
}

// --- expect, pipelining, errors ---

// caseExpect100: the client gets 100 Continue before sending the body; the
// backend gets the body once.
func caseExpect100(t *testing.T, tg target) {
	be := startBackend(t, "B", nil)
	p := tg.start(t, onePool(be.Addr))
	c := dialRaw(t, p.Addr)
	c.send(request("POST", "/expect", "Content-Length: 11", "Expect: 100-continue"))
	m, err := c.read("POST", 3*time.Second)
	if err != nil {
		t.Fatalf("no 100 Continue within 3s: %v", err)
	}
	if m.Status != 100 {
		t.Fatalf("got %s before the body, want 100 Continue", m)
	}
	c.send("hello world")
	statusIn(t, c.mustFinal("POST"), 200)
	rs := complete(be)
	if len(rs) != 1 || string(rs[0].Msg.Body) != "hello world" {
		t.Errorf("backend got %d whole requests %+v, want one with the body", len(rs), rs)
	}
}

// casePipelining: two requests in one write are answered in order.
func casePipelining(t *testing.T, tg target) {
	be := startBackend(t, "B", serveEach(func(c *backendConn, m *httpMsg) bool {
		c.write(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(m.Target), m.Target))
		return true
	}))
	p := tg.start(t, onePool(be.Addr))
	c := dialRaw(t, p.Addr)
	c.send(request("GET", "/first") + request("GET", "/second"))
	for _, want := range []string{"/first", "/second"} {
		if m := c.mustFinal("GET"); m.Status != 200 || string(m.Body) != want {
			t.Errorf("got %s, want 200 %s", m, want)
		}
	}
}

// caseErrors: oversized heads and bodies get their own status.
func caseErrors(t *testing.T, tg target) {
	be := startBackend(t, "B", nil)
	spec := onePool(be.Addr)
	spec.MaxBodyBytes = 1000
	p := tg.start(t, spec)
	variant(t, "header-too-large-431", func(t *testing.T) {
		c := dialRaw(t, p.Addr)
		_ = c.trySend(request("GET", "/big-header", "X-Big: "+strings.Repeat("b", 20_000)))
		statusIn(t, c.mustFinal("GET"), 431)
		nothingSeen(t, "/big-header", be)
	})
	variant(t, "body-too-large-413", func(t *testing.T) {
		c := dialRaw(t, p.Addr)
		_ = c.trySend(request("POST", "/big-body", "Content-Length: 5000") + string(pattern(5000)))
		statusIn(t, c.mustFinal("POST"), 413)
		for _, r := range complete(be) {
			if r.Msg.Target == "/big-body" {
				t.Errorf("an oversized body reached the backend")
			}
		}
	})
}

// caseMaxForwards: RFC 9110 7.6.2: a proxy answers OPTIONS/TRACE with
// Max-Forwards: 0 itself and decrements any other value.
func caseMaxForwards(t *testing.T, tg target) {
	be := startBackend(t, "B", nil)
	p := tg.start(t, onePool(be.Addr))
	variant(t, "zero-answered-by-proxy", func(t *testing.T) {
		c := dialRaw(t, p.Addr)
		c.send(request("OPTIONS", "/mf0", "Max-Forwards: 0"))
		m := c.mustFinal("OPTIONS")
		if m.Status >= 500 {
			t.Errorf("got %s", m)
		}
		nothingSeen(t, "/mf0", be)
	})
	variant(t, "decremented", func(t *testing.T) {
		c := dialRaw(t, p.Addr)
		c.send(request("OPTIONS", "/mf5", "Max-Forwards: 5"))
		statusIn(t, c.mustFinal("OPTIONS"), 200)
		for _, r := range be.requests() {
			if r.Msg.Target == "/mf5" && r.Msg.Get("Max-Forwards") != "4" {
				t.Errorf("backend got Max-Forwards %q, want 4", r.Msg.Values("Max-Forwards"))
			}
		}
	})
}
