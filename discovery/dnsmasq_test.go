package discovery

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/internal/freeport"
)

// dnsmasqPath is where Debian's dnsmasq package puts the daemon
// (scripts/deps.sh installs it).
const dnsmasqPath = "/usr/sbin/dnsmasq"

// dnsmasq is a real dnsmasq started by a test on 127.0.0.1 on a free port.
type dnsmasq struct {
	t     *testing.T
	dir   string
	addr  string
	port  int
	cmd   *exec.Cmd
	out   *bytes.Buffer
	waitc chan error
}

// startDnsmasq starts dnsmasq with conf as its config file and hosts as an
// --addn-hosts file. It fails (not skips) the test when dnsmasq is missing.
func startDnsmasq(t *testing.T, conf, hosts string) *dnsmasq {
	t.Helper()
	bin := dnsmasqPath
	if _, err := os.Stat(bin); err != nil {
		p, lerr := exec.LookPath("dnsmasq")
		if lerr != nil {
			t.Fatalf("dnsmasq is required for this test and is not installed (%v); run scripts/deps.sh or apt-get install dnsmasq", err)
		}
		bin = p
	}
	m := &dnsmasq{t: t, dir: t.TempDir()}
	m.write(conf, hosts)
	for range 5 {
		m.port = freePort(t)
		m.addr = net.JoinHostPort("127.0.0.1", fmt.Sprint(m.port))
		if m.start(bin) {
			t.Cleanup(m.stop)
			return m
		}
	}
	t.Fatalf("dnsmasq did not start:\n%s", m.out)
	return nil
}

func (m *dnsmasq) write(conf, hosts string) {
	m.t.Helper()
	if err := os.WriteFile(filepath.Join(m.dir, "dnsmasq.conf"), []byte(conf), 0o644); err != nil {
		m.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.dir, "hosts"), []byte(hosts), 0o644); err != nil {
		m.t.Fatal(err)
	}
}

// start runs dnsmasq and waits until it answers; false if it exited (port
// taken, most likely).
func (m *dnsmasq) start(bin string) bool {
	m.t.Helper()
	m.out = &bytes.Buffer{}
	m.cmd = exec.Command(bin,
		"--no-daemon", "--no-resolv", "--no-hosts",
		fmt.Sprintf("--port=%d", m.port),
		"--listen-address=127.0.0.1", "--bind-interfaces",
		"--conf-file="+filepath.Join(m.dir, "dnsmasq.conf"),
		"--addn-hosts="+filepath.Join(m.dir, "hosts"),
		"--user=root", "--pid-file=", "--local-ttl=1", "--no-negcache",
	)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start dnsmasq: %v", err)
	}
	m.waitc = make(chan error, 1)
	go func(cmd *exec.Cmd, c chan error) { c <- cmd.Wait() }(m.cmd, m.waitc)
	// Ready when it answers over UDP; poll with a deadline.
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		select {
		case <-m.waitc:
			m.cmd = nil
			return false
		default:
		}
		r := NewResolver("probe", []string{m.addr}, 100*time.Millisecond, 1, nil)
		if _, err := r.Query(context.Background(), "ready.probe.test.", 1); err == nil {
			return true
		}
	}
	m.stop()
	m.t.Fatalf("dnsmasq not answering on %s:\n%s", m.addr, m.out)
	return false
}

// stop kills the dnsmasq this test started (by its PID) and waits for it.
func (m *dnsmasq) stop() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Kill()
	select {
	case <-m.waitc:
	case <-time.After(waitLimit):
		m.t.Errorf("dnsmasq pid %d did not exit", m.cmd.Process.Pid)
	}
	m.cmd = nil
}

// restart stops dnsmasq and starts it again on the same port with new files
// (dnsmasq rereads hosts files on SIGHUP, but not srv-host lines).
func (m *dnsmasq) restart(conf, hosts string) {
	m.t.Helper()
	m.stop()
	m.write(conf, hosts)
	path := dnsmasqPath
	if _, err := os.Stat(path); err != nil {
		path, _ = exec.LookPath("dnsmasq")
	}
	deadline := time.Now().Add(waitLimit)
	for !m.start(path) {
		if time.Now().After(deadline) {
			m.t.Fatalf("dnsmasq did not restart on %s:\n%s", m.addr, m.out)
		}
	}
}

// reloadHosts rewrites the hosts file and sends SIGHUP.
func (m *dnsmasq) reloadHosts(hosts string) {
	m.t.Helper()
	if err := os.WriteFile(filepath.Join(m.dir, "hosts"), []byte(hosts), 0o644); err != nil {
		m.t.Fatal(err)
	}
	if err := m.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		m.t.Fatal(err)
	}
}

func freePort(t *testing.T) int { return freeport.Port(t) }

// srvConf is a dnsmasq config serving SRV records for the given routers
// (name → IPv4), priority 10, weight 5, port 8080, plus one fallback
// router at priority 20.
func srvConf(routers ...string) string {
	var b strings.Builder
	b.WriteString("local=/test/\n") // answer for test. itself: no forwarding, NODATA not REFUSED
	for i, r := range routers {
		fmt.Fprintf(&b, "srv-host=_http._tcp.api.test,%s.api.test,8080,10,5\n", r)
		fmt.Fprintf(&b, "host-record=%s.api.test,10.0.0.%d\n", r, i+1)
	}
	b.WriteString("srv-host=_http._tcp.api.test,backup.api.test,9090,20,0\n")
	b.WriteString("host-record=backup.api.test,10.0.9.9,2001:db8::99\n")
	return b.String()
}

