package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The proxies the conformance suite runs against. A case describes the
// proxy it needs as a proxySpec written in holdfast's terms (SPEC.md keys);
// each target renders the closest config its software allows. What a
// holdfast key becomes in HAProxy and nginx is said beside each rendering.

// proxySpec is the proxy a case needs, in holdfast's terms.
type proxySpec struct {
	Pools  []poolSpec  // Pools[0] is the listener's default pool
	Routes []routeSpec // first match wins

	TrustLoopback    bool     // trusted_proxies: [127.0.0.0/8]
	EncodedSlashKeep bool     // path.encoded_slash: keep
	Upgrades         []string // nil: the default [websocket]
	MaxHeaderBytes   int      // 0: default (16384)
	MaxBodyBytes     int      // 0: unlimited
	HeaderTimeout    time.Duration
	ReadTimeout      time.Duration
	WriteTimeout     time.Duration
}

// poolSpec is one pool.
type poolSpec struct {
	Name            string
	Backends        []string
	Retries         int // retries.attempts (retries after the first try); -1: the default
	BufferBody      int // retries.buffer_body; 0: the default (64KiB)
	ResponseTimeout time.Duration
	Failures        int // outlier.consecutive_failures; 0: the default
}

// routeSpec is one route to a pool.
type routeSpec struct {
	Host, PathPrefix, Pool string
}

// target is a proxy under test.
type target struct {
	name string
	// start runs the proxy for spec; it is stopped when the test ends.
	start func(t *testing.T, spec proxySpec) proxyInstance
}

// proxyInstance is a running proxy.
type proxyInstance struct {
	Addr  string // the traffic listener
	Admin string // holdfast's admin listener; "" for the others
}

var conformanceTargets = map[string]target{
	"holdfast": {name: "holdfast", start: startHoldfastTarget},
	"haproxy":  {name: "haproxy", start: startHAProxyTarget},
	"nginx":    {name: "nginx", start: startNginxTarget},
}

// proxyProc runs argv in the foreground until the test ends, waits for it
// to listen on addr, and kills it by PID at the end. It reports false if
// the process exited before listening (a port taken meanwhile: the caller
// tries other ports).
func proxyProc(t *testing.T, name, addr string, argv ...string) bool {
	t.Helper()
	log := &logBuffer{t: t, name: name}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill() // our own child, by PID
			<-exited
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			break
		}
		select {
		case <-exited:
			if strings.Contains(log.dump(), "in use") && i < 1000 {
				return false
			}
			t.Fatalf("%s exited before listening on %s:\n%s", name, addr, log.dump())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("%s not listening on %s after 15s:\n%s", name, addr, log.dump())
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Log(log.dump())
		}
	})
	return true
}

// startWithPorts calls run with fresh ports (listen, extra) until the
// proxy binds, at most three times.
func startWithPorts(t *testing.T, run func(port, extra int) bool) proxyInstance {
	t.Helper()
	for range 3 {
		port, extra := freePort(t), freePort(t)
		if run(port, extra) {
			return proxyInstance{Addr: fmt.Sprintf("127.0.0.1:%d", port), Admin: fmt.Sprintf("127.0.0.1:%d", extra)}
		}
	}
	t.Fatal("no free port after three tries")
	return proxyInstance{}
}

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p poolSpec) name(i int) string {
	if p.Name != "" {
		return p.Name
	}
	return fmt.Sprintf("p%d", i)
}

// poolIndex returns the index of the pool named name.
func (s proxySpec) poolIndex(name string) int {
	for i, p := range s.Pools {
		if p.name(i) == name {
			return i
		}
	}
	return 0
}

