package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// loopback starts an HTTP server on 127.0.0.1 answering status to every path.
func loopback(t *testing.T, status int) string {
	t.Helper()
	return loopbackHandler(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(status) })
}

// loopbackHandler starts an HTTP server on 127.0.0.1 serving h.
func loopbackHandler(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(h)
	s.Listener.Close()
	s.Listener = ln
	s.Start()
	t.Cleanup(s.Close)
	return ln.Addr().String()
}

const validConfig = `
listeners: [{ name: web, listen: "127.0.0.1:0", pool: api }]
pools: [{ name: api, backends: [127.0.0.1:9001] }]
`

// badConfig's errors, by line.
var badConfig = strings.Join([]string{
	/* 1 */ "listeners:",
	/* 2 */ "  - name: web",
	/* 3 */ "    listen: 127.0.0.1:70000",
	/* 4 */ "    pool: nope",
	/* 5 */ "    colour: red",
	/* 6 */ "pools:",
	/* 7 */ "  - name: api",
	/* 8 */ "    backends: [127.0.0.1:9001]",
	/* 9 */ "    health: { interval: soon }",
	/* 10 */ "  - name: api",
	/* 11 */ "    backends: [127.0.0.1:9002]",
	/* 12 */ "    panic_threshold: 50",
	/* 13 */ "  - name: empty",
}, "\n") + "\n"

func TestCheck(t *testing.T) {
	good := writeFile(t, "good.yaml", validConfig)
	bad := writeFile(t, "bad.yaml", badConfig)
	errLine := regexp.MustCompile(`^\S+: .+ \(line \d+\)$`)
	cases := []struct {
		name       string
		args       []string
		code       int
		stdout     []string
		stderr     []string // each must appear as a whole line
		everyError bool     // every stderr line but the summary is `path: message (line N)`
	}{
		{name: "valid", args: []string{"check", "-c", good}, code: 0,
			stdout: []string{good + ": valid (1 listeners, 1 pools)"}},
		{name: "valid, global flags after the command", args: []string{"check", "-c", good, "--log-level", "debug", "--log-format=text"}, code: 0,
			stdout: []string{good + ": valid (1 listeners, 1 pools)"}},
		{name: "invalid: every error, located", args: []string{"check", "-c", bad}, code: 1, everyError: true, stderr: []string{
			`listeners[0].listen: bad port in "127.0.0.1:70000" (want 0..65535) (line 3)`,
			`listeners[0].pool: unknown pool "nope" (line 4)`,
			`listeners[0].colour: unknown key (want one of name, listen, protocol, pool, routes, proxy_protocol, http2_only, trusted_proxies, upgrades, path, freebind, tls, max_connections, max_header_bytes, max_body_bytes, access_log, timeouts, request_id, allow, deny, request_headers, response_headers) (line 5)`,
			`pools[0].health.interval: bad duration "soon" (want e.g. 250ms, 2s) (line 9)`,
			`pools[1].name: duplicate pool name "api" (line 10)`,
			`pools[1].panic_threshold: bad percentage "50" (want e.g. "50%") (line 12)`,
			`pools[2]: pool has neither backends nor discovery (line 13)`,
			bad + ": 7 error(s)",
		}},
		{name: "missing file", args: []string{"check", "-c", filepath.Join(t.TempDir(), "none.yaml")}, code: 1},
		{name: "bad flag", args: []string{"check", "--nope"}, code: 2},
		{name: "run refuses an invalid config the same way", args: []string{"run", "-c", bad}, code: 1, everyError: true, stderr: []string{
			`listeners[0].pool: unknown pool "nope" (line 4)`,
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(c.args...)
			if code != c.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, c.code, stdout, stderr)
			}
			outLines := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
			for _, w := range c.stdout {
				if !contains(outLines, w) {
					t.Errorf("stdout lacks the line %q:\n%s", w, stdout)
				}
			}
			errLines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			for _, w := range c.stderr {
				if !contains(errLines, w) {
					t.Errorf("stderr lacks the line %q:\n%s", w, stderr)
				}
			}
			if c.everyError {
				for _, l := range errLines {
					if strings.HasSuffix(l, " error(s)") {
						continue
					}
					if !errLine.MatchString(l) {
						t.Errorf("stderr line %q is not `path: message (line N)`", l)
					}
				}
			}
			if c.name == "missing file" && !strings.Contains(stderr, "none.yaml") {
				t.Errorf("stderr should name the missing file: %s", stderr)
			}
		})
	}
}

