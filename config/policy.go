package config

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// HeaderRules edit a message's headers: Remove first, then Set (replacing
// every value of the name), then Add (appending one more value). Names are
// case-insensitive. Values may use the placeholders {client_ip},
// {request_id}, {host} and {scheme}.
type HeaderRules struct {
	Set    map[string]string `yaml:"set"`
	Add    map[string]string `yaml:"add"`
	Remove []string          `yaml:"remove"`
}

// Empty reports whether the rules change nothing.
func (r HeaderRules) Empty() bool { return len(r.Set) == 0 && len(r.Add) == 0 && len(r.Remove) == 0 }

// Redirect answers a route's requests with a redirect instead of proxying.
// Empty fields keep the request's own scheme, host and path (with its query);
// a Path replaces both path and query.
type Redirect struct {
	Scheme string `yaml:"scheme"`
	Host   string `yaml:"host"`
	Path   string `yaml:"path"`
	// Code is 301, 302, 307 or 308; default 302.
	Code int `yaml:"code"`
}

// RateLimit is a token bucket per key: Rate tokens a second, up to Burst.
type RateLimit struct {
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
	// Key is client_ip (default) or header:NAME.
	Key string `yaml:"key"`
}

// AccessLog is a listener's access_log: false, true (JSON lines) or
// {format: json|combined}.
type AccessLog struct {
	Enabled bool
	// Format is "json" (default) or "combined" (NCSA combined).
	Format string
}

// UnmarshalYAML accepts a bool or a {format} mapping (which turns the log on).
func (a *AccessLog) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		var on bool
		if err := n.Decode(&on); err != nil {
			return typeErr("want true, false or {format: json|combined}, got %q", n.Value)
		}
		*a = AccessLog{Enabled: on, Format: "json"}
		return nil
	case yaml.MappingNode:
		*a = AccessLog{Enabled: true, Format: "json"}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value != "format" {
				return typeErr("unknown key %q (want format)", k.Value)
			}
			switch v.Value {
			case "json", "combined":
				a.Format = v.Value
			default:
				return typeErr("unknown format %q (want json or combined)", v.Value)
			}
		}
		return nil
	}
	return typeErr("want true, false or {format: json|combined}")
}

// MarshalYAML writes the short form when it can.
func (a AccessLog) MarshalYAML() (any, error) {
	if !a.Enabled || a.Format == "" || a.Format == "json" {
		return a.Enabled, nil
	}
	return map[string]string{"format": a.Format}, nil
}

// placeholders usable in header rule values.
var placeholders = []string{"{client_ip}", "{request_id}", "{host}", "{scheme}"}

// headerOwned are headers holdfast itself manages (framing, hop-by-hop):
// a rule may not touch them.
var headerOwned = map[string]bool{
	"content-length": true, "transfer-encoding": true, "connection": true,
	"keep-alive": true, "proxy-connection": true, "te": true, "trailer": true,
	"upgrade": true, "host": true,
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func checkHeaderName(w *walker, path, name string) {
	switch {
	case !validToken(name):
		w.errorf(path, "bad header name %q", name)
	case headerOwned[strings.ToLower(name)]:
		w.errorf(path, "%s is managed by holdfast (framing, hop-by-hop or Host) and cannot be changed by a rule", name)
	}
}

// checkHeaderValue reports control characters and unknown placeholders.
func checkHeaderValue(w *walker, path, v string) {
	if strings.ContainsAny(v, "\r\n\x00") {
		w.errorf(path, "value must not contain CR, LF or NUL")
		return
	}
	rest := v
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			return
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			w.errorf(path, "unclosed placeholder in %q (want {client_ip}, {request_id}, {host} or {scheme})", v)
			return
		}
		ph := rest[i : i+j+1]
		known := false
		for _, p := range placeholders {
			known = known || p == ph
		}
		if !known {
			w.errorf(path, "unknown placeholder %s (want {client_ip}, {request_id}, {host} or {scheme})", ph)
		}
		rest = rest[i+j+1:]
	}
}

