// Package e2e holds end-to-end tests that need more than one process: a
// backend that is SIGKILLed for real, and two holdfast processes handing
// listening sockets over. Everything runs on 127.0.0.1 and every wait is
// bounded.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/internal/freeport"
)

// Roles the test binary plays when re-executed.
const (
	envRole  = "HOLDFAST_E2E_ROLE"
	envName  = "HOLDFAST_E2E_NAME"
	envDelay = "HOLDFAST_E2E_DELAY"
)

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "backend":
		runBackend()
		return
	case "rlimit":
		execLimited()
		return
	}
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// runBackend is the child process: an HTTP backend on 127.0.0.1:0 that
// prints its address, then "R id" as soon as it has read the bytes of a
// request with X-Req-Id from its socket, "B id" when its handler starts and
// "E id" when the handler is done. Lines written to the pipe survive a
// SIGKILL, so the parent learns exactly which requests had reached the
// backend. It exits when its stdin closes (the parent is gone).
func runBackend() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	delay, _ := time.ParseDuration(os.Getenv(envDelay))
	body := os.Getenv(envName) + "\n"
	var mu sync.Mutex // one line per write, in order
	line := func(kind byte, id []byte) {
		b := make([]byte, 0, len(id)+3)
		b = append(b, kind, ' ')
		b = append(b, id...)
		b = append(b, '\n')
		mu.Lock()
		_, _ = os.Stdout.Write(b)
		mu.Unlock()
	}
	ln = &idListener{Listener: ln, line: line}
	fmt.Printf("addr %s\n", ln.Addr())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		id := ctx.Request.Header.Peek("X-Req-Id")
		if len(id) > 0 {
			line('B', id)
		}
		if delay > 0 {
			time.Sleep(delay) // simulated work, so requests are in flight when killed
		}
		ctx.SetBodyString(body)
		if len(id) > 0 {
			line('E', id)
		}
	}}
	_ = srv.Serve(ln)
}

// idListener reports each X-Req-Id its connections read, the moment the
// bytes leave the kernel for the backend process.
type idListener struct {
	net.Listener
	line func(byte, []byte)
}

func (l *idListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &idConn{Conn: c, line: l.line}, nil
}

type idConn struct {
	net.Conn
	line func(byte, []byte)
	tail []byte // unparsed end of the previous read, for a header split across reads
}

var reqIDHeader = []byte("X-Req-Id: ")

func (c *idConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		buf := append(c.tail, p[:n]...)
		for {
			i := bytes.Index(buf, reqIDHeader)
			if i < 0 {
				break
			}
			rest := buf[i+len(reqIDHeader):]
			j := bytes.IndexByte(rest, '\r')
			if j < 0 {
				break // the value continues in the next read
			}
			c.line('R', rest[:j])
			buf = rest[j:]
		}
		if k := len(buf) - 64; k > 0 {
			buf = buf[k:]
		}
		c.tail = append(c.tail[:0], buf...)
	}
	return n, err
}

// procBackend is a backend child process.
type procBackend struct {
	Name  string
	Addr  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	eof   chan struct{} // stdout fully read

	mu    sync.Mutex
	read  map[string]bool // request bytes read by the backend process
	began map[string]bool // handler started
	ended map[string]bool // handler done
	seen  atomic.Int64
}

// startProcBackend re-executes the test binary as a backend.
func startProcBackend(t *testing.T, name string, delay time.Duration) *procBackend {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"=backend", envName+"="+name, envDelay+"="+delay.String())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &procBackend{Name: name, cmd: cmd, stdin: stdin, eof: make(chan struct{}),
		read: map[string]bool{}, began: map[string]bool{}, ended: map[string]bool{}}
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill() // our own child, by PID
		_ = cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		defer close(b.eof)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l := sc.Text()
			switch {
			case strings.HasPrefix(l, "addr "):
				addr <- strings.TrimPrefix(l, "addr ")
			case strings.HasPrefix(l, "R "):
				b.mu.Lock()
				b.read[l[2:]] = true
				b.mu.Unlock()
			case strings.HasPrefix(l, "B "):
				b.mu.Lock()
				b.began[l[2:]] = true
				b.mu.Unlock()
				b.seen.Add(1)
			case strings.HasPrefix(l, "E "):
				b.mu.Lock()
				b.ended[l[2:]] = true
				b.mu.Unlock()
			}
		}
	}()
	select {
	case b.Addr = <-addr:
	case <-time.After(20 * time.Second):
		t.Fatalf("backend %s did not start", name)
	}
	return b
}

// kill SIGKILLs the backend and waits until everything it wrote is read.
func (b *procBackend) kill(t *testing.T) {
	t.Helper()
	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.eof:
	case <-time.After(20 * time.Second):
		t.Fatalf("backend %s: output not closed after SIGKILL", b.Name)
	}
}

