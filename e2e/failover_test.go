package e2e

// A floating IP held by two holdfast instances under keepalived (VRRP), in
// network namespaces made by the test:
//
//	hffoPID-sw  a bridge joining everyone (10.213.0.0/24, nothing leaves)
//	hffoPID-a   holdfast + keepalived, 10.213.0.1  (starts as the master)
//	hffoPID-b   holdfast + keepalived, 10.213.0.2  (standby)
//	hffoPID-be  the backends, 10.213.0.21:8080 and 10.213.0.22:8080
//	hffoPID-c   the client, 10.213.0.10, steady load on 10.213.0.100:80
//
// The holdfast and keepalived configs are deploy/keepalived/* with the
// documentation addresses (192.0.2.0/24) mapped to the test subnet, and
// vip-local.sh runs on both nodes as the deploy notes say. The backend
// answers with the address holdfast connected from, so the client knows
// which node served each request.
//
// (a) planned switch: SIGTERM to the active holdfast; no request may fail.
// (b) crash: SIGKILL to the active holdfast; the standby must serve, and the
//     requests lost and the longest gap must stay within what the check
//     interval and the VRRP timers allow.
//
// The test binary re-executes itself inside the namespaces as the backend
// and the client (HOLDFAST_FO_ROLE); TestSystemdUnit checks and runs the
// commands of deploy/systemd/holdfast.service.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/internal/testkit"
)

const foEnvRole = "HOLDFAST_FO_ROLE"

// The test binary as a helper process (before TestMain and testing flags).
func init() {
	switch os.Getenv(foEnvRole) {
	case "backend":
		os.Exit(foBackendMain())
	case "client":
		os.Exit(foClientMain())
	}
}

// Addresses of the example files and what they become in the test.
const (
	foVIP       = "10.213.0.100"
	foNodeA     = "10.213.0.1"
	foNodeB     = "10.213.0.2"
	foClientIP  = "10.213.0.10"
	foBackend1  = "10.213.0.21"
	foBackend2  = "10.213.0.22"
	foAdvertInt = 1 * time.Second // keepalived.conf advert_int
	foInterval  = 1 * time.Second // vrrp_script interval
	foTimeout   = 1 * time.Second // vrrp_script timeout
	foFall      = 1

	foWorkers     = 8
	foTick        = 5 * time.Millisecond // each client worker: at most one request per tick
	foReqTimeout  = 3 * time.Second
	foPhaseServed = 300 // successes wanted from a node before and after an event
)

// foRoot is the module root (e2e's parent).
func foRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd)
}

// foBuild builds a static holdfast into a fresh world-readable directory
// (keepalived runs the probe as an unprivileged script_user).
func foBuild(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hffo-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "holdfast")
	goTool := goCommand()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-trimpath", "-ldflags", "-X main.version=e2e-failover",
		"-o", bin, "./cmd/holdfast")
	cmd.Dir = foRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// foSh runs a short command and fails the test on error.
func foSh(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := foTry(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func foTry(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// foWait polls cond every 50ms until it holds or timeout passes.
func foWait(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond) // poll interval, bounded by the deadline above
	}
	return time.Since(start)
}

// foLines collects a child's output lines.
type foLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *foLines) add(s string) {
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
}

func (l *foLines) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

func (l *foLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	const max = 200
	ls := l.lines
	if len(ls) > max {
		ls = ls[len(ls)-max:]
	}
	return strings.Join(ls, "\n  ")
}

// foProc is a process started by the test, killed at the end of it.
type foProc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *foLines
	onOut func(string)
	done  chan struct{}
	state *os.ProcessState
}

func foStart(t testing.TB, name string, env []string, onOut func(string), argv ...string) *foProc {
	t.Helper()
	p := &foProc{name: name, out: &foLines{}, onOut: onOut, done: make(chan struct{})}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	_ = pw.Close()
	p.cmd, p.stdin = cmd, stdin
	reading := make(chan struct{})
	go func() {
		defer close(reading)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.out.add(sc.Text())
			if p.onOut != nil {
				p.onOut(sc.Text())
			}
		}
		_ = pr.Close()
	}()
	go func() {
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		// Output written before exit is in the pipe; grandchildren (none
		// expected) must not keep the test waiting.
		select {
		case <-reading:
		case <-time.After(2 * time.Second):
		}
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *foProc) signal(s os.Signal) { _ = p.cmd.Process.Signal(s) }

