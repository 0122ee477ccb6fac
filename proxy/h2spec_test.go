package proxy_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/holdfast-lb/holdfast/internal/testkit"
	"github.com/valyala/fasthttp"
)

// h2specBinary installs h2spec from the Go module proxy once into the
// repository's bin/ (v2.2.1, the newest the proxy has: 145 cases; `make
// h2spec` builds v2.6.0's 146 from its repository).
func h2specBinary(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../bin/h2spec-modproxy")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "h2spec")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(goTool, "install", "github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible")
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("installing h2spec: %v\n%s", err, out)
	}
	return bin
}

var h2specSummary = regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`)

// TestH2Spec runs the HTTP/2 conformance suite against an h2c
// (http2_only) and a TLS listener: every case passes on both.
func TestH2Spec(t *testing.T) {
	bin := h2specBinary(t)
	be := testkit.StartBackend(t, "b")
	// 6.9.2/2 needs a response body of at least 5 bytes, or it skips.
	be.SetHandler(func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hello, h2spec\n") })
	cert, key, _ := writeCert(t, t.TempDir(), "tls", 1, "localhost")
	a := startL4(t, fmt.Sprintf(`
listeners:
  - { name: h2c, listen: 127.0.0.1:0, pool: p, http2_only: true }
  - { name: tls, listen: 127.0.0.1:0, pool: p, tls: [ { cert_file: %s, key_file: %s } ] }
pools:
  - { name: p, backends: [%s], health: { type: none } }
`, cert, key, be.Addr))
	for _, l := range []string{"h2c", "tls"} {
		t.Run(l, func(t *testing.T) {
			t.Parallel()
			args := []string{"-h", "127.0.0.1", "-p", fmt.Sprint(a.ListenerAddr(l).(*net.TCPAddr).Port), "-o", "5"}
			if l == "tls" {
				args = append(args, "-t", "-k")
			}
			out, _ := exec.Command(bin, args...).CombinedOutput() // exit 1 on a failure: read from the summary
			m := h2specSummary.FindStringSubmatch(string(out))
			if m == nil {
				t.Fatalf("no h2spec summary:\n%s", out)
			}
			if m[1] != m[2] || m[4] != "0" {
				i := strings.Index(string(out), "Failures:")
				t.Fatalf("h2spec against %s: %s\n%s", l, m[0], out[max(i, 0):])
			}
			t.Logf("h2spec against %s: %s", l, m[0])
		})
	}
}
