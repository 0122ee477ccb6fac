package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// h2Client is a raw-frame h2c client that reads frames itself, with one
// HPACK encoder for the whole connection (so its dynamic table is used
// across streams, as a browser's is).
type h2Client struct {
	t   *testing.T
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dialH2Client(t *testing.T, addr string, settings ...http2.Setting) *h2Client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	h := &h2Client{t: t, c: c, fr: http2.NewFramer(c, c)}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.enc = hpack.NewEncoder(&h.buf)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	return h
}

// request sends a GET for path with extra fields on stream id.
func (h *h2Client) request(id uint32, path string, extra ...string) {
	h.t.Helper()
	h.buf.Reset()
	fields := append([]string{":method", "GET", ":scheme", "http", ":authority", "x", ":path", path}, extra...)
	for i := 0; i < len(fields); i += 2 {
		_ = h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.buf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		h.t.Fatal(err)
	}
}

// outcome reads frames until stream id ends: "reset PROTOCOL_ERROR" or
// "status 200 body ok\n"; SETTINGS are acknowledged, and the lengths of
// the stream's DATA frames are collected.
func (h *h2Client) outcome(id uint32) (string, []int) {
	h.t.Helper()
	status, body, sizes := "", "", []int(nil)
	_ = h.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return fmt.Sprintf("connection error %v", err), sizes
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = h.fr.WriteSettingsAck()
			}
		case *http2.GoAwayFrame:
			return fmt.Sprintf("goaway %v", f.ErrCode), sizes
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return fmt.Sprintf("reset %v", f.ErrCode), sizes
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				status = f.PseudoValue("status")
				if f.StreamEnded() {
					return "status " + status, sizes
				}
			}
		case *http2.DataFrame:
			if f.StreamID == id {
				body += string(f.Data())
				sizes = append(sizes, len(f.Data()))
				if n := len(f.Data()); n > 0 {
					_ = h.fr.WriteWindowUpdate(0, uint32(n))
					_ = h.fr.WriteWindowUpdate(id, uint32(n))
				}
				if f.StreamEnded() {
					return fmt.Sprintf("status %s body %q", status, body), sizes
				}
			}
		}
	}
}

