package e2e

// The Docker image: `make docker` builds it FROM scratch, deploy/docker/run.sh
// runs it with deploy/docker/holdfast.yaml mounted, it proxies to a process
// on the Docker host, its HEALTHCHECK (no shell) turns healthy, its admin
// API answers only inside the container (127.0.0.1 there: no token is set),
// and `docker stop` drains cleanly: /readyz 503 at once, traffic served through
// drain_delay, the request in flight finished, exit 0 before the stop
// timeout. Runs where a Docker engine answers; skipped otherwise.

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// dockerRun runs a docker command with a deadline.
func dockerRun(d time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func dockerMust(t *testing.T, d time.Duration, args ...string) string {
	t.Helper()
	out, err := dockerRun(d, args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// dockerImageInfo is the part of `docker image inspect` the test checks.
type dockerImageInfo struct {
	Size   int64
	Config struct {
		User         string
		StopSignal   string
		Entrypoint   []string
		Cmd          []string
		ExposedPorts map[string]struct{}
		Healthcheck  struct{ Test []string }
	}
	RootFS struct{ Layers []string }
}

// dockerGateway is the host's address on the default bridge network: the
// IPAM gateway, or else the address of the bridge interface itself.
func dockerGateway(t *testing.T) string {
	t.Helper()
	var nets []struct {
		IPAM struct {
			Config []struct{ Subnet, Gateway string }
		}
		Options map[string]string
	}
	if err := json.Unmarshal([]byte(dockerMust(t, 20*time.Second, "network", "inspect", "bridge")), &nets); err != nil || len(nets) != 1 {
		t.Fatalf("network inspect bridge: %v", err)
	}
	for _, c := range nets[0].IPAM.Config {
		if ip := net.ParseIP(c.Gateway); ip != nil && ip.To4() != nil {
			return c.Gateway
		}
	}
	ifname := nets[0].Options["com.docker.network.bridge.name"]
	if ifname == "" {
		ifname = "docker0"
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		t.Fatalf("bridge interface %s: %v", ifname, err)
	}
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
	}
	t.Fatalf("no IPv4 address on %s", ifname)
	return ""
}

func TestDockerImage(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("no docker CLI")
	}
	if out, err := dockerRun(20*time.Second, "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Skipf("no Docker engine: %v %s", err, out)
	}
	root := foRoot(t)
	id := strconv.Itoa(os.Getpid())
	repo := "holdfast-e2e-" + id
	version := "e2e-" + id
	image := repo + ":" + version
	name := "holdfast-e2e-" + id

	// make docker (its target is deploy/docker/build.sh).
	t.Cleanup(func() { _, _ = dockerRun(60*time.Second, "rmi", "-f", image, repo+":latest") })
	goTool := goCommand()
	argv := []string{"./deploy/docker/build.sh"}
	if _, err := exec.LookPath("make"); err == nil {
		argv = []string{"make", "--no-print-directory", "docker"}
	}
	buildStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, argv[0], argv[1:]...)
	build.Dir = root
	build.Env = append(os.Environ(), "IMAGE="+repo, "VERSION="+version, "GO="+goTool)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(build.Args, " "), err, out)
	}
	t.Logf("image %s built in %s", image, time.Since(buildStart).Round(time.Millisecond))

	// What the image is.
	var infos []dockerImageInfo
	if err := json.Unmarshal([]byte(dockerMust(t, 30*time.Second, "image", "inspect", image)), &infos); err != nil || len(infos) != 1 {
		t.Fatalf("image inspect: %v %d", err, len(infos))
	}
	info := infos[0]
	t.Logf("image size %.1f MB, %d layers, user %s", float64(info.Size)/1e6, len(info.RootFS.Layers), info.Config.User)
	if info.Config.User == "" || strings.HasPrefix(info.Config.User, "0") || strings.HasPrefix(info.Config.User, "root") {
		t.Errorf("image runs as %q, want a non-root user", info.Config.User)
	}
	if info.Config.StopSignal != "SIGTERM" {
		t.Errorf("STOPSIGNAL %q, want SIGTERM", info.Config.StopSignal)
	}
	if hc := strings.Join(info.Config.Healthcheck.Test, " "); !strings.HasPrefix(hc, "CMD /usr/local/bin/holdfast probe http://127.0.0.1:9901/") {
		t.Errorf("HEALTHCHECK %q, want the exec form of holdfast probe (no shell)", hc)
	}
	if _, ok := info.Config.ExposedPorts["8080/tcp"]; !ok {
		t.Errorf("EXPOSE lacks 8080/tcp")
	}
	if _, ok := info.Config.ExposedPorts["9901/tcp"]; ok {
		t.Errorf("EXPOSE has the admin port 9901/tcp: the shipped config keeps admin on loopback, without a token")
	}
	if got := strings.Join(append(info.Config.Entrypoint, info.Config.Cmd...), " "); got != "/usr/local/bin/holdfast run -c /etc/holdfast/holdfast.yaml" {
		t.Errorf("entrypoint+cmd %q", got)
	}
	if info.Size > 40<<20 {
		t.Errorf("image is %d bytes; a static binary on scratch should be far smaller", info.Size)
	}
	// Static, stamped, and nothing else in it (no shell).
	if out := dockerMust(t, 60*time.Second, "run", "--rm", image, "version"); !strings.Contains(out, "holdfast "+version+" ") {
		t.Errorf("version in the image: %q, want %s", out, version)
	}
	if out, err := dockerRun(60*time.Second, "run", "--rm", "--entrypoint", "/bin/sh", image, "-c", "true"); err == nil {
		t.Errorf("the image has a shell (%q); it should be FROM scratch", out)
	}

	// A backend on the Docker host, on the bridge's gateway address.
	gw := dockerGateway(t)
	ln, err := net.Listen("tcp", net.JoinHostPort(gw, "0"))
	if err != nil {
		t.Fatalf("listen on the bridge gateway: %v", err)
	}
	be := testkit.ServeBackend(t, "host", ln)
	var slowBegun atomic.Int64
	const slowFor = 4 * time.Second // longer than drain_delay: in flight when the listener closes
	be.SetHandler(func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/healthz":
			ctx.SetBodyString("ok\n")
		case "/slow":
			slowBegun.Add(1)
			time.Sleep(slowFor) // the slow upstream itself, not synchronisation
			ctx.SetBodyString("slow\n")
		default:
			ctx.SetBodyString("host\n")
		}
	})

	// The example config with this backend.
	const example = "deploy/docker/holdfast.yaml"
	text := foRewrite(t, example, foRead(t, example), "172.17.0.1:9000", be.Addr)
	cfg, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatalf("%s: %v", example, err)
	}
	drainDelay := cfg.DrainDelay.D()
	dir, err := os.MkdirTemp("", "holdfast-docker-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	_ = os.Chmod(dir, 0o755)
	cfgPath := filepath.Join(dir, "holdfast.yaml")
	if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}

	// deploy/docker/run.sh, publishing on free loopback ports; the admin
	// port too, to show that nothing answers on it from outside.
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := dockerRun(20*time.Second, "logs", name)
			t.Logf("container logs:\n%s", out)
		}
		_, _ = dockerRun(60*time.Second, "rm", "-f", name)
	})
	const stopTimeout = 30
	run := exec.Command("sh", filepath.Join(root, "deploy/docker/run.sh"), "--health-interval", "1s")
	run.Env = append(os.Environ(),
		"HOLDFAST_IMAGE="+image, "HOLDFAST_NAME="+name, "HOLDFAST_CONFIG="+cfgPath,
		"HOLDFAST_PORTS=127.0.0.1::8080 127.0.0.1::9901", "HOLDFAST_STOP_TIMEOUT="+strconv.Itoa(stopTimeout))
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("run.sh: %v\n%s", err, out)
	}
	hostPort := func(p string) string {
		out := dockerMust(t, 20*time.Second, "port", name, p)
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "127.0.0.1:") {
				return l
			}
		}
		t.Fatalf("docker port %s %s: %q", name, p, out)
		return ""
	}
	traffic, published := "http://"+hostPort("8080/tcp"), "http://"+hostPort("9901/tcp")
	client := &http.Client{Timeout: 10 * time.Second}
	get := func(url string) (int, string) {
		resp, err := client.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	state := func(f string) string { out, _ := dockerRun(20*time.Second, "inspect", "-f", f, name); return out }
	// The admin API from inside the container, as the HEALTHCHECK calls
	// it: holdfast probe exits 0 on 200 and names any other status.
	adminStatus := func(path string) string {
		out, err := dockerRun(20*time.Second, "exec", name, "/usr/local/bin/holdfast", "probe", "http://127.0.0.1:9901"+path)
		if err == nil {
			return "200"
		}
		return out
	}
	foWait(t, 30*time.Second, "container healthy (HEALTHCHECK: holdfast probe)", func() bool {
		if state("{{.State.Running}}") != "true" {
			t.Fatalf("container stopped: %s", state("{{json .State}}"))
		}
		return state("{{.State.Health.Status}}") == "healthy"
	})
	foWait(t, 20*time.Second, "/readyz 200", func() bool { return adminStatus("/readyz") == "200" })
	if c, body := get(published + "/healthz"); c != 0 {
		t.Errorf("the admin API answered from outside the container (%d %q): it must stay on the container's loopback without a token", c, body)
	}
	for i := range 100 {
		if c, body := get(traffic + "/"); c != 200 || body != "host" {
			t.Fatalf("request %d: %d %q, want 200 host", i, c, body)
		}
	}

	// docker stop under load, with a slow request in flight.
	type result struct {
		at   time.Time
		code int
	}
	var (
		mu      sync.Mutex
		results []result
	)
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		lc := &http.Client{Timeout: 5 * time.Second}
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		for range 5000 { // bounded: 50 s at most
			select {
			case <-loadCtx.Done():
				return
			case <-tk.C:
			}
			code := 0
			if resp, err := lc.Get(traffic + "/"); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				code = resp.StatusCode
			}
			mu.Lock()
			results = append(results, result{time.Now(), code})
			mu.Unlock()
		}
	}()
	slow := make(chan result, 1)
	go func() {
		c, body := get(traffic + "/slow")
		if body != "slow" {
			c = -c
		}
		slow <- result{time.Now(), c}
	}()
	foWait(t, 10*time.Second, "the slow request at the backend", func() bool { return slowBegun.Load() > 0 })

	stopAt := time.Now()
	stopped := make(chan error, 1)
	go func() {
		_, err := dockerRun(time.Duration(stopTimeout+30)*time.Second, "stop", name)
		stopped <- err
	}()
	foWait(t, 5*time.Second, "/readyz 503 after docker stop", func() bool { return strings.Contains(adminStatus("/readyz"), "503") })
	notReadyAt := time.Now()
	var stopErr error
	select {
	case stopErr = <-stopped:
	case <-time.After(time.Duration(stopTimeout+40) * time.Second):
		t.Fatal("docker stop did not return")
	}
	took := time.Since(stopAt)
	stopLoad()
	wg.Wait()
	if stopErr != nil {
		t.Fatalf("docker stop: %v", stopErr)
	}

	var sr result
	select {
	case sr = <-slow:
	case <-time.After(15 * time.Second):
		t.Fatal("the slow request never finished")
	}
	mu.Lock()
	servedDuringDelay, failedBeforeReady := 0, 0
	for _, r := range results {
		if r.at.After(notReadyAt) && r.code == 200 {
			servedDuringDelay++
		}
		if r.at.Before(notReadyAt) && r.code != 200 {
			failedBeforeReady++
		}
	}
	total := len(results)
	mu.Unlock()
	exit := state("{{.State.ExitCode}} {{.State.OOMKilled}}")
	logs, _ := dockerRun(20*time.Second, "logs", name)
	t.Logf("docker stop took %s (drain_delay %s); /readyz 503 after %s; %d requests during the stop, %d served after /readyz turned 503; slow request: %d after %s; exit %s",
		took.Round(time.Millisecond), drainDelay, notReadyAt.Sub(stopAt).Round(time.Millisecond), total, servedDuringDelay,
		sr.code, sr.at.Sub(stopAt).Round(time.Millisecond), exit)
	if exit != "0 false" {
		t.Errorf("exit code / OOM: %q, want 0 false", exit)
	}
	if took >= stopTimeout*time.Second {
		t.Errorf("docker stop took %s: SIGKILLed at the stop timeout, not drained", took)
	}
	if took < drainDelay {
		t.Errorf("container stopped %s after docker stop, before drain_delay %s", took, drainDelay)
	}
	if servedDuringDelay == 0 {
		t.Error("no request served after /readyz turned 503: listeners must keep serving for drain_delay")
	}
	if failedBeforeReady != 0 {
		t.Errorf("%d requests failed before /readyz turned 503", failedBeforeReady)
	}
	if sr.code != 200 {
		t.Errorf("the request in flight during the drain ended with %d, want 200 slow", sr.code)
	}
	for _, want := range []string{`"draining"`, `"stopped"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("container logs lack %s:\n%s", want, logs)
		}
	}
}