// holdfast: the spec as SPEC.md keys, active health checks off (they would
// reach the recording backends), admin on its own free port.
func startHoldfastTarget(t *testing.T, s proxySpec) proxyInstance {
	t.Helper()
	var b strings.Builder
	var l []string
	if len(s.Routes) > 0 {
		l = append(l, "    routes:")
		for _, r := range s.Routes {
			var f []string
			if r.Host != "" {
				f = append(f, fmt.Sprintf("host: %q", r.Host))
			}
			if r.PathPrefix != "" {
				f = append(f, fmt.Sprintf("path_prefix: %q", r.PathPrefix))
			}
			f = append(f, "pool: "+r.Pool)
			l = append(l, "      - { "+strings.Join(f, ", ")+" }")
		}
	}
	if s.TrustLoopback {
		l = append(l, "    trusted_proxies: [127.0.0.0/8]")
	}
	if s.EncodedSlashKeep {
		l = append(l, "    path: { encoded_slash: keep }")
	}
	if s.Upgrades != nil {
		l = append(l, "    upgrades: ["+strings.Join(s.Upgrades, ", ")+"]")
	}
	if s.MaxHeaderBytes > 0 {
		l = append(l, fmt.Sprintf("    max_header_bytes: %d", s.MaxHeaderBytes))
	}
	if s.MaxBodyBytes > 0 {
		l = append(l, fmt.Sprintf("    max_body_bytes: %d", s.MaxBodyBytes))
	}
	var tos []string
	for _, to := range []struct {
		k string
		d time.Duration
	}{{"header", s.HeaderTimeout}, {"read", s.ReadTimeout}, {"write", s.WriteTimeout}} {
		if to.d > 0 {
			tos = append(tos, fmt.Sprintf("%s: %s", to.k, to.d))
		}
	}
	if len(tos) > 0 {
		l = append(l, "    timeouts: { "+strings.Join(tos, ", ")+" }")
	}
	listenerExtra := strings.Join(l, "\n")
	b.WriteString("pools:\n")
	for i, p := range s.Pools {
		fmt.Fprintf(&b, "  - name: %s\n    backends: [%s]\n    health: { type: none }\n", p.name(i), strings.Join(p.Backends, ", "))
		var r []string
		if p.Retries >= 0 {
			r = append(r, fmt.Sprintf("attempts: %d", p.Retries))
		}
		if p.BufferBody > 0 {
			r = append(r, fmt.Sprintf("buffer_body: %d", p.BufferBody))
		}
		if len(r) > 0 {
			fmt.Fprintf(&b, "    retries: { %s }\n", strings.Join(r, ", "))
		}
		if p.ResponseTimeout > 0 {
			fmt.Fprintf(&b, "    timeouts: { response: %s }\n", p.ResponseTimeout)
		}
		if p.Failures > 0 {
			fmt.Fprintf(&b, "    outlier: { consecutive_failures: %d }\n", p.Failures)
		}
	}
	dir := t.TempDir()
	bin := holdfastBinary(t)
	return startWithPorts(t, func(port, admin int) bool {
		cfg := fmt.Sprintf("admin: { listen: 127.0.0.1:%d }\nlisteners:\n  - name: web\n    listen: 127.0.0.1:%d\n    pool: %s\n%s\n%s",
			admin, port, s.Pools[0].name(0), listenerExtra, b.String())
		path := writeFile(t, dir, "holdfast.yaml", cfg)
		return proxyProc(t, "holdfast", fmt.Sprintf("127.0.0.1:%d", port), bin, "run", "-c", path, "--log-level", "warn")
	})
}

