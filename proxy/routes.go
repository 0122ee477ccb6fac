package proxy

import (
	"bytes"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-lb/holdfast/metrics"
)

// Route sends matching requests to a target. Host is exact, "*.suffix", or
// empty for any; PathPrefix empty matches every path.
type Route struct {
	Host       string
	PathPrefix string
	// Target receives the requests; nil for a Redirect route.
	Target *Target
	// Redirect, when set, answers every matching request with a redirect.
	Redirect *Redirect
	// StripPrefix removes PathPrefix from the path sent upstream.
	StripPrefix bool
	// RequestHeaders and ResponseHeaders apply after the listener's.
	RequestHeaders  HeaderRules
	ResponseHeaders HeaderRules
	// RateLimit, when set, answers 429 to keys over their rate. Its
	// buckets carry over a reload (HTTP.SetRoutes) to the route of the
	// same name: see carry.
	RateLimit *RateLimit
}

// Redirect is where a redirect route sends clients. Empty Scheme and Host
// keep the request's own (a changed scheme with no Host drops the
// request's port); an empty Path keeps the request's path and query, a
// set one replaces both. Code is 301, 302, 307 or 308.
type Redirect struct {
	Scheme, Host, Path string
	Code               int
}

type redirect struct {
	code   int
	scheme []byte
	host   []byte
	path   []byte
}

type route struct {
	name    string // host+path_prefix as configured; "" for the default
	exact   []byte // lower-case host, or nil
	suffix  []byte // ".example.com" for "*.example.com"
	prefix  []byte
	target  *Target // nil for a redirect route
	metrics *metrics.RequestSet
	// redirect answers the request itself; nil: proxied.
	redirect *redirect
	// strip removes prefix from the path sent upstream.
	strip bool
	// reqOps and respOps are the route's header rules; nil: none.
	reqOps, respOps *headerOps
	// limit is the route's rate limit; nil: none.
	limit *limiter
}

// poolName is the route's pool for logs and metrics; "" for a redirect.
func (r *route) poolName() string {
	if r.target == nil {
		return ""
	}
	return r.target.Name
}

// Routes is a listener's routing table: first match wins, else Default.
type Routes struct {
	routes []route
	def    route
}

// NewRoutes builds a routing table for listener name.
func NewRoutes(listener string, def *Target, rs []Route, m *metrics.Metrics) *Routes {
	mk := func(t *Target) *metrics.RequestSet {
		if m == nil {
			return nil
		}
		if t == nil {
			return m.ForRequests(listener, "") // redirects: no pool
		}
		return m.ForRequests(listener, t.Name)
	}
	out := &Routes{def: route{target: def, metrics: mk(def)}}
	for _, r := range rs {
		x := route{name: r.Host + r.PathPrefix, target: r.Target, metrics: mk(r.Target), prefix: []byte(r.PathPrefix),
			strip:  r.StripPrefix && r.PathPrefix != "",
			reqOps: compileHeaderRules(r.RequestHeaders), respOps: compileHeaderRules(r.ResponseHeaders)}
		if r.RateLimit != nil {
			var c prometheus.Counter
			if m != nil {
				c = m.RateLimited.WithLabelValues(listener, x.name)
			}
			x.limit = newLimiter(r.RateLimit, c)
		}
		if rd := r.Redirect; rd != nil {
			x.redirect = &redirect{code: rd.Code, scheme: []byte(rd.Scheme), host: []byte(rd.Host), path: []byte(rd.Path)}
			if x.redirect.code == 0 {
				x.redirect.code = 302
			}
			x.target = nil
		}
		h := strings.ToLower(r.Host)
		switch {
		case strings.HasPrefix(h, "*."):
			x.suffix = []byte(h[1:])
		case h != "":
			x.exact = []byte(h)
		}
		out.routes = append(out.routes, x)
	}
	return out
}

func (rt *Routes) match(host, path []byte) *route {
	if i := bytes.LastIndexByte(host, ':'); i >= 0 && !bytes.HasSuffix(host, []byte("]")) {
		host = host[:i]
	}
	host = bytes.TrimSuffix(host, []byte("."))
	for i := range rt.routes {
		r := &rt.routes[i]
		if r.exact != nil && !asciiEqualFold(host, r.exact) {
			continue
		}
		if r.suffix != nil && (len(host) <= len(r.suffix) || !asciiEqualFold(host[len(host)-len(r.suffix):], r.suffix)) {
			continue
		}
		if len(r.prefix) > 0 && !bytes.HasPrefix(path, r.prefix) {
			continue
		}
		return r
	}
	return &rt.def
}

// stripped is path without the route's prefix, always starting with '/':
// "/legacy/a" under "/legacy/" is "/a", "/legacy" under "/legacy" is "/".
// It appends to buf.
func (r *route) stripped(buf, path []byte) []byte {
	rest := path[len(r.prefix):]
	if len(rest) == 0 || rest[0] != '/' {
		buf = append(buf, '/')
	}
	return append(buf, rest...)
}

// appendLocation appends the redirect's Location for a request to host
// with path (and query), over TLS or not.
func (rd *redirect) appendLocation(b []byte, tls bool, host, pathQuery []byte) []byte {
	own := strHTTP
	if tls {
		own = strHTTPS
	}
	scheme := rd.scheme
	if len(scheme) == 0 {
		scheme = own
	}
	h := rd.host
	if len(h) == 0 {
		h = host
		if !bytes.Equal(scheme, own) {
			// A new scheme has its own default port: the request's
			// port (e.g. :8080 for http) would be wrong for it.
			h = hostOnly(h)
		}
	}
	b = append(b, scheme...)
	b = append(b, "://"...)
	b = append(b, h...)
	if len(rd.path) > 0 {
		return append(b, rd.path...)
	}
	return append(b, pathQuery...)
}

// hostOnly is host without its port ("[::1]:80" is "[::1]").
func hostOnly(host []byte) []byte {
	if i := bytes.LastIndexByte(host, ':'); i >= 0 && !bytes.HasSuffix(host, []byte("]")) {
		return host[:i]
	}
	return host
}

// carryLimits gives rt's rate-limited routes the buckets of old's route of
// the same name (host+path_prefix), as carry decides. rt is not yet in use.
func (rt *Routes) carryLimits(old *Routes) {
	byName := make(map[string]*limiter, len(old.routes))
	for i := range old.routes {
		if r := &old.routes[i]; r.limit != nil {
			byName[r.name] = r.limit
		}
	}
	for i := range rt.routes {
		if r := &rt.routes[i]; r.limit != nil {
			r.limit = carry(r.limit, byName[r.name])
		}
	}
}
