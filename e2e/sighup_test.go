package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// TestSIGHUPReloadProcess: the holdfast binary under load takes SIGHUP
// with an invalid config (refused, logged, still serving the old routes),
// then with a valid one (new route), with no failed request; SIGTERM then
// drains and exits 0.
func TestSIGHUPReloadProcess(t *testing.T) {
	b1, b2 := testkit.StartBackend(t, "b1"), testkit.StartBackend(t, "b2")
	dir := t.TempDir()
	port, adminPort := freePort(t), freePort(t)
	cfg := filepath.Join(dir, "holdfast.yaml")
	write := func(backend string, extra string) {
		t.Helper()
		y := fmt.Sprintf(`
admin: { listen: 127.0.0.1:%d }
listeners:
  - { name: web, listen: 127.0.0.1:%d, pool: api }
pools:
  - { name: api, backends: [%s], health: { type: none }%s }
`, adminPort, port, backend, extra)
		if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(b1.Addr, "")
	p := startHoldfast(t, "holdfast", "--log-format", "text", "run", "-c", cfg)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	answeredBy := func(name string) func() bool {
		return func() bool {
			code, body, err := testkit.Get(url)
			return err == nil && code == 200 && strings.TrimSpace(body) == name
		}
	}
	waitFor(t, 30*time.Second, "holdfast serving b1", answeredBy("b1"))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st := newLoadStats()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runLoad(ctx, fmt.Sprintf("http://127.0.0.1:%d", port), []worker{
			{Method: fasthttp.MethodGet}, {Method: fasthttp.MethodPost}, {Method: fasthttp.MethodGet, Fresh: true},
		}, 10_000_000, st)
	}()
	okAfter := func(n int64) func() bool {
		base := st.ok.Load()
		return func() bool { return st.ok.Load() >= base+n }
	}
	waitFor(t, 20*time.Second, "load", okAfter(300))

	write(b2.Addr, ", bogus: 1")
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "the invalid config logged", func() bool { return p.log.contains("reload rejected") })
	waitFor(t, 20*time.Second, "load after the invalid reload", okAfter(300))
	if !answeredBy("b1")() {
		t.Error("after the invalid reload, b1 no longer serves")
	}

	write(b2.Addr, "")
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 20*time.Second, "b2 serving after the valid reload", answeredBy("b2"))
	waitFor(t, 20*time.Second, "load after the valid reload", okAfter(300))
	cancel()
	<-done

	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.waitExit(t, 60*time.Second); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	sent, failures, refused := st.snapshot()
	t.Logf("sent %v; ok %d; failed %d; refused %d", sent, st.ok.Load(), len(failures), refused)
	for i, f := range failures {
		if i == 20 {
			break
		}
		t.Errorf("%s %d failed: status %d, err %v", f.Method, f.ID, f.Status, f.Err)
	}
}
