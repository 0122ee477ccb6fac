package config

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Balance algorithms.
var balances = map[string]bool{
	"round_robin": true, "least_conn": true, "p2c": true, "p2c_ewma": true,
	"random": true, "consistent_hash": true, "maglev": true,
}

// Retry reasons accepted in retries.on.
var retryReasons = map[string]bool{"connect_failure": true, "reset": true}

func checkHostPort(w *walker, path, addr string, needIP bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		w.errorf(path, "bad address %q (want host:port)", addr)
		return
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		w.errorf(path, "bad port in %q (want 1..65535)", addr)
		return
	}
	if needIP && host != "" && net.ParseIP(host) == nil {
		w.errorf(path, "bad address %q (want an IP literal)", addr)
	}
}

func checkListen(w *walker, path, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		w.errorf(path, "bad address %q (want host:port)", addr)
		return
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		w.errorf(path, "bad port in %q (want 0..65535)", addr)
		return
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		w.errorf(path, "bad listen host %q (want an IP literal)", host)
	}
}

// ParsePrefix parses a CIDR ("10.0.0.0/8") or a single address ("10.0.0.1",
// a /32 or /128).
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("bad CIDR %q (want e.g. 10.0.0.0/8)", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad address %q (want a CIDR such as 10.0.0.0/8 or an IP)", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func positive(w *walker, path string, d Duration) {
	if d <= 0 {
		w.errorf(path, "must be greater than 0")
	}
}

// ParseStatusRanges parses "200-399" or "200,204,300-399" into inclusive
// ranges.
func ParseStatusRanges(s string) ([][2]int, error) {
	var out [][2]int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(strings.TrimSpace(lo))
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(strings.TrimSpace(hi))
		}
		if err1 != nil || err2 != nil || a < 100 || b > 599 || a > b {
			return nil, fmt.Errorf("bad status range %q (want e.g. 200-399 or 200,204)", part)
		}
		out = append(out, [2]int{a, b})
	}
	return out, nil
}

// uniqueName reports a missing or repeated name and records it in seen.
func uniqueName(w *walker, path, kind, name string, seen map[string]bool) {
	switch {
	case name == "":
		w.errorf(path+".name", "missing name")
	case seen[name]:
		w.errorf(path+".name", "duplicate %s name %q", kind, name)
	}
	seen[name] = true
}

