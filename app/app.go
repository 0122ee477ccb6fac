// Package app assembles holdfast from a config: pools, listeners and the
// admin endpoints, and owns reload and drain.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/holdfast-lb/holdfast/admin"
	"github.com/holdfast-lb/holdfast/balancer"
	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/discovery"
	"github.com/holdfast-lb/holdfast/metrics"
	"github.com/holdfast-lb/holdfast/proxy"
	"github.com/holdfast-lb/holdfast/state"
)

// Options are the process-level inputs of an App.
type Options struct {
	Log *slog.Logger
	// Registry receives the metrics; nil makes a fresh one.
	Registry *prometheus.Registry
	// ConfigPath is re-read on Reload.
	ConfigPath string
	// Inherited are listening sockets handed over by a previous process,
	// by address.
	Inherited map[string]net.Listener
	// DNSHook lets tests adjust each DNS source before it starts.
	DNSHook func(*discovery.DNS)
	// AdminTimeouts bound admin connections; zero fields take the
	// admin package's defaults (tests shorten them).
	AdminTimeouts admin.Timeouts
	// DescriptorLimit is the open-files limit the process-wide client
	// connection cap is derived from (config.ClientConnCap); 0 reads the
	// process's soft RLIMIT_NOFILE.
	DescriptorLimit uint64
}

// App is a running holdfast. Its methods are safe for concurrent use.
type App struct {
	opts Options
	log  *slog.Logger
	reg  *prometheus.Registry
	m    *metrics.Metrics

	mu        sync.Mutex // serialises Start, Reload and Shutdown
	cfg       *config.Config
	ctx       context.Context
	cancel    context.CancelFunc
	pools     map[string]*poolRT
	listeners map[string]*listenerRT
	admin     *adminServer
	connCap   *proxy.ConnCap // client connections of the whole process
	// overrides are the operator's drain/disable/weight, by pool and
	// backend: held here, not by a pool, so they survive reloads.
	overrides *balancer.Overrides
	nofile    uint64
	// saved is the state file read at Start, used by the first apply only.
	saved *state.File
	// stateW writes the state file (nil without state_file); set in Start
	// before any pool runs, never changed after.
	stateW *state.Writer

	started    atomic.Bool
	draining   atomic.Bool
	handedOver atomic.Bool // a successor owns the sockets: no drain_delay
	wg         sync.WaitGroup
}

type poolRT struct {
	pool   *balancer.Pool
	target *proxy.Target
	tls    *proxy.UpstreamTLS // swapped on reload
	cfg    config.Pool
	cancel context.CancelFunc
}

type listenerRT struct {
	cfg   config.Listener
	ln    *proxy.LimitListener
	http  *proxy.HTTP
	tcp   *proxy.TCP
	certs *proxy.Certs              // TLS listeners: swapped on reload
	pp    *proxy.ProxyProtoListener // proxy_protocol listeners: trust swapped on reload
	acc   *proxy.AccessControl      // allow/deny: swapped on reload
	done  chan struct{}
}

// New prepares an App for cfg; Start binds and serves.
func New(cfg *config.Config, o Options) *App {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	reg := o.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	a := &App{
		opts: o, log: o.Log, reg: reg, m: metrics.New(reg), cfg: cfg,
		pools: map[string]*poolRT{}, listeners: map[string]*listenerRT{},
		connCap: proxy.NewConnCap(0), nofile: o.DescriptorLimit,
		overrides: balancer.NewOverrides(),
	}
	if a.nofile == 0 {
		a.nofile = descriptorLimit()
	}
	a.m.SetInflightSource(func(set func(pool, backend string, v float64)) {
		a.mu.Lock()
		pools := make([]*balancer.Pool, 0, len(a.pools))
		for _, rt := range a.pools {
			pools = append(pools, rt.pool)
		}
		a.mu.Unlock()
		for _, p := range pools {
			for _, ep := range p.Endpoints() {
				set(p.Name(), ep.Addr, float64(ep.Inflight()))
			}
		}
	})
	return a
}

