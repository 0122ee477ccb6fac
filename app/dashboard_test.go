package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/discovery/dnstest"
	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// dashDoc is the part of /status.json the dashboard test compares.
type dashDoc struct {
	Time      time.Time `json:"time"`
	Listeners []struct {
		Name        string `json:"name"`
		Connections int64  `json:"connections"`
	} `json:"listeners"`
	Pools []struct {
		Name     string `json:"name"`
		Routable int    `json:"routable"`
		Total    int    `json:"total"`
		Traffic  *struct {
			Rate          float64 `json:"rate"`
			ErrorRate     float64 `json:"error_rate"`
			P50Ms         float64 `json:"p50_ms"`
			WindowSeconds float64 `json:"window_seconds"`
		} `json:"traffic"`
		Retries *struct {
			Total uint64 `json:"total"`
		} `json:"retries"`
		Discovery *struct {
			Stale    bool `json:"stale"`
			Backends int  `json:"backends"`
			Servers  []struct {
				Server string            `json:"server"`
				Counts map[string]uint64 `json:"counts"`
			} `json:"servers"`
		} `json:"discovery"`
		Events []struct {
			Backend string `json:"backend"`
			Kind    string `json:"kind"`
			To      string `json:"to"`
		} `json:"events"`
		Backends []struct {
			Address     string `json:"address"`
			State       string `json:"state"`
			Inflight    int64  `json:"inflight"`
			Connections int64  `json:"connections"`
			Traffic     *struct {
				Rate float64 `json:"rate"`
			} `json:"traffic"`
		} `json:"backends"`
	} `json:"pools"`
}

// TestDashboardInChromium drives the /status page in headless Chromium
// while load runs through two pools, one of them discovered by DNS from
// two resolver servers (the first failing every other query) with one
// dead address, and checks that the numbers the page shows after its
// script ran match /status.json taken around the same time, a drained
// backend's state included. The admin server has a token: the page gets
// it from the URL fragment, as a user's bookmark would. The screenshot is
// kept under bin/artifacts (or $HOLDFAST_ARTIFACTS).
func TestDashboardInChromium(t *testing.T) {
	chromium := chromiumPath(t)
	b1 := testkit.StartBackend(t, "b1")
	b2 := testkit.StartBackend(t, "b2")
	b3 := testkit.StartBackend(t, "b3")
	_, port, _ := net.SplitHostPort(b3.Addr)
	const name = "dash.holdfast.test."
	primary, secondary := dnstest.Start(t), dnstest.Start(t)
	// 127.0.0.2 has nothing on b3's port: its connect failures are retried.
	for _, s := range []*dnstest.Server{primary, secondary} {
		s.Add(name+" 5 IN A 127.0.0.1", name+" 5 IN A 127.0.0.2")
	}
	primary.SetFaults(dnstest.Servfail, dnstest.OK)

	const token = "dash-token-0123456789"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := testkit.StartApp(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0, token_file: %q }
resolvers:
  - { name: dash, servers: [%q, %q], timeout: 500ms, attempts: 1 }
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: api }
  - { name: dns, listen: 127.0.0.1:0, pool: dns }
pools:
  - name: api
    backends: [%q, %q]
    health: { type: http, path: /healthz, interval: 500ms, timeout: 500ms }
  - name: dns
    discovery: { type: a, name: %s, port: %s, resolver: dash, min_refresh: 200ms, max_refresh: 400ms }
    health: { type: none }
    outlier: { consecutive_failures: 3, ejection: 5m }
    retries: { attempts: 2, budget: "50%%" }