func validate(c *Config, w *walker) {
	validateAdmin(c, w)

	resolvers := map[string]bool{}
	for i, r := range c.Resolvers {
		p := fmt.Sprintf("resolvers[%d]", i)
		uniqueName(w, p, "resolver", r.Name, resolvers)
		if len(r.Servers) == 0 {
			w.errorf(p+".servers", "at least one server is needed")
		}
		for j, s := range r.Servers {
			if _, _, err := net.SplitHostPort(s); err != nil && net.ParseIP(s) != nil {
				continue // a bare IP means port 53
			}
			checkHostPort(w, fmt.Sprintf("%s.servers[%d]", p, j), s, true)
		}
		positive(w, p+".timeout", r.Timeout)
		if r.Attempts < 1 {
			w.errorf(p+".attempts", "must be at least 1")
		}
	}

	pools := map[string]bool{}
	for i, pl := range c.Pools {
		p := fmt.Sprintf("pools[%d]", i)
		uniqueName(w, p, "pool", pl.Name, pools)
		validatePool(c, w, p, &pl, resolvers)
	}

	if len(c.Listeners) == 0 {
		w.errorf("listeners", "at least one listener is needed")
	}
	names, addrs := map[string]bool{}, map[string]string{}
	for i, l := range c.Listeners {
		p := fmt.Sprintf("listeners[%d]", i)
		uniqueName(w, p, "listener", l.Name, names)
		if l.Listen == "" {
			w.errorf(p+".listen", "missing listen address")
		} else {
			checkListen(w, p+".listen", l.Listen)
			if other, dup := addrs[l.Listen]; dup && !strings.HasSuffix(l.Listen, ":0") {
				w.errorf(p+".listen", "address %s is already used by listener %q", l.Listen, other)
			}
			addrs[l.Listen] = l.Name
		}
		if l.Protocol != "http" && l.Protocol != "tcp" {
			w.errorf(p+".protocol", "unknown protocol %q (want http or tcp)", l.Protocol)
		}
		switch {
		case l.Pool == "":
			w.errorf(p+".pool", "missing pool")
		case !pools[l.Pool]:
			w.errorf(p+".pool", "unknown pool %q", l.Pool)
		}
		if l.Protocol == "tcp" && len(l.Routes) > 0 {
			w.errorf(p+".routes", "routes apply to http listeners only")
		}
		if l.Protocol == "tcp" && l.HTTP2Only {
			w.errorf(p+".http2_only", "http2_only applies to http listeners only")
		}
		if l.Protocol == "tcp" && len(l.TLS) > 0 {
			w.errorf(p+".tls", "tls termination applies to http listeners only")
		}
		for j, r := range l.Routes {
			rp := fmt.Sprintf("%s.routes[%d]", p, j)
			if r.Host == "" && r.PathPrefix == "" {
				w.errorf(rp, "a route needs host or path_prefix")
			}
			if r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/") {
				w.errorf(rp+".path_prefix", "must start with /")
			}
			if strings.Contains(r.Host, "*") && !strings.HasPrefix(r.Host, "*.") {
				w.errorf(rp+".host", "wildcard hosts must look like *.example.com")
			}
			switch {
			case r.Redirect != nil:
				// answered by holdfast; validatePolicy checks it
			case r.Pool == "":
				w.errorf(rp+".pool", "missing pool")
			case !pools[r.Pool]:
				w.errorf(rp+".pool", "unknown pool %q", r.Pool)
			}
		}
		for j, t := range l.TLS {
			tp := fmt.Sprintf("%s.tls[%d]", p, j)
			if t.CertFile == "" && t.KeyFile == "" {
				continue // SPEC.md's default entry: no TLS (dropped after validation)
			}
			if t.CertFile == "" || t.KeyFile == "" {
				w.errorf(tp, "cert_file and key_file are both needed")
				continue
			}
			if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
				w.errorf(tp, "cannot load certificate: %v", err)
			}
		}
		if l.MaxConnections < 0 {
			w.errorf(p+".max_connections", "must not be negative")
		}
		if l.MaxHeaderBytes < 1024 {
			w.errorf(p+".max_header_bytes", "must be at least 1024")
		}
		if l.MaxHeaderBytes > 1<<20 {
			w.errorf(p+".max_header_bytes", "must be at most 1MiB")
		}
		for j, c := range l.TrustedProxies {
			if _, err := ParsePrefix(c); err != nil {
				w.errorf(fmt.Sprintf("%s.trusted_proxies[%d]", p, j), "%v", err)
			}
		}
		for j, u := range l.Upgrades {
			switch {
			case u == "" || strings.ContainsAny(u, " ,\t"):
				w.errorf(fmt.Sprintf("%s.upgrades[%d]", p, j), "bad protocol token %q", u)
			case strings.EqualFold(u, "h2c"):
				w.errorf(fmt.Sprintf("%s.upgrades[%d]", p, j), "h2c is never tunnelled (an h2c upgrade would hide every request after the first from routing and limits)")
			}
		}
		if l.Protocol == "tcp" && len(l.TrustedProxies) > 0 && !l.ProxyProtocol {
			w.errorf(p+".trusted_proxies", "on a tcp listener it applies to the PROXY header only; set proxy_protocol: true")
		}
		validatePolicy(w, p, &l)
		switch l.Path.EncodedSlash {
		case "reject", "keep":
		default:
			w.errorf(p+".path.encoded_slash", "unknown value %q (want reject or keep)", l.Path.EncodedSlash)
		}
		positive(w, p+".timeouts.header", l.Timeouts.Header)
		positive(w, p+".timeouts.read", l.Timeouts.Read)
		positive(w, p+".timeouts.write", l.Timeouts.Write)
		positive(w, p+".timeouts.idle", l.Timeouts.Idle)
		if l.Timeouts.Park < 0 {
			w.errorf(p+".timeouts.park", "must not be negative (0 never parks)")
		} else if l.Protocol == "tcp" && w.has(p+".timeouts.park") {
			w.errorf(p+".timeouts.park", "applies to http listeners only")
		}
	}
}