// Registry is where the App's metrics are registered.
func (a *App) Registry() *prometheus.Registry { return a.reg }

// Config is the config in force.
func (a *App) Config() *config.Config { a.mu.Lock(); defer a.mu.Unlock(); return a.cfg }

// Start binds the admin and traffic listeners (all or none) and starts the
// pools. It returns once everything is serving.
func (a *App) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ctx, a.cancel = context.WithCancel(context.WithoutCancel(ctx))
	for _, w := range config.Warnings(a.cfg) {
		a.log.Warn("config warning", "warning", w)
	}
	adm, err := a.startAdmin(a.cfg)
	if err != nil {
		a.cancel()
		return err
	}
	a.admin = adm
	if path := a.cfg.StateFile; path != "" {
		// state_file is read at start; a reload that changes it applies on
		// the next restart.
		a.saved = a.loadState(path)
		a.restoreOverrides(a.saved, a.cfg)
		a.stateW = state.NewWriter(path, stateDebounce, a.collectState, a.log, nil)
	}
	err = a.apply(a.cfg, true)
	a.saved = nil
	if err != nil {
		adm.close()
		a.cancel()
		return err
	}
	if w := a.stateW; w != nil {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			w.Run(a.ctx)
		}()
		w.Changed() // the first write: what the file restored plus the config
	}
	a.started.Store(true)
	return nil
}

// bound is a listener socket bound during apply, not yet serving.
type bound struct {
	cfg config.Listener
	ln  net.Listener
}

