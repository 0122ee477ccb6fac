package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/app"
	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/internal/testkit"
)

func startApp(t *testing.T, yaml string, inherited map[string]net.Listener) *app.App {
	t.Helper()
	cfg, err := config.Load(testkit.WriteConfig(t, yaml))
	if err != nil {
		t.Fatal(err)
	}
	a := app.New(cfg, app.Options{Log: testkit.Logger(t), Inherited: inherited})
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

	h1, err := inheritSockets(path, log)
	if err != nil {
		t.Fatal(err)
	}
	if len(h1.inherited) != 0 {
		t.Fatalf("inherited %d sockets from nobody", len(h1.inherited))
	}
	a1 := startApp(t, yaml(true), h1.inherited)
	takeover1, err := h1.complete(a1)
	if err != nil {
		t.Fatal(err)
	}
	defer h1.stop()

	// A successor that gives up: the first process keeps serving.
	h0, err := inheritSockets(path, log)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(h0.inherited); got != 3 {
		t.Fatalf("inherited %d sockets, want 3 (web, extra, admin)", got)
	}
	h0.abort()
	select {
	case <-takeover1:
		t.Fatal("takeover reported for a successor that gave up")
	default:
	}
	if code, body, err := testkit.Get("http://" + web + "/"); err != nil || code != 200 {
		t.Fatalf("after an aborted handoff: %d %q %v", code, body, err)
	}

	// The real successor, whose config drops the extra listener.
	h2, err := inheritSockets(path, log)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{web, extra, app.AdminKey(admin)} {
		if h2.inherited[k] == nil {
			t.Fatalf("socket %q not inherited; got %v", k, h2.inherited)
		}
	}
	a2 := startApp(t, yaml(false), h2.inherited)
	if got := a2.ListenerAddr("web").String(); got != web {
		t.Fatalf("successor listens on %s, want the inherited %s", got, web)
	}
	takeover2, err := h2.complete(a2)
	if err != nil {
		t.Fatal(err)
	}
	defer h2.stop()
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
	h3, err := inheritSockets(path, log)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(h3.inherited); got != 2 {
		t.Fatalf("third process inherited %d sockets, want 2", got)
	}
	h3.abort()
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
	h, err := inheritSockets(path, testkit.Logger(t))
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	if h.prev != nil || len(h.inherited) != 0 {
		t.Fatal("inherited from a dead process")
	}
}