// inFlight is the requests the backend had read and not finished.
func (b *procBackend) inFlight() map[string]bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]bool{}
	for id := range b.read {
		if !b.ended[id] {
			out[id] = true
		}
	}
	return out
}

// hasRead reports whether the backend process had read request id.
func (b *procBackend) hasRead(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.read[id]
}

// outcome is one client request's fate.
type outcome struct {
	ID      int64
	Method  string
	Status  int
	Err     error
	Refused bool // the TCP connection to holdfast was refused
	Fresh   bool // sent on a new connection
}

func (o outcome) failed() bool { return o.Err != nil || o.Status >= 500 }

// loadStats tallies a load run. Safe for concurrent use.
type loadStats struct {
	mu       sync.Mutex
	sent     map[string]int64
	ok       atomic.Int64
	failures []outcome
	refused  int64
	next     int64            // last request number given out
	inflight map[int64]string // sent, not answered: method by number
	methods  []string         // method by number-1
}

func newLoadStats() *loadStats {
	return &loadStats{sent: map[string]int64{}, inflight: map[int64]string{}}
}

// begin numbers a request and notes it in flight; false once max
// requests were numbered.
func (s *loadStats) begin(method string, max int64) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next >= max {
		return 0, false
	}
	s.next++
	s.inflight[s.next] = method
	s.methods = append(s.methods, method)
	return s.next, true
}

// method is the method of request id.
func (s *loadStats) method(id int64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.methods[id-1]
}

// inFlight returns the requests sent and not yet answered, by method, and
// the last number given out.
func (s *loadStats) inFlight() (map[int64]string, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int64]string, len(s.inflight))
	for id, m := range s.inflight {
		out[id] = m
	}
	return out, s.next
}

func (s *loadStats) add(o outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.inflight, o.ID)
	s.sent[o.Method]++
	if o.failed() {
		s.failures = append(s.failures, o)
		if o.Refused {
			s.refused++
		}
		return
	}
	s.ok.Add(1)
}

func (s *loadStats) snapshot() (sent map[string]int64, failures []outcome, refused int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sent = map[string]int64{}
	for k, v := range s.sent {
		sent[k] = v
	}
	return sent, append([]outcome(nil), s.failures...), s.refused
}

// worker describes one kind of load.
type worker struct {
	Method string
	// Fresh dials a new connection per request (Connection: close), so a
	// refused connection shows; otherwise the connection is kept alive.
	Fresh bool
	// Path is appended to the base URL; empty means "/".
	Path string
}

// runLoad runs workers against base (http://host:port) until ctx ends or max requests were
// sent, numbering requests with X-Req-Id. It returns when every worker has
// stopped. No client retries anything: every failure counts.
func runLoad(ctx context.Context, base string, workers []worker, max int64, st *loadStats) {
	var wg sync.WaitGroup
	for _, w := range workers {
		client := &fasthttp.Client{
			MaxConnsPerHost:           4,
			ReadTimeout:               10 * time.Second,
			WriteTimeout:              10 * time.Second,
			MaxIdemponentCallAttempts: 1,
			RetryIfErr:                func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
		}
		url := base + w.Path
		if w.Path == "" {
			url = base + "/"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for ctx.Err() == nil {
				i, ok := st.begin(w.Method, max)
				if !ok {
					return
				}
				req.Reset()
				req.SetRequestURI(url)
				req.Header.SetMethod(w.Method)
				req.Header.Set("X-Req-Id", fmt.Sprint(i))
				if w.Method == fasthttp.MethodPost {
					req.SetBodyString("payload")
				}
				if w.Fresh {
					req.SetConnectionClose()
				}
				err := client.Do(req, resp)
				o := outcome{ID: i, Method: w.Method, Err: err, Fresh: w.Fresh}
				if err == nil {
					o.Status = resp.StatusCode()
				} else {
					o.Refused = errors.Is(err, syscall.ECONNREFUSED)
				}
				st.add(o)
			}
		}()
	}
	wg.Wait()
}

// waitFor polls cond every 10ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

// holdfastBinary builds cmd/holdfast once per test run (with -race when
// the tests run with it).
func holdfastBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "holdfast-e2e-")
		if buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "holdfast")
		goTool := goCommand()
		args := []string{"build", "-o", buildBin}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "github.com/holdfast-lb/holdfast/cmd/holdfast")
		cmd := exec.Command(goTool, args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int { return freeport.Port(t) }

// logBuffer collects a child's log lines and lets a test wait for one.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
	t     *testing.T
	name  string
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.Split(strings.TrimRight(string(p), "\n"), "\n")...)
	return len(p), nil
}

func (l *logBuffer) contains(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func (l *logBuffer) dump() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.name + ":\n  " + strings.Join(l.lines, "\n  ")
}

// goCommand is the go command building the binaries under test: the one
// that runs `go test` (GOROOT in its environment), else the first on PATH.
func goCommand() string {
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			return p
		}
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
