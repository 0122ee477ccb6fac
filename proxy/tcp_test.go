package proxy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// l4Backend is a raw TCP server on 127.0.0.1:0 running handle for each
// connection; it closes its listener and connections at the end of the test.
type l4Backend struct {
	Addr  string
	ln    net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startL4Backend(t testing.TB, handle func(net.Conn)) *l4Backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &l4Backend{Addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns[c] = struct{}{}
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer func() {
					_ = c.Close()
					b.mu.Lock()
					delete(b.conns, c)
					b.mu.Unlock()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		b.mu.Lock()
		for c := range b.conns {
			_ = c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

// echo copies c back to itself and passes the client's FIN back.
func echo(c net.Conn) {
	_, _ = io.Copy(c, c)
	_ = c.(*net.TCPConn).CloseWrite()
}

// startL4 starts holdfast with yaml and waits until it is ready.
func startL4(t testing.TB, yaml string) *testkit.App {
	t.Helper()
	a := testkit.StartApp(t, yaml)
	testkit.WaitFor(t, 5*time.Second, "holdfast ready", a.Ready)
	return a
}

func dialL4(t testing.TB, a *testkit.App, listener string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", a.ListenerAddr(listener).String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

// roundTrip writes msg and reads the same number of bytes back.
func roundTrip(c net.Conn, msg string, timeout time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return string(buf), err
}

// gaugeValue reads one gauge series from the registry (-1 if absent).
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

func tcpConfig(backends []string, extraListener, extraPool string) string {
	return fmt.Sprintf(`
listeners:
  - name: l4
    listen: 127.0.0.1:0
    protocol: tcp
    pool: p
%s
pools:
  - name: p
    balance: least_conn
    backends: [%s]
    health: { type: none }
%s
`, extraListener, strings.Join(backends, ", "), extraPool)
}

var patternBase = func() []byte {
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = byte(i ^ i>>8)
	}
	return b
}()

// pattern fills b (64 KiB) with bytes that carry its offset, so a
// reordered or dropped chunk changes the hash.
func pattern(b []byte, off int64) {
	copy(b, patternBase)
	binary.BigEndian.PutUint64(b, uint64(off))
}

func TestTCPLargeTransfer(t *testing.T) {
	const size = 64 << 20
	// download: the backend sends size bytes then closes.
	down := startL4Backend(t, func(c net.Conn) {
		buf := make([]byte, 64<<10)
		for off := int64(0); off < size; off += int64(len(buf)) {
			pattern(buf, off)
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	// upload: the backend hashes everything until the client's FIN, then
	// answers with the count and hash (the FIN must have been passed on and
	// the way back must still be open).
	up := startL4Backend(t, func(c net.Conn) {
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "%d %x\n", n, h.Sum(nil))
	})
	a := startL4(t, fmt.Sprintf(`
listeners:
  - { name: down, listen: 127.0.0.1:0, protocol: tcp, pool: down, timeouts: { idle: 10s } }
  - { name: up, listen: 127.0.0.1:0, protocol: tcp, pool: up }
pools:
  - { name: down, backends: [%s], health: { type: none } }
  - { name: up, backends: [%s], health: { type: none } }
`, down.Addr, up.Addr))

	t.Run("download", func(t *testing.T) {
		c := dialL4(t, a, "down")
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		want := sha256.New()
		buf := make([]byte, 64<<10)
		for off := int64(0); off < size; off += int64(len(buf)) {
			pattern(buf, off)
			want.Write(buf)
		}
		got := sha256.New()
		start := time.Now()
		n, err := io.Copy(got, c)
		el := time.Since(start)
		if err != nil || n != size {
			t.Fatalf("read %d bytes, err %v; want %d", n, err, size)
		}
		if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
			t.Fatal("downloaded bytes differ")
		}
		t.Logf("download %d MiB in %s: %.0f MiB/s", size>>20, el, float64(size>>20)/el.Seconds())
	})
	t.Run("upload", func(t *testing.T) {
		c := dialL4(t, a, "up")
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		want := sha256.New()
		buf := make([]byte, 64<<10)
		start := time.Now()
		for off := int64(0); off < size; off += int64(len(buf)) {
			pattern(buf, off)
			want.Write(buf)
			if _, err := c.Write(buf); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		reply, err := io.ReadAll(c)
		el := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		if w := fmt.Sprintf("%d %x\n", size, want.Sum(nil)); string(reply) != w {
			t.Fatalf("backend saw %q, want %q", reply, w)
		}
		t.Logf("upload %d MiB in %s: %.0f MiB/s", size>>20, el, float64(size>>20)/el.Seconds())
	})
}

func TestTCPHalfClose(t *testing.T) {
	// The backend speaks first and half-closes; it must still receive what
	// the client sends afterwards, and see the client's FIN.
	got := make(chan string, 1)
	b := startL4Backend(t, func(c net.Conn) {
		_, _ = io.WriteString(c, "hello")
		_ = c.(*net.TCPConn).CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		rest, err := io.ReadAll(c)
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- string(rest)
	})
	a := startL4(t, tcpConfig([]string{b.Addr}, "", ""))
	c := dialL4(t, a, "l4")
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	first, err := io.ReadAll(c) // ends at the backend's FIN, passed on
	if err != nil || string(first) != "hello" {
		t.Fatalf("read %q, %v; want hello then EOF", first, err)
	}
	if _, err := io.WriteString(c, "still flowing"); err != nil {
		t.Fatalf("write after the backend's FIN: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "still flowing" {
			t.Fatalf("backend received %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("backend never saw the client's FIN")
	}
}

func TestTCPIdleTimeout(t *testing.T) {
	var sunk atomic.Int64
	sink := startL4Backend(t, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, &countingReader{c, &sunk})
		_ = n
	})
	e := startL4Backend(t, echo)
	a := startL4(t, fmt.Sprintf(`
listeners:
  - { name: echo, listen: 127.0.0.1:0, protocol: tcp, pool: echo, timeouts: { idle: 300ms } }
  - { name: sink, listen: 127.0.0.1:0, protocol: tcp, pool: sink, timeouts: { idle: 300ms } }
pools:
  - { name: echo, backends: [%s], health: { type: none } }
  - { name: sink, backends: [%s], health: { type: none } }
`, e.Addr, sink.Addr))

	t.Run("idle connection is closed", func(t *testing.T) {
		c := dialL4(t, a, "echo")
		if s, err := roundTrip(c, "ping", 5*time.Second); err != nil || s != "ping" {
			t.Fatalf("echo: %q %v", s, err)
		}
		start := time.Now()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		el := time.Since(start)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("holdfast did not close an idle connection within 5s")
		}
		if el < 250*time.Millisecond {
			t.Fatalf("closed after %s, before the 300ms idle timeout", el)
		}
		t.Logf("idle connection closed after %s (err %v)", el, err)
	})
	t.Run("one-way traffic keeps it open", func(t *testing.T) {
		// Bytes flow only client→backend, one every 100ms for 1s: the
		// backend→client direction is idle throughout, the connection is not.
		c := dialL4(t, a, "sink")
		before := sunk.Load()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := range 10 {
			<-tick.C
			if _, err := c.Write([]byte{'x'}); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
		}
		testkit.WaitFor(t, 5*time.Second, "all 10 bytes at the backend", func() bool { return sunk.Load()-before == 10 })
	})
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func TestTCPFailover(t *testing.T) {
	e := startL4Backend(t, echo)
	dead := testkit.FreeAddr(t)
	a := startL4(t, tcpConfig([]string{dead, e.Addr}, "", ""))
	for i := range 20 {
		c := dialL4(t, a, "l4")
		msg := fmt.Sprintf("conn %d", i)
		if s, err := roundTrip(c, msg, 5*time.Second); err != nil || s != msg {
			t.Fatalf("connection %d: got %q, %v (a dead backend must be skipped before any byte is sent)", i, s, err)
		}
		_ = c.Close()
	}
}

func TestTCPConnectionCap(t *testing.T) {
	e := startL4Backend(t, echo)
	a := startL4(t, tcpConfig([]string{e.Addr}, "    max_connections: 2", ""))
	reg := a.Registry()
	c1, c2 := dialL4(t, a, "l4"), dialL4(t, a, "l4")
	for i, c := range []net.Conn{c1, c2} {
		if s, err := roundTrip(c, "hi", 5*time.Second); err != nil || s != "hi" {
			t.Fatalf("conn %d: %q %v", i+1, s, err)
		}
	}
	if v := gaugeValue(t, reg, "holdfast_listener_connections", map[string]string{"listener": "l4"}); v != 2 {
		t.Fatalf("holdfast_listener_connections = %v, want 2", v)
	}
	if v := gaugeValue(t, reg, "holdfast_backend_connections", map[string]string{"pool": "p", "backend": e.Addr}); v != 2 {
		t.Fatalf("holdfast_backend_connections = %v, want 2", v)
	}
	// The third waits in the kernel's backlog, unserved, until one closes.
	c3 := dialL4(t, a, "l4")
	if _, err := io.WriteString(c3, "3rd"); err != nil {
		t.Fatal(err)
	}
	_ = c3.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c3.Read(make([]byte, 3)); n > 0 || err == nil {
		t.Fatalf("a third connection was served past max_connections: %d bytes, %v", n, err)
	}
	_ = c1.Close()
	_ = c3.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 3)
	if _, err := io.ReadFull(c3, buf); err != nil || string(buf) != "3rd" {
		t.Fatalf("after a slot freed: %q, %v", buf, err)
	}
	testkit.WaitFor(t, 5*time.Second, "listener gauge back to 2", func() bool {
		return gaugeValue(t, reg, "holdfast_listener_connections", map[string]string{"listener": "l4"}) == 2
	})
}

func TestTCPDrain(t *testing.T) {
	e := startL4Backend(t, echo)
	a := startL4(t, tcpConfig([]string{e.Addr}, "    timeouts: { drain: 300ms }", ""))
	addr := a.ListenerAddr("l4").String()
	c := dialL4(t, a, "l4")
	if s, err := roundTrip(c, "hi", 5*time.Second); err != nil || s != "hi" {
		t.Fatalf("echo: %q %v", s, err)
	}
	stopped := make(chan struct{})
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
		close(stopped)
	}()
	// The open connection keeps working through the drain…
	if s, err := roundTrip(c, "still", 5*time.Second); err != nil || s != "still" {
		t.Fatalf("during drain: %q %v", s, err)
	}
	// …and is closed once timeouts.drain has passed.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("connection still open 10s into a 300ms drain")
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("closed after %s, before timeouts.drain", el)
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if c2, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = c2.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := roundTrip(c2, "x", 2*time.Second); err == nil {
			t.Fatal("a new connection was served after shutdown")
		}
		_ = c2.Close()
	}
}

// TestTCPResetClosesBoth: a client that resets (rather than half-closes)
// makes holdfast close the backend connection at once, even though the
// backend has nothing to send.
func TestTCPResetClosesBoth(t *testing.T) {
	ended := make(chan error, 1)
	b := startL4Backend(t, func(c net.Conn) {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := io.Copy(io.Discard, c)
		ended <- err
	})
	a := startL4(t, tcpConfig([]string{b.Addr}, "", ""))
	c := dialL4(t, a, "l4")
	if _, err := io.WriteString(c, "x"); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "backend connection", func() bool {
		return gaugeValue(t, a.Registry(), "holdfast_backend_connections", map[string]string{"pool": "p", "backend": b.Addr}) == 1
	})
	_ = c.SetLinger(0)
	_ = c.Close()
	select {
	case err := <-ended:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("backend connection outlived the client's reset")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("backend connection outlived the client's reset")
	}
	testkit.WaitFor(t, 5*time.Second, "holdfast_backend_connections back to 0", func() bool {
		return gaugeValue(t, a.Registry(), "holdfast_backend_connections", map[string]string{"pool": "p", "backend": b.Addr}) == 0
	})
}

// BenchmarkTCPDownload measures L4 throughput through holdfast on
// loopback: each op reads 16 MiB that a backend streams through a tcp
// listener, on one connection (MB/s is the figure to watch).
func BenchmarkTCPDownload(b *testing.B) {
	const size = 16 << 20
	src := make([]byte, 1<<20)
	be := startL4Backend(b, func(c net.Conn) {
		for {
			if _, err := c.Write(src); err != nil {
				return
			}
		}
	})
	a := startL4(b, tcpConfig([]string{be.Addr}, "", ""))
	c := dialL4(b, a, "l4")
	buf := make([]byte, 1<<20)
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		for got := 0; got < size; {
			n, err := c.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
}

// TestTCPIdleTimeoutSparesBulk: a transfer that runs flat out for longer
// than the idle timeout is not cut (the copy is interrupted every idle/4 to
// record progress, and resumes without losing a byte).
func TestTCPIdleTimeoutSparesBulk(t *testing.T) {
	b := startL4Backend(t, func(c net.Conn) {
		buf := make([]byte, 64<<10)
		for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
		_, _ = io.WriteString(c, "END")
	})
	// The stream lasts four idle timeouts. 500ms rather than less: a
	// reader starved of CPU that long (race detector, a loaded machine)
	// is idle in fact.
	a := startL4(t, tcpConfig([]string{b.Addr}, "    timeouts: { idle: 500ms }", ""))
	c := dialL4(t, a, "l4")
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	// Read into one buffer (no growing slice): the reader must keep up,
	// since a peer that takes nothing for the idle timeout is idle.
	buf := make([]byte, 256<<10)
	var total int
	var tail []byte
	for {
		n, err := c.Read(buf)
		total += n
		if n > 0 {
			tail = append(tail, buf[max(0, n-3):n]...)
			tail = tail[max(0, len(tail)-3):]
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if string(tail) != "END" || (total-3)%(64<<10) != 0 {
		t.Fatalf("stream cut or damaged: %d bytes, ends %q", total, tail)
	}
	t.Logf("%d MiB in 2s through a 500ms idle timeout", total>>20)
}