// haproxy: mode http with keep-alive both sides (no http-server-close).
// retries.attempts → retries + option redispatch + retry-on conn-failure
// empty-response (holdfast's connect_failure, reset); buffer_body → a
// tune.bufsize large enough to hold that body and option
// http-buffer-request, since HAProxy retries only a request still whole in
// its buffer (so max_header_bytes grows with it: HAProxy has one buffer). trusted_proxies → keep the client's
// X-Forwarded-Proto/Host when the source is loopback. encoded_slash and
// upgrades have no HAProxy equivalent (it normalises nothing and tunnels
// any Upgrade). timeouts: header → timeout http-request, read → timeout
// client, response → timeout server, write → timeout client.
func startHAProxyTarget(t *testing.T, s proxySpec) proxyInstance {
	t.Helper()
	dir := t.TempDir()
	bufsize := 16384
	if s.MaxHeaderBytes > 0 {
		bufsize = s.MaxHeaderBytes + 1024
	}
	retries := 2
	for _, p := range s.Pools {
		buf := p.BufferBody
		if buf == 0 {
			buf = 64 << 10 // holdfast's default buffer_body
		}
		bufsize = max(bufsize, buf+16384)
	}
	if s.Pools[0].Retries >= 0 {
		retries = s.Pools[0].Retries
	}
	dur := func(d, def time.Duration) string {
		if d == 0 {
			d = def
		}
		return fmt.Sprintf("%dms", d.Milliseconds())
	}
	client := s.ReadTimeout
	if s.WriteTimeout > client {
		client = s.WriteTimeout
	}
	var fe strings.Builder
	fe.WriteString("  option forwardfor\n")
	if s.TrustLoopback {
		fe.WriteString("  http-request set-header X-Forwarded-Proto http unless { src 127.0.0.0/8 } { req.hdr(x-forwarded-proto) -m found }\n")
		fe.WriteString("  http-request set-header X-Forwarded-Host %[req.hdr(host)] unless { src 127.0.0.0/8 } { req.hdr(x-forwarded-host) -m found }\n")
	} else {
		fe.WriteString("  http-request set-header X-Forwarded-Proto http\n")
		fe.WriteString("  http-request set-header X-Forwarded-Host %[req.hdr(host)]\n")
	}
	if s.MaxBodyBytes > 0 {
		fmt.Fprintf(&fe, "  http-request deny deny_status 413 if { req.hdr_val(content-length) gt %d }\n", s.MaxBodyBytes)
	}
	for i, r := range s.Routes {
		var conds []string
		if r.Host != "" {
			conds = append(conds, fmt.Sprintf("{ req.hdr(host),field(1,:) -i %s }", r.Host))
		}
		if r.PathPrefix != "" {
			conds = append(conds, fmt.Sprintf("{ path_beg %s }", r.PathPrefix))
		}
		fmt.Fprintf(&fe, "  use_backend %s if %s # route %d\n", r.Pool, strings.Join(conds, " "), i)
	}
	var be strings.Builder
	for i, p := range s.Pools {
		fmt.Fprintf(&be, "backend %s\n  balance roundrobin\n", p.name(i))
		if p.ResponseTimeout > 0 {
			fmt.Fprintf(&be, "  timeout server %s\n", dur(p.ResponseTimeout, 0))
		}
		for j, a := range p.Backends {
			fmt.Fprintf(&be, "  server s%d %s\n", j, a)
		}
	}
	// HAProxy bounds the wait for a buffered body by timeout http-request
	// (the header timeout): a case about slow bodies streams instead.
	bufferRequest := "  option http-buffer-request\n"
	if s.ReadTimeout > 0 {
		bufferRequest = ""
	}
	in := startWithPorts(t, func(port, _ int) bool {
		cfg := fmt.Sprintf(`global
  maxconn 2000
  tune.bufsize %d
defaults
  mode http
  option http-keep-alive
%s  timeout connect 1s
  timeout client %s
  timeout server 30s
  timeout http-request %s
  timeout http-keep-alive 90s
  retries %d
  option redispatch 1
  retry-on conn-failure empty-response
frontend web
  bind 127.0.0.1:%d
%s  default_backend %s
%s`, bufsize, bufferRequest, dur(client, 30*time.Second), dur(s.HeaderTimeout, 10*time.Second), retries,
			port, fe.String(), s.Pools[0].name(0), be.String())
		path := writeFile(t, dir, "haproxy.cfg", cfg)
		return proxyProc(t, "haproxy", fmt.Sprintf("127.0.0.1:%d", port), "/usr/sbin/haproxy", "-db", "-f", path)
	})
	in.Admin = ""
	return in
}