func validateHeaderRules(w *walker, path string, r HeaderRules) {
	for _, k := range sortedKeys(r.Set) {
		checkHeaderName(w, path+".set."+k, k)
		checkHeaderValue(w, path+".set."+k, r.Set[k])
	}
	for _, k := range sortedKeys(r.Add) {
		checkHeaderName(w, path+".add."+k, k)
		checkHeaderValue(w, path+".add."+k, r.Add[k])
		for s := range r.Set {
			if strings.EqualFold(s, k) {
				w.errorf(path+".add."+k, "%s is also in set; use one", k)
			}
		}
	}
	for i, k := range r.Remove {
		checkHeaderName(w, fmt.Sprintf("%s.remove[%d]", path, i), k)
	}
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func validateRedirect(w *walker, path string, r *Redirect) {
	switch r.Scheme {
	case "", "http", "https":
	default:
		w.errorf(path+".scheme", "unknown scheme %q (want http or https)", r.Scheme)
	}
	if r.Host != "" {
		if strings.ContainsAny(r.Host, " \t\r\n/?#@\\") {
			w.errorf(path+".host", "bad host %q (want a name, optionally with :port)", r.Host)
		}
	}
	if r.Path != "" && (!strings.HasPrefix(r.Path, "/") || strings.ContainsAny(r.Path, " \t\r\n#")) {
		w.errorf(path+".path", "must start with / and contain no spaces or #")
	}
	switch r.Code {
	case 301, 302, 307, 308:
	default:
		w.errorf(path+".code", "unknown code %d (want 301, 302, 307 or 308)", r.Code)
	}
	if r.Scheme == "" && r.Host == "" && r.Path == "" {
		w.errorf(path, "a redirect needs scheme, host or path")
	}
}

func validateRateLimit(w *walker, path string, r *RateLimit) {
	if r.Rate <= 0 {
		w.errorf(path+".rate", "must be greater than 0 (requests per second)")
	}
	if r.Burst < 1 {
		w.errorf(path+".burst", "must be at least 1")
	}
	k := r.Key
	if !(k == "client_ip" || (strings.HasPrefix(k, "header:") && validToken(k[len("header:"):]))) {
		w.errorf(path+".key", "bad key %q (want client_ip or header:NAME)", k)
	}
}

// ParsePrefixes parses allow/deny style lists with ParsePrefix.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// validatePolicy checks a listener's issue-13 keys and its routes' ones.
func validatePolicy(w *walker, p string, l *Listener) {
	for j, c := range l.Allow {
		if _, err := ParsePrefix(c); err != nil {
			w.errorf(fmt.Sprintf("%s.allow[%d]", p, j), "%v", err)
		}
	}
	for j, c := range l.Deny {
		if _, err := ParsePrefix(c); err != nil {
			w.errorf(fmt.Sprintf("%s.deny[%d]", p, j), "%v", err)
		}
	}
	if l.Protocol == "tcp" {
		for _, k := range []string{"request_headers", "response_headers", "request_id"} {
			if w.has(p + "." + k) {
				w.errorf(p+"."+k, "applies to http listeners only")
			}
		}
		if l.AccessLog.Format == "combined" {
			w.errorf(p+".access_log.format", "combined applies to http listeners only")
		}
		return
	}
	validateHeaderRules(w, p+".request_headers", l.RequestHeaders)
	validateHeaderRules(w, p+".response_headers", l.ResponseHeaders)
	for j := range l.Routes {
		r := &l.Routes[j]
		rp := fmt.Sprintf("%s.routes[%d]", p, j)
		validateHeaderRules(w, rp+".request_headers", r.RequestHeaders)
		validateHeaderRules(w, rp+".response_headers", r.ResponseHeaders)
		if r.StripPrefix && r.PathPrefix == "" {
			w.errorf(rp+".strip_prefix", "needs path_prefix")
		}
		if r.RateLimit != nil {
			validateRateLimit(w, rp+".rate_limit", r.RateLimit)
		}
		if r.Redirect != nil {
			validateRedirect(w, rp+".redirect", r.Redirect)
			for _, k := range []string{"pool", "strip_prefix", "request_headers"} {
				if w.has(rp + "." + k) {
					w.errorf(rp+"."+k, "a redirect route sends nothing upstream; drop %s", k)
				}
			}
		}
	}
}
