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
}

func (f *fakeRuntime) NotReady() string                       { return f.notReady }
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
