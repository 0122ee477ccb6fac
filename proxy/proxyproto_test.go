package proxy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/internal/testkit"
	"github.com/holdfast-lb/holdfast/proxy"
)

var (
	ppClient = &net.TCPAddr{IP: net.ParseIP("203.0.113.7").To4(), Port: 4242}
	ppFront  = &net.TCPAddr{IP: net.ParseIP("198.51.100.1").To4(), Port: 443}
)

func ppHeader(t *testing.T, version byte) []byte {
	t.Helper()
	b, err := proxyproto.HeaderProxyFromAddrs(version, ppClient, ppFront).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ppAnnouncer is a backend that expects a PROXY header, answers
// "vN SRC DST\n" with what it announced, then echoes.
func ppAnnouncer(c net.Conn) {
	br := bufio.NewReader(c)
	h, err := proxyproto.Read(br)
	if err != nil {
		fmt.Fprintf(c, "no header: %v\n", err)
		return
	}
	fmt.Fprintf(c, "v%d %s %s\n", h.Version, h.SourceAddr, h.DestinationAddr)
	_, _ = io.Copy(c, br)
}

func TestProxyProtocolTCP(t *testing.T) {
	b := startL4Backend(t, ppAnnouncer)
	a := startL4(t, fmt.Sprintf(`
listeners:
  - { name: send-v1, listen: 127.0.0.1:0, protocol: tcp, pool: v1, proxy_protocol: true }
  - { name: send-v2, listen: 127.0.0.1:0, protocol: tcp, pool: v2, proxy_protocol: true }
pools:
  - { name: v1, backends: [%[1]s], health: { type: none }, send_proxy_protocol: v1 }
  - { name: v2, backends: [%[1]s], health: { type: none }, send_proxy_protocol: v2 }
`, b.Addr))
	for _, in := range []byte{1, 2} {
		for _, out := range []byte{1, 2} {
			t.Run(fmt.Sprintf("accept v%d send v%d", in, out), func(t *testing.T) {
				c := dialL4(t, a, fmt.Sprintf("send-v%d", out))
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				// Header and first payload bytes in one segment, as a
				// fronting balancer sends them.
				if _, err := c.Write(append(ppHeader(t, in), "payload"...)); err != nil {
					t.Fatal(err)
				}
				br := bufio.NewReader(c)
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				if want := fmt.Sprintf("v%d %s %s\n", out, ppClient, ppFront); line != want {
					t.Fatalf("backend was told %q, want %q", line, want)
				}
				got := make([]byte, len("payload"))
				if _, err := io.ReadFull(br, got); err != nil || string(got) != "payload" {
					t.Fatalf("payload after the header: %q, %v", got, err)
				}
			})
		}
	}
}

func TestProxyProtocolHTTPForwardedFor(t *testing.T) {
	be := testkit.StartBackend(t, "b")
	be.SetHandler(func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyString(string(ctx.Request.Header.Peek("X-Forwarded-For")))
	})
	a := startL4(t, fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: p, proxy_protocol: true }
pools:
  - { name: p, balance: consistent_hash, backends: [%s], health: { type: none } }
`, be.Addr))
	for _, v := range []byte{1, 2} {
		c := dialL4(t, a, "web")
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		req := "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
		if _, err := c.Write(append(ppHeader(t, v), req...)); err != nil {
			t.Fatal(err)
		}
		resp, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(resp, []byte("\r\n\r\n203.0.113.7")) {
			t.Fatalf("v%d: X-Forwarded-For is not the PROXY client address:\n%s", v, resp)
		}
	}
}

// TestProxyProtocolBadHeaders sends garbage, truncated, oversized and
// slow headers: each of those connections is closed, alone, once found bad
// or at the header timeout, while good connections keep being served.
func TestProxyProtocolBadHeaders(t *testing.T) {
	e := startL4Backend(t, echo)
	hb := testkit.StartBackend(t, "h")
	a := startL4(t, fmt.Sprintf(`
listeners:
  - { name: l4, listen: 127.0.0.1:0, protocol: tcp, pool: p, proxy_protocol: true, timeouts: { read: 2s } }
  - { name: web, listen: 127.0.0.1:0, pool: h, proxy_protocol: true, timeouts: { read: 2s } }
pools:
  - { name: p, backends: [%s], health: { type: none } }
  - { name: h, backends: [%s], health: { type: none } }
`, e.Addr, hb.Addr))
	v2 := ppHeader(t, 2)
	bad := []struct {
		name string
		send []byte
		hold bool // keep the write side open (a slow or stalled sender)
	}{
		{name: "no header", send: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{name: "v1 truncated", send: []byte("PROXY TCP4 203.0.113.7 198.51.100.1 4242")},
		{name: "v1 bad address", send: []byte("PROXY TCP4 999.0.0.1 198.51.100.1 4242 443\r\nx")},
		{name: "v1 too long", send: []byte("PROXY TCP4 " + strings.Repeat("1", 200) + "\r\n")},
		{name: "v2 truncated", send: v2[:20]},
		{name: "v2 bad length", send: append(append([]byte{}, v2[:14]...), 0xff, 0xff, 1, 2, 3)},
		{name: "v2 bad version", send: append(append(append([]byte{}, v2[:12]...), 0x31), v2[13:]...)},
		{name: "empty", send: nil},
		{name: "slow", send: []byte("PROXY TC"), hold: true},
		{name: "silent", send: nil, hold: true},
	}
	for _, listener := range []string{"l4", "web"} {
		t.Run(listener, func(t *testing.T) {
			t.Parallel()
			var wg sync.WaitGroup
			errs := make(chan error, len(bad)+8)
			for _, tc := range bad {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := net.DialTimeout("tcp", a.ListenerAddr(listener).String(), 5*time.Second)
					if err != nil {
						errs <- err
						return
					}
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					if len(tc.send) > 0 {
						_, _ = c.Write(tc.send)
					}
					if !tc.hold {
						_ = c.(*net.TCPConn).CloseWrite()
					}
					// holdfast must close it: EOF or reset, never a timeout here,
					// and never anything the backend sent.
					n, err := io.Copy(io.Discard, c)
					var ne net.Error
					switch {
					case errors.As(err, &ne) && ne.Timeout():
						errs <- fmt.Errorf("%s: still open after 5s", tc.name)
					case n > 0 && listener == "l4":
						errs <- fmt.Errorf("%s: %d bytes came back through the proxy", tc.name, n)
					}
				}()
			}
			// Meanwhile, good connections on the same listener are served
			// well within the 2s header timeout the slow ones hold out for:
			// nothing waits on another connection's header.
			for i := range 5 {
				c, err := net.DialTimeout("tcp", a.ListenerAddr(listener).String(), 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = c.Write(ppHeader(t, byte(1+i%2)))
				if listener == "web" {
					_ = c.SetDeadline(time.Now().Add(time.Second))
					_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
					resp, err := io.ReadAll(c)
					if err != nil || !bytes.HasPrefix(resp, []byte("HTTP/1.1 200")) || !bytes.HasSuffix(resp, []byte("h\n")) {
						t.Errorf("good request %d beside bad ones: %q, %v", i, resp, err)
					}
				} else {
					msg := fmt.Sprintf("good %d", i)
					if s, err := roundTrip(c, msg, time.Second); err != nil || s != msg {
						t.Errorf("good connection %d beside bad ones: %q, %v", i, s, err)
					}
				}
				_ = c.Close()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// pipeListener hands out the server ends of in-memory pipes.
type pipeListener struct {
	conns chan net.Conn
}

func (l *pipeListener) Accept() (net.Conn, error) {
	c, ok := <-l.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l *pipeListener) Close() error   { return nil }
func (l *pipeListener) Addr() net.Addr { return ppFront }

// FuzzProxyProtoConn feeds arbitrary bytes to the PROXY listener's
// connection: it never panics, never hangs past the header timeout, and
// when pires/go-proxyproto accepts a header the connection yields exactly
// the bytes after it (including those read along with the header) and
// announces the header's source address.
func FuzzProxyProtoConn(f *testing.F) {
	v1, _ := proxyproto.HeaderProxyFromAddrs(1, ppClient, ppFront).Format()
	v2, _ := proxyproto.HeaderProxyFromAddrs(2, ppClient, ppFront).Format()
	f.Add(append(append([]byte{}, v1...), "hello"...))
	f.Add(append(append([]byte{}, v2...), "hello"...))
	f.Add([]byte("PROXY UNKNOWN\r\nhello"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add(v2[:13])
	pl := &pipeListener{conns: make(chan net.Conn, 1)}
	ln := proxy.NewProxyProtoListener(pl, proxy.ProxyProtoOptions{Timeout: time.Second, Log: slog.New(slog.DiscardHandler)})
	f.Fuzz(func(t *testing.T, data []byte) {
		// What the library makes of the same bytes.
		r := bytes.NewReader(data)
		br := bufio.NewReaderSize(r, 1024)
		want, werr := proxyproto.Read(br)
		consumed := len(data) - r.Len() - br.Buffered()

		client, server := net.Pipe()
		pl.conns <- server
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			_, _ = client.Write(data)
			_ = client.Close()
		}()
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		addr := c.RemoteAddr()
		got, err := io.ReadAll(c)
		if werr != nil || (want.Version != 1 && want.Version != 2) {
			if err == nil {
				t.Fatalf("header rejected by the library (%v) but the connection read %q", werr, got)
			}
			return
		}
		if err != nil {
			t.Fatalf("valid header, read failed: %v", err)
		}
		if !bytes.Equal(got, data[consumed:]) {
			t.Fatalf("payload after the header: got %q, want %q", got, data[consumed:])
		}
		if want.Command.IsProxy() && want.SourceAddr != nil && addr.String() != want.SourceAddr.String() {
			t.Fatalf("RemoteAddr %s, header says %s", addr, want.SourceAddr)
		}
	})
}

// TestProxyProtocolHashesOnClient: with consistent_hash on client_ip, the
// address a PROXY header carries is the key, not the fronting balancer's.
func TestProxyProtocolHashesOnClient(t *testing.T) {
	named := func(name string) func(net.Conn) {
		return func(c net.Conn) { _, _ = io.WriteString(c, name) }
	}
	b1, b2 := startL4Backend(t, named("b1")), startL4Backend(t, named("b2"))
	a := startL4(t, fmt.Sprintf(`
listeners:
  - { name: l4, listen: 127.0.0.1:0, protocol: tcp, pool: p, proxy_protocol: true }
pools:
  - { name: p, balance: consistent_hash, backends: [%s, %s], health: { type: none } }
`, b1.Addr, b2.Addr))
	servedBy := func(client net.IP) string {
		c := dialL4(t, a, "l4")
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		h, _ := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: client, Port: 1000}, ppFront).Format()
		if _, err := c.Write(h); err != nil {
			t.Fatal(err)
		}
		name, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		return string(name)
	}
	seen := map[string]bool{}
	for i := range 32 {
		ip := net.IPv4(203, 0, 113, byte(i+1)).To4()
		first := servedBy(ip)
		for range 3 {
			if again := servedBy(ip); again != first {
				t.Fatalf("client %s went to %s, then %s", ip, first, again)
			}
		}
		seen[first] = true
	}
	if len(seen) != 2 {
		t.Fatalf("32 clients all hashed to %v: the PROXY address is not the key", seen)
	}
}

// dialFrom connects to addr from the local address ip (127.0.0.2 is a
// second loopback peer on Linux, outside a trust list of 127.0.0.1).
func dialFrom(t *testing.T, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ip, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// exchange writes send, half-closes and reads everything back; closed
// reports that holdfast closed the connection without a byte of answer.
func exchange(t *testing.T, c net.Conn, send []byte) (reply string, closed bool) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(send); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection neither answered nor closed within 5s (read %q)", b)
	}
	return string(b), len(b) == 0
}

// TestProxyProtocolTrust: with trusted_proxies set, a trusted peer's PROXY
// header is believed; an untrusted peer that sends one is closed and
// counted; an untrusted peer that sends none is served under its own
// address. What a backend sees is checked on an HTTP listener (the last
// X-Forwarded-For entry) and a TCP one (the PROXY header holdfast sends
// on).
func TestProxyProtocolTrust(t *testing.T) {
	hb := testkit.StartBackend(t, "h")
	hb.SetHandler(func(ctx *fasthttp.RequestCtx) {
		xff := strings.Split(string(ctx.Request.Header.Peek("X-Forwarded-For")), ",")
		ctx.SetBodyString("client=" + strings.TrimSpace(xff[len(xff)-1]))
	})
	lb := startL4Backend(t, ppAnnouncer)
	a := startL4(t, fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: h, proxy_protocol: true, trusted_proxies: [127.0.0.1], timeouts: { read: 2s } }
  - { name: l4, listen: 127.0.0.1:0, protocol: tcp, pool: t, proxy_protocol: true, trusted_proxies: [127.0.0.1/32], timeouts: { read: 2s } }
pools:
  - { name: h, backends: [%s], health: { type: none } }
  - { name: t, backends: [%s], health: { type: none }, send_proxy_protocol: v2 }
`, hb.Addr, lb.Addr))
	const trusted, untrusted = "127.0.0.1", "127.0.0.2"
	v1, v2 := ppHeader(t, 1), ppHeader(t, 2)
	cases := []struct {
		name   string
		from   string
		header []byte
		method string // http only; default GET
		empty  bool   // send nothing at all, just close
		client string // what the backend sees; "" = closed
		reason string // the rejected_total reason that counts it, if any
	}{
		{name: "trusted v1", from: trusted, header: v1, client: "203.0.113.7"},
		{name: "trusted v2", from: trusted, header: v2, client: "203.0.113.7"},
		{name: "untrusted v1", from: untrusted, header: v1, reason: "proxy_untrusted"},
		{name: "untrusted v2", from: untrusted, header: v2, reason: "proxy_untrusted"},
		{name: "untrusted malformed v1", from: untrusted, header: []byte("PROXY TCP4 999.0.0.1 x\r\n"), reason: "proxy_untrusted"},
		{name: "untrusted without a header", from: untrusted, client: untrusted},
		{name: "untrusted PROPFIND shares a prefix with PROXY", from: untrusted, method: "PROPFIND", client: untrusted},
		{name: "untrusted closes before its first byte", from: untrusted, empty: true},
		{name: "trusted without a header", from: trusted, reason: "bad_proxy_header"},
		{name: "trusted closes before its first byte (a TCP health check)", from: trusted, empty: true},
		{name: "trusted malformed v1", from: trusted, header: []byte("PROXY TCP4 999.0.0.1 198.51.100.1 4242 443\r\n"), reason: "bad_proxy_header"},
		{name: "trusted v2 of a bad version", from: trusted, header: cat(cat(v2[:12], []byte{0x31}), v2[13:]), reason: "bad_proxy_header"},
	}
	for _, listener := range []string{"web", "l4"} {
		for _, c := range cases {
			t.Run(listener+"/"+c.name, func(t *testing.T) {
				metric := func(reason string) float64 {
					return testkit.Metric(t, a.Registry(), "holdfast_listener_rejected_total", map[string]string{"listener": listener, "reason": reason})
				}
				before := map[string]float64{"proxy_untrusted": metric("proxy_untrusted"), "bad_proxy_header": metric("bad_proxy_header")}
				conn := dialFrom(t, c.from, a.ListenerAddr(listener).String())
				var payload []byte
				if listener == "web" {
					m := c.method
					if m == "" {
						m = "GET"
					}
					payload = []byte(m + " / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
				} else {
					payload = []byte("ping")
				}
				if c.empty {
					payload = nil
				}
				reply, closed := exchange(t, conn, cat(c.header, payload))
				switch {
				case c.client == "" && !closed:
					t.Fatalf("want the connection closed, got %q", reply)
				case c.client != "" && listener == "web" && !strings.HasSuffix(reply, "\r\n\r\nclient="+c.client):
					t.Fatalf("backend saw the wrong client, want %s:\n%s", c.client, reply)
				case c.client != "" && listener == "l4" && !strings.HasPrefix(reply, "v2 "+c.client+":"):
					t.Fatalf("backend was announced the wrong client, want %s: %q", c.client, reply)
				case c.client != "" && listener == "l4" && !strings.HasSuffix(reply, "\n"+string(payload)):
					t.Fatalf("payload did not reach the backend whole: %q", reply)
				}
				for reason, was := range before {
					want := was
					if reason == c.reason {
						want++
					}
					if got := metric(reason); got != want {
						t.Errorf("holdfast_listener_rejected_total{listener=%q,reason=%q} = %v, want %v", listener, reason, got, want)
					}
				}
			})
		}
	}
}

