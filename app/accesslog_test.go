package app_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/app"
	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// lockedBuffer is an access-log sink the test reads after Shutdown.
// A non-nil gate holds every write until it is closed: a stdout that
// nobody reads for a while.
type lockedBuffer struct {
	gate chan struct{}
	mu   sync.Mutex
	b    bytes.Buffer
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	if w.gate != nil {
		<-w.gate
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuffer) lines(t *testing.T) []map[string]any {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(w.b.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("access log line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// startEcho is a TCP backend that echoes what it reads and half-closes
// after the client does.
func startEcho(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

// Concurrent HTTP requests and TCP connections with stdout stuck, then
// shutdown: the access log holds exactly one line per request and per
// connection (none lost in the queue at exit), and each TCP line reports its connection's
// listener, pool, backend, client, bytes both ways, duration, attempts and
// flags.
func TestAccessLogEveryLineAtShutdown(t *testing.T) {
	b := testkit.StartBackend(t, "b")
	echo := startEcho(t)
	path := testkit.WriteConfig(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
listeners:
  - { name: web, listen: "127.0.0.1:0", pool: api, access_log: true }
  - { name: db, listen: "127.0.0.1:0", protocol: tcp, pool: echo, access_log: true }
pools:
  - { name: api, health: { type: none }, backends: [%q] }
  - { name: echo, health: { type: none }, backends: [%q] }
`, b.Addr, echo))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	sink := lockedBuffer{gate: make(chan struct{})}
	a := app.New(cfg, app.Options{Log: testkit.Logger(t), ConfigPath: path, AccessLog: &sink})
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			a.Shutdown(context.Background())
		}
	})
	testkit.WaitFor(t, 5*time.Second, "app ready", a.Ready)

	const requests, workers = 400, 8
	url := "http://" + a.ListenerAddr("web").String() + "/n"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := testkit.Load(ctx, workers, requests, func(_ int64, r *fasthttp.Request) { r.SetRequestURI(url) })
	if res.OK != requests {
		t.Fatalf("load: %s", res)
	}
	payloads := []string{"a", strings.Repeat("x", 1000), strings.Repeat("y", 70000)}
	for _, p := range payloads {
		c, err := net.Dial("tcp", a.ListenerAddr("db").String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		go func() { _, _ = io.WriteString(c, p); _ = c.(*net.TCPConn).CloseWrite() }()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != p {
			t.Fatalf("echo of %d bytes: %d bytes back, %v", len(p), len(got), err)
		}
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	stopped = true
	down := make(chan struct{})
	go func() { defer close(down); a.Shutdown(sctx) }()
	close(sink.gate) // stdout moves again while the drain runs
	<-down

	var http, tcp []map[string]any
	for _, l := range sink.lines(t) {
		switch l["msg"] {
		case "request":
			http = append(http, l)
		case "connection":
			tcp = append(tcp, l)
		default:
			t.Errorf("unexpected line %v", l)
		}
	}
	if len(http) != requests {
		t.Errorf("%d request lines after shutdown, want exactly %d", len(http), requests)
	}
	if len(tcp) != len(payloads) {
		t.Fatalf("%d connection lines, want %d", len(tcp), len(payloads))
	}
	seen := map[float64]bool{}
	for _, l := range tcp {
		want := map[string]any{"listener": "db", "pool": "echo", "backend": echo, "client": "127.0.0.1",
			"attempts": float64(1), "level": "INFO"}
		for k, v := range want {
			if l[k] != v {
				t.Errorf("%s = %v, want %v (line %v)", k, l[k], v, l)
			}
		}
		in, out := l["bytes_in"].(float64), l["bytes_out"].(float64)
		if in != out {
			t.Errorf("bytes_in %v != bytes_out %v for an echo", in, out)
		}
		seen[in] = true
		if d, ok := l["duration_ms"].(float64); !ok || d < 0 || d > 10000 {
			t.Errorf("duration_ms %v", l["duration_ms"])
		}
		if f, ok := l["flags"].([]any); !ok || len(f) != 0 {
			t.Errorf("flags %v, want []", l["flags"])
		}
		ts, _ := l["time"].(string)
		if tm, err := time.Parse(time.RFC3339Nano, ts); err != nil || time.Since(tm) > time.Minute {
			t.Errorf("time %q: %v", ts, err)
		}
	}
	for _, p := range payloads {
		if !seen[float64(len(p))] {
			t.Errorf("no connection line with bytes_in %d (have %v)", len(p), seen)
		}
	}
}

// A TCP connection with no backend to go to is logged too, flagged.
func TestAccessLogTCPNoBackend(t *testing.T) {
	dead := testkit.FreeAddr(t)
	path := testkit.WriteConfig(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
listeners:
  - { name: db, listen: "127.0.0.1:0", protocol: tcp, pool: echo, access_log: true }
pools:
  - { name: echo, health: { type: none }, retries: { attempts: 1 }, backends: [%q] }
`, dead))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var sink lockedBuffer
	a := app.New(cfg, app.Options{Log: testkit.Logger(t), ConfigPath: path, AccessLog: &sink})
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "app ready", a.Ready)
	c, err := net.Dial("tcp", a.ListenerAddr("db").String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.ReadAll(c) // closed by holdfast
	c.Close()
	a.Shutdown(context.Background())
	lines := sink.lines(t)
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1: %v", len(lines), lines)
	}
	l := lines[0]
	f, _ := l["flags"].([]any)
	if len(f) != 1 || f[0] != "no_backend" || l["bytes_in"] != float64(0) || l["backend"] != dead || l["attempts"].(float64) < 1 {
		t.Errorf("line %v: want flags [no_backend], bytes_in 0, backend %s, attempts >= 1", l, dead)
	}
}
