package proxy

import (
	"bytes"
	"strings"

	"github.com/holdfast-lb/holdfast/metrics"
)

// Route sends matching requests to a target. Host is exact, "*.suffix", or
// empty for any; PathPrefix empty matches every path.
type Route struct {
	Host       string
	PathPrefix string
	Target     *Target
}

type route struct {
	name    string // host+path_prefix as configured; "" for the default
	exact   []byte // lower-case host, or nil
	suffix  []byte // ".example.com" for "*.example.com"
	prefix  []byte
	target  *Target
	metrics *metrics.RequestSet
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
		return m.ForRequests(listener, t.Name)
	}
	out := &Routes{def: route{target: def, metrics: mk(def)}}
	for _, r := range rs {
		x := route{name: r.Host + r.PathPrefix, target: r.Target, metrics: mk(r.Target), prefix: []byte(r.PathPrefix)}
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
