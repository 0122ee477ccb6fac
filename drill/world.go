package drill

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/miekg/dns"

	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/discovery"
	"github.com/holdfast-lb/holdfast/discovery/dnstest"
)

// dnsBackends is how many backends a simulated DNS answer names at first:
// the config does not say how many the real name has.
const dnsBackends = 3

// backendLatency is how long a simulated backend takes to answer, so that
// a kill or a flap finds requests in flight.
const backendLatency = 5 * time.Millisecond

// world is the simulated network one drill runs in: a DNS server in
// place of each resolver server and a backend in place of each real one,
// all on loopback.
type world struct {
	led   *ledger
	dns   map[string][]*dnstest.Server // by resolver name, in config order
	pools []*simPool
	notes []string // what the drill changed in the config, and why
}

// simPool is one pool's simulated backends and DNS records.
type simPool struct {
	name     string
	idx      int
	cfg      config.Pool
	tcp      bool   // behind a tcp listener: line-echo TCP backends
	dnsType  string // "" (static), "srv" or "a"
	resolver string
	port     int // type a: the port every backend shares
	backends []*backend
}

// dnsPool reports whether the pool is discovered through DNS.
func (p *simPool) dnsPool() bool { return p.dnsType != "" }

// newWorld builds the simulated shape of cfg: the same pools with as many
// static backends, dnsBackends for each DNS name, and as many DNS
// servers per resolver as the config (or /etc/resolv.conf) lists.
func newWorld(cfg *config.Config) (w *world, err error) {
	w = &world{led: newLedger(), dns: map[string][]*dnstest.Server{}}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	tcpPools := map[string]bool{}
	for _, l := range cfg.Listeners {
		if l.Protocol == "tcp" {
			tcpPools[l.Pool] = true
		}
	}
	for i, p := range cfg.Pools {
		sp := &simPool{name: p.Name, idx: i, cfg: p, tcp: tcpPools[p.Name]}
		n := len(p.Backends)
		if d := p.Discovery; d != nil {
			sp.dnsType, sp.resolver, n = d.Type, d.Resolver, dnsBackends
		}
		w.pools = append(w.pools, sp)
		if err := w.grow(sp, n); err != nil {
			return w, err
		}
		if sp.dnsPool() {
			if _, ok := w.dns[sp.resolver]; !ok {
				servers, err := startDNS(resolverServers(cfg, sp.resolver))
				w.dns[sp.resolver] = servers
				if err != nil {
					return w, fmt.Errorf("simulated resolver %q: %w", sp.resolver, err)
				}
			}
			w.publish(sp)
		}
	}
	return w, nil
}

// resolverServers is how many servers a resolver has: those of its config
// entry, else (the default resolver) those of /etc/resolv.conf, else one.
func resolverServers(cfg *config.Config, name string) int {
	for _, r := range cfg.Resolvers {
		if r.Name == name && len(r.Servers) > 0 {
			return len(r.Servers)
		}
	}
	if s, err := discovery.SystemServers(); err == nil && len(s) > 0 {
		return len(s)
	}
	return 1
}

func startDNS(n int) ([]*dnstest.Server, error) {
	var out []*dnstest.Server
	for range n {
		s, err := dnstest.NewServer()
		if err != nil {
			return out, err
		}
		out = append(out, s)
	}
	return out, nil
}

// grow starts backends for sp until it has n.
func (w *world) grow(sp *simPool, n int) error {
	status, body := healthAnswer(sp.cfg.Health)
	for len(sp.backends) < n {
		ln, err := w.listen(sp, len(sp.backends))
		if err != nil {
			return fmt.Errorf("pool %q: simulated backend: %w", sp.name, err)
		}
		sp.backends = append(sp.backends, startBackend(ln, sp.tcp, w.led, backendLatency, status, body))
	}
	return nil
}

// listen binds backend i of sp: 127.0.0.1:0, except for type a pools
// where every backend has its own loopback address on one shared port
// (127.0.0.1, 127.0.0.2, ...), as A records on one port describe.
func (w *world) listen(sp *simPool, i int) (net.Listener, error) {
	if sp.dnsType != "a" {
		return net.Listen("tcp", "127.0.0.1:0")
	}
	if i > 250 {
		return nil, errors.New("too many backends for one port on 127.0.0.0/24")
	}
	ip := "127.0.0." + strconv.Itoa(i+1)
	if sp.port == 0 {
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			return nil, err
		}
		sp.port = ln.Addr().(*net.TCPAddr).Port
		return ln, nil
	}
	return net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(sp.port)))
}

// healthAnswer is what a simulated backend answers checks with: the
// lowest status the check expects and a body holding what it looks for.
func healthAnswer(h config.Health) (int, string) {
	status := 200
	if r, err := config.ParseStatusRanges(h.ExpectStatus); err == nil && len(r) > 0 {
		status = r[0][0]
	}
	return status, "ok " + h.ExpectBody + "\n"
}