`, tokenFile, primary.Addr, secondary.Addr, b1.Addr, b2.Addr, name, port))
	admin := "http://" + a.AdminAddr().String()
	testkit.WaitFor(t, 15*time.Second, "both pools routable", func() bool {
		return a.Pool("api").Routable() == 2 && a.Pool("dns").Routable() >= 1
	})

	// Paced load on both listeners: about 160 requests/s in all, enough
	// for rates and percentiles, little enough to leave a loaded 2-core
	// machine to Chromium.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var failMu sync.Mutex
	var failures []string
	for _, l := range []string{"web", "web", "dns", "dns"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second}
			tick := time.NewTicker(25 * time.Millisecond)
			defer tick.Stop()
			url := a.URL(l, "/")
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				resp, err := c.Get(url)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil && ctx.Err() == nil {
					failMu.Lock()
					failures = append(failures, l+": "+err.Error())
					failMu.Unlock()
				}
			}
		}()
	}
	defer func() { stop(); wg.Wait() }()

	status := func() dashDoc {
		t.Helper()
		req, _ := http.NewRequest("GET", admin+"/status.json", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("status.json: %v", err)
		}
		defer resp.Body.Close()
		var d dashDoc
		if err := json.NewDecoder(resp.Body).Decode(&d); err != nil || resp.StatusCode != 200 {
			t.Fatalf("status.json: %d %v", resp.StatusCode, err)
		}
		return d
	}
	// Drain b2 through the admin API, as an operator would.
	req, _ := http.NewRequest("POST", admin+"/backends/api/"+b2.Addr+"/drain", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("drain: %v %v", resp, err)
	}
	resp.Body.Close()

	// Wait for a steady picture: five seconds of rates on both pools,
	// the dead address ejected, both DNS servers heard from.
	testkit.WaitFor(t, 30*time.Second, "rates over 5s, an ejection and both DNS servers in /status.json", func() bool {
		d := status()
		for _, p := range d.Pools {
			if p.Traffic == nil || p.Traffic.WindowSeconds < 5 || p.Traffic.Rate < 10 {
				return false
			}
			if p.Name == "dns" && (p.Discovery == nil || len(p.Discovery.Servers) != 2 || backendState(p.Backends, "127.0.0.2:"+port) != "ejected") {
				return false
			}
		}
		return true
	})

	before := status()
	dom := runChromium(t, chromium, "--dump-dom", admin+"/status#token="+token)
	after := status()
	shown := parseShown(dom)
	if len(shown) == 0 {
		t.Fatalf("the page shows no values; DOM:\n%s", dom)
	}
	rendered := regexp.MustCompile(`<span id="doc-time">([^<]*)</span>`).FindStringSubmatch(dom)
	if rendered == nil {
		t.Fatalf("no doc-time in the DOM:\n%s", dom)
	}
	at, err := time.Parse(time.RFC3339Nano, rendered[1])
	if err != nil || at.Before(before.Time) || at.After(after.Time) {
		t.Fatalf("the page shows the status of %q, not one taken between %s and %s (%v)", rendered[1], before.Time, after.Time, err)
	}
	if m := regexp.MustCompile(`<span id="err">([^<]*)</span>`).FindStringSubmatch(dom); m == nil || m[1] != "" {
		t.Errorf("the page reports an error (did it take the token from its URL fragment?): %q", m)
	}

	get := func(pool, backend, k string) string {
		t.Helper()
		v, ok := shown[shownKey{pool, backend, k}]
		if !ok {
			t.Errorf("the page shows no %s for %s/%s", k, pool, backend)
		}
		return v
	}
	// within checks a number the page shows against the same number in
	// the two documents around it.
	within := func(label, s string, lo, hi, slack float64) {
		t.Helper()
		v, err := strconv.ParseFloat(strings.Fields(s + " x")[0], 64)
		if err != nil {
			t.Errorf("%s: page shows %q, not a number", label, s)
			return
		}
		lo, hi = math.Min(lo, hi), math.Max(lo, hi)
		if v < lo*0.6-slack || v > hi*1.4+slack {
			t.Errorf("%s: page shows %v, status.json said %v then %v", label, v, lo, hi)
		} else {
			t.Logf("%s: page %v, status.json %v..%v", label, v, lo, hi)
		}
	}
	for pi, p := range after.Pools {
		bp := before.Pools[pi]
		within(p.Name+" rate", get(p.Name, "", "rate"), bp.Traffic.Rate, p.Traffic.Rate, 2)
		within(p.Name+" error rate", get(p.Name, "", "error_rate"), bp.Traffic.ErrorRate, p.Traffic.ErrorRate, 1)
		within(p.Name+" p50", get(p.Name, "", "p50_ms"), bp.Traffic.P50Ms, p.Traffic.P50Ms, 1)
		if got := get(p.Name, "", "routable"); got != strconv.Itoa(p.Routable) || p.Routable != bp.Routable {
			t.Errorf("%s routable: page %q, status.json %d then %d", p.Name, got, bp.Routable, p.Routable)
		}
		if got := get(p.Name, "", "total"); got != strconv.Itoa(p.Total) {
			t.Errorf("%s total: page %q, status.json %d", p.Name, got, p.Total)
		}
		within(p.Name+" retries", get(p.Name, "", "retries"), float64(bp.Retries.Total), float64(p.Retries.Total), 0)
		for bi, b := range p.Backends {
			bb := bp.Backends[bi]
			if got := get(p.Name, b.Address, "state"); got != b.State && got != bb.State {
				t.Errorf("%s %s state: page %q, status.json %q then %q", p.Name, b.Address, got, bb.State, b.State)
			}
			if b.Traffic != nil && bb.Traffic != nil {
				within(p.Name+" "+b.Address+" rate", get(p.Name, b.Address, "rate"), bb.Traffic.Rate, b.Traffic.Rate, 2)
			}
			within(p.Name+" "+b.Address+" in flight", get(p.Name, b.Address, "inflight"), float64(bb.Inflight), float64(b.Inflight), 4)
			within(p.Name+" "+b.Address+" connections", get(p.Name, b.Address, "connections"), float64(bb.Connections), float64(b.Connections), 4)
		}
		if p.Discovery != nil {
			if got, want := get(p.Name, "", "discovery_backends"), strconv.Itoa(p.Discovery.Backends); got != want {
				t.Errorf("%s discovery backends: page %q, status.json %s", p.Name, got, want)
			}
			// The page's last answer of each server is one that server gave.
			for _, s := range p.Discovery.Servers {
				if got := get(p.Name, s.Server, "server_last"); s.Counts[got] == 0 {
					t.Errorf("%s server %s: page shows last result %q, status.json counts %v", p.Name, s.Server, got, s.Counts)
				}
			}
			if len(p.Discovery.Servers) != 2 {
				t.Errorf("%s: status.json lists %d DNS servers, want 2", p.Name, len(p.Discovery.Servers))
			}
		}
	}
	if got := get("api", b2.Addr, "state"); got != "draining" {
		t.Errorf("drained backend: page shows %q, want draining", got)
	}
	if got := get("dns", "127.0.0.2:"+port, "state"); got != "ejected" {
		t.Errorf("dead backend: page shows %q, want ejected", got)
	}
	for _, ev := range []string{"api " + b2.Addr + " override drain", "api " + b2.Addr + " override draining",
		"dns 127.0.0.2:" + port + " ejection ejected"} {
		if !strings.Contains(dom, `data-event="`+ev+`"`) {
			t.Errorf("the timeline lacks the event %q", ev)
		}
	}
	for li, l := range after.Listeners {
		within("listener "+l.Name+" connections", get("", l.Name, "listener_connections"),
			float64(before.Listeners[li].Connections), float64(l.Connections), 4)
	}

	// The screenshot, kept as the test's artifact.
	dir := os.Getenv("HOLDFAST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "bin", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot, _ := filepath.Abs(filepath.Join(dir, "status.png"))
	_ = os.Remove(shot)
	runChromium(t, chromium, "--screenshot="+shot, "--window-size=1400,1900", admin+"/status#token="+token)
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10_000 {
		t.Fatalf("no screenshot at %s: %v", shot, err)
	}
	t.Logf("screenshot: %s", shot)

	stop()
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d requests failed under load, first: %s", len(failures), failures[0])
	}
}

func backendState(bs []struct {
	Address     string `json:"address"`
	State       string `json:"state"`
	Inflight    int64  `json:"inflight"`
	Connections int64  `json:"connections"`
	Traffic     *struct {
		Rate float64 `json:"rate"`
	} `json:"traffic"`
}, addr string) string {
	for _, b := range bs {
		if b.Address == addr {
			return b.State
		}
	}
	return ""
}

// chromiumPath finds Debian's chromium; the test fails (scripts/deps.sh
// installs it) rather than skips without it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, n := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	t.Fatal("chromium is required for the dashboard test and is not installed; run scripts/deps.sh (apt-get install chromium)")
	return ""
}

// runChromium runs headless Chromium on url with a virtual-time budget
// (the page's script runs and its first polls finish) and returns stdout.
func runChromium(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	full := append([]string{"--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
		"--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=5000"}, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

type shownKey struct{ pool, backend, k string }

var shownRE = regexp.MustCompile(`data-pool="([^"]*)"(?: data-backend="([^"]*)")? data-k="([^"]+)"[^>]*>(.*?)</(?:td|div|span|b)>`)
var tagRE = regexp.MustCompile(`<[^>]*>`)

