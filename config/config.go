// Package config holds holdfast's configuration schema, its defaults and its
// validation. Load and Parse report every problem at once, each as
// "path: message (line N)".
package config

// Config is the whole configuration file.
type Config struct {
	Admin Admin `yaml:"admin"`
	// StateFile, when set, is where holdfast keeps what survives a
	// restart (last good sets, health, operator overrides); read at start.
	StateFile  string     `yaml:"state_file"`
	DrainDelay Duration   `yaml:"drain_delay"`
	Resolvers  []Resolver `yaml:"resolvers"`
	Listeners  []Listener `yaml:"listeners"`
	Pools      []Pool     `yaml:"pools"`
}

// Admin is the admin listener.
type Admin struct {
	Listen string `yaml:"listen"`
	// TokenFile holds a bearer token; when set, every admin endpoint but
	// /healthz and /readyz needs "Authorization: Bearer <token>".
	TokenFile string `yaml:"token_file"`
	// Pprof serves /debug/pprof/ when true.
	Pprof bool `yaml:"pprof"`
}

// Resolver is a named set of DNS servers tried in order.
type Resolver struct {
	Name     string   `yaml:"name"`
	Servers  []string `yaml:"servers"`
	Timeout  Duration `yaml:"timeout"`
	Attempts int      `yaml:"attempts"`
}

// Listener is a traffic listener.
type Listener struct {
	Name          string  `yaml:"name"`
	Listen        string  `yaml:"listen"`
	Protocol      string  `yaml:"protocol"`
	Pool          string  `yaml:"pool"`
	Routes        []Route `yaml:"routes"`
	ProxyProtocol bool    `yaml:"proxy_protocol"`
	// HTTP2Only makes an http listener speak HTTP/2 alone: a plain one
	// takes h2c with prior knowledge only (a connection that does not
	// open with the preface is closed), a TLS one offers only "h2" by
	// ALPN (HAProxy's "bind ... proto h2").
	HTTP2Only      bool      `yaml:"http2_only"`
	TrustedProxies []string  `yaml:"trusted_proxies"`
	Upgrades       []string  `yaml:"upgrades"`
	Path           PathRules `yaml:"path"`
	Freebind       bool      `yaml:"freebind"`
	TLS            []TLSCert `yaml:"tls"`
	MaxConnections int       `yaml:"max_connections"`
	MaxHeaderBytes Size      `yaml:"max_header_bytes"`
	MaxBodyBytes   Size      `yaml:"max_body_bytes"`
	// AccessLog is false, true or {format: json|combined}.
	AccessLog AccessLog        `yaml:"access_log"`
	Timeouts  ListenerTimeouts `yaml:"timeouts"`
	// RequestID keeps X-Request-ID from a trusted proxy, else generates
	// one; it is logged and sent upstream. Default true.
	RequestID bool `yaml:"request_id"`
	// Allow and Deny are CIDRs checked when a connection is accepted;
	// an empty Allow lets everyone in, and Deny wins over Allow.
	Allow []string `yaml:"allow"`
	Deny  []string `yaml:"deny"`
	// RequestHeaders apply to every request; a route's own rules after.
	RequestHeaders HeaderRules `yaml:"request_headers"`
	// ResponseHeaders apply to every response; a route's own rules after.
	ResponseHeaders HeaderRules `yaml:"response_headers"`
}

// Route sends matching HTTP requests to a pool. Host is exact or "*.suffix".
type Route struct {
	Host       string `yaml:"host"`
	PathPrefix string `yaml:"path_prefix"`
	// Pool is where matching requests go; a Redirect route has none.
	Pool string `yaml:"pool"`
	// Redirect answers matching requests with a redirect.
	Redirect *Redirect `yaml:"redirect"`
	// StripPrefix removes PathPrefix from the path sent upstream.
	StripPrefix     bool        `yaml:"strip_prefix"`
	RequestHeaders  HeaderRules `yaml:"request_headers"`
	ResponseHeaders HeaderRules `yaml:"response_headers"`
	RateLimit       *RateLimit  `yaml:"rate_limit"`
}

// TLSCert is one certificate; the listener picks by SNI.
type TLSCert struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// PathRules say how request paths are normalised.
type PathRules struct {
	// EncodedSlash is "reject" (an encoded / or \ is answered 400) or
	// "keep" (forwarded as is, never a separator for routing).
	EncodedSlash string `yaml:"encoded_slash"`
}

// ListenerTimeouts bound the client side; each is a bound on silence.
type ListenerTimeouts struct {
	Header Duration `yaml:"header"`
	Read   Duration `yaml:"read"`
	Write  Duration `yaml:"write"`
	Idle   Duration `yaml:"idle"`
	Drain  Duration `yaml:"drain"`
	// Park (an extension of SPEC.md): how long an idle plain-TCP HTTP
	// keep-alive connection keeps its goroutine and buffers before it is
	// parked in epoll with neither; 0 never parks.
	Park Duration `yaml:"park"`
}

