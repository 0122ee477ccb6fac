package app_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// heldDNS is a DNS server on 127.0.0.1 that holds every query until the
// test releases it, then answers name with an A record for ip.
type heldDNS struct {
	addr    string
	queries chan struct{} // one per query received
	release chan struct{} // closed: answer held and later queries
}

func startHeldDNS(t *testing.T, name, ip string) *heldDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	h := &heldDNS{addr: pc.LocalAddr().String(), queries: make(chan struct{}, 64), release: make(chan struct{})}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var q dns.Msg
			if q.Unpack(buf[:n]) != nil || len(q.Question) != 1 {
				continue
			}
			select {
			case h.queries <- struct{}{}:
			default:
			}
			go func(q dns.Msg, from net.Addr) {
				<-h.release
				r := new(dns.Msg)
				r.SetReply(&q)
				if q.Question[0].Qtype == dns.TypeA && q.Question[0].Name == name {
					rr, _ := dns.NewRR(name + " 30 IN A " + ip)
					r.Answer = append(r.Answer, rr)
				}
				b, err := r.Pack()
				if err == nil {
					_, _ = pc.WriteTo(b, from)
				}
			}(q, from)
		}
	}()
	return h
}

// TestReloadWarmUpDoesNotBlockAdmin reloads with a new pool whose DNS
// server holds its queries: the reload waits for that pool's first set
// (warm-up), and meanwhile /readyz, /metrics and /status answer at once.
// When the server answers, the reload returns straight away (the pool
// signals on a channel; warmTimeout is 5s) and the new route serves.
func TestReloadWarmUpDoesNotBlockAdmin(t *testing.T) {
	main, b := testkit.StartBackend(t, "main"), testkit.StartBackend(t, "fresh")
	_, port, _ := net.SplitHostPort(b.Addr)
	held := startHeldDNS(t, "fresh.holdfast.test.", "127.0.0.1")
	base := fmt.Sprintf(`
resolvers:
  - { name: held, servers: [%q], timeout: 20s, attempts: 1 }
listeners:
  - name: web
    listen: 127.0.0.1:0
    pool: main
%%s
pools:
  - { name: main, health: { type: none }, backends: [%q] }
%%s`, held.addr, main.Addr)
	a := testkit.StartApp(t, fmt.Sprintf(base, "", ""))
	waitReady(t, a)
	yaml := "admin: { listen: " + a.AdminAddr().String() + " }\n" + fmt.Sprintf(base,
		"    routes: [{ path_prefix: /new/, pool: fresh }]",
		`  - name: fresh
    health: { type: none }
    discovery: { type: a, name: fresh.holdfast.test., port: `+port+`, resolver: held }
`)
	if err := os.WriteFile(a.Path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	reloaded := make(chan error, 1)
	go func() {
		_, err := a.Reload()
		reloaded <- err
	}()
	select {
	case <-held.queries:
	case err := <-reloaded:
		t.Fatalf("reload returned before the new pool's lookup: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("the new pool never queried its DNS server")
	}
	admin := &http.Client{Timeout: 2 * time.Second}
	for _, path := range []string{"/readyz", "/metrics", "/status", "/readyz?pool=main"} {
		began := time.Now()
		resp, err := admin.Get("http://" + a.AdminAddr().String() + path)
		took := time.Since(began)
		if err != nil {
			t.Errorf("%s while a reload warms a pool: %v (after %s)", path, err, took.Round(time.Millisecond))
			continue
		}
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || took > time.Second {
			t.Errorf("%s while a reload warms a pool: %d after %s, want 200 at once", path, resp.StatusCode, took.Round(time.Millisecond))
		}
	}
	select {
	case err := <-reloaded:
		t.Fatalf("reload returned while its new pool was warming: %v", err)
	default:
	}
	released := time.Now()
	close(held.release)
	select {
	case err := <-reloaded:
		if err != nil {
			t.Fatalf("reload: %v", err)
		}
		if d := time.Since(released); d > 2*time.Second {
			t.Errorf("reload returned %s after the pool's first set; want it at once", d.Round(time.Millisecond))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reload did not return after the DNS server answered")
	}
	if !a.Pool("fresh").Ready() {
		t.Fatal("pool fresh not ready after the reload returned")
	}
	resp, err := http.Get(a.URL("web", "/new/x"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "fresh\n" {
		t.Errorf("GET /new/x = %d %q, want 200 from the new pool", resp.StatusCode, body)
	}
}
