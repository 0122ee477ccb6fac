package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// hfProc is a holdfast child process.
type hfProc struct {
	cmd  *exec.Cmd
	log  *logBuffer
	exit chan error
}

func startHoldfast(t *testing.T, name string, args ...string) *hfProc {
	t.Helper()
	return startHoldfastCmd(t, name, exec.Command(holdfastBinary(t), args...))
}

// startHoldfastCmd starts cmd, a holdfast process (or one that execs it),
// collecting its output and killing it, by PID, at the end of the test.
func startHoldfastCmd(t *testing.T, name string, cmd *exec.Cmd) *hfProc {
	t.Helper()
	p := &hfProc{log: &logBuffer{t: t, name: name}, exit: make(chan error, 1)}
	p.cmd = cmd
	p.cmd.Stdout = p.log
	p.cmd.Stderr = p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exit <- p.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-p.exit:
		default:
			_ = p.cmd.Process.Kill() // our own child, by PID
			<-p.exit
		}
		if t.Failed() {
			t.Log(p.log.dump())
		}
	})
	return p
}

// waitExit waits for the process to exit and returns its error.
func (p *hfProc) waitExit(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-p.exit:
		p.exit <- err // keep it for Cleanup
		return err
	case <-time.After(timeout):
		t.Fatalf("process %d did not exit within %s", p.cmd.Process.Pid, timeout)
		return nil
	}
}

// TestHandoffUnderLoad: under steady load (new connections and keep-alive
// ones, GET and POST), a second holdfast started with the same --handoff
// takes the listening sockets over and the first gets SIGTERM; then a third
// takes over from the second. Zero refused connections, zero failed
// requests.
func TestHandoffUnderLoad(t *testing.T) {
	b1, b2 := testkit.StartBackend(t, "b1"), testkit.StartBackend(t, "b2")
	dir := t.TempDir()
	port, adminPort := freePort(t), freePort(t)
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeConfig := func(backends string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
admin: { listen: 127.0.0.1:%d }
drain_delay: 5s
listeners:
  - { name: web, listen: 127.0.0.1:%d, pool: api }
pools:
  - name: api
    backends: [%s]
    health: { type: tcp, interval: 500ms }
`, adminPort, port, backends)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(b1.Addr + ", " + b2.Addr)
	sock := filepath.Join(dir, "handoff.sock")
	args := []string{"--log-format", "text", "run", "-c", cfg, "--handoff", sock}
	readyURL := fmt.Sprintf("http://127.0.0.1:%d/readyz", adminPort)
	ready := func() bool {
		code, _, err := fasthttp.GetTimeout(nil, readyURL, time.Second)
		return err == nil && code == 200
	}

	cur := startHoldfast(t, "holdfast-0", args...)
	waitFor(t, 30*time.Second, "first holdfast ready", ready)

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	st := newLoadStats()
	var workers []worker
	for range 3 {
		workers = append(workers,
			worker{Method: fasthttp.MethodGet, Fresh: true}, worker{Method: fasthttp.MethodPost, Fresh: true},
			worker{Method: fasthttp.MethodGet}, worker{Method: fasthttp.MethodPost})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runLoad(ctx, fmt.Sprintf("http://127.0.0.1:%d", port), workers, 10_000_000, st)
	}()
	okAfter := func(n int64) func() bool {
		base := st.ok.Load()
		return func() bool { return st.ok.Load() >= base+n }
	}
	waitFor(t, 30*time.Second, "load on the first holdfast", okAfter(500))

	for gen := 1; gen <= 2; gen++ {
		if gen == 2 {
			// A restart with a new config works the same way.
			writeConfig(b2.Addr)
		}
		next := startHoldfast(t, fmt.Sprintf("holdfast-%d", gen), args...)
		waitFor(t, 60*time.Second, fmt.Sprintf("holdfast-%d serving on the handed-over sockets", gen), func() bool {
			return next.log.contains("handoff: serving; previous process drains")
		})
		// The documented last step; the takeover has already begun the
		// same drain, so this must not cut it short.
		_ = cur.cmd.Process.Signal(syscall.SIGTERM)
		if err := cur.waitExit(t, 60*time.Second); err != nil {
			t.Fatalf("holdfast-%d exited with %v", gen-1, err)
		}
		if !cur.log.contains("a new process took over the listening sockets; draining") {
			t.Errorf("holdfast-%d did not log the takeover", gen-1)
		}
		waitFor(t, 30*time.Second, fmt.Sprintf("load on holdfast-%d alone", gen), okAfter(1000))
		if !ready() {
			t.Errorf("holdfast-%d not ready on the inherited admin socket", gen)
		}
		if gen == 2 {
			for range 4 {
				if _, body, err := testkit.Get(fmt.Sprintf("http://127.0.0.1:%d/", port)); err != nil || body != "b2\n" {
					t.Errorf("holdfast-2 (new config: b2 only) answered %q, %v", body, err)
				}
			}
		}
		cur = next
	}
	cancel()
	<-done

	_ = cur.cmd.Process.Signal(syscall.SIGTERM)
	if err := cur.waitExit(t, 60*time.Second); err != nil {
		t.Errorf("last holdfast exited with %v", err)
	}
	sent, failures, refused := st.snapshot()
	t.Logf("sent %v; ok %d; failed %d; refused connections %d", sent, st.ok.Load(), len(failures), refused)
	for i, f := range failures {
		if i == 20 {
			t.Errorf("… and %d more", len(failures)-20)
			break
		}
		t.Errorf("%s %d failed (new connection %v): status %d, err %v (refused %v)", f.Method, f.ID, f.Fresh, f.Status, f.Err, f.Refused)
	}
}