// Pool is a set of backends and how to spread traffic over them.
type Pool struct {
	Name    string `yaml:"name"`
	Balance string `yaml:"balance"`
	HashKey string `yaml:"hash_key"`
	// Protocol is how requests reach the backends: http1, h2 (over the
	// pool's tls, ALPN h2) or h2c (HTTP/2 with prior knowledge).
	Protocol          string        `yaml:"protocol"`
	Backends          []BackendSpec `yaml:"backends"`
	Discovery         *Discovery    `yaml:"discovery"`
	Health            Health        `yaml:"health"`
	Outlier           Outlier       `yaml:"outlier"`
	PanicThreshold    Percent       `yaml:"panic_threshold"`
	SlowStart         Duration      `yaml:"slow_start"`
	SendProxyProtocol string        `yaml:"send_proxy_protocol"`
	TLS               UpstreamTLS   `yaml:"tls"`
	Retries           Retries       `yaml:"retries"`
	Limits            Limits        `yaml:"limits"`
	Timeouts          PoolTimeouts  `yaml:"timeouts"`
}

// UpstreamTLS is how a pool reaches its backends over TLS (off unless
// Enabled). Certificates are read at start and on every reload.
type UpstreamTLS struct {
	Enabled bool `yaml:"enabled"`
	// ServerName is sent as SNI and verified; default: the backend's host.
	ServerName string `yaml:"server_name"`
	// CAFile holds the PEM roots the backends are verified against;
	// default: the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate (mTLS).
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Discovery finds a pool's backends in DNS.
type Discovery struct {
	Type string `yaml:"type"`
	// Name is the DNS name, or for type etcd the key prefix.
	Name string `yaml:"name"`
	// Endpoints are the etcd cluster's client URLs (type etcd only).
	Endpoints  []string `yaml:"endpoints"`
	Port       int      `yaml:"port"`
	Resolver   string   `yaml:"resolver"`
	MinRefresh Duration `yaml:"min_refresh"`
	MaxRefresh Duration `yaml:"max_refresh"`
	StaleFor   Duration `yaml:"stale_for"`
	MaxShrink  Percent  `yaml:"max_shrink"`
	Confirm    int      `yaml:"confirm"`
}

// Health configures active checks and flap damping.
type Health struct {
	Type string `yaml:"type"`
	Path string `yaml:"path"`
	// Host is the Host header of a check; default: the backend address.
	Host string `yaml:"host"`
	// Headers are extra request headers of a check.
	Headers map[string]string `yaml:"headers"`
	// TLS checks over TLS, with the pool's tls settings.
	TLS bool `yaml:"tls"`
	// Port is the port checked; 0: the backend's own.
	Port         int    `yaml:"port"`
	ExpectStatus string `yaml:"expect_status"`
	// ExpectBody is a substring the check's body must contain.
	ExpectBody string `yaml:"expect_body"`
	// Service is the service name a grpc check asks grpc.health.v1
	// about; empty: the server as a whole.
	Service  string   `yaml:"service"`
	Interval Duration `yaml:"interval"`
	Timeout  Duration `yaml:"timeout"`
	Rise     int      `yaml:"rise"`
	Fall     int      `yaml:"fall"`
	Flap     Flap     `yaml:"flap"`
}

// Flap holds down a backend that crosses healthy/unhealthy too often.
type Flap struct {
	Window         Duration `yaml:"window"`
	MaxTransitions int      `yaml:"max_transitions"`
	Hold           Duration `yaml:"hold"`
	MaxHold        Duration `yaml:"max_hold"`
}

// Outlier ejects backends that fail live traffic.
type Outlier struct {
	ConsecutiveFailures int      `yaml:"consecutive_failures"`
	Ejection            Duration `yaml:"ejection"`
	MaxEjection         Duration `yaml:"max_ejection"`
	MaxEjected          Percent  `yaml:"max_ejected"`
}

// Retries bounds how a failed attempt is tried again.
type Retries struct {
	Attempts      int      `yaml:"attempts"`
	Budget        Percent  `yaml:"budget"`
	On            []string `yaml:"on"`
	PerTryTimeout Duration `yaml:"per_try_timeout"`
	// BufferBody is how much of a request body is kept so a retry can
	// send it again; a larger body is not retried once any of it was sent.
	BufferBody Size `yaml:"buffer_body"`
}

// Limits bound upstream connections.
type Limits struct {
	MaxConnsPerBackend int      `yaml:"max_conns_per_backend"`
	MaxIdlePerBackend  int      `yaml:"max_idle_per_backend"`
	QueueTimeout       Duration `yaml:"queue_timeout"`
}

// PoolTimeouts bound the upstream side.
type PoolTimeouts struct {
	Connect  Duration `yaml:"connect"`
	Response Duration `yaml:"response"`
	Idle     Duration `yaml:"idle"`
}