// kill SIGKILLs the process (if still running) and waits for it.
func (p *foProc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// wait waits up to d for the process to exit and returns its exit code.
func (p *foProc) wait(t testing.TB, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.state.ExitCode()
	case <-time.After(d):
		t.Fatalf("%s did not exit within %s\n  %s", p.name, d, p.out)
		return -1
	}
}

// ---- the namespaces ----

type foNet struct {
	prefix string
	nss    []string
}

func (n *foNet) ns(s string) string { return n.prefix + "-" + s }

// foCleanStale removes namespaces left by an earlier run that died.
func foCleanStale() {
	out, err := foTry("ip", "netns", "list")
	if err != nil {
		return
	}
	re := regexp.MustCompile(`^hffo(\d+)-\S+`)
	for _, line := range strings.Split(out, "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		_, _ = foTry("ip", "netns", "del", m[0])
	}
}

func foTopology(t *testing.T) *foNet {
	t.Helper()
	foCleanStale()
	n := &foNet{prefix: "hffo" + strconv.Itoa(os.Getpid())}
	t.Cleanup(func() {
		for i := len(n.nss) - 1; i >= 0; i-- {
			if out, err := foTry("ip", "netns", "del", n.nss[i]); err != nil {
				t.Logf("ip netns del %s: %v %s", n.nss[i], err, out)
			}
		}
	})
	for _, s := range []string{"sw", "a", "b", "be", "c"} {
		foSh(t, "ip", "netns", "add", n.ns(s))
		n.nss = append(n.nss, n.ns(s))
		foSh(t, "ip", "-n", n.ns(s), "link", "set", "lo", "up")
	}
	sw := n.ns("sw")
	foSh(t, "ip", "-n", sw, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
	foSh(t, "ip", "-n", sw, "link", "set", "br0", "up")
	for _, node := range []struct {
		name  string
		addrs []string
	}{
		{"a", []string{foNodeA}}, {"b", []string{foNodeB}}, {"c", []string{foClientIP}},
		{"be", []string{foBackend1, foBackend2}},
	} {
		port := "v" + node.name
		foSh(t, "ip", "link", "add", "eth0", "netns", n.ns(node.name), "type", "veth", "peer", "name", port, "netns", sw)
		foSh(t, "ip", "-n", sw, "link", "set", port, "master", "br0")
		foSh(t, "ip", "-n", sw, "link", "set", port, "up")
		for _, a := range node.addrs {
			foSh(t, "ip", "-n", n.ns(node.name), "addr", "add", a+"/24", "dev", "eth0")
		}
		foSh(t, "ip", "-n", n.ns(node.name), "link", "set", "eth0", "up")
	}
	return n
}

// vipOn reports whether node holds the floating IP on eth0 (VRRP master).
func (n *foNet) vipOn(node string) bool {
	out, err := foTry("ip", "-n", n.ns(node), "-4", "-o", "addr", "show", "dev", "eth0")
	return err == nil && strings.Contains(out, " "+foVIP+"/")
}

// ---- configs from deploy/keepalived ----

// foRewrite replaces every old string by its new one and fails the test if
// one is missing, so the examples and this test cannot drift apart.
func foRewrite(t testing.TB, file, text string, pairs ...string) string {
	t.Helper()
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(text, pairs[i]) {
			t.Fatalf("%s no longer contains %q; update the test with the example", file, pairs[i])
		}
	}
	return strings.NewReplacer(pairs...).Replace(text)
}