// nginx: one process in the foreground (daemon off, master_process off:
// the PID we started is the one serving, and the one we kill), HTTP/1.1
// upstream keep-alive (proxy_http_version 1.1, Connection "", keepalive),
// Host passed unchanged ($http_host), X-Forwarded-For appended,
// X-Forwarded-Proto/Host replaced unless the client is loopback and
// trusted. Upgrades: only those listed get Upgrade/Connection upgrade
// upstream. retries.attempts → proxy_next_upstream error timeout
// non_idempotent with tries = attempts+1 (nginx buffers the whole request
// body, so buffer_body has no equivalent). max_header_bytes →
// large_client_header_buffers (per line); max_body_bytes →
// client_max_body_size; header → client_header_timeout, read →
// client_body_timeout, write → send_timeout, response → proxy_read_timeout.
// Responses stream (proxy_buffering off), as holdfast does.
func startNginxTarget(t *testing.T, s proxySpec) proxyInstance {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dur := func(d, def time.Duration) string {
		if d == 0 {
			d = def
		}
		return fmt.Sprintf("%dms", d.Milliseconds())
	}
	var up strings.Builder
	for i, p := range s.Pools {
		fmt.Fprintf(&up, "  upstream %s {\n", p.name(i))
		for _, a := range p.Backends {
			fs := 5
			if p.Failures > 0 {
				fs = p.Failures
			}
			fmt.Fprintf(&up, "    server %s max_fails=%d fail_timeout=10s;\n", a, fs)
		}
		up.WriteString("    keepalive 32;\n  }\n")
	}
	upgrades := s.Upgrades
	if upgrades == nil {
		upgrades = []string{"websocket"}
	}
	var upMap strings.Builder
	for _, u := range upgrades {
		fmt.Fprintf(&upMap, "    ~*^%s$ %s;\n", u, u)
	}
	xfp, xfh := "http", "$http_host"
	if s.TrustLoopback {
		xfp, xfh = "$conf_xfp", "$conf_xfh"
	}
	hdrBuf := "8k"
	if s.MaxHeaderBytes > 0 {
		hdrBuf = fmt.Sprintf("%d", s.MaxHeaderBytes)
	}
	location := func(i int, p poolSpec) string {
		tries := 3
		if p.Retries >= 0 {
			tries = p.Retries + 1
		}
		return fmt.Sprintf(`      proxy_pass http://%s;
      proxy_next_upstream error timeout non_idempotent;
      proxy_next_upstream_tries %d;
      proxy_read_timeout %s;
`, p.name(i), tries, dur(p.ResponseTimeout, 30*time.Second))
	}
	var locs strings.Builder
	var hosts strings.Builder
	for _, r := range s.Routes {
		i := s.poolIndex(r.Pool)
		if r.Host != "" {
			prefix := r.PathPrefix
			if prefix == "" {
				prefix = "/"
			}
			fmt.Fprintf(&hosts, "  server {\n    listen 127.0.0.1:%%[1]d;\n    server_name %s;\n    location %s {\n%s    }\n  }\n", r.Host, prefix, location(i, s.Pools[i]))
			continue
		}
		fmt.Fprintf(&locs, "    location %s {\n%s    }\n", r.PathPrefix, location(i, s.Pools[i]))
	}
	maxBody := "0"
	if s.MaxBodyBytes > 0 {
		maxBody = fmt.Sprint(s.MaxBodyBytes)
	}
	in := startWithPorts(t, func(port, _ int) bool {
		hostServers := ""
		if hosts.Len() > 0 {
			hostServers = fmt.Sprintf(hosts.String(), port)
		}
		cfg := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  client_header_timeout %[3]s;
  client_body_timeout %[4]s;
  send_timeout %[5]s;
  keepalive_timeout 90s;
  large_client_header_buffers 4 %[6]s;
  client_max_body_size %[7]s;
  proxy_connect_timeout 1s;
  proxy_http_version 1.1;
  proxy_buffering off;
  proxy_request_buffering on;
  map $http_upgrade $conf_upgrade {
    default "";
%[8]s  }
  map $conf_upgrade $conf_connection {
    default upgrade;
    "" "";
  }
  map $remote_addr $conf_trusted { default 0; ~^127\. 1; }
  map "$conf_trusted:$http_x_forwarded_proto" $conf_xfp { default http; ~^1:(?<p>.+)$ $p; }
  map "$conf_trusted:$http_x_forwarded_host" $conf_xfh { default $http_host; ~^1:(?<h>.+)$ $h; }
  proxy_set_header Host $http_host;
  proxy_set_header Connection $conf_connection;
  proxy_set_header Upgrade $conf_upgrade;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto %[9]s;
  proxy_set_header X-Forwarded-Host %[10]s;
%[11]s  server {
    listen 127.0.0.1:%[1]d default_server;
    server_name _;
%[12]s    location / {
%[13]s    }
  }
%[14]s}
`, port, dir, dur(s.HeaderTimeout, 10*time.Second), dur(s.ReadTimeout, 30*time.Second), dur(s.WriteTimeout, 30*time.Second),
			hdrBuf, maxBody, upMap.String(), xfp, xfh, up.String(), locs.String(), location(0, s.Pools[0]),
			hostServers)
		path := writeFile(t, dir, "nginx.conf", cfg)
		return proxyProc(t, "nginx", fmt.Sprintf("127.0.0.1:%d", port), "/usr/sbin/nginx", "-p", dir, "-e", "/dev/stderr", "-c", path)
	})
	in.Admin = ""
	return in
}

// selectedTargets reads CONFORMANCE_TARGETS (default: holdfast).
func selectedTargets(t *testing.T) []target {
	t.Helper()
	env := os.Getenv("CONFORMANCE_TARGETS")
	if env == "" {
		env = "holdfast"
	}
	var out []target
	for _, n := range strings.Split(env, ",") {
		tg, ok := conformanceTargets[strings.TrimSpace(n)]
		if !ok {
			t.Fatal(errors.New("CONFORMANCE_TARGETS: unknown target " + n))
		}
		out = append(out, tg)
	}
	return out
}