// records are sp's DNS records for its backends, zone-file syntax, TTL 0
// (a lookup every min_refresh, as Consul answers).
func (sp *simPool) records() []string {
	name := dns.Fqdn(sp.cfg.Discovery.Name)
	var rs []string
	for i, b := range sp.backends {
		host, port, _ := net.SplitHostPort(b.addr)
		switch sp.dnsType {
		case "srv":
			target := fmt.Sprintf("b%d.p%d.drill.test.", i, sp.idx)
			rs = append(rs, fmt.Sprintf("%s 0 IN SRV 10 10 %s %s", name, port, target), target+" 0 IN A "+host)
		case "a":
			rs = append(rs, fmt.Sprintf("%s 0 IN A %s", name, host))
		}
	}
	return rs
}

// publish makes every server of sp's resolver answer for sp's backends.
func (w *world) publish(sp *simPool) {
	name := dns.Fqdn(sp.cfg.Discovery.Name)
	for _, s := range w.dns[sp.resolver] {
		s.Remove(name, dns.TypeANY)
		s.Add(sp.records()...)
	}
}

// dnsPools lists the pools discovered through DNS.
func (w *world) dnsPools() []*simPool {
	var out []*simPool
	for _, p := range w.pools {
		if p.dnsPool() {
			out = append(out, p)
		}
	}
	return out
}

// pool finds a simulated pool by name.
func (w *world) pool(name string) *simPool {
	for _, p := range w.pools {
		if p.name == name {
			return p
		}
	}
	return nil
}

// rewrite points cfg (a fresh copy of the user's config) at the world:
// every listener and the admin endpoint on 127.0.0.1:0, resolvers at the
// simulated servers, static backends at the simulated ones. What the
// simulation cannot reproduce is switched off and noted.
func (w *world) rewrite(cfg *config.Config) {
	note := func(format string, args ...any) { w.notes = append(w.notes, fmt.Sprintf(format, args...)) }
	cfg.Admin = config.Admin{Listen: "127.0.0.1:0"}
	cfg.StateFile = ""
	cfg.DrainDelay = 0
	for i := range cfg.Listeners {
		l := &cfg.Listeners[i]
		l.Listen = "127.0.0.1:0"
		l.Freebind = false
		l.AccessLog = config.AccessLog{}
		if len(l.TLS) > 0 {
			l.TLS = nil
			note("listener %q: served without TLS (the drill's clients speak plain HTTP)", l.Name)
		}
		if l.ProxyProtocol {
			l.ProxyProtocol = false
			note("listener %q: proxy_protocol off (the drill's clients connect directly)", l.Name)
		}
		if len(l.Allow) > 0 || len(l.Deny) > 0 {
			l.Allow, l.Deny = nil, nil
			note("listener %q: allow/deny off (the drill's clients are on 127.0.0.1)", l.Name)
		}
		for j := range l.Routes {
			if l.Routes[j].RateLimit != nil {
				l.Routes[j].RateLimit = nil
				note("listener %q route %d: rate_limit off (the drill's load would trip it)", l.Name, j)
			}
		}
	}
	for name, servers := range w.dns {
		addrs := make([]string, len(servers))
		for i, s := range servers {
			addrs[i] = s.Addr
		}
		found := false
		for i := range cfg.Resolvers {
			if cfg.Resolvers[i].Name == name {
				cfg.Resolvers[i].Servers, found = addrs, true
			}
		}
		if !found {
			cfg.Resolvers = append(cfg.Resolvers, config.Resolver{Name: name, Servers: addrs,
				Timeout: config.Duration(time.Second), Attempts: 2})
		}
	}
	for i := range cfg.Pools {
		p := &cfg.Pools[i]
		sp := w.pool(p.Name)
		if sp == nil {
			continue
		}
		if p.Discovery == nil {
			for j := range p.Backends {
				p.Backends[j].Address = sp.backends[j].addr
			}
		} else if sp.dnsType == "a" {
			p.Discovery.Port = sp.port
		}
		if p.Health.Port != 0 {
			p.Health.Port = 0
			note("pool %q: health checks on the backend port (the simulated backends answer them there)", p.Name)
		}
		if p.Health.Type == "grpc" {
			p.Health.Type = "tcp"
			note("pool %q: grpc health checks replaced by tcp checks", p.Name)
		}
		if p.TLS.Enabled {
			p.TLS = config.UpstreamTLS{}
			p.Health.TLS = false
			note("pool %q: upstream TLS off (the simulated backends speak plain text)", p.Name)
		}
		if p.SendProxyProtocol != "" {
			p.SendProxyProtocol = ""
			note("pool %q: send_proxy_protocol off", p.Name)
		}
	}
}

// close stops every simulated server.
func (w *world) close() {
	for _, p := range w.pools {
		for _, b := range p.backends {
			b.close()
		}
	}
	for _, ss := range w.dns {
		for _, s := range ss {
			s.Close()
		}
	}
}
