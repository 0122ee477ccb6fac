package app_test

// Backends as an operator expects them: upstream TLS, health checks with
// a Host, headers, a body and TLS, retries on status and per-try timeouts.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, file: filepath.Join(t.TempDir(), name+".pem")}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue signs a leaf for names (DNS names and IPs) and writes it and its
// key; it returns the file paths and the tls.Certificate.
func (ca *testCA) issue(t *testing.T, cn string, client bool, names ...string) (certFile, keyFile string, c tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	c, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, c
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startTLSBackend serves a testkit backend over TLS with cert; clientCAs,
// when set, makes it require a client certificate signed by them.
func startTLSBackend(t *testing.T, name string, cert tls.Certificate, clientCAs *x509.CertPool) *testkit.Backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAs != nil {
		cfg.ClientCAs, cfg.ClientAuth = clientCAs, tls.RequireAndVerifyClientCert
	}
	return testkit.ServeBackend(t, name, tls.NewListener(ln, cfg))
}

func TestUpstreamTLS(t *testing.T) {
	ca := newTestCA(t, "ca")
	other := newTestCA(t, "other-ca")
	_, _, srvCert := ca.issue(t, "app", false, "app.internal", "127.0.0.1")
	clientCertFile, clientKeyFile, _ := ca.issue(t, "holdfast", true)
	plainTLS := startTLSBackend(t, "tls", srvCert, nil)
	clientPool := x509.NewCertPool()
	clientPool.AddCert(ca.cert)
	mtls := startTLSBackend(t, "mtls", srvCert, clientPool)

	tests := []struct {
		name    string
		backend string
		tls     string
		want    int
		body    string
	}{
		{"verified name", plainTLS.Addr, fmt.Sprintf("{ enabled: true, server_name: app.internal, ca_file: %q }", ca.file), 200, "tls\n"},
		{"default name is the backend's IP", plainTLS.Addr, fmt.Sprintf("{ enabled: true, ca_file: %q }", ca.file), 200, "tls\n"},
		{"wrong name", plainTLS.Addr, fmt.Sprintf("{ enabled: true, server_name: wrong.internal, ca_file: %q }", ca.file), 502, ""},
		{"wrong CA", plainTLS.Addr, fmt.Sprintf("{ enabled: true, server_name: app.internal, ca_file: %q }", other.file), 502, ""},
		{"system roots do not know a private CA", plainTLS.Addr, "{ enabled: true, server_name: app.internal }", 502, ""},
		{"mTLS with a client certificate", mtls.Addr, fmt.Sprintf("{ enabled: true, server_name: app.internal, ca_file: %q, cert_file: %q, key_file: %q }",
			ca.file, clientCertFile, clientKeyFile), 200, "mtls\n"},
		{"mTLS without one", mtls.Addr, fmt.Sprintf("{ enabled: true, server_name: app.internal, ca_file: %q }", ca.file), 502, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := testkit.StartApp(t, fmt.Sprintf(`
listeners: [{ name: web, listen: "127.0.0.1:0", pool: api }]
pools:
  - name: api
    tls: %s
    health: { type: none }
    backends: [%q]
`, tc.tls, tc.backend))
			for i := range 3 { // new connections, then resumed sessions and pooled connections
				status, body, err := testkit.Get(a.URL("web", "/"))
				if err != nil {
					t.Fatal(err)
				}
				if status != tc.want || (tc.body != "" && body != tc.body) {
					t.Fatalf("request %d: %d %q, want %d %q", i, status, body, tc.want, tc.body)
				}
			}
			if tc.want == 502 {
				fails := testkit.Metric(t, a.Registry(), "holdfast_backend_requests_total", map[string]string{"backend": tc.backend, "code": "5xx"})
				if fails < 3 {
					t.Errorf("a TLS failure must count against the backend: %v 5xx attempts", fails)
				}
			}
		})
	}
}