// h2ClientOnOneBackend starts holdfast with a plain listener in front of
// one backend and connects an h2c (prior knowledge) client to it.
func h2ClientOnOneBackend(t *testing.T) (*testkit.Backend, *h2Client) {
	t.Helper()
	be := testkit.StartBackend(t, "b")
	a := startL4(t, fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: p }
pools:
  - { name: p, backends: [%s], health: { type: none } }
`, be.Addr))
	return be, dialH2Client(t, a.ListenerAddr("web").String())
}

// TestH2MalformedRequestsReset: requests carrying a connection-specific
// header field or a TE other than "trailers" are malformed (RFC 9113
// §8.2.2): each is reset with PROTOCOL_ERROR and never reaches a backend,
// while the connection (and the HPACK table the client keeps using) goes
// on serving the well-formed requests around them.
func TestH2MalformedRequestsReset(t *testing.T) {
	be, h := h2ClientOnOneBackend(t)
	ok := fmt.Sprintf("status 200 body %q", "b\n")
	cases := []struct {
		extra []string
		want  string
	}{
		{[]string{"x-indexed", "1"}, ok},
		{[]string{"x-indexed", "1", "connection", "keep-alive"}, "reset PROTOCOL_ERROR"},
		{[]string{"keep-alive", "timeout=5"}, "reset PROTOCOL_ERROR"},
		{[]string{"proxy-connection", "keep-alive"}, "reset PROTOCOL_ERROR"},
		{[]string{"transfer-encoding", "chunked"}, "reset PROTOCOL_ERROR"},
		{[]string{"upgrade", "websocket"}, "reset PROTOCOL_ERROR"},
		{[]string{"te", "gzip"}, "reset PROTOCOL_ERROR"},
		{[]string{"te", "trailers", "te", "trailers"}, "reset PROTOCOL_ERROR"},
		{[]string{"te", "trailers", "x-indexed", "1"}, ok},
		{[]string{"x-indexed", "1", "x-other", strings.Repeat("v", 300)}, ok},
	}
	for i, c := range cases {
		id := uint32(2*i + 1)
		h.request(id, "/", c.extra...)
		if got, _ := h.outcome(id); got != c.want {
			t.Errorf("stream %d with %q: got %s, want %s", id, c.extra, got, c.want)
		}
	}
	if n := be.Requests(); n != 3 {
		t.Errorf("backend got %d requests, want the 3 well-formed ones", n)
	}
}

// TestH2DuplicateSettingsApplyInOrder: one SETTINGS frame naming
// SETTINGS_INITIAL_WINDOW_SIZE twice is legal and its values apply in
// order (RFC 9113 §6.5.3): it is acknowledged, and the last value (1)
// governs the response's DATA frames.
func TestH2DuplicateSettingsApplyInOrder(t *testing.T) {
	_, h := h2ClientOnOneBackend(t)
	if err := h.fr.WriteSettings(
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1},
	); err != nil {
		t.Fatal(err)
	}
	h.request(1, "/")
	got, sizes := h.outcome(1)
	if got != fmt.Sprintf("status 200 body %q", "b\n") {
		t.Fatalf("got %s", got)
	}
	for _, n := range sizes {
		if n > 1 {
			t.Fatalf("DATA frames of %v bytes: the window of 1 was not applied", sizes)
		}
	}
}

// TestH2OnlyListener: a plain http2_only listener serves h2c with prior
// knowledge and answers anything else with a GOAWAY (PROTOCOL_ERROR)
// and a close, never an HTTP/1.1 response; a listener shared with
// HTTP/1.1 does the same for a broken h2 preface ("PRI * HTTP/2.0" and
// then something else) and still serves HTTP/1.1. A TLS http2_only
// listener offers only "h2".
func TestH2OnlyListener(t *testing.T) {
	be := testkit.StartBackend(t, "b")
	cert, key, _ := writeCert(t, t.TempDir(), "tls", 1, "localhost")
	a := startL4(t, fmt.Sprintf(`
listeners:
  - { name: only, listen: 127.0.0.1:0, pool: p, http2_only: true }
  - { name: shared, listen: 127.0.0.1:0, pool: p }
  - { name: tls, listen: 127.0.0.1:0, pool: p, http2_only: true, tls: [ { cert_file: %s, key_file: %s } ] }
pools:
  - { name: p, backends: [%s], health: { type: none } }
`, cert, key, be.Addr))
	goaway := "\x00\x00\x08\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
	answer := func(listener, send string) string {
		c, err := net.DialTimeout("tcp", a.ListenerAddr(listener).String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, send); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(send, "GET") && listener == "shared" {
			line, _ := bufio.NewReader(c).ReadString('\n')
			return line
		}
		b, err := io.ReadAll(c)
		if err != nil {
			return "error " + err.Error()
		}
		return string(b)
	}
	get := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, c := range []struct{ listener, send, want string }{
		{"only", get, goaway},
		{"only", "INVALID CONNECTION PREFACE\r\n\r\n", goaway},
		{"shared", "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", goaway},
		{"shared", get, "HTTP/1.1 200 OK\r\n"},
	} {
		if got := answer(c.listener, c.send); got != c.want {
			t.Errorf("%s listener, %q: got %q, want %q", c.listener, c.send, got, c.want)
		}
	}
	h := dialH2Client(t, a.ListenerAddr("only").String())
	h.request(1, "/")
	if got, _ := h.outcome(1); got != fmt.Sprintf("status 200 body %q", "b\n") {
		t.Errorf("h2c on the http2_only listener: %s", got)
	}
	// A TLS client speaking HTTP/1.1 only: Go's TLS server completes the
	// handshake without ALPN (its http/1.1 fallback), and holdfast then
	// closes the connection without answering.
	dialTLS := func(protos ...string) (string, string) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", a.ListenerAddr("tls").String(),
			&tls.Config{InsecureSkipVerify: true, NextProtos: protos})
		if err != nil {
			return "", "handshake: " + err.Error()
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		p := c.ConnectionState().NegotiatedProtocol
		if p == "h2" {
			return p, ""
		}
		_, _ = io.WriteString(c, get)
		b, _ := io.ReadAll(c)
		return p, string(b)
	}
	if p, rest := dialTLS("h2", "http/1.1"); p != "h2" {
		t.Errorf("TLS client offering h2 and http/1.1: %q (%s); want h2", p, rest)
	}
	if p, rest := dialTLS("http/1.1"); p != "" || rest != "" && !strings.HasPrefix(rest, "handshake: ") {
		t.Errorf("TLS client offering only http/1.1 on an http2_only listener: ALPN %q, answered %q", p, rest)
	}
}