// TestDnsmasq runs the DNS source against a real dnsmasq: SRV records added
// and removed are followed, and a stopped server leaves the set intact.
func TestDnsmasq(t *testing.T) {
	m := startDnsmasq(t, srvConf("r1", "r2", "r3"), "")
	r := newRunner(t, DNSConfig{
		Type: "srv", Name: "_http._tcp.api.test", Servers: []string{m.addr},
		Timeout: answerTimeout, Attempts: 1,
		MinRefresh: time.Second, MaxRefresh: 5 * time.Second, MaxShrink: 0.5, Confirm: 3,
	})
	want := func(phase string, addrsWant ...string) {
		t.Helper()
		got := addrs(r.last())
		if !slices.Equal(got, addrsWant) {
			t.Fatalf("%s: set %v, want %v\ndnsmasq log:\n%s", phase, got, addrsWant, m.out)
		}
	}

	t.Run("initial set with priorities and weights", func(t *testing.T) {
		if w := r.lookup(); w != time.Second {
			t.Errorf("next lookup in %v, want min_refresh (dnsmasq TTL 1s)", w)
		}
		want("initial", "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080", "10.0.9.9:9090", "[2001:db8::99]:9090")
		for _, b := range r.last() {
			switch {
			case b.Priority == 10 && b.Weight == 5:
			case b.Priority == 20 && b.Weight == 1: // SRV weight 0 → 1
			default:
				t.Errorf("backend %+v: unexpected priority/weight", b)
			}
		}
	})
	t.Run("record added", func(t *testing.T) {
		m.restart(srvConf("r1", "r2", "r3", "r4"), "")
		r.lookup()
		want("added", "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080", "10.0.0.4:8080", "10.0.9.9:9090", "[2001:db8::99]:9090")
	})
	t.Run("record removed", func(t *testing.T) {
		m.restart(srvConf("r1", "r2", "r3"), "")
		r.lookup()
		want("removed", "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080", "10.0.9.9:9090", "[2001:db8::99]:9090")
	})
	t.Run("server stopped leaves the set intact", func(t *testing.T) {
		before := len(r.published())
		m.stop()
		for range 4 {
			r.lookup()
		}
		want("stopped", "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080", "10.0.9.9:9090", "[2001:db8::99]:9090")
		if len(r.published()) != before {
			t.Errorf("%d updates while dnsmasq was down", len(r.published())-before)
		}
		if !r.obs.isStale() {
			t.Error("not stale while dnsmasq is down")
		}
		if r.obs.result(ResultOK) != 3 {
			t.Errorf("results %v", r.obs.results)
		}
	})
}

// TestDnsmasqHostsReload follows A records through dnsmasq's SIGHUP reload
// of an --addn-hosts file.
func TestDnsmasqHostsReload(t *testing.T) {
	m := startDnsmasq(t, "local=/test/\n", "10.1.0.1 web.test\n10.1.0.2 web.test\n")
	d := NewDNS(DNSConfig{Type: "a", Name: "web.test", Port: 80, Servers: []string{m.addr}, Timeout: answerTimeout, Attempts: 1}, nil, nil)
	// poll looks up until the set is want or the deadline passes: dnsmasq
	// reloads asynchronously after SIGHUP.
	poll := func(want ...string) {
		t.Helper()
		var got []string
		var err error
		deadline := time.Now().Add(waitLimit)
		for time.Now().Before(deadline) {
			var bs []Backend
			bs, _, err = d.Lookup(context.Background())
			if got = addrs(bs); slices.Equal(got, want) {
				return
			}
		}
		t.Fatalf("set %v (err %v), want %v\ndnsmasq log:\n%s", got, err, want, m.out)
	}
	cases := []struct {
		name  string
		hosts string
		want  []string
	}{
		{"initial", "10.1.0.1 web.test\n10.1.0.2 web.test\n", []string{"10.1.0.1:80", "10.1.0.2:80"}},
		{"added", "10.1.0.1 web.test\n10.1.0.2 web.test\n10.1.0.3 web.test\n::1 web.test\n", []string{"10.1.0.1:80", "10.1.0.2:80", "10.1.0.3:80", "[::1]:80"}},
		{"removed", "10.1.0.2 web.test\n", []string{"10.1.0.2:80"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name != "initial" {
				m.reloadHosts(tc.hosts)
			}
			poll(tc.want...)
		})
	}
	t.Run("name removed is nxdomain", func(t *testing.T) {
		m.reloadHosts("")
		deadline := time.Now().Add(waitLimit)
		for time.Now().Before(deadline) {
			if _, _, err := d.Lookup(context.Background()); ResultOf(err) == ResultNXDomain {
				return
			}
		}
		t.Fatal("no NXDOMAIN after the name was removed")
	})
}
