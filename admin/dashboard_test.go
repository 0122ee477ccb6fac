package admin_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-lb/holdfast/admin"
	"github.com/holdfast-lb/holdfast/balancer"
)

// poolRuntime is a ready process with one pool whose backend's reason
// tries to break out of the page's script.
type poolRuntime struct{ fakeRuntime }

const hostile = `</script><script>alert(1)</script>`

func (*poolRuntime) Status() []balancer.PoolStatus {
	return []balancer.PoolStatus{{Name: "api", Balance: "round_robin", Routable: 1, Total: 1,
		Backends: []balancer.BackendStatus{{Address: "10.9.8.7:80", State: "healthy", Routable: true, Reason: hostile}}}}
}

var initialRE = regexp.MustCompile(`(?s)<script id="initial" type="application/json">(.*?)</script>`)

// With a token set, /status without it is still 401, but its body is the
// dashboard without any data, which asks for the token; with the token
// the page carries the status at once, escaped so that no value can end
// its script element.
func TestDashboardPage(t *testing.T) {
	h := admin.New(&poolRuntime{}, prometheus.NewRegistry(), admin.Settings{Token: token})
	addr := serve(t, h, admin.Timeouts{})

	code, body, hdr := call(t, "GET", "http://"+addr+"/status", nil)
	if code != 401 || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("without the token: %d %q, want 401 with WWW-Authenticate", code, hdr.Get("WWW-Authenticate"))
	}
	if !strings.Contains(body, `<form id="auth">`) || !strings.Contains(body, `fetch("status.json"`) {
		t.Errorf("without the token the body is not the dashboard asking for it")
	}
	if strings.Contains(body, "10.9.8.7") {
		t.Errorf("without the token the page shows a backend")
	}
	if m := initialRE.FindStringSubmatch(body); m == nil || strings.TrimSpace(m[1]) != "<!--INITIAL-->" && strings.TrimSpace(m[1]) != "" {
		t.Errorf("without the token the page carries data: %q", m)
	}

	code, body, hdr = call(t, "GET", "http://"+addr+"/status", bearer(token))
	if code != 200 || !strings.Contains(hdr.Get("Content-Security-Policy"), "connect-src 'self'") {
		t.Fatalf("with the token: %d, CSP %q", code, hdr.Get("Content-Security-Policy"))
	}
	if strings.Contains(body, hostile) {
		t.Errorf("a backend's reason reached the page unescaped")
	}
	m := initialRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no initial data in the page")
	}
	var doc struct {
		Pools []balancer.PoolStatus `json:"pools"`
	}
	if err := json.Unmarshal([]byte(m[1]), &doc); err != nil {
		t.Fatalf("initial data: %v in %q", err, m[1])
	}
	if len(doc.Pools) != 1 || doc.Pools[0].Backends[0].Address != "10.9.8.7:80" || doc.Pools[0].Backends[0].Reason != hostile {
		t.Errorf("initial data %+v", doc.Pools)
	}
	// The page is self-contained: nothing is loaded from anywhere.
	for _, ref := range []string{"<script src", "<link ", "http://", "https://", "@import"} {
		if strings.Contains(body, ref) {
			t.Errorf("the page references %q", ref)
		}
	}
}
