package proxy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
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

// writeCert makes a self-signed certificate for names with the given
// serial and writes it to dir/base.crt and dir/base.key.
func writeCert(t *testing.T, dir, base string, serial int64, names ...string) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	// Write then rename, as a certificate manager does, so a reload never
	// reads half a file.
	for _, f := range []struct {
		path string
		blk  *pem.Block
	}{{certFile, &pem.Block{Type: "CERTIFICATE", Bytes: der}}, {keyFile, &pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}}} {
		if err := os.WriteFile(f.path+".tmp", pem.EncodeToMemory(f.blk), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f.path+".tmp", f.path); err != nil {
			t.Fatal(err)
		}
	}
	cert, _ = x509.ParseCertificate(der)
	return certFile, keyFile, cert
}

// tlsGet handshakes with serverName, checks the certificate against roots
// and sends one request; it returns the serial of the certificate served
// and the response body.
func tlsGet(t *testing.T, addr, serverName string, roots *x509.CertPool) (int64, string) {
	t.Helper()
	cfg := &tls.Config{ServerName: serverName, RootCAs: roots}
	if serverName == "" {
		cfg.InsecureSkipVerify = true // no SNI: only which certificate comes back matters
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("handshake for %q: %v", serverName, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	host := serverName
	if host == "" {
		host = "nosni"
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
	resp, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(string(resp), "\r\n\r\n")
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), body
}

func TestTLSBySNIAndReload(t *testing.T) {
	dir := t.TempDir()
	aCrt, aKey, aCert := writeCert(t, dir, "a", 1, "a.test")
	bCrt, bKey, bCert := writeCert(t, dir, "b", 2, "b.test", "*.wild.test")
	roots := x509.NewCertPool()
	roots.AddCert(aCert)
	roots.AddCert(bCert)

	be := testkit.StartBackend(t, "b")
	be.SetHandler(func(ctx *fasthttp.RequestCtx) {
		fmt.Fprintf(ctx, "%s %s", ctx.Request.Header.Peek("X-Forwarded-Proto"), ctx.Request.Header.Peek("X-Forwarded-Host"))
	})
	yaml := func(aCrt, aKey string) string {
		return fmt.Sprintf(`
listeners:
  - name: web
    listen: 127.0.0.1:0
    pool: p
    tls:
      - { cert_file: %q, key_file: %q }
      - { cert_file: %q, key_file: %q }
pools:
  - { name: p, backends: [%s], health: { type: none } }
`, aCrt, aKey, bCrt, bKey, be.Addr)
	}
	a := startL4(t, yaml(aCrt, aKey))
	addr := a.ListenerAddr("web").String()

	for _, tc := range []struct {
		name   string
		sni    string
		serial int64
	}{
		{"first certificate", "a.test", 1},
		{"second certificate", "b.test", 2},
		{"upper case", "B.Test", 2},
		{"wildcard", "x.wild.test", 2},
		{"no SNI: the first", "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serial, body := tlsGet(t, addr, tc.sni, roots)
			if serial != tc.serial {
				t.Fatalf("served certificate %d, want %d", serial, tc.serial)
			}
			if !strings.HasPrefix(body, "https ") {
				t.Fatalf("backend saw X-Forwarded-Proto/Host %q, want https", body)
			}
		})
	}

	t.Run("reload picks up new content at the same path", func(t *testing.T) {
		_, _, a2 := writeCert(t, dir, "a", 3, "a.test")
		roots.AddCert(a2)
		if _, err := a.Reload(); err != nil {
			t.Fatal(err)
		}
		if serial, _ := tlsGet(t, addr, "a.test", roots); serial != 3 {
			t.Fatalf("after reload served certificate %d, want 3", serial)
		}
		if got := a.ListenerAddr("web").String(); got != addr {
			t.Fatalf("listener moved from %s to %s", addr, got)
		}
	})
	t.Run("reload with new paths keeps the socket", func(t *testing.T) {
		nCrt, nKey, n := writeCert(t, dir, "a-next", 4, "a.test")
		roots.AddCert(n)
		if err := os.WriteFile(a.Path, []byte("admin: { listen: 127.0.0.1:0 }\n"+yaml(nCrt, nKey)), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Reload(); err != nil {
			t.Fatal(err)
		}
		if got := a.ListenerAddr("web").String(); got != addr {
			t.Fatalf("listener moved from %s to %s", addr, got)
		}
		if serial, _ := tlsGet(t, addr, "a.test", roots); serial != 4 {
			t.Fatalf("after reload served certificate %d, want 4", serial)
		}
	})
}

// TestTLSBehindProxyProtocol: a fronting L4 balancer sends the PROXY
// header in clear, then the client's TLS handshake follows on the same
// connection; the backend sees the announced client and https.
func TestTLSBehindProxyProtocol(t *testing.T) {
	dir := t.TempDir()
	crt, key, cert := writeCert(t, dir, "pp", 9, "pp.test")
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	be := testkit.StartBackend(t, "b")
	be.SetHandler(func(ctx *fasthttp.RequestCtx) {
		fmt.Fprintf(ctx, "%s %s", ctx.Request.Header.Peek("X-Forwarded-For"), ctx.Request.Header.Peek("X-Forwarded-Proto"))
	})
	a := startL4(t, fmt.Sprintf(`
listeners:
  - name: web
    listen: 127.0.0.1:0
    pool: p
    proxy_protocol: true
    tls: [{ cert_file: %q, key_file: %q }]
pools:
  - { name: p, backends: [%s], health: { type: none } }
`, crt, key, be.Addr))
	raw := dialL4(t, a, "web")
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := raw.Write(ppHeader(t, 2)); err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, &tls.Config{ServerName: "pp.test", RootCAs: roots})
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: pp.test\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, body, _ := strings.Cut(string(resp), "\r\n\r\n"); body != "203.0.113.7 https" {
		t.Fatalf("backend saw %q, want the PROXY client and https", body)
	}
}