// TestProxyProtocolTrustReload: trusted_proxies changes with a reload, on
// the listener that keeps its socket.
func TestProxyProtocolTrustReload(t *testing.T) {
	hb := testkit.StartBackend(t, "h")
	hb.SetHandler(func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyString("client=" + string(ctx.Request.Header.Peek("X-Forwarded-For")))
	})
	// A fixed address: the listener keeps its socket across the reload.
	addr := testkit.FreeAddr(t)
	doc := func(trusted string) string {
		return fmt.Sprintf(`
listeners:
  - { name: web, listen: %s, pool: h, proxy_protocol: true, trusted_proxies: [%s] }
pools:
  - { name: h, backends: [%s], health: { type: none } }
`, addr, trusted, hb.Addr)
	}
	a := startL4(t, doc("10.0.0.0/8"))
	req := cat(ppHeader(t, 2), []byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
	if reply, closed := exchange(t, dialFrom(t, "127.0.0.1", addr), req); !closed {
		t.Fatalf("before the reload, 127.0.0.1 is untrusted; got %q", reply)
	}
	if err := os.WriteFile(a.Path, []byte(doc("127.0.0.1")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if reply, _ := exchange(t, dialFrom(t, "127.0.0.1", addr), req); !strings.HasSuffix(reply, "client=203.0.113.7") {
		t.Fatalf("after the reload, 127.0.0.1 is trusted and its header believed; got %q", reply)
	}
}

func cat(a, b []byte) []byte { return append(append([]byte{}, a...), b...) }
