package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-lb/holdfast/balancer"
	"github.com/holdfast-lb/holdfast/proxy"
)

type fakeRuntime struct {
	notReady  string
	listeners []proxy.ListenerStatus
	pools     map[string]string // pool → why it is not ready ("" ready)
}

func (f *fakeRuntime) NotReady() string { return f.notReady }
func (f *fakeRuntime) PoolNotReady(name string) (string, bool) {
	why, ok := f.pools[name]
	return why, ok
}
func (f *fakeRuntime) Draining() bool                         { return false }
func (f *fakeRuntime) Status() []balancer.PoolStatus          { return nil }
func (f *fakeRuntime) ListenerStatus() []proxy.ListenerStatus { return f.listeners }
func (f *fakeRuntime) Reload() (string, error)                { return "", nil }

var _ Runtime = (*fakeRuntime)(nil)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

// TestListenerNotAccepting: a listener that cannot accept makes /readyz
// 503 with the reason, and /status and /status.json show it paused.
func TestListenerNotAccepting(t *testing.T) {
	paused := proxy.ListenerStatus{Name: "web", Address: "127.0.0.1:8080", Protocol: "http", Accepting: false,
		PausedFor: "1.5s", AcceptError: "emfile: accept tcp: too many open files", AcceptErrors: 7}
	for _, tc := range []struct {
		name     string
		rt       *fakeRuntime
		code     int
		body     string
		html     string
		jsonOpen bool
	}{
		{"ready", &fakeRuntime{listeners: []proxy.ListenerStatus{{Name: "web", Accepting: true}}}, 200, "ready", "<td>yes</td>", true},
		{"not accepting", &fakeRuntime{notReady: `listener "web" cannot accept connections for 1.5s: emfile`, listeners: []proxy.ListenerStatus{paused}},
			503, `not ready: listener "web" cannot accept connections for 1.5s: emfile`, "paused 1.5s</b>: emfile: accept tcp: too many open files", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := New(tc.rt, prometheus.NewRegistry(), Settings{})
			code, body := get(t, h, "/readyz")
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Errorf("/readyz = %d %q, want %d %q", code, body, tc.code, tc.body)
			}
			if _, html := get(t, h, "/status"); !strings.Contains(html, tc.html) {
				t.Errorf("/status lacks %q:\n%s", tc.html, html)
			}
			_, js := get(t, h, "/status.json")
			var doc struct {
				Ready     bool   `json:"ready"`
				NotReady  string `json:"not_ready"`
				Listeners []struct {
					Name      string `json:"name"`
					Accepting bool   `json:"accepting"`
				} `json:"listeners"`
			}
			if err := json.Unmarshal([]byte(js), &doc); err != nil {
				t.Fatal(err)
			}
			if doc.Ready != (tc.code == 200) || doc.NotReady != tc.rt.notReady || len(doc.Listeners) != 1 || doc.Listeners[0].Accepting != tc.jsonOpen {
				t.Errorf("/status.json = %s", js)
			}
		})
	}
}

// TestReadyzPool: /readyz?pool=NAME answers for that pool alone, whatever
// the instance's own readiness; an unknown pool is 404.
func TestReadyzPool(t *testing.T) {
	rt := &fakeRuntime{notReady: "", pools: map[string]string{"api": "", "new": `pool "new" has never had a backend`}}
	h := New(rt, prometheus.NewRegistry(), Settings{})
	cases := []struct {
		name, path string
		code       int
		body       string
	}{
		{"instance ready", "/readyz", 200, "ready\n"},
		{"routable pool", "/readyz?pool=api", 200, "ready\n"},
		{"pool that never had a backend", "/readyz?pool=new", 503, "not ready: pool \"new\" has never had a backend\n"},
		{"unknown pool", "/readyz?pool=nope", 404, "unknown pool \"nope\"\n"},
		{"empty pool name is unknown", "/readyz?pool=", 404, "unknown pool \"\"\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if code, body := get(t, h, tc.path); code != tc.code || body != tc.body {
				t.Errorf("%s = %d %q, want %d %q", tc.path, code, body, tc.code, tc.body)
			}
		})
	}
}