func validatePool(c *Config, w *walker, p string, pl *Pool, resolvers map[string]bool) {
	if !balances[pl.Balance] {
		w.errorf(p+".balance", "unknown balance %q (want round_robin, least_conn, p2c, p2c_ewma, random, consistent_hash or maglev)", pl.Balance)
	}
	if pl.Balance == "consistent_hash" || pl.Balance == "maglev" {
		k := pl.HashKey
		ok := k == "client_ip" ||
			(strings.HasPrefix(k, "header:") && len(k) > len("header:")) ||
			(strings.HasPrefix(k, "cookie:") && len(k) > len("cookie:"))
		if !ok {
			w.errorf(p+".hash_key", "bad hash_key %q (want client_ip, header:NAME or cookie:NAME)", k)
		}
	}
	switch {
	case len(pl.Backends) == 0 && pl.Discovery == nil:
		w.errorf(p, "pool has neither backends nor discovery")
	case len(pl.Backends) > 0 && pl.Discovery != nil:
		w.errorf(p+".discovery", "use backends or discovery, not both")
	}
	seen := map[string]bool{}
	for j, b := range pl.Backends {
		bp := fmt.Sprintf("%s.backends[%d]", p, j)
		if b.Address == "" {
			w.errorf(bp, "missing address")
			continue
		}
		checkHostPort(w, bp, b.Address, false)
		if seen[b.Address] {
			w.errorf(bp, "duplicate backend %s", b.Address)
		}
		seen[b.Address] = true
		if b.Weight < 1 || b.Weight > 1000 {
			w.errorf(bp+".weight", "weight %d out of range (want 1..1000)", b.Weight)
		}
	}
	if d := pl.Discovery; d != nil {
		dp := p + ".discovery"
		switch d.Type {
		case "srv":
			if d.Port != 0 {
				w.errorf(dp+".port", "port applies to type a only (SRV records carry ports)")
			}
		case "a":
			if d.Port < 1 || d.Port > 65535 {
				w.errorf(dp+".port", "type a needs a port in 1..65535")
			}
		case "etcd":
			if d.Port != 0 {
				w.errorf(dp+".port", "port applies to type a only (etcd values carry ports)")
			}
			if len(d.Endpoints) == 0 {
				w.errorf(dp+".endpoints", "type etcd needs endpoints (e.g. [\"http://127.0.0.1:2379\"])")
			}
			for i, e := range d.Endpoints {
				checkEtcdEndpoint(w, fmt.Sprintf("%s.endpoints[%d]", dp, i), e)
			}
		default:
			w.errorf(dp+".type", "unknown discovery type %q (want srv, a or etcd)", d.Type)
		}
		if d.Type != "etcd" && len(d.Endpoints) > 0 {
			w.errorf(dp+".endpoints", "endpoints apply to type etcd only")
		}
		switch {
		case d.Name == "" && d.Type == "etcd":
			w.errorf(dp+".name", "missing etcd key prefix (e.g. /services/api/)")
		case d.Name == "":
			w.errorf(dp+".name", "missing DNS name")
		}
		if d.Type != "etcd" && len(c.Resolvers) > 0 && !resolvers[d.Resolver] {
			w.errorf(dp+".resolver", "unknown resolver %q", d.Resolver)
		}
		positive(w, dp+".min_refresh", d.MinRefresh)
		if d.MaxRefresh < d.MinRefresh {
			w.errorf(dp+".max_refresh", "must not be below min_refresh")
		}
		if d.Confirm < 1 {
			w.errorf(dp+".confirm", "must be at least 1")
		}
	}
	h := pl.Health
	hp := p + ".health"
	switch h.Type {
	case "http":
		if !strings.HasPrefix(h.Path, "/") {
			w.errorf(hp+".path", "must start with /")
		}
		if _, err := ParseStatusRanges(h.ExpectStatus); err != nil {
			w.errorf(hp+".expect_status", "%v", err)
		}
		if h.Host != "" && strings.ContainsAny(h.Host, " \t\r\n/") {
			w.errorf(hp+".host", "bad Host %q", h.Host)
		}
		for k, v := range h.Headers {
			if k == "" || strings.ContainsAny(k, " \t\r\n:") || strings.ContainsAny(v, "\r\n") {
				w.errorf(hp+".headers", "bad header %q", k)
			}
		}
	case "grpc":
		switch {
		case pl.Protocol != "h2" && pl.Protocol != "h2c":
			w.errorf(hp+".type", "grpc checks need the pool's protocol: h2 or h2c")
		case h.Host != "", len(h.Headers) > 0, h.ExpectBody != "":
			w.errorf(hp, "host, headers and expect_body apply to type http only")
		}
	case "tcp", "none":
		switch {
		case h.Service != "":
			w.errorf(hp+".service", "applies to type grpc only")
		case h.Host != "", len(h.Headers) > 0, h.ExpectBody != "":
			w.errorf(hp, "host, headers and expect_body apply to type http only")
		case h.TLS && h.Type == "tcp":
			w.errorf(hp+".tls", "applies to type http only")
		}
	default:
		w.errorf(hp+".type", "unknown health type %q (want http, tcp, grpc or none)", h.Type)
	}
	if h.Port < 0 || h.Port > 65535 {
		w.errorf(hp+".port", "out of range (want 0..65535, 0: the backend's port)")
	}
	if h.TLS && !pl.TLS.Enabled {
		w.errorf(hp+".tls", "needs the pool's tls.enabled: the check uses the pool's tls settings")
	}
	positive(w, hp+".interval", h.Interval)
	positive(w, hp+".timeout", h.Timeout)
	if h.Rise < 1 {
		w.errorf(hp+".rise", "must be at least 1")
	}
	if h.Fall < 1 {
		w.errorf(hp+".fall", "must be at least 1")
	}
	positive(w, hp+".flap.window", h.Flap.Window)
	if h.Flap.MaxTransitions < 1 {
		w.errorf(hp+".flap.max_transitions", "must be at least 1")
	}
	positive(w, hp+".flap.hold", h.Flap.Hold)
	if h.Flap.MaxHold < h.Flap.Hold {
		w.errorf(hp+".flap.max_hold", "must not be below hold")
	}
	o := pl.Outlier
	op := p + ".outlier"
	if o.ConsecutiveFailures < 0 {
		w.errorf(op+".consecutive_failures", "must not be negative (0 turns ejection off)")
	}
	positive(w, op+".ejection", o.Ejection)
	if o.MaxEjection < o.Ejection {
		w.errorf(op+".max_ejection", "must not be below ejection")
	}
	if pl.SendProxyProtocol != "" && usedByHTTP(c, pl.Name) {
		// HTTP keep-alive connections to a backend are shared by many
		// clients, so one PROXY header cannot name the client; holdfast
		// passes it in X-Forwarded-For instead.
		w.errorf(p+".send_proxy_protocol", "applies to pools behind tcp listeners only; http listeners pass the client address in X-Forwarded-For")
	}
	switch pl.Protocol {
	case "http1":
	case "h2":
		if !pl.TLS.Enabled {
			w.errorf(p+".protocol", "h2 goes over TLS: set tls.enabled, or use h2c for HTTP/2 without TLS")
		}
	case "h2c":
		if pl.TLS.Enabled {
			w.errorf(p+".protocol", "h2c is HTTP/2 without TLS: use h2 with tls.enabled")
		}
	default:
		w.errorf(p+".protocol", "unknown protocol %q (want http1, h2 or h2c)", pl.Protocol)
	}
	if pl.Protocol != "http1" && pl.Protocol != "" && !usedByHTTP(c, pl.Name) && usedOnlyByTCP(c, pl.Name) {
		w.errorf(p+".protocol", "applies to pools behind http listeners; tcp listeners copy bytes")
	}
	switch pl.SendProxyProtocol {
	case "", "v1", "v2":
	default:
		w.errorf(p+".send_proxy_protocol", "unknown version %q (want \"\", v1 or v2)", pl.SendProxyProtocol)
	}
	if pl.Retries.Attempts < 0 || pl.Retries.Attempts > 10 {
		w.errorf(p+".retries.attempts", "out of range (want 0..10)")
	}
	for j, r := range pl.Retries.On {
		if !retryReasons[r] {
			if _, ok := RetryStatus(r); !ok {
				w.errorf(fmt.Sprintf("%s.retries.on[%d]", p, j), "unknown retry reason %q (want connect_failure, reset or a 5xx status code such as \"503\")", r)
			}
		}
	}
	if pl.Retries.PerTryTimeout > 0 && pl.Retries.PerTryTimeout > pl.Timeouts.Response && pl.Timeouts.Response > 0 {
		w.errorf(p+".retries.per_try_timeout", "must not exceed timeouts.response")
	}
	validateUpstreamTLS(w, p+".tls", pl.TLS)
	if pl.Retries.BufferBody > 64<<20 {
		w.errorf(p+".retries.buffer_body", "must be at most 64MiB (it is kept in memory per request)")
	}
	lp := p + ".limits"
	if pl.Limits.MaxConnsPerBackend < 1 {
		w.errorf(lp+".max_conns_per_backend", "must be at least 1")
	}
	if pl.Limits.MaxIdlePerBackend < 0 {
		w.errorf(lp+".max_idle_per_backend", "must not be negative")
	} else if pl.Limits.MaxIdlePerBackend > pl.Limits.MaxConnsPerBackend && pl.Limits.MaxConnsPerBackend > 0 {
		w.errorf(lp+".max_idle_per_backend", "must not exceed max_conns_per_backend")
	}
	positive(w, lp+".queue_timeout", pl.Limits.QueueTimeout)
	positive(w, p+".timeouts.connect", pl.Timeouts.Connect)
	positive(w, p+".timeouts.response", pl.Timeouts.Response)
	positive(w, p+".timeouts.idle", pl.Timeouts.Idle)
}

