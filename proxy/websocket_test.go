package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// wsEchoServer is a gorilla/websocket echo server on 127.0.0.1; each
// upgrade's X-Forwarded-For is sent to seen. /deny answers 403.
func wsEchoServer(t *testing.T, seen chan<- string) *httptest.Server {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/deny" {
			http.Error(w, "no websocket for you", http.StatusForbidden)
			return
		}
		select {
		case seen <- r.Header.Get("X-Forwarded-For"):
		default:
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		// Greet first, so a frame follows the 101 at once.
		if err := c.WriteMessage(websocket.TextMessage, []byte("welcome")); err != nil {
			return
		}
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, msg); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestWebSocketEcho(t *testing.T) {
	seen := make(chan string, 4)
	srv := wsEchoServer(t, seen)
	backend := srv.Listener.Addr().String()
	dir := t.TempDir()
	crt, key, cert := writeCert(t, dir, "ws", 7, "ws.test")
	a := startL4(t, fmt.Sprintf(`
listeners:
  - { name: ws, listen: 127.0.0.1:0, pool: p, timeouts: { idle: 5s } }
  - name: wss
    listen: 127.0.0.1:0
    pool: p
    tls: [{ cert_file: %q, key_file: %q }]
pools:
  - { name: p, backends: [%s], health: { type: none } }
`, crt, key, backend))
	roots := x509.NewCertPool()
	roots.AddCert(cert)

	for _, tc := range []struct {
		name, url string
		dialer    *websocket.Dialer
	}{
		{"plain", "ws://" + a.ListenerAddr("ws").String() + "/echo", &websocket.Dialer{HandshakeTimeout: 5 * time.Second}},
		{"over TLS", "wss://" + a.ListenerAddr("wss").String() + "/echo", &websocket.Dialer{
			HandshakeTimeout: 5 * time.Second,
			TLSClientConfig:  &tls.Config{ServerName: "ws.test", RootCAs: roots},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, resp, err := tc.dialer.Dial(tc.url, nil)
			if err != nil {
				t.Fatalf("dial through holdfast: %v (response %v)", err, resp)
			}
			defer c.Close()
			if xff := <-seen; xff != "127.0.0.1" {
				t.Errorf("backend saw X-Forwarded-For %q", xff)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "welcome" {
				t.Fatalf("greeting: %q, %v", msg, err)
			}
			big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
			msgs := []struct {
				mt   int
				data []byte
			}{{websocket.TextMessage, []byte("hello")}, {websocket.BinaryMessage, big}, {websocket.TextMessage, []byte("bye")}}
			for _, m := range msgs {
				if err := c.WriteMessage(m.mt, m.data); err != nil {
					t.Fatal(err)
				}
				mt, got, err := c.ReadMessage()
				if err != nil || mt != m.mt || !bytes.Equal(got, m.data) {
					t.Fatalf("echo of %d bytes: type %d, %d bytes, %v", len(m.data), mt, len(got), err)
				}
			}
			if err := c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")); err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Fatalf("closing handshake: %v", err)
			}
		})
	}

	t.Run("refused upgrade is relayed", func(t *testing.T) {
		d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		_, resp, err := d.Dial("ws://"+a.ListenerAddr("ws").String()+"/deny", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("got %v, %v; want the backend's 403", resp, err)
		}
	})

	t.Run("backend down", func(t *testing.T) {
		b := startL4(t, fmt.Sprintf(`
listeners:
  - { name: ws, listen: 127.0.0.1:0, pool: p }
pools:
  - { name: p, backends: [%s, %s], health: { type: none } }
`, testkit.FreeAddr(t), backend))
		d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		for i := range 4 {
			c, resp, err := d.Dial("ws://"+b.ListenerAddr("ws").String()+"/echo", nil)
			if err != nil {
				t.Fatalf("upgrade %d with one backend down: %v (%v)", i, err, resp)
			}
			<-seen
			_ = c.Close()
		}
	})

	t.Run("drain closes upgraded connections after timeouts.drain", func(t *testing.T) {
		b := startL4(t, fmt.Sprintf(`
listeners:
  - { name: ws, listen: 127.0.0.1:0, pool: p, timeouts: { drain: 300ms } }
pools:
  - { name: p, backends: [%s], health: { type: none } }
`, backend))
		d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		c, _, err := d.Dial("ws://"+b.ListenerAddr("ws").String()+"/echo", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		<-seen
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := c.ReadMessage(); err != nil { // welcome
			t.Fatal(err)
		}
		stopped := make(chan struct{})
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			b.Shutdown(ctx)
			close(stopped)
		}()
		start := time.Now()
		_, _, err = c.ReadMessage()
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("upgraded connection still open during shutdown: %v", err)
		}
		if el := time.Since(start); el < 250*time.Millisecond {
			t.Fatalf("closed after %s, before timeouts.drain", el)
		}
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			t.Fatal("Shutdown did not return")
		}
	})
}

// TestUpgradeRawProtocol drives a non-WebSocket Upgrade by hand: header
// names in lower case, "keep-alive, upgrade" as the Connection tokens,
// client bytes sent right behind the request and backend bytes right
// behind its 101 (both buffered by the HTTP parsers on the way), and a
// half-close from the client passed through.
func TestUpgradeRawProtocol(t *testing.T) {
	gotReq := make(chan string, 1)
	b := startL4Backend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
			head.WriteString(line)
		}
		gotReq <- head.String()
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\n\r\nHELLO")
		_, _ = io.Copy(c, br)
		_ = c.(*net.TCPConn).CloseWrite()
	})
	a := startL4(t, fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: p, upgrades: [websocket, echo-proto] }
pools:
  - { name: p, backends: [%s], health: { type: none } }
`, b.Addr))
	c := dialL4(t, a, "web")
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET /chat HTTP/1.1\r\nhost: x\r\nconnection: keep-alive, upgrade\r\nupgrade: echo-proto\r\n\r\nping"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 101 ") {
		t.Fatalf("status line %q, %v", status, err)
	}
	var head strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
		head.WriteString(strings.ToLower(line))
	}
	if h := head.String(); !strings.Contains(h, "upgrade: echo-proto") || !strings.Contains(h, "connection: upgrade") {
		t.Fatalf("101 lost its Upgrade/Connection headers:\n%s", h)
	}
	h := strings.ToLower(<-gotReq)
	for _, want := range []string{"connection: upgrade\r\n", "upgrade: echo-proto\r\n", "x-forwarded-for: 127.0.0.1\r\n"} {
		if !strings.Contains(h, want) {
			t.Fatalf("backend request lacks %q:\n%s", want, h)
		}
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "HELLOping" {
		t.Fatalf("after the 101: %q, %v; want HELLOping then EOF", rest, err)
	}
}