// apply moves the running state to cfg. Everything that can fail (building
// pool options, binding new listeners) happens before anything changes, so
// a failed apply leaves the App as it was.
func (a *App) apply(cfg *config.Config, first bool) error {
	// 1. Pool options for every pool.
	newOpts := map[string]*balancer.Options{}
	newTLS := map[string]*tls.Config{}
	var errs *multierror.Error
	for i := range cfg.Pools {
		p := &cfg.Pools[i]
		obs := &balancer.DiscoveryState{}
		if rt, ok := a.pools[p.Name]; ok {
			obs = &rt.pool.Discovery
		}
		o, tc, err := poolOptions(cfg, p, obs, a.log, a.opts.DNSHook)
		if err != nil {
			errs = multierror.Append(errs, err)
			continue
		}
		o.Overrides = a.overrides
		if first {
			restoreOptions(a.saved, p, o)
		}
		newOpts[p.Name] = o
		newTLS[p.Name] = tc
	}
	// Trust lists, parsed once per listener (validated before; this only
	// turns them into prefixes).
	trust := map[string]proxy.TrustList{}
	access := map[string]proxy.AccessList{}
	for _, l := range cfg.Listeners {
		t, err := proxy.ParseTrustList(l.TrustedProxies)
		if err != nil {
			errs = multierror.Append(errs, fmt.Errorf("listener %q: %w", l.Name, err))
			continue
		}
		trust[l.Name] = t
		acl, err := proxy.ParseAccessList(l.Allow, l.Deny)
		if err != nil {
			errs = multierror.Append(errs, fmt.Errorf("listener %q: %w", l.Name, err))
			continue
		}
		access[l.Name] = acl
	}
	if errs != nil {
		return errs
	}
	// 2. Bind listeners that are new or moved; reread the certificates of
	// TLS listeners that stay (same paths, new content is picked up).
	var fresh []bound
	certSets := map[string]*proxy.CertSet{}
	for _, l := range cfg.Listeners {
		if old, ok := a.listeners[l.Name]; ok && sameSocket(old.cfg, l) {
			if old.certs != nil {
				set, err := proxy.LoadCertSet(l.TLS)
				if err != nil {
					for _, b := range fresh {
						_ = b.ln.Close()
					}
					return fmt.Errorf("listener %q: %w", l.Name, err)
				}
				certSets[l.Name] = set
			}
			continue
		}
		ln, err := a.bind(l)
		if err != nil {
			for _, b := range fresh {
				_ = b.ln.Close()
			}
			return fmt.Errorf("listener %q: %w", l.Name, err)
		}
		fresh = append(fresh, bound{l, ln})
	}
	// Nothing fails from here on.
	keepPools := map[string]bool{}
	var started []*balancer.Pool
	for i := range cfg.Pools {
		p := cfg.Pools[i]
		keepPools[p.Name] = true
		o := newOpts[p.Name]
		if rt, ok := a.pools[p.Name]; ok {
			rt.pool.Update(o)
			if upstreamConfig(&p) != upstreamConfig(&rt.cfg) {
				// Each backend's client is built once, with its endpoint.
				a.log.Warn("pool limits, timeouts, protocol and send_proxy_protocol keep their old values until restart", "pool", p.Name)
				p.Limits, p.Timeouts, p.SendProxyProtocol = rt.cfg.Limits, rt.cfg.Timeouts, rt.cfg.SendProxyProtocol
				p.Protocol = rt.cfg.Protocol
			}
			rt.target.SetConfig(targetConfig(&p))
			rt.tls.Set(newTLS[p.Name]) // new connections: re-read certificates
			rt.cfg = p
			continue
		}
		a.pools[p.Name] = a.startPool(p, o, newTLS[p.Name])
		started = append(started, a.pools[p.Name].pool)
	}
	// New pools warm before a listener routes to them: their first set is
	// applied by their own goroutine, and a request routed there before
	// that would get a 503 (Envoy warms new clusters the same way). During
	// a takeover this also keeps the new process from accepting before it
	// can route.
	a.warm(started)
	targets := map[string]*proxy.Target{}
	for n, rt := range a.pools {
		targets[n] = rt.target
	}
	// Existing listeners on the same socket take the new routes in place.
	keepListeners := map[string]bool{}
	for _, l := range cfg.Listeners {
		keepListeners[l.Name] = true
		if old, ok := a.listeners[l.Name]; ok && sameSocket(old.cfg, l) {
			old.cfg = l
			if old.http != nil {
				old.http.SetRoutes(a.routes(l, targets))
				old.http.SetAccessLog(l.AccessLog.Enabled)
				old.http.SetAccessLogCombined(l.AccessLog.Format == "combined")
				old.http.SetPolicy(httpPolicy(l, trust[l.Name]))
			}
			if old.tcp != nil {
				old.tcp.SetTarget(targets[l.Pool])
			}
			if set := certSets[l.Name]; set != nil {
				old.certs.Set(set)
			}
			if old.pp != nil {
				old.pp.SetTrusted(trust[l.Name])
			}
			old.acc.Set(access[l.Name])
		}
	}
	// Listeners that moved or left drain in the background.
	for name, old := range a.listeners {
		if keepListeners[name] && sameSocket(old.cfg, findListener(cfg, name)) {
			continue
		}
		delete(a.listeners, name)
		go a.stopListener(old, old.cfg.Timeouts.Drain.D())
	}
	for _, b := range fresh {
		a.listeners[b.cfg.Name] = a.serve(b, targets, trust[b.cfg.Name], access[b.cfg.Name])
	}
	// Pools no longer referenced stop once their listeners are gone.
	for name, rt := range a.pools {
		if !keepPools[name] {
			delete(a.pools, name)
			rt.cancel()
			a.log.Info("pool removed", "pool", name)
		}
	}
	a.cfg = cfg
	a.setConnCap(cfg)
	return nil
}

func findListener(cfg *config.Config, name string) config.Listener {
	for _, l := range cfg.Listeners {
		if l.Name == name {
			return l
		}
	}
	return config.Listener{}
}

