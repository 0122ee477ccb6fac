package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/app"
	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/discovery/dnstest"
	"github.com/holdfast-lb/holdfast/internal/testkit"
	"github.com/holdfast-lb/holdfast/state"
)

func startApp(t *testing.T, yaml string, inherited map[string]net.Listener, st *state.File) *app.App {
	t.Helper()
	cfg, err := config.Load(testkit.WriteConfig(t, yaml))
	if err != nil {
		t.Fatal(err)
	}
	a := app.New(cfg, app.Options{Log: testkit.Logger(t), Inherited: inherited, State: st})
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	return a
}

// TestHandoffInProcess runs the protocol between two Apps in one process:
// the successor inherits the sockets its config names (same kernel socket,
// same port), closes the one it does not, takes the handoff path over, and
// the predecessor learns it must drain. A successor that gives up leaves
// the running one serving and able to hand over later.
func TestHandoffInProcess(t *testing.T) {
	b := testkit.StartBackend(t, "b")
	web, extra, admin := testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t)
	path := filepath.Join(t.TempDir(), "handoff.sock")
	log := testkit.Logger(t)
	yaml := func(withExtra bool) string {
		s := fmt.Sprintf("admin: { listen: %s }\nlisteners:\n  - { name: web, listen: %s, pool: p }\n", admin, web)
		if withExtra {
			s += fmt.Sprintf("  - { name: extra, listen: %s, pool: p }\n", extra)
		}
		return s + fmt.Sprintf("pools:\n  - { name: p, backends: [%s], health: { type: none } }\n", b.Addr)
	}

	h1, err := Inherit(path, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	if len(h1.inherited) != 0 {
		t.Fatalf("inherited %d sockets from nobody", len(h1.inherited))
	}
	a1 := startApp(t, yaml(true), h1.inherited, nil)
	takeover1, err := h1.Complete(a1, app.AdminKey(a1.Config().Admin.Listen))
	if err != nil {
		t.Fatal(err)
	}
	defer h1.Stop()

	// A successor that gives up: the first process keeps serving.
	h0, err := Inherit(path, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(h0.inherited); got != 3 {
		t.Fatalf("inherited %d sockets, want 3 (web, extra, admin)", got)
	}
	h0.Abort()
	select {
	case <-takeover1:
		t.Fatal("takeover reported for a successor that gave up")
	default:
	}
	if code, body, err := testkit.Get("http://" + web + "/"); err != nil || code != 200 {
		t.Fatalf("after an aborted handoff: %d %q %v", code, body, err)
	}

	// The real successor, whose config drops the extra listener.
	h2, err := Inherit(path, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{web, extra, app.AdminKey(admin)} {
		if h2.inherited[k] == nil {
			t.Fatalf("socket %q not inherited; got %v", k, h2.inherited)
		}
	}
	a2 := startApp(t, yaml(false), h2.inherited, nil)
	if got := a2.ListenerAddr("web").String(); got != web {
		t.Fatalf("successor listens on %s, want the inherited %s", got, web)
	}
	takeover2, err := h2.Complete(a2, app.AdminKey(a2.Config().Admin.Listen))
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Stop()
	select {
	case <-takeover1:
	case <-time.After(10 * time.Second):
		t.Fatal("predecessor not told to drain")
	}
	a1.HandOver(context.Background())

	// The successor alone serves the traffic and admin sockets.
	if code, body, err := testkit.Get("http://" + web + "/"); err != nil || code != 200 {
		t.Fatalf("after handoff: %d %q %v", code, body, err)
	}
	if code, _, err := testkit.Get("http://" + admin + "/readyz"); err != nil || code != 200 {
		t.Fatalf("admin after handoff: %d %v", code, err)
	}
	// Nobody serves the dropped listener, so its socket must be closed, not
	// left queueing connections.
	if c, err := net.DialTimeout("tcp", extra, time.Second); err == nil {
		c.Close()
		t.Fatalf("dropped listener %s still accepts connections", extra)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dropped listener: %v", err)
	}

	// And the path now leads to the successor.
	h3, err := Inherit(path, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(h3.inherited); got != 2 {
		t.Fatalf("third process inherited %d sockets, want 2", got)
	}
	h3.Abort()
	select {
	case <-takeover2:
		t.Fatal("takeover reported for a successor that gave up")
	default:
	}
}

// TestHandoffNoPredecessor: a stale socket file (a process that exited)
// means binding afresh, not an error.
func TestHandoffNoPredecessor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "handoff.sock")
	ln, err := listenReplacing(path)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close() // leaves the file behind, as a killed process would
	h, err := Inherit(path, "test", testkit.Logger(t))
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	if h.prev != nil || len(h.inherited) != 0 {
		t.Fatal("inherited from a dead process")
	}
}

// TestHandoffCarriesState: the hand-over passes the state a state_file
// would hold, with no state_file configured. A held-down backend and a
// drained one stay so in the successor, and a DNS pool whose resolver is
// dead when the successor starts serves at once from the handed-over set.
func TestHandoffCarriesState(t *testing.T) {
	const srvName = "_http._tcp.api.holdfast.test."
	dnsSrv := dnstest.Start(t)
	steady, drained := testkit.StartBackend(t, "steady"), testkit.StartBackend(t, "drained")
	flapper := testkit.StartBackend(t, "flapper")
	var flapping atomic.Bool
	flapping.Store(true)
	var checks atomic.Int64
	flapper.SetHandler(func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/healthz" {
			if n := checks.Add(1); flapping.Load() && n%2 == 0 {
				ctx.SetStatusCode(500)
			}
		}
		ctx.SetBodyString("flapper\n")
	})
	dnsBackends := []*testkit.Backend{testkit.StartBackend(t, "d0"), testkit.StartBackend(t, "d1")}
	for i, b := range dnsBackends {
		port := b.Addr[strings.LastIndexByte(b.Addr, ':')+1:]
		target := fmt.Sprintf("d%d.holdfast.test.", i)
		dnsSrv.Add(fmt.Sprintf("%s 0 IN SRV 10 10 %s %s", srvName, port, target), target+" 0 IN A 127.0.0.1")
	}
	web, api, admin := testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t)
	yaml := fmt.Sprintf(`admin: { listen: %s }
resolvers:
  - { name: r, servers: [%q], timeout: 200ms, attempts: 1 }
listeners:
  - { name: web, listen: %s, pool: p }
  - { name: api, listen: %s, pool: dns }
pools:
  - name: p
    backends: [%s, %s, %s]
    health:
      type: http
      interval: 50ms
      timeout: 500ms
      rise: 1
      fall: 1
      flap: { window: 10s, max_transitions: 2, hold: 60s, max_hold: 60s }
  - name: dns
    health: { type: none }
    discovery: { type: srv, name: %s, resolver: r, min_refresh: 100ms, max_refresh: 200ms }
`, admin, dnsSrv.Addr, web, api, steady.Addr, drained.Addr, flapper.Addr, srvName)
	path := filepath.Join(t.TempDir(), "handoff.sock")
	log := testkit.Logger(t)

	h1, err := Inherit(path, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	a1 := startApp(t, yaml, h1.Inherited(), h1.State())
	takeover1, err := h1.Complete(a1, app.AdminKey(admin))
	if err != nil {
		t.Fatal(err)
	}
	defer h1.Stop()
	stateIn := func(a *app.App, pool, addr string) string {
		for _, b := range a.Pool(pool).Status().Backends {
			if b.Address == addr {
				return b.State
			}
		}
		return ""
	}
	testkit.WaitFor(t, 10*time.Second, "the flapper held down", func() bool { return stateIn(a1, "p", flapper.Addr) == "held_down" })
	flapping.Store(false) // healthy from now on: only the hold keeps it out
	testkit.WaitFor(t, 10*time.Second, "two DNS backends routable", func() bool { return a1.Pool("dns").Routable() == 2 })
	if code, body := post(t, admin, "/backends/p/"+drained.Addr+"/drain"); code != 200 {
		t.Fatalf("drain: %d %s", code, body)
	}

	dnsSrv.SetFaults(dnstest.Servfail) // every lookup fails from here on
	h2, err := Inherit(path, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	if h2.State() == nil {
		t.Fatal("no state handed over")
	}
	a2 := startApp(t, yaml, h2.Inherited(), h2.State())
	if _, err := h2.Complete(a2, app.AdminKey(admin)); err != nil {
		t.Fatal(err)
	}
	defer h2.Stop()
	select {
	case <-takeover1:
	case <-time.After(10 * time.Second):
		t.Fatal("predecessor not told to drain")
	}
	a1.HandOver(context.Background())

	// The DNS pool serves at once from the handed-over set, though every
	// lookup fails.
	failed, seen := 0, map[string]bool{}
	for range 40 {
		code, body, err := testkit.Get("http://" + api + "/")
		if err != nil || code != 200 {
			failed++
		}
		seen[body] = true
	}
	if failed != 0 || !seen["d0\n"] || !seen["d1\n"] {
		t.Errorf("DNS pool after the hand-over into SERVFAIL: %d of 40 failed, reached %v; want 0, both", failed, seen)
	}
	testkit.WaitFor(t, 5*time.Second, "a failed lookup in the successor", func() bool {
		d := a2.Pool("dns").Status().Discovery
		return d != nil && d.LastResult != "" && d.LastResult != "ok"
	})
	if d := a2.Pool("dns").Status().Discovery; !d.Stale || a2.Pool("dns").Routable() != 2 {
		t.Errorf("DNS pool in the successor: %+v, routable %d; want stale, 2", d, a2.Pool("dns").Routable())
	}
	// Held and drained as before; the flapper now passes every check
	// (rise 1, 50ms apart), so only the handed-over hold keeps it out.
	for range 10 {
		if code, _, err := testkit.Get("http://" + admin + "/healthz"); err != nil || code != 200 {
			t.Fatalf("successor admin: %d %v", code, err)
		}
	}
	testkit.WaitFor(t, 5*time.Second, "the steady backend healthy in the successor", func() bool {
		return stateIn(a2, "p", steady.Addr) == "healthy"
	})
	checksBefore := checks.Load()
	testkit.WaitFor(t, 5*time.Second, "a few checks of the flapper in the successor", func() bool { return checks.Load() >= checksBefore+4 })
	if st := stateIn(a2, "p", flapper.Addr); st != "held_down" {
		t.Errorf("flapper in the successor: %q, want held_down", st)
	}
	if st := stateIn(a2, "p", drained.Addr); st != "draining" {
		t.Errorf("drained backend in the successor: %q, want draining", st)
	}
	for range 30 {
		code, body, err := testkit.Get("http://" + web + "/")
		if err != nil || code != 200 || body != "steady\n" {
			t.Fatalf("web after the hand-over: %d %q %v; want only the steady backend", code, body, err)
		}
	}
}

func post(t *testing.T, admin, path string) (int, string) {
	t.Helper()
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod("POST")
	req.SetRequestURI("http://" + admin + path)
	if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode(), string(resp.Body())
}