func foRead(t testing.TB, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(foRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// foExampleTimers checks that the keepalived example still has the timers
// the bounds of this test are computed from.
func foExampleTimers(t *testing.T, conf string) {
	t.Helper()
	for _, want := range []string{
		fmt.Sprintf("advert_int %d\n", int(foAdvertInt/time.Second)),
		fmt.Sprintf("interval %d ", int(foInterval/time.Second)),
		fmt.Sprintf("timeout %d ", int(foTimeout/time.Second)),
		fmt.Sprintf("fall %d ", foFall),
		"nopreempt", "track_script", "/readyz",
	} {
		if !strings.Contains(conf, want) {
			t.Fatalf("deploy/keepalived/keepalived.conf: %q not found; the test's bounds assume it", want)
		}
	}
}

// ---- the test ----

// foPair is the running pair: both holdfasts bound, keepalived on both
// nodes, node a holding the floating IP.
type foPair struct {
	n          *foNet
	self, work string
	hf, ka     map[string]*foProc
	be         *foProc
	drainDelay time.Duration
	allowedGap time.Duration // crash: what the check interval and VRRP timers allow
	startHF    func(node string)
	ready      func(node string) bool
}

// foStartPair sets up the namespaces, backends, both holdfasts and both
// keepalived instances. kaEdit, when set, edits each node's keepalived.conf
// before it starts.
func foStartPair(t *testing.T, kaEdit func(node, conf string) string) *foPair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) not installed")
	}
	if out, err := foTry("ip", "netns", "list"); err != nil {
		t.Skipf("ip netns unavailable: %v %s", err, out)
	}
	keepalived, err := exec.LookPath("keepalived")
	if err != nil {
		t.Fatal("keepalived not installed (scripts/deps.sh installs it)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := foBuild(t)
	n := foTopology(t)
	work, err := os.MkdirTemp("", "hffo-run-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(work) })
	_ = os.Chmod(work, 0o755)

	// Configs: the examples with the test's addresses.
	hfConf := foRewrite(t, "deploy/keepalived/holdfast.yaml", foRead(t, "deploy/keepalived/holdfast.yaml"),
		"192.0.2.100:80", foVIP+":80",
		"192.0.2.21:8080", foBackend1+":8080",
		"192.0.2.22:8080", foBackend2+":8080")
	cfg, err := config.Parse([]byte(hfConf))
	if err != nil {
		t.Fatalf("deploy/keepalived/holdfast.yaml: %v", err)
	}
	drainDelay := cfg.DrainDelay.D()
	if !cfg.Listeners[0].Freebind {
		t.Fatal("deploy/keepalived/holdfast.yaml: the floating-IP listener must have freebind: true")
	}
	hfPath := filepath.Join(work, "holdfast.yaml")
	if err := os.WriteFile(hfPath, []byte(hfConf), 0o644); err != nil {
		t.Fatal(err)
	}
	kaExample := foRead(t, "deploy/keepalived/keepalived.conf")
	foExampleTimers(t, kaExample)
	kaA := foRewrite(t, "deploy/keepalived/keepalived.conf", kaExample,
		"/usr/local/bin/holdfast", bin,
		"192.0.2.100/24", foVIP+"/24",
		"192.0.2.11", foNodeA,
		"192.0.2.12", foNodeB)
	kaB := foRewrite(t, "deploy/keepalived/keepalived.conf", kaExample,
		"/usr/local/bin/holdfast", bin,
		"192.0.2.100/24", foVIP+"/24",
		"router_id holdfast-a", "router_id holdfast-b",
		"priority 150", "priority 100",
		"unicast_src_ip 192.0.2.11", "unicast_src_ip "+foNodeB,
		"192.0.2.12", foNodeA)
	// Bounds: the check notices within interval*fall + timeout; the peer
	// takes over after its skew time, or at worst (the priority-0 advert
	// lost) after the master-down interval 3*advert_int + skew.
	skewB := time.Duration(float64(foAdvertInt) * float64(256-100) / 256)
	allowedGap := foInterval*foFall + foTimeout + 3*foAdvertInt + skewB + time.Second // +1s: scheduling on a busy CI host
	if drainDelay < foInterval*foFall+foTimeout+skewB {
		t.Fatalf("drain_delay %s is shorter than the check and VRRP takeover need (%s)", drainDelay, foInterval*foFall+foTimeout+skewB)
	}

	// Backends.
	be := foStart(t, "backend", []string{foEnvRole + "=backend", "HOLDFAST_FO_ADDRS=" + foBackend1 + ":8080," + foBackend2 + ":8080"}, nil,
		"ip", "netns", "exec", n.ns("be"), self)
	foWait(t, 10*time.Second, "backends listening", func() bool { return be.out.count("ready") > 0 })

	// holdfast on both nodes, before either holds the address: freebind.
	hf := map[string]*foProc{}
	startHF := func(node string) {
		hf[node] = foStart(t, "holdfast-"+node, nil, nil, "ip", "netns", "exec", n.ns(node), bin, "run", "-c", hfPath)
	}
	ready := func(node string) bool {
		_, err := foTry("ip", "netns", "exec", n.ns(node), bin, "probe", "http://127.0.0.1:9901/readyz")
		return err == nil
	}
	startHF("a")
	startHF("b")
	for _, node := range []string{"a", "b"} {
		foWait(t, 20*time.Second, "holdfast "+node+" ready (bound to the floating IP with freebind)", func() bool { return ready(node) })
	}
	// The deploy notes: vip-local.sh on each node, then keepalived.
	for _, node := range []string{"a", "b"} {
		foSh(t, "ip", "netns", "exec", n.ns(node), "sh", filepath.Join(foRoot(t), "deploy/keepalived/vip-local.sh"), foVIP, "eth0")
	}
	ka := map[string]*foProc{}
	for node, conf := range map[string]string{"a": kaA, "b": kaB} {
		if kaEdit != nil {
			conf = kaEdit(node, conf)
		}
		p := filepath.Join(work, "keepalived-"+node+".conf")
		if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		ka[node] = foStart(t, "keepalived-"+node, nil, nil, "ip", "netns", "exec", n.ns(node), keepalived,
			"--dont-fork", "--log-console", "--log-detail", "--vrrp", "-f", p,
			"-p", filepath.Join(work, "keepalived-"+node+".pid"),
			"-r", filepath.Join(work, "vrrp-"+node+".pid"))
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range []*foProc{ka["a"], ka["b"], hf["a"], hf["b"], be} {
				t.Logf("%s:\n  %s", p.name, p.out)
			}
		}
	})
	foWait(t, 20*time.Second, "node a to hold the floating IP", func() bool { return n.vipOn("a") })
	if n.vipOn("b") {
		t.Fatal("both nodes hold the floating IP")
	}
	return &foPair{n: n, self: self, work: work, hf: hf, ka: ka, be: be, drainDelay: drainDelay, allowedGap: allowedGap, startHF: startHF, ready: ready}
}