// sameSocket reports whether a listener can keep its socket and server:
// only routes, pools, access logging and certificates change in place.
// httpPolicy is the part of a listener's request rules that a reload swaps
// in place.
func httpPolicy(l config.Listener, trust proxy.TrustList) proxy.Policy {
	p := proxy.Policy{TrustedProxies: trust, KeepEncodedSlash: l.Path.EncodedSlash == "keep",
		RequestHeaders: headerRules(l.RequestHeaders), ResponseHeaders: headerRules(l.ResponseHeaders),
		RequestID: l.RequestID}
	for _, u := range l.Upgrades {
		p.Upgrades = append(p.Upgrades, strings.ToLower(u))
	}
	return p
}

func headerRules(r config.HeaderRules) proxy.HeaderRules {
	return proxy.HeaderRules{Set: r.Set, Add: r.Add, Remove: r.Remove}
}

func sameSocket(a, b config.Listener) bool {
	if a.Name != b.Name || a.Listen != b.Listen || a.Protocol != b.Protocol ||
		a.ProxyProtocol != b.ProxyProtocol || a.Freebind != b.Freebind ||
		a.MaxConnections != b.MaxConnections || a.MaxHeaderBytes != b.MaxHeaderBytes ||
		a.MaxBodyBytes != b.MaxBodyBytes || a.Timeouts != b.Timeouts || (len(a.TLS) > 0) != (len(b.TLS) > 0) {
		return false
	}
	return true
}

func (a *App) bind(l config.Listener) (net.Listener, error) {
	if ln, ok := a.opts.Inherited[l.Listen]; ok {
		delete(a.opts.Inherited, l.Listen)
		return ln, nil
	}
	return proxy.Listen(a.ctx, l.Listen, l.Freebind)
}

// warmTimeout bounds the wait for new pools' first backend sets.
const warmTimeout = 5 * time.Second

// warm waits until each pool can route, or its discovery has answered
// with a failure (then waiting longer would not help), or warmTimeout.
func (a *App) warm(pools []*balancer.Pool) {
	if len(pools) == 0 {
		return
	}
	deadline := time.Now().Add(warmTimeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for _, p := range pools {
		for !p.Ready() && time.Now().Before(deadline) {
			if d := p.Status().Discovery; d != nil && d.LastResult != "" && d.LastResult != "ok" {
				break
			}
			<-tick.C
		}
		if !p.Ready() {
			a.log.Warn("pool has no routable backend yet; routing to it anyway", "pool", p.Name())
		}
	}
}

func (a *App) startPool(p config.Pool, o *balancer.Options, tc *tls.Config) *poolRT {
	up := upstreamConfig(&p)
	up.TLS = proxy.NewUpstreamTLS(tc)
	up.Log = a.log
	hooks := balancer.Hooks{
		NewUpstream:   func(ep *balancer.Endpoint) balancer.Upstream { return proxy.NewUpstream(ep, up) },
		CloseUpstream: func(ep *balancer.Endpoint) { ep.Upstream.Close() },
		Changed:       a.stateChanged,
	}
	pool := balancer.NewPool(o, hooks, a.m, a.log)
	if h := restoredHealth(a.saved, p.Name); h != nil {
		pool.RestoreHealth(h)
	}
	ctx, cancel := context.WithCancel(a.ctx)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		pool.Run(ctx)
	}()
	return &poolRT{pool: pool, target: proxy.NewTarget(pool, targetConfig(&p), a.m), tls: up.TLS, cfg: p, cancel: cancel}
}

func (a *App) routes(l config.Listener, targets map[string]*proxy.Target) *proxy.Routes {
	rs := make([]proxy.Route, len(l.Routes))
	for i, r := range l.Routes {
		rs[i] = proxy.Route{Host: r.Host, PathPrefix: r.PathPrefix, Target: targets[r.Pool], StripPrefix: r.StripPrefix,
			RequestHeaders: headerRules(r.RequestHeaders), ResponseHeaders: headerRules(r.ResponseHeaders)}
		if rl := r.RateLimit; rl != nil {
			rs[i].RateLimit = &proxy.RateLimit{Rate: rl.Rate, Burst: rl.Burst, Key: rl.Key}
		}
		if rd := r.Redirect; rd != nil {
			rs[i].Target = nil
			rs[i].Redirect = &proxy.Redirect{Scheme: rd.Scheme, Host: rd.Host, Path: rd.Path, Code: rd.Code}
		}
	}
	return proxy.NewRoutes(l.Name, targets[l.Pool], rs, a.m)
}

