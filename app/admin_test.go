package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/app"
	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// adminDo sends one admin request with an optional bearer token.
func adminDo(t *testing.T, a *app.App, method, path, tok string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+a.AdminAddr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// The token file is read at start and on each reload: a rotated token
// applies with the reload, an emptied file fails the reload and keeps the
// token in force, and pprof follows the config.
func TestAdminTokenLifecycle(t *testing.T) {
	be := testkit.StartBackend(t, "b")
	tokFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokFile, "first\n")
	doc := func(pprof bool) string {
		return fmt.Sprintf(`
admin: { listen: "127.0.0.1:0", token_file: %q, pprof: %v }
listeners: [{ name: web, listen: "127.0.0.1:0", pool: p }]
pools: [{ name: p, health: { type: none }, backends: [%q] }]
`, tokFile, pprof, be.Addr)
	}
	a := testkit.StartApp(t, doc(false))
	steps := []struct {
		name, method, path, tok string
		want                    int
	}{
		{"healthz needs no token", "GET", "/healthz", "", 200},
		{"readyz needs no token", "GET", "/readyz", "", 200},
		{"metrics without the token", "GET", "/metrics", "", 401},
		{"metrics with the token", "GET", "/metrics", "first", 200},
		{"pprof off", "GET", "/debug/pprof/", "first", 404},
		{"reload without the token", "POST", "/reload", "", 401},
	}
	for _, s := range steps {
		if code, body := adminDo(t, a.App, s.method, s.path, s.tok); code != s.want {
			t.Errorf("%s: %d %q, want %d", s.name, code, body, s.want)
		}
	}

	// Rotate the token and turn pprof on.
	writeFile(t, tokFile, "second\n")
	writeFile(t, a.Path, doc(true))
	if code, body := adminDo(t, a.App, "POST", "/reload", "first"); code != 200 {
		t.Fatalf("reload: %d %q", code, body)
	}
	for _, s := range []struct {
		name, path, tok string
		want            int
	}{
		{"old token after rotation", "/metrics", "first", 401},
		{"new token after rotation", "/metrics", "second", 200},
		{"pprof on after reload", "/debug/pprof/", "second", 200},
	} {
		if code, body := adminDo(t, a.App, "GET", s.path, s.tok); code != s.want {
			t.Errorf("%s: %d %q, want %d", s.name, code, body, s.want)
		}
	}

	// An emptied token file fails the reload, naming the key; the token
	// in force stays.
	writeFile(t, tokFile, "\n")
	code, body := adminDo(t, a.App, "POST", "/reload", "second")
	if code != 400 || !strings.Contains(body, "admin.token_file") {
		t.Fatalf("reload with an empty token file: %d %q, want 400 naming admin.token_file", code, body)
	}
	if code, _ := adminDo(t, a.App, "GET", "/metrics", "second"); code != 200 {
		t.Errorf("token after a failed reload: %d, want 200", code)
	}
	if got := testkit.Metric(t, a.Registry(), "holdfast_config_reload_failures_total", nil); got != 1 {
		t.Errorf("reload failures %v, want 1", got)
	}
}

// A token file that is valid at load but empty at start stops the start:
// holdfast never serves an admin API that was meant to be protected
// without its token.
func TestAdminTokenUnreadableAtStart(t *testing.T) {
	tokFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokFile, "tok\n")
	path := testkit.WriteConfig(t, fmt.Sprintf(`
admin: { listen: "127.0.0.1:0", token_file: %q }
listeners: [{ name: web, listen: "127.0.0.1:0", pool: p }]
pools: [{ name: p, health: { type: none }, backends: [127.0.0.1:9] }]
`, tokFile))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		spoil func()
	}{
		{"empty", func() { writeFile(t, tokFile, "  \n") }},
		{"removed", func() { _ = os.Remove(tokFile) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.spoil()
			a := app.New(cfg, app.Options{Log: testkit.Logger(t), ConfigPath: path})
			err := a.Start(context.Background())
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				a.Shutdown(ctx)
				t.Fatal("started with an unusable token file")
			}
			if !strings.Contains(err.Error(), "admin.token_file") {
				t.Errorf("start error %q does not name admin.token_file", err)
			}
		})
	}
}