func TestFailoverFloatingIP(t *testing.T) {
	p := foStartPair(t, nil)
	n, self, hf, ka, drainDelay, allowedGap, startHF, ready := p.n, p.self, p.hf, p.ka, p.drainDelay, p.allowedGap, p.startHF, p.ready

	// (a) Planned switch: SIGTERM to the active holdfast.
	t.Run("planned", func(t *testing.T) {
		c := foStartClient(t, n, self)
		c.waitServed(t, foNodeA, foPhaseServed, 20*time.Second)
		atTerm := c.last()
		hf["a"].signal(syscall.SIGTERM)
		termAt := time.Now()
		c.waitServedSince(t, foNodeB, atTerm, foPhaseServed, 30*time.Second)
		moved := time.Since(termAt)
		if code := hf["a"].wait(t, drainDelay+30*time.Second); code != 0 {
			t.Errorf("holdfast a exited %d after SIGTERM, want 0", code)
		}
		st := c.stop(t)
		t.Logf("planned switch: %s; served by a after SIGTERM: %d; standby serving %s after SIGTERM",
			st, st.By[foNodeA]-atTerm.By[foNodeA], moved.Round(time.Millisecond))
		if st.Fail != 0 {
			t.Errorf("planned switch lost %d requests, want 0: %v", st.Fail, st.Errors)
		}
		if st.By[foNodeA]-atTerm.By[foNodeA] == 0 {
			t.Errorf("node a served nothing after SIGTERM: the listener must keep serving for drain_delay")
		}
		if !n.vipOn("b") || n.vipOn("a") {
			t.Errorf("floating IP not on b alone after the switch (a %v, b %v)", n.vipOn("a"), n.vipOn("b"))
		}
		if gap := time.Duration(st.MaxGapMS * float64(time.Millisecond)); gap > drainDelay {
			t.Errorf("longest gap %s exceeds drain_delay %s", gap, drainDelay)
		}
	})
	if t.Failed() {
		return
	}

	// Node a comes back as the standby (nopreempt: b keeps the address).
	backups := ka["a"].out.count("Entering BACKUP STATE")
	startHF("a")
	foWait(t, 20*time.Second, "holdfast a ready again", func() bool { return ready("a") })
	foWait(t, 20*time.Second, "keepalived a back to BACKUP", func() bool { return ka["a"].out.count("Entering BACKUP STATE") > backups })
	if !n.vipOn("b") || n.vipOn("a") {
		t.Fatalf("floating IP moved when a came back (a %v, b %v); nopreempt expected", n.vipOn("a"), n.vipOn("b"))
	}

	// (b) Crash: SIGKILL to the active holdfast (now b).
	t.Run("kill", func(t *testing.T) {
		c := foStartClient(t, n, self)
		c.waitServed(t, foNodeB, foPhaseServed, 20*time.Second)
		atKill := c.last()
		hf["b"].signal(syscall.SIGKILL)
		killAt := time.Now()
		c.waitServedSince(t, foNodeA, atKill, foPhaseServed, 30*time.Second)
		moved := time.Since(killAt)
		st := c.stop(t)
		gap := time.Duration(st.MaxGapMS * float64(time.Millisecond))
		maxLost := int64(foWorkers) * (int64(allowedGap/foTick) + 1)
		t.Logf("kill: %s; standby serving %s after SIGKILL; allowed gap %s, allowed lost %d",
			st, moved.Round(time.Millisecond), allowedGap, maxLost)
		if gap > allowedGap {
			t.Errorf("longest gap %s exceeds what the timers allow (%s)", gap, allowedGap)
		}
		if st.Fail > maxLost {
			t.Errorf("lost %d requests, more than %d workers can send in %s", st.Fail, foWorkers, allowedGap)
		}
		if !n.vipOn("a") || n.vipOn("b") {
			t.Errorf("floating IP not on a alone after the crash (a %v, b %v)", n.vipOn("a"), n.vipOn("b"))
		}
	})
}