func (a *App) serve(b bound, targets map[string]*proxy.Target, trust proxy.TrustList, access proxy.AccessList) *listenerRT {
	l := b.cfg
	log := a.log.With("listener", l.Name)
	// allow/deny is checked on the bare socket, before the PROXY header
	// and TLS: a refused peer costs one accept and one close.
	acc := proxy.NewAccessControl(access, a.m.ListenerRejected.WithLabelValues(l.Name, "denied"))
	lim := proxy.NewLimitListener(b.ln, proxy.LimitOptions{
		Name: l.Name, Max: l.MaxConnections, Cap: a.connCap,
		Gauge: a.m.ListenerConns.WithLabelValues(l.Name), Metrics: a.m, Log: log,
		Access: acc,
	})
	rt := &listenerRT{cfg: l, ln: lim, acc: acc, done: make(chan struct{})}
	var ln net.Listener = lim
	if l.ProxyProtocol {
		// trusted_proxies decides whose header is believed; see
		// proxy.ProxyProtoListener for peers outside it.
		rt.pp = proxy.NewProxyProtoListener(ln, proxy.ProxyProtoOptions{
			Name: l.Name, Timeout: l.Timeouts.Read.D(), Log: log, Metrics: a.m, Trusted: trust,
		})
		ln = rt.pp
	}
	switch l.Protocol {
	case "tcp":
		rt.tcp = proxy.NewTCP(proxy.TCPOptions{Name: l.Name, IdleTimeout: l.Timeouts.Idle.D(), Log: log, Metrics: a.m}, targets[l.Pool])
		go func() {
			defer close(rt.done)
			_ = rt.tcp.Serve(ln)
		}()
	default:
		h := proxy.NewHTTP(proxy.HTTPOptions{
			Name: l.Name, MaxHeaderBytes: int(l.MaxHeaderBytes), MaxBodyBytes: int64(l.MaxBodyBytes),
			HeaderTimeout: l.Timeouts.Header.D(),
			ReadTimeout:   l.Timeouts.Read.D(), WriteTimeout: l.Timeouts.Write.D(), IdleTimeout: l.Timeouts.Idle.D(),
			Park:      l.Timeouts.Park.D(),
			Policy:    httpPolicy(l, trust),
			AccessLog: l.AccessLog.Enabled, AccessLogCombined: l.AccessLog.Format == "combined",
			Log: log, Metrics: a.m,
		}, a.routes(l, targets))
		rt.http = h
		if len(l.TLS) > 0 {
			set, err := proxy.LoadCertSet(l.TLS)
			if err != nil {
				// Validated before; a certificate replaced on disk since then.
				log.Error("tls setup failed; listener not serving", "err", err)
				close(rt.done)
				_ = lim.Close()
				return rt
			}
			rt.certs = proxy.NewCerts(set)
			ln = proxy.NewTLSListener(ln, rt.certs)
		}
		go func() {
			defer close(rt.done)
			if err := h.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
				log.Error("listener stopped", "err", err)
			}
		}()
	}
	log.Info("listening", "addr", b.ln.Addr().String(), "protocol", l.Protocol, "pool", l.Pool)
	return rt
}

func (a *App) stopListener(rt *listenerRT, drain time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	switch {
	case rt.http != nil:
		// Keep-alive connections are not closed while idle at once: that
		// races a request the client may be sending on them. Each gets its
		// next response with Connection: close (HAProxy's
		// idle-close-on-response), so a busy client moves to a new
		// connection, accepted by the successor or the new socket, without
		// an error; what is still idle after the grace is closed.
		rt.http.Drain()
		_ = rt.ln.Close()
		waitConnsClosed(ctx, rt.ln, min(keepAliveGrace, drain))
		_ = rt.http.Shutdown(ctx) // upgraded connections too
	case rt.tcp != nil:
		rt.tcp.Shutdown(ctx)
	}
	_ = rt.ln.Close()
	<-rt.done
}