// usedByHTTP reports whether an http listener sends requests to pool.
func usedByHTTP(c *Config, pool string) bool {
	for _, l := range c.Listeners {
		if l.Protocol != "tcp" && (l.Pool == pool || routesTo(l, pool)) {
			return true
		}
	}
	return false
}

// Warnings lists what is valid but probably not meant, one line each as
// "path: message": printed by holdfast check and logged at start.
func Warnings(c *Config) []string {
	out := adminWarnings(c)
	for i, l := range c.Listeners {
		p := fmt.Sprintf("listeners[%d]", i)
		if l.ProxyProtocol && len(l.TrustedProxies) == 0 {
			out = append(out, p+".proxy_protocol: true without trusted_proxies: any peer that can connect can claim any client address")
		}
	}
	return out
}

// RetryStatus parses a retries.on entry that is a status code ("503"):
// only 5xx answers are retried, never a 4xx the client earned.
func RetryStatus(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	if err != nil || len(s) != 3 || n < 500 || n > 599 {
		return 0, false
	}
	return n, true
}

func validateUpstreamTLS(w *walker, p string, t UpstreamTLS) {
	if !t.Enabled {
		if t.ServerName != "" || t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.InsecureSkipVerify {
			w.errorf(p+".enabled", "tls settings are given but tls.enabled is false")
		}
		return
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		w.errorf(p, "cert_file and key_file are both needed for a client certificate")
	}
	if _, err := LoadUpstreamTLS(t); err != nil {
		w.errorf(p, "%v", err)
	}
}

// checkEtcdEndpoint accepts an etcd client URL, http://host:port (or a bare
// host:port). TLS to etcd has no config keys yet, so https is refused
// rather than half-configured.
func checkEtcdEndpoint(w *walker, path, e string) {
	hp, ok := strings.CutPrefix(e, "http://")
	if !ok && strings.Contains(e, "://") {
		w.errorf(path, "bad etcd endpoint %q (want http://host:port; https is not supported yet)", e)
		return
	}
	checkHostPort(w, path, strings.TrimSuffix(hp, "/"), false)
}
