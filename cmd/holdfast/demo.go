package main

import (
	"context"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/app"
	"github.com/holdfast-lb/holdfast/config"
)

//go:embed demo.yaml
var demoConfig string

// demoFlapPeriod is how long the flapping backend stays in each state.
const demoFlapPeriod = 1500 * time.Millisecond

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "traffic listener")
	adminAddr := fs.String("admin", "127.0.0.1:9901", "admin listener")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var ports []int
	var lns []net.Listener
	for i := range 4 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(stderr, "demo: backend listen:", err)
			return 1
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
		go func() { _ = fasthttp.Serve(ln, demoBackend(i+1, i == 3)) }()
	}
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	dnsAddr, stopDNS, err := demoDNS(ports)
	if err != nil {
		fmt.Fprintln(stderr, "demo: dns:", err)
		return 1
	}
	defer stopDNS()
	text := strings.NewReplacer("{{DNS}}", dnsAddr, "{{LISTEN}}", *listen, "{{ADMIN}}", *adminAddr).Replace(demoConfig)
	cfg, err := config.Parse([]byte(text))
	if err != nil {
		fmt.Fprintln(stderr, "demo: embedded config:", err)
		return 1
	}
	fmt.Fprintf(stdout, `holdfast demo
  backends:  4 in-process HTTP servers on 127.0.0.1:%d..%d (backend 4 flaps every %s)
  discovery: SRV _http._tcp.app.demo. from an in-process DNS server on %s
  try:       curl http://%s/            (repeat: round robin over the healthy backends)
  status:    http://%s/status  (or /status.json, /metrics)
  stop:      Ctrl-C (drains, then exits)
  next:      holdfast drill -c <file>   rehearse servfail, dns-outage, backend-kill, flapping, ... against
             your own config, with simulated DNS and backends on loopback (README: "Drills")
`, ports[0], ports[3], demoFlapPeriod, dnsAddr, *listen, *adminAddr)
	a := app.New(cfg, app.Options{Log: log})
	return serve(ctx, a, log)
}

// demoBackend answers with its number; a flapping one alternates between
// serving and failing its health check and resetting connections.
func demoBackend(n int, flapping bool) fasthttp.RequestHandler {
	start := time.Now()
	var served atomic.Int64
	return func(ctx *fasthttp.RequestCtx) {
		down := flapping && (time.Since(start)/demoFlapPeriod)%2 == 1
		if down {
			if string(ctx.Path()) == "/healthz" {
				ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
				return
			}
			ctx.SetConnectionClose()
			ctx.Conn().Close()
			return
		}
		c := served.Add(1)
		if string(ctx.Path()) == "/healthz" {
			ctx.SetBodyString("ok\n")
			return
		}
		kind := "steady"
		if flapping {
			kind = "flapping"
		}
		fmt.Fprintf(ctx, "hello from backend %d (%s, %s), request %d\n", n, kind, ctx.LocalAddr(), c)
	}
}

// demoDNS serves SRV records for the demo backends on UDP and TCP.
func demoDNS(ports []int) (string, func(), error) {
	var pc net.PacketConn
	var tl net.Listener
	var err error
	// UDP and TCP on the same port: retry when the TCP port is taken.
	for range 20 {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			return "", nil, err
		}
		if tl, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		_ = pc.Close()
	}
	if err != nil {
		return "", nil, err
	}
	addr := pc.LocalAddr().String()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		for _, q := range r.Question {
			switch {
			case q.Qtype == dns.TypeSRV && strings.EqualFold(q.Name, "_http._tcp.app.demo."):
				for i, p := range ports {
					target := "b" + strconv.Itoa(i+1) + ".app.demo."
					m.Answer = append(m.Answer, &dns.SRV{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: 5},
						Priority: 10, Weight: 10, Port: uint16(p), Target: target})
					m.Extra = append(m.Extra, &dns.A{Hdr: dns.RR_Header{Name: target, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
						A: net.IPv4(127, 0, 0, 1)})
				}
			case q.Qtype == dns.TypeA && strings.HasSuffix(strings.ToLower(q.Name), ".app.demo."):
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
					A: net.IPv4(127, 0, 0, 1)})
			}
		}
		_ = w.WriteMsg(m)
	})
	us := &dns.Server{PacketConn: pc, Handler: h}
	ts := &dns.Server{Listener: tl, Handler: h}
	go func() { _ = us.ActivateAndServe() }()
	go func() { _ = ts.ActivateAndServe() }()
	return addr, func() { _ = us.Shutdown(); _ = ts.Shutdown() }, nil
}