// keepAliveGrace is how long a draining HTTP listener lets keep-alive
// connections come back for a last request before closing the idle ones.
const keepAliveGrace = time.Second

// waitConnsClosed returns when ln has no open connection, after grace, or
// when ctx ends, whichever is first.
func waitConnsClosed(ctx context.Context, ln *proxy.LimitListener, grace time.Duration) {
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for ln.Open() > 0 {
		select {
		case <-tick.C:
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// Reload re-reads the config file and applies it. An invalid config changes
// nothing; the error lists every problem.
func (a *App) Reload() (string, error) {
	cfg, err := config.Load(a.opts.ConfigPath)
	if err != nil {
		a.m.ReloadFailures.Inc()
		a.log.Error("reload rejected", "err", err)
		return "", err
	}
	return a.ReloadConfig(cfg)
}

// ReloadConfig applies an already validated config.
func (a *App) ReloadConfig(cfg *config.Config) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.draining.Load() {
		a.m.ReloadFailures.Inc()
		return "", errors.New("draining: reload refused")
	}
	if cfg.Admin.Listen != a.cfg.Admin.Listen {
		a.log.Warn("admin.listen changes apply on restart", "current", a.cfg.Admin.Listen)
	}
	adminSet, err := adminSettings(cfg)
	if err == nil {
		err = a.apply(cfg, false)
	}
	if err != nil {
		a.m.ReloadFailures.Inc()
		a.log.Error("reload failed; previous config still serving", "err", err)
		return "", err
	}
	if a.admin != nil {
		a.admin.h.Set(adminSet)
	}
	a.m.Reloads.Inc()
	sum := summary(cfg)
	a.log.Info("reloaded", "summary", sum)
	return sum, nil
}

func summary(cfg *config.Config) string {
	var ls, ps []string
	for _, l := range cfg.Listeners {
		ls = append(ls, l.Name+"@"+l.Listen)
	}
	for _, p := range cfg.Pools {
		ps = append(ps, p.Name)
	}
	sort.Strings(ps)
	return fmt.Sprintf("listeners: %s; pools: %s", strings.Join(ls, ", "), strings.Join(ps, ", "))
}

// Ready reports whether the App is ready (NotReady is "").
func (a *App) Ready() bool { return a.NotReady() == "" }

// NotReady says why the App is not ready, or returns "" when it is: it has
// started, is not draining, every listener is bound and accepting, and
// behind each listener at least one pool can route. A pool that never had
// a backend (one just added whose DNS is dead) is left out of that count, so
// it cannot take the instance out; but when no pool behind any listener has
// ever had a backend the instance serves nothing and is not ready.
func (a *App) NotReady() string {
	switch {
	case !a.started.Load():
		return "starting"
	case a.draining.Load():
		return "draining"
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	names := make([]string, 0, len(a.listeners))
	for name := range a.listeners {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if why := a.listeners[name].ln.NotAccepting(acceptGrace); why != "" {
			return why
		}
	}
	withPools, counted := 0, 0
	for _, name := range names {
		pools := poolsBehind(a.listeners[name].cfg)
		if len(pools) == 0 {
			continue // redirects only
		}
		withPools++
		had, routes := false, false
		for _, pn := range pools {
			rt := a.pools[pn]
			if rt == nil || !rt.pool.HadBackend() {
				continue
			}
			had = true
			if rt.pool.Ready() {
				routes = true
				break
			}
		}
		if had {
			counted++
			if !routes {
				return fmt.Sprintf("listener %q: no pool behind it can route (%s)", name, strings.Join(pools, ", "))
			}
		}
	}
	if withPools > 0 && counted == 0 {
		return "no pool has had a backend yet"
	}
	return ""
}

// PoolNotReady answers /readyz?pool=NAME: why the pool cannot route, or ""
// when it can; known is false for a pool the config does not have.
func (a *App) PoolNotReady(name string) (why string, known bool) {
	a.mu.Lock()
	rt := a.pools[name]
	a.mu.Unlock()
	switch {
	case rt == nil:
		return "", false
	case !a.started.Load():
		return "starting", true
	case a.draining.Load():
		return "draining", true
	case !rt.pool.HadBackend():
		return fmt.Sprintf("pool %q has never had a backend", name), true
	case !rt.pool.Ready():
		return fmt.Sprintf("pool %q has no routable backend", name), true
	}
	return "", true
}

// poolsBehind lists the pools a listener can send traffic to: its default
// pool and its routes' pools, each once, in config order.
func poolsBehind(l config.Listener) []string {
	var out []string
	add := func(p string) {
		if p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	add(l.Pool)
	for _, r := range l.Routes {
		add(r.Pool)
	}
	return out
}

// acceptGrace is how long a listener may fail to accept (EMFILE and the
// like) before /readyz turns 503: longer than a blip, short enough for a
// floating-IP manager to move traffic to a peer that can take it.
const acceptGrace = 250 * time.Millisecond

// ListenerStatus lists every listener for the status page, by name.
func (a *App) ListenerStatus() []proxy.ListenerStatus {
	a.mu.Lock()
	out := make([]proxy.ListenerStatus, 0, len(a.listeners))
	for _, rt := range a.listeners {
		st := rt.ln.Status()
		st.Protocol = rt.cfg.Protocol
		out = append(out, st)
	}
	a.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Draining reports whether Shutdown has begun.
func (a *App) Draining() bool { return a.draining.Load() }

// Status lists every pool for the status page, by name.
func (a *App) Status() []balancer.PoolStatus {
	a.mu.Lock()
	rts := make([]*poolRT, 0, len(a.pools))
	for _, rt := range a.pools {
		rts = append(rts, rt)
	}
	a.mu.Unlock()
	out := make([]balancer.PoolStatus, len(rts))
	for i, rt := range rts {
		out[i] = rt.pool.Status()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Pool returns a running pool by name (tests, check --resolve).
func (a *App) Pool(name string) *balancer.Pool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if rt, ok := a.pools[name]; ok {
		return rt.pool
	}
	return nil
}

// ListenerAddr is the bound address of a listener (useful with port 0).
func (a *App) ListenerAddr(name string) net.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	if rt, ok := a.listeners[name]; ok {
		return rt.ln.Addr()
	}
	return nil
}

// Listeners returns the raw listening sockets by address, for handing over
// to a new process.
func (a *App) Listeners() map[string]net.Listener {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]net.Listener{}
	for _, rt := range a.listeners {
		out[rt.cfg.Listen] = rt.ln.Listener
	}
	return out
}

// AdminAddr is the admin listener's bound address.
func (a *App) AdminAddr() net.Addr { return a.admin.addr() }

// Shutdown drains: /readyz turns 503 at once, listeners keep serving for
// drain_delay, then stop accepting and in-flight requests finish (each
// listener's timeouts.drain at most, or until ctx ends).
func (a *App) Shutdown(ctx context.Context) {
	if !a.draining.CompareAndSwap(false, true) {
		return
	}
	a.mu.Lock()
	delay := a.cfg.DrainDelay.D()
	a.mu.Unlock()
	if a.handedOver.Load() {
		delay = 0
	}
	a.log.Info("draining", "drain_delay", delay.String())
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	a.mu.Lock()
	var wg sync.WaitGroup
	for name, rt := range a.listeners {
		delete(a.listeners, name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := rt.cfg.Timeouts.Drain.D()
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
				d = time.Until(dl)
			}
			a.stopListener(rt, d)
		}()
	}
	a.mu.Unlock()
	wg.Wait()
	a.cancel()
	a.wg.Wait()
	if a.admin != nil {
		a.admin.close()
	}
	a.log.Info("stopped")
}