// A TCP (L4) pool reaches a TLS backend too: holdfast originates TLS.
func TestUpstreamTLSForTCPPools(t *testing.T) {
	ca := newTestCA(t, "ca")
	_, _, srvCert := ca.issue(t, "app", false, "app.internal")
	b := startTLSBackend(t, "l4", srvCert, nil)
	a := testkit.StartApp(t, fmt.Sprintf(`
listeners: [{ name: db, listen: "127.0.0.1:0", protocol: tcp, pool: db }]
pools:
  - name: db
    tls: { enabled: true, server_name: app.internal, ca_file: %q }
    backends: [%q]
`, ca.file, b.Addr))
	waitReady(t, a)
	// The listener is plain TCP: an HTTP request over it reaches the TLS backend.
	resp, body := rawRoundTrip(t, a.ListenerAddr("db").String(), "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 200 || body != "l4\n" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	// No health section: a pool behind only tcp listeners is checked with tcp.
	if got := a.Config().Pools[0].Health.Type; got != "tcp" {
		t.Errorf("health.type defaulted to %q, want tcp", got)
	}
}

func TestHealthCheckHostBodyAndTLS(t *testing.T) {
	ca := newTestCA(t, "ca")
	_, _, srvCert := ca.issue(t, "app", false, "app.internal")
	// Answers /healthz with 200 only for Host: app.internal and X-Check: 1
	// (a Django ALLOWED_HOSTS check), 400 otherwise.
	hostChecked := func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/healthz" && (string(ctx.Host()) != "app.internal" || string(ctx.Request.Header.Peek("X-Check")) != "1") {
			ctx.SetStatusCode(400)
			return
		}
		ctx.SetBodyString("OK\n")
	}
	byHost := testkit.StartBackend(t, "host")
	byHost.SetHandler(hostChecked)
	degraded := testkit.StartBackend(t, "degraded")
	degraded.SetHandler(func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("DEGRADED\n") })
	healthy := testkit.StartBackend(t, "healthy")
	healthy.SetHandler(func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("OK\n") })
	overTLS := startTLSBackend(t, "tls", srvCert, nil)
	overTLS.SetHandler(hostChecked)

	state := func(a *testkit.App, pool, backend string) string {
		for _, p := range a.Status() {
			for _, b := range p.Backends {
				if p.Name == pool && b.Address == backend {
					return b.State
				}
			}
		}
		return ""
	}
	a := testkit.StartApp(t, fmt.Sprintf(`
listeners: [{ name: web, listen: "127.0.0.1:0", pool: host }]
pools:
  - name: host
    health: { path: /healthz, host: app.internal, headers: { X-Check: "1" }, interval: 50ms, timeout: 1s, rise: 1, fall: 1 }
    backends: [%q]
  - name: nohost
    health: { path: /healthz, interval: 50ms, timeout: 1s, rise: 1, fall: 1 }
    backends: [%q]
  - name: body
    health: { path: /healthz, expect_body: "OK", interval: 50ms, timeout: 1s, rise: 1, fall: 1 }
    backends: [%q, %q]
  - name: tls
    tls: { enabled: true, server_name: app.internal, ca_file: %q }
    health: { path: /healthz, host: app.internal, headers: { X-Check: "1" }, tls: true, interval: 50ms, timeout: 1s, rise: 1, fall: 1 }
    backends: [%q]
`, byHost.Addr, byHost.Addr, healthy.Addr, degraded.Addr, ca.file, overTLS.Addr))
	want := []struct{ pool, backend, state string }{
		{"host", byHost.Addr, "healthy"},
		{"nohost", byHost.Addr, "unhealthy"},
		{"body", healthy.Addr, "healthy"},
		{"body", degraded.Addr, "unhealthy"},
		{"tls", overTLS.Addr, "healthy"},
	}
	checks := func() bool {
		n := testkit.Metric(t, a.Registry(), "holdfast_health_checks_total", nil)
		return n >= 20 // a few rounds for every backend
	}
	testkit.WaitFor(t, 10*time.Second, "health checks", checks)
	for _, w := range want {
		if got := state(a, w.pool, w.backend); got != w.state {
			t.Errorf("pool %s backend %s: state %q, want %q", w.pool, w.backend, got, w.state)
		}
	}
	// Traffic of the body pool goes to the healthy backend only.
	for range 4 {
		a2, body, err := testkit.Get(a.URL("web", "/"))
		if err != nil || a2 != 200 || body != "OK\n" {
			t.Fatalf("host pool: %d %q %v", a2, body, err)
		}
	}
	if got := testkit.Metric(t, a.Registry(), "holdfast_backend_up", map[string]string{"pool": "body", "backend": degraded.Addr}); got != 0 {
		t.Errorf("DEGRADED backend up = %v", got)
	}
}

