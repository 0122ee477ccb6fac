//go:build soak

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// soakFault is one injected incident: start it, and the returned function
// ends it.
type soakFault struct {
	name  string
	start func(t *testing.T) (end func())
}

// soakSample is one row of the soak table.
type soakSample struct {
	at         time.Duration
	phase      string
	ok, failed int64 // in the interval
	rssKiB     int64
	heapKiB    int64 // Go heap in use right after a collection
	goroutines int64 // -1: the admin endpoint could not be read
	fds        int
}

// TestSoak (make soak; build tag soak, not part of make test): the holdfast
// binary, under an open-files limit of 1024, serves mixed keep-alive and
// new-connection GET and POST load for SOAK_DURATION (default 10m) while
// faults take turns: a backend SIGKILLed and replaced by a reload, a plain
// reload, a descriptor flood (1,200 connections to a listener whose own
// max_connections the limit cannot hold: EMFILE for the whole process),
// and a slowloris flood (500 connections trickling a request head). It
// prints failed requests, RSS, goroutines and descriptors over time, and
// fails if requests fail once the faults are over, or RSS or goroutines
// grow from one fault cycle to the last.
func TestSoak(t *testing.T) {
	duration := 10 * time.Minute
	if s := os.Getenv("SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 30*time.Second || d > 2*time.Hour {
			t.Fatalf("SOAK_DURATION=%q: want a duration from 30s to 2h", s)
		}
		duration = d
	}
	const (
		nofile        = 1024
		floodConns    = 1200
		slowlorisConn = 500
	)
	raiseFileLimit(t, floodConns+slowlorisConn+4096)
	faultEvery := min(max(duration/10, 6*time.Second), time.Minute)
	sampleEvery := min(max(duration/20, 3*time.Second), 30*time.Second)
	settle := max(duration/5, 2*sampleEvery+3*time.Second) // no fault at the end

	backends := []*procBackend{startProcBackend(t, "b0", 0), startProcBackend(t, "b1", 0), startProcBackend(t, "b2", 0)}
	port, floodPort, adminPort := freePort(t), freePort(t), freePort(t)
	cfg := filepath.Join(t.TempDir(), "holdfast.yaml")
	attempts := 2
	writeConfig := func() {
		t.Helper()
		addrs := make([]string, len(backends))
		for i, b := range backends {
			addrs[i] = b.Addr
		}
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
admin: { listen: 127.0.0.1:%d, pprof: true }
listeners:
  - { name: web, listen: 127.0.0.1:%d, pool: api }
  - { name: flood, listen: 127.0.0.1:%d, pool: api, max_connections: 4000 }
pools:
  - name: api
    backends: [%s]
    health: { type: http, path: /healthz, interval: 1s, timeout: 500ms, rise: 1, fall: 2 }
    retries: { attempts: %d }
    limits: { max_conns_per_backend: 64, max_idle_per_backend: 32, queue_timeout: 2s }
`, adminPort, port, floodPort, strings.Join(addrs, ", "), attempts)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig()
	p := startHoldfastCmd(t, "holdfast", limitedHoldfast(t, nofile, "--log-level", "warn", "run", "-c", cfg))
	pid := p.cmd.Process.Pid
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitFor(t, 30*time.Second, "holdfast serving", func() bool { return getWithin(base+"/", 2*time.Second) })
	adminAddr := fmt.Sprintf("127.0.0.1:%d", adminPort)
	// adminGet asks on a connection of its own: the admin server closes a
	// connection whose first request does not come within its header
	// timeout, and the soak's requests are further apart than that.
	adminGet := func(path string) (string, error) {
		c, err := net.DialTimeout("tcp", adminAddr, time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		_, body, err := (&keepAliveClient{addr: adminAddr, c: c, br: bufio.NewReader(c)}).get(path)
		return body, err
	}
	reloads := 0
	reload := func(t *testing.T) {
		writeConfig()
		reloads++
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		// The admin summary changes with the config: wait until the
		// counter says it applied.
		waitFor(t, 20*time.Second, "reload applied", func() bool {
			body, err := adminGet("/metrics")
			return err == nil && strings.Contains(body, "holdfast_config_reloads_total "+strconv.Itoa(reloads)+"\n")
		})
	}
	killed := 0
	faults := []soakFault{
		{"backend-kill", func(t *testing.T) func() {
			i := killed % len(backends)
			killed++
			backends[i].kill(t)
			return func() {
				backends[i] = startProcBackend(t, fmt.Sprintf("b%d.%d", i, killed), 0)
				reload(t)
			}
		}},
		{"reload", func(t *testing.T) func() {
			attempts = 5 - attempts // 2 <-> 3
			reload(t)
			return func() {}
		}},
		{"fd-flood", func(t *testing.T) func() {
			return soakFlood(t, fmt.Sprintf("127.0.0.1:%d", floodPort), floodConns, "")
		}},
		{"slowloris", func(t *testing.T) func() {
			return soakFlood(t, fmt.Sprintf("127.0.0.1:%d", port), slowlorisConn, "GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
		}},
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := newLoadStats()
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		runLoad(ctx, base, []worker{
			{Method: fasthttp.MethodGet}, {Method: fasthttp.MethodGet}, {Method: fasthttp.MethodPost},
			{Method: fasthttp.MethodGet, Fresh: true}, {Method: fasthttp.MethodPost, Fresh: true},
		}, 1<<40, st)
	}()

	begin := time.Now()
	var samples []soakSample
	var lastOK, lastFailed int64
	phase := "warm-up"
	sample := func() {
		_, failures, _ := st.snapshot()
		ok := st.ok.Load()
		s := soakSample{at: time.Since(begin).Round(time.Second), phase: phase, ok: ok - lastOK,
			failed: int64(len(failures)) - lastFailed, rssKiB: procRSS(pid), goroutines: -1, fds: procFDs(pid)}
		lastOK, lastFailed = ok, int64(len(failures))
		// A fresh admin connection per sample: the admin server closes a
		// connection whose first request does not come within its header
		// timeout, and samples are further apart than that.
		if c, err := net.DialTimeout("tcp", adminAddr, time.Second); err == nil {
			adm := &keepAliveClient{addr: adminAddr, c: c, br: bufio.NewReader(c)}
			// A heap profile with gc=1 collects first: the heap in use is
			// then what is live, not garbage waiting for the next cycle.
			if _, _, err := adm.get("/debug/pprof/heap?gc=1"); err != nil {
				s.heapKiB = -1
			}
			if g, err := adminGauge(adm, "go_goroutines"); err == nil {
				s.goroutines = g
				if s.heapKiB == 0 {
					h, _ := adminGauge(adm, "go_memstats_heap_inuse_bytes")
					s.heapKiB = h >> 10
				}
			}
			_ = c.Close()
		} else {
			s.heapKiB = -1
		}
		samples = append(samples, s)
		t.Logf("%8s  %-14s %8d %7d %9.1f %10.1f %10d %6d", s.at, s.phase, s.ok, s.failed,
			float64(s.rssKiB)/1024, float64(s.heapKiB)/1024, s.goroutines, s.fds)
	}
	t.Logf("%8s  %-14s %8s %7s %9s %10s %10s %6s", "time", "phase", "ok", "failed", "rss_MiB", "heap_MiB", "goroutines", "fds")

	sampleTick := time.NewTicker(sampleEvery)
	defer sampleTick.Stop()
	faultTick := time.NewTicker(faultEvery / 2)
	defer faultTick.Stop()
	faultsEnd := begin.Add(duration - settle)
	var endFault func()
	next := 0
	cycleEnds := []int{} // sample index at the end of each full fault cycle
	for time.Since(begin) < duration {
		select {
		case <-sampleTick.C:
			sample()
		case <-faultTick.C:
			switch {
			case endFault != nil:
				endFault()
				endFault = nil
				phase = "recovering"
				if next%len(faults) == 0 {
					cycleEnds = append(cycleEnds, len(samples))
				}
			case time.Now().Before(faultsEnd.Add(-faultEvery / 2)):
				f := faults[next%len(faults)]
				next++
				phase = f.name
				endFault = f.start(t)
			default:
				phase = "settled"
			}
		}
	}
	if endFault != nil {
		endFault()
	}
	sample()
	cancel()
	<-loadDone

	sent, failures, refused := st.snapshot()
	t.Logf("sent %v; ok %d; failed %d (refused %d); faults injected %d; reloads %d", sent, st.ok.Load(), len(failures), refused, next, reloads)
	// Failures once the faults are over: none.
	for _, s := range samples {
		if s.phase == "settled" && s.failed > 0 {
			t.Errorf("%d requests failed at %s, after the faults were over", s.failed, s.at)
		}
	}
	if len(cycleEnds) == 0 {
		t.Fatalf("no full fault cycle in %s: run longer", duration)
	}
	// Flat: at the end, under the same load, goroutines and the live heap
	// are back where they were before the first fault; RSS (the runtime
	// returns freed pages to the OS slowly) is no higher than after the
	// first full fault cycle, when every fault had run once.
	warm, ref, last := samples[0], samples[min(cycleEnds[0], len(samples)-1)], samples[len(samples)-1]
	t.Logf("flat check: warm-up heap %d KiB, goroutines %d; after the first cycle (%s) rss %d KiB; at the end rss %d KiB, heap %d KiB, goroutines %d",
		warm.heapKiB, warm.goroutines, ref.at, ref.rssKiB, last.rssKiB, last.heapKiB, last.goroutines)
	if last.goroutines < 0 || warm.goroutines < 0 || last.heapKiB < 0 {
		t.Fatalf("goroutines or heap unknown: %+v, %+v", warm, last)
	}
	if last.goroutines > warm.goroutines+warm.goroutines/4+20 {
		t.Errorf("goroutines grew from %d (warm-up) to %d at the end", warm.goroutines, last.goroutines)
	}
	if last.heapKiB > 2*warm.heapKiB+8<<10 {
		t.Errorf("live heap grew from %d KiB (warm-up) to %d KiB at the end", warm.heapKiB, last.heapKiB)
	}
	if last.rssKiB > ref.rssKiB+ref.rssKiB/4+16<<10 {
		t.Errorf("RSS grew from %d KiB (after the first fault cycle) to %d KiB at the end", ref.rssKiB, last.rssKiB)
	}
	if p.log.contains("listener stopped") {
		t.Error("a listener stopped")
	}
}

// soakFlood opens n connections to addr, each sending head (if any), and
// holds them until the returned function closes them. Connections that
// fail to open are counted, not fatal: the point is to exhaust holdfast.
func soakFlood(t *testing.T, addr string, n int, head string) func() {
	conns := make([]net.Conn, 0, n)
	failed := 0
	for range n {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			failed++
			continue
		}
		if head != "" {
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(c, head)
		}
		conns = append(conns, c)
	}
	if failed > 0 {
		t.Logf("flood %s: %d of %d connections not opened", addr, failed, n)
	}
	return func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}
}

// procRSS is a process's resident set in KiB (0 if unknown).
func procRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// procFDs is the number of a process's open descriptors (-1 if unknown).
func procFDs(pid int) int {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(es)
}

// adminGauge reads an unlabelled gauge from /metrics.
func adminGauge(k *keepAliveClient, name string) (int64, error) {
	code, body, err := k.get("/metrics")
	if err != nil {
		return 0, err
	}
	if code != 200 {
		return 0, fmt.Errorf("/metrics: %d", code)
	}
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int64(f), err
		}
	}
	return 0, fmt.Errorf("%s not in /metrics", name)
}