// ---- the client ----

// foStats is what the client reports (a line of JSON every 100ms, and a
// final one when its stdin closes).
type foStats struct {
	Final        bool             `json:"final,omitempty"`
	OK           int64            `json:"ok"`
	Fail         int64            `json:"fail"`
	By           map[string]int64 `json:"by"`
	MaxGapMS     float64          `json:"max_gap_ms"`
	MaxLatencyMS float64          `json:"max_latency_ms"`
	Seconds      float64          `json:"seconds"`
	Errors       []string         `json:"errors,omitempty"`
	// Retried counts requests that took more than one connection: the
	// client retried them after a reused connection broke (a reset from
	// a node that does not know it), which Go's client does for
	// idempotent requests only.
	Retried int64 `json:"retried"`
}

func (s foStats) String() string {
	rate := 0.0
	if s.Seconds > 0 {
		rate = float64(s.OK+s.Fail) / s.Seconds
	}
	by := make([]string, 0, len(s.By))
	for k, v := range s.By {
		by = append(by, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(by)
	return fmt.Sprintf("%d ok, %d failed (requests lost), %d retried on a new connection, longest gap %.0fms, slowest request %.0fms, %.0f req/s over %.1fs, served by %s",
		s.OK, s.Fail, s.Retried, s.MaxGapMS, s.MaxLatencyMS, rate, s.Seconds, strings.Join(by, " "))
}

type foClient struct {
	p      *foProc
	latest atomic.Pointer[foStats]
	final  chan foStats
}

func foStartClient(t *testing.T, n *foNet, self string) *foClient {
	t.Helper()
	c := &foClient{final: make(chan foStats, 1)}
	c.latest.Store(&foStats{By: map[string]int64{}})
	onOut := func(line string) {
		var s foStats
		if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &s) != nil {
			return
		}
		if s.By == nil {
			s.By = map[string]int64{}
		}
		c.latest.Store(&s)
		if s.Final {
			c.final <- s
		}
	}
	c.p = foStart(t, "client", []string{
		foEnvRole + "=client",
		"HOLDFAST_FO_URL=http://" + foVIP + ":80/",
		"HOLDFAST_FO_WORKERS=" + strconv.Itoa(foWorkers),
		"HOLDFAST_FO_TICK=" + foTick.String(),
		"HOLDFAST_FO_TIMEOUT=" + foReqTimeout.String(),
	}, onOut, "ip", "netns", "exec", n.ns("c"), self)
	return c
}

func (c *foClient) last() foStats { return *c.latest.Load() }

func (c *foClient) waitServed(t *testing.T, node string, k int64, d time.Duration) {
	t.Helper()
	c.waitServedSince(t, node, foStats{By: map[string]int64{}}, k, d)
}

func (c *foClient) waitServedSince(t *testing.T, node string, since foStats, k int64, d time.Duration) {
	t.Helper()
	start := time.Now()
	for c.last().By[node]-since.By[node] < k {
		if time.Since(start) > d {
			t.Fatalf("client: %d requests served by %s within %s; client now: %s\n  %s",
				c.last().By[node]-since.By[node], node, d, c.last(), c.p.out)
		}
		select {
		case <-c.p.done:
			t.Fatalf("client exited: %s", c.p.out)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop closes the client's stdin and returns its final report.
func (c *foClient) stop(t *testing.T) foStats {
	t.Helper()
	_ = c.p.stdin.Close()
	select {
	case s := <-c.final:
		return s
	case <-time.After(foReqTimeout + 10*time.Second):
		t.Fatalf("client did not report: %s", c.p.out)
	}
	return foStats{}
}

func foEnvDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return d
	}
	return def
}

// foClientMain sends steady load: each worker at most one GET per tick over
// a keep-alive client (reconnecting when a connection breaks), until stdin
// closes. A request fails on a transport error, a timeout or a status other
// than 200; the body names the node that served it.
func foClientMain() int {
	url := os.Getenv("HOLDFAST_FO_URL")
	workers, _ := strconv.Atoi(os.Getenv("HOLDFAST_FO_WORKERS"))
	if workers <= 0 {
		workers = 4
	}
	tick := foEnvDuration("HOLDFAST_FO_TICK", 5*time.Millisecond)
	timeout := foEnvDuration("HOLDFAST_FO_TIMEOUT", 3*time.Second)
	client := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: timeout}).DialContext,
			MaxIdleConnsPerHost: workers,
			DisableCompression:  true,
		},
	}
	var (
		mu     sync.Mutex
		st     = foStats{By: map[string]int64{}}
		start  = time.Now()
		lastOK = start
	)
	record := func(node string, began time.Time, conns int, err error) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if conns > 1 {
			st.Retried++
		}
		if lat := float64(now.Sub(began)) / float64(time.Millisecond); lat > st.MaxLatencyMS {
			st.MaxLatencyMS = lat
		}
		if err != nil {
			st.Fail++
			if len(st.Errors) < 10 {
				st.Errors = append(st.Errors, now.Format("15:04:05.000")+" "+err.Error())
			}
			return
		}
		st.OK++
		st.By[node]++
		if g := float64(now.Sub(lastOK)) / float64(time.Millisecond); g > st.MaxGapMS {
			st.MaxGapMS = g
		}
		lastOK = now
	}
	snapshot := func(final bool) {
		mu.Lock()
		s := st
		s.By = map[string]int64{}
		for k, v := range st.By {
			s.By[k] = v
		}
		s.Errors = append([]string(nil), st.Errors...)
		s.Final = final
		s.Seconds = time.Since(start).Seconds()
		mu.Unlock()
		b, _ := json.Marshal(s)
		fmt.Println(string(b))
	}
	stop := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(stop) }()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk := time.NewTicker(tick)
			defer tk.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tk.C:
				}
				began := time.Now()
				var conns atomic.Int32
				trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { conns.Add(1) }}
				req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, url, nil)
				if err != nil {
					record("", began, 0, err)
					continue
				}
				resp, err := client.Do(req)
				if err != nil {
					record("", began, int(conns.Load()), err)
					continue
				}
				body, err := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if err == nil && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
				}
				record(strings.TrimSpace(string(body)), began, int(conns.Load()), err)
			}
		}()
	}
	report := time.NewTicker(100 * time.Millisecond)
	defer report.Stop()
	for {
		select {
		case <-report.C:
			snapshot(false)
			continue
		case <-stop:
		}
		break
	}
	wg.Wait()
	snapshot(true)
	return 0
}