func TestVersionAndUsage(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout *regexp.Regexp
		stderr *regexp.Regexp
	}{
		{"version", []string{"version"}, 0,
			regexp.MustCompile(`^holdfast \S+ \(commit \S+, ` + regexp.QuoteMeta(runtime.Version()) + ` ` + runtime.GOOS + `/` + runtime.GOARCH + `\)\n$`), nil},
		{"version with global flags first", []string{"--log-format", "text", "version"}, 0, regexp.MustCompile(`^holdfast `), nil},
		{"help", []string{"help"}, 0, regexp.MustCompile(`(?s)usage: holdfast.*check \[-c FILE\] \[--resolve\]`), nil},
		{"no command", nil, 2, nil, regexp.MustCompile(`usage: holdfast`)},
		{"unknown command", []string{"serve"}, 2, nil, regexp.MustCompile(`unknown command "serve"`)},
		{"bad log level", []string{"--log-level", "loud", "version"}, 2, nil, regexp.MustCompile(`bad --log-level "loud"`)},
		{"bad log format", []string{"version", "--log-format", "xml"}, 2, nil, regexp.MustCompile(`bad --log-format xml`)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(c.args...)
			if code != c.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, c.code, stdout, stderr)
			}
			if c.stdout != nil && !c.stdout.MatchString(stdout) {
				t.Errorf("stdout %q does not match %s", stdout, c.stdout)
			}
			if c.stderr != nil && !c.stderr.MatchString(stderr) {
				t.Errorf("stderr %q does not match %s", stderr, c.stderr)
			}
		})
	}
}

func TestProbe(t *testing.T) {
	ok := loopback(t, 200)
	down := loopback(t, 503)
	cases := []struct {
		name string
		args []string
		code int
	}{
		{"200 passes", []string{"probe", "http://" + ok + "/readyz"}, 0},
		{"503 fails", []string{"probe", "http://" + down + "/readyz"}, 1},
		{"nothing listening fails", []string{"probe", "http://" + testkit.FreeAddr(t) + "/"}, 1},
		{"no URL is a usage error", []string{"probe"}, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if code, _, stderr := runCLI(c.args...); code != c.code {
				t.Errorf("exit %d, want %d (%s)", code, c.code, stderr)
			}
		})
	}
}

// probe sends the admin token from --token-file or $HOLDFAST_ADMIN_TOKEN.
func TestProbeToken(t *testing.T) {
	url := "http://" + loopbackHandler(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}) + "/metrics"
	good := writeFile(t, "token", "s3cret\n")
	wrong := writeFile(t, "wrong", "nope\n")
	empty := writeFile(t, "empty", "\n")
	cases := []struct {
		name, env string
		args      []string
		code      int
	}{
		{"no token: 401 fails", "", []string{"probe", url}, 1},
		{"token file", "", []string{"probe", "--token-file", good, url}, 0},
		{"wrong token file", "", []string{"probe", "--token-file", wrong, url}, 1},
		{"environment", "s3cret", []string{"probe", url}, 0},
		{"token file wins over the environment", "nope", []string{"probe", "--token-file", good, url}, 0},
		{"empty token file is a usage error", "", []string{"probe", "--token-file", empty, url}, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("HOLDFAST_ADMIN_TOKEN", c.env)
			if code, _, stderr := runCLI(c.args...); code != c.code {
				t.Errorf("exit %d, want %d (%s)", code, c.code, stderr)
			}
		})
	}
}

func contains(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}