func TestRetryOnStatus(t *testing.T) {
	bad := testkit.StartBackend(t, "bad")
	bad.SetHandler(func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(503)
		ctx.SetBodyString("busy\n")
	})
	good := testkit.StartBackend(t, "good")
	a := testkit.StartApp(t, fmt.Sprintf(`
listeners: [{ name: web, listen: "127.0.0.1:0", pool: api }]
pools:
  - name: api
    health: { type: none }
    outlier: { consecutive_failures: 0 }
    retries: { attempts: 1, budget: "100%%", on: [connect_failure, reset, "503"] }
    backends: [%q, %q]
`, bad.Addr, good.Addr))
	waitReady(t, a)
	for i := range 10 { // round robin: every other request tries bad first
		status, body, err := testkit.Get(a.URL("web", "/"))
		if err != nil || status != 200 || body != "good\n" {
			t.Fatalf("request %d: %d %q %v", i, status, body, err)
		}
	}
	if bad.Requests() < 4 {
		t.Fatalf("the 503 backend saw %d requests: the test did not exercise a retry", bad.Requests())
	}
	if got := testkit.Metric(t, a.Registry(), "holdfast_retries_total", map[string]string{"pool": "api", "reason": "status_503"}); got != float64(bad.Requests()) {
		t.Errorf("retries{reason=status_503} = %v, want %d", got, bad.Requests())
	}
	// A POST with no body kept is not replayed: it gets the backend's 503.
	c := &fasthttp.Client{}
	saw503 := false
	for range 4 {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI(a.URL("web", "/"))
		req.Header.SetMethod("POST")
		if err := c.DoTimeout(req, resp, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		saw503 = saw503 || resp.StatusCode() == 503 && string(resp.Body()) == "busy\n"
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
	if !saw503 {
		t.Error("a bodiless POST was retried on 503")
	}
}

func TestPerTryTimeout(t *testing.T) {
	slow := testkit.StartBackend(t, "slow")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	slow.SetHandler(func(ctx *fasthttp.RequestCtx) {
		select { // a 2 s backend, let go at the end of the test
		case <-time.After(2 * time.Second):
		case <-release:
		}
		ctx.SetBodyString("slow\n")
	})
	fast := testkit.StartBackend(t, "fast")
	a := testkit.StartApp(t, fmt.Sprintf(`
listeners: [{ name: web, listen: "127.0.0.1:0", pool: api }]
pools:
  - name: api
    balance: round_robin
    health: { type: none }
    outlier: { consecutive_failures: 0 }
    retries: { attempts: 1, budget: "100%%", per_try_timeout: 300ms }
    backends: [%q, %q]
`, slow.Addr, fast.Addr))
	waitReady(t, a)
	for i := range 4 {
		start := time.Now()
		status, body, err := testkit.Get(a.URL("web", "/"))
		took := time.Since(start)
		if err != nil || status != 200 || body != "fast\n" {
			t.Fatalf("request %d: %d %q %v", i, status, body, err)
		}
		if took > 800*time.Millisecond {
			t.Errorf("request %d took %v: per_try_timeout 300ms should cut the slow try", i, took)
		}
	}
	if slow.Requests() == 0 {
		t.Fatal("the slow backend was never tried")
	}
	if got := testkit.Metric(t, a.Registry(), "holdfast_retries_total", map[string]string{"reason": "per_try_timeout"}); got < 1 {
		t.Errorf("retries{reason=per_try_timeout} = %v", got)
	}
	_ = strings.TrimSpace
	_ = context.Background
}