// foBackendMain serves HTTP on every address of HOLDFAST_FO_ADDRS: /healthz
// answers ok, everything else the address the request came from (the
// holdfast node). It exits when stdin closes.
func foBackendMain() int {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			_, _ = io.WriteString(w, "ok\n")
			return
		}
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		_, _ = io.WriteString(w, host+"\n")
	})
	for _, a := range strings.Split(os.Getenv("HOLDFAST_FO_ADDRS"), ",") {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			fmt.Println("listen:", err)
			return 1
		}
		go func() { _ = http.Serve(ln, h) }()
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// ---- systemd unit ----

// foUnit parses a unit file: section.key -> values in order.
func foUnit(text string) map[string][]string {
	out := map[string][]string{}
	section := ""
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = strings.Trim(line, "[]")
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		out[section+"."+strings.TrimSpace(k)] = append(out[section+"."+strings.TrimSpace(k)], strings.TrimSpace(v))
	}
	return out
}

// TestSystemdUnit verifies deploy/systemd/holdfast.service (with
// systemd-analyze when installed) and runs its own commands: ExecStartPre,
// ExecStart, ExecReload (check, then kill -HUP $MAINPID) and the stop
// (KillSignal to the main process), which must drain and exit 0 well within
// TimeoutStopSec.
func TestSystemdUnit(t *testing.T) {
	const unitPath = "deploy/systemd/holdfast.service"
	text := foRead(t, unitPath)
	u := foUnit(text)
	one := func(key string) string {
		t.Helper()
		v := u[key]
		if len(v) != 1 {
			t.Fatalf("%s: %s: want one value, have %q", unitPath, key, v)
		}
		return v[0]
	}
	if v := one("Service.KillSignal"); v != "SIGTERM" {
		t.Errorf("KillSignal=%s, want SIGTERM (holdfast drains on SIGTERM)", v)
	}
	if v := one("Service.KillMode"); v != "mixed" && v != "control-group" {
		t.Errorf("KillMode=%s: SIGTERM must reach holdfast", v)
	}
	reload := u["Service.ExecReload"]
	if len(reload) == 0 || !regexp.MustCompile(`^\S*kill -HUP \$MAINPID$`).MatchString(reload[len(reload)-1]) {
		t.Errorf("the last ExecReload must be `kill -HUP $MAINPID`, have %q", reload)
	}
	stopSec, err := strconv.Atoi(one("Service.TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}
	// TimeoutStopSec must cover drain_delay + timeouts.drain of the example configs.
	for _, ex := range []string{"deploy/keepalived/holdfast.yaml", "deploy/docker/holdfast.yaml"} {
		cfg, err := config.Load(filepath.Join(foRoot(t), ex))
		if err != nil {
			t.Fatalf("%s: %v", ex, err)
		}
		need := cfg.DrainDelay.D()
		var drain time.Duration
		for _, l := range cfg.Listeners {
			drain = max(drain, l.Timeouts.Drain.D())
		}
		need += drain
		if time.Duration(stopSec)*time.Second <= need {
			t.Errorf("TimeoutStopSec=%d does not cover drain_delay + timeouts.drain of %s (%s)", stopSec, ex, need)
		}
	}

	bin := foBuild(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "holdfast.yaml")
	local := strings.NewReplacer("/usr/local/bin/holdfast", bin, "/etc/holdfast/holdfast.yaml", cfgPath)

	// systemd's own verdict, on the unit with the binary where it is here.
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		p := filepath.Join(dir, "holdfast.service")
		if err := os.WriteFile(p, []byte(local.Replace(text)), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		out, err := exec.CommandContext(ctx, sa, "verify", p).CombinedOutput()
		cancel()
		// Lines about the host's own units are not ours.
		var ours []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if strings.Contains(l, "holdfast.service") {
				ours = append(ours, l)
			}
		}
		if err != nil || len(ours) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	} else {
		t.Log("systemd-analyze not installed: unit checked by parsing only")
	}

	// Run the unit's commands.
	b1 := testkit.StartBackend(t, "one")
	b2 := testkit.StartBackend(t, "two")
	port := func() int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}
	traffic, admin := port(), port()
	const drainDelay = 3 * time.Second
	writeCfg := func(backend string, extra string) {
		y := fmt.Sprintf(`admin: { listen: 127.0.0.1:%d }
drain_delay: %s
listeners:
  - { name: web, listen: 127.0.0.1:%d, pool: app, timeouts: { drain: 5s } }
pools:
  - name: app
    backends: [%s]
    health: { type: none }
%s`, admin, drainDelay, traffic, backend, extra)
		if err := os.WriteFile(cfgPath, []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmdline := func(key string, i int) []string {
		return strings.Fields(local.Replace(u["Service."+key][i]))
	}
	runCmd := func(argv []string, mainPID int) error {
		for i, a := range argv {
			argv[i] = strings.ReplaceAll(a, "$MAINPID", strconv.Itoa(mainPID))
		}
		out, err := foTry(argv[0], argv[1:]...)
		if err != nil {
			return fmt.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
		return nil
	}
	get := func(path string, port int) (int, string) {
		c := &http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}

	writeCfg(b1.Addr, "")
	for i := range u["Service.ExecStartPre"] {
		if err := runCmd(cmdline("ExecStartPre", i), 0); err != nil {
			t.Fatalf("ExecStartPre: %v", err)
		}
	}
	svc := foStart(t, "holdfast", nil, nil, cmdline("ExecStart", 0)...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("holdfast:\n  %s", svc.out)
		}
	})
	foWait(t, 15*time.Second, "holdfast ready", func() bool { c, _ := get("/readyz", admin); return c == 200 })
	if c, body := get("/", traffic); c != 200 || body != "one" {
		t.Fatalf("GET / = %d %q, want 200 one", c, body)
	}

	// systemctl reload: every ExecReload in order.
	reloadAll := func() error {
		for i := range u["Service.ExecReload"] {
			if err := runCmd(cmdline("ExecReload", i), svc.cmd.Process.Pid); err != nil {
				return err
			}
		}
		return nil
	}
	writeCfg(b2.Addr, "")
	if err := reloadAll(); err != nil {
		t.Fatalf("ExecReload: %v", err)
	}
	foWait(t, 10*time.Second, "the reloaded config to serve", func() bool { _, body := get("/", traffic); return body == "two" })

	// An invalid config: the reload fails loudly, nothing changes.
	writeCfg(b1.Addr, "bogus_key: 1\n")
	if err := reloadAll(); err == nil {
		t.Error("ExecReload succeeded with an invalid config")
	}
	if c, body := get("/", traffic); c != 200 || body != "two" {
		t.Errorf("after a rejected reload GET / = %d %q, want 200 two", c, body)
	}

	// systemctl stop: KillSignal to the main process; /readyz is 503 at
	// once while the listener keeps serving, then exit 0.
	stopAt := time.Now()
	svc.signal(syscall.SIGTERM)
	foWait(t, 2*time.Second, "/readyz 503 after SIGTERM", func() bool { c, _ := get("/readyz", admin); return c == 503 })
	if c, body := get("/", traffic); (c != 200 || body != "two") && time.Since(stopAt) < drainDelay-500*time.Millisecond {
		t.Errorf("during drain_delay GET / = %d %q, want 200 two", c, body)
	}
	if code := svc.wait(t, time.Duration(stopSec)*time.Second); code != 0 {
		t.Errorf("holdfast exited %d on SIGTERM, want 0", code)
	}
	took := time.Since(stopAt)
	t.Logf("stop took %s (drain_delay %s, TimeoutStopSec %ds)", took.Round(time.Millisecond), drainDelay, stopSec)
	if took < drainDelay {
		t.Errorf("holdfast exited %s after SIGTERM, before drain_delay %s", took, drainDelay)
	}
	if c, _ := get("/", traffic); c != 0 {
		t.Errorf("listener still answering after exit: %d", c)
	}
}
