package app_test

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// dialFrom connects from a given local address and reports whether the
// listener served an HTTP request on it (true) or closed it unanswered.
func dialFrom(t *testing.T, local, addr string, send bool) bool {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, local, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if send {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
			return false // closed before we wrote: refused
		}
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("from %s: neither answered nor closed within the deadline", local)
	}
	return n > 0
}

// allow/deny over real sockets: IPv4 peers told apart by their loopback
// source address, IPv6 on ::1, a PROXY listener that refuses before reading
// any header, the rejection counter, and a reload that swaps the lists.
func TestAllowDeny(t *testing.T) {
	b := testkit.StartBackend(t, "b")
	yaml := `
listeners:
  - { name: v4, listen: "127.0.0.1:0", pool: p, allow: [127.0.0.0/8], deny: [127.0.0.2] }
  - { name: v6, listen: "[::1]:0", pool: p, deny: ["::1/128"] }
  - { name: v6ok, listen: "[::1]:0", pool: p, allow: ["::1"] }
  - { name: pp, listen: "127.0.0.1:0", pool: p, proxy_protocol: true, trusted_proxies: [127.0.0.1], deny: [127.0.0.3] }
pools: [{ name: p, health: { type: none }, backends: ["` + b.Addr + `"] }]
`
	if c, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	a := testkit.StartApp(t, yaml)
	waitReady(t, a)
	addr := func(n string) string { return a.ListenerAddr(n).String() }
	cases := []struct {
		name, listener, from string
		send, want           bool
	}{
		{"ipv4 in allow", "v4", "127.0.0.1", true, true},
		{"ipv4 denied (deny wins over allow)", "v4", "127.0.0.2", true, false},
		{"ipv6 denied", "v6", "::1", true, false},
		{"ipv6 allowed", "v6ok", "::1", true, true},
		{"denied before the PROXY header is awaited", "pp", "127.0.0.3", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := dialFrom(t, c.from, addr(c.listener), c.send); got != c.want {
				t.Errorf("served = %v, want %v", got, c.want)
			}
		})
	}
	for _, l := range []struct {
		name string
		want float64
	}{{"v4", 1}, {"v6", 1}, {"v6ok", 0}, {"pp", 1}} {
		got := testkit.Metric(t, a.Registry(), "holdfast_listener_rejected_total", map[string]string{"listener": l.name, "reason": "denied"})
		if got != l.want {
			t.Errorf("listener %s: rejected{denied} = %v, want %v", l.name, got, l.want)
		}
	}

	// A reload swaps the lists on the same socket.
	cfg, err := config.Parse([]byte("admin: { listen: 127.0.0.1:0 }\n" + `
listeners:
  - { name: v4, listen: "127.0.0.1:0", pool: p, deny: [127.0.0.1] }
  - { name: v6, listen: "[::1]:0", pool: p, deny: ["::1/128"] }
  - { name: v6ok, listen: "[::1]:0", pool: p, allow: ["::1"] }
  - { name: pp, listen: "127.0.0.1:0", pool: p, proxy_protocol: true, trusted_proxies: [127.0.0.1], deny: [127.0.0.3] }
pools: [{ name: p, health: { type: none }, backends: ["` + b.Addr + `"] }]
`))
	if err != nil {
		t.Fatal(err)
	}
	before := addr("v4")
	if _, err := a.ReloadConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if addr("v4") != before {
		t.Fatalf("reload moved the listener: %s -> %s", before, addr("v4"))
	}
	if dialFrom(t, "127.0.0.1", before, true) {
		t.Error("after reload: 127.0.0.1 still served")
	}
	if !dialFrom(t, "127.0.0.2", before, true) {
		t.Error("after reload: 127.0.0.2 still refused")
	}
}