// parseShown returns every value the page marks with data-k, as text.
func parseShown(dom string) map[shownKey]string {
	out := map[shownKey]string{}
	for _, m := range shownRE.FindAllStringSubmatch(dom, -1) {
		out[shownKey{m[1], m[2], m[3]}] = strings.TrimSpace(tagRE.ReplaceAllString(m[4], ""))
	}
	return out
}

// When the retry budget is spent the retries it refuses are counted, in
// holdfast_retry_budget_exhausted_total and in /status.json, and the
// retries it allowed match holdfast_retries_total.
func TestRetryBudgetExhaustedCounted(t *testing.T) {
	var bes []string
	for _, n := range []string{"busy1", "busy2"} {
		b := testkit.StartBackend(t, n)
		b.SetHandler(func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(503) })
		bes = append(bes, b.Addr)
	}
	a := testkit.StartApp(t, fmt.Sprintf(`
listeners: [{ name: web, listen: "127.0.0.1:0", pool: api }]
pools:
  - name: api
    health: { type: none }
    outlier: { consecutive_failures: 0 }
    retries: { attempts: 1, budget: "1%%", on: ["503"] }
    backends: [%q, %q]
`, bes[0], bes[1]))
	waitReady(t, a)
	const n = 40
	for i := range n {
		if status, _, err := testkit.Get(a.URL("web", "/")); err != nil || status != 503 {
			t.Fatalf("request %d: %d %v, want the backends' 503", i, status, err)
		}
	}
	pool := map[string]string{"pool": "api"}
	retried := testkit.Metric(t, a.Registry(), "holdfast_retries_total", map[string]string{"pool": "api", "reason": "status_503"})
	refused := testkit.Metric(t, a.Registry(), "holdfast_retry_budget_exhausted_total", pool)
	// A fresh pool may retry about ten times before traffic pays for more.
	if retried+refused != n || refused < n/2 {
		t.Fatalf("retried %v, refused %v of %d retry candidates; want most refused", retried, refused, n)
	}
	code, body := adminGet(t, a, "/status.json")
	var doc struct {
		Pools []struct {
			Retries struct {
				Total     float64 `json:"total"`
				Exhausted float64 `json:"budget_exhausted"`
				Budget    float64 `json:"budget"`
				Available float64 `json:"available"`
			} `json:"retries"`
		} `json:"pools"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil || code != 200 || len(doc.Pools) != 1 {
		t.Fatalf("status.json: %d %v %s", code, err, body)
	}
	r := doc.Pools[0].Retries
	if r.Total != retried || r.Exhausted != refused || r.Budget != 0.01 || r.Available >= 1 {
		t.Errorf("status.json retries %+v; metrics: %v retried, %v refused", r, retried, refused)
	}
}
