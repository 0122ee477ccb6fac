// Package app assembles holdfast from a config: pools, listeners and the
// admin endpoints, and owns reload and drain.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
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
	"github.com/holdfast-lb/holdfast/hostaddr"
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
	// State is the state a previous process handed over (run --handoff):
	// applied at Start as a state file would be, and preferred to the
	// state_file, which it is newer than.
	State *state.File
	// DNSHook lets tests adjust each DNS source before it starts.
	DNSHook func(*discovery.DNS)
	// AdminTimeouts bound admin connections; zero fields take the
	// admin package's defaults (tests shorten them).
	AdminTimeouts admin.Timeouts
	// DescriptorLimit is the open-files limit the process-wide client
	// connection cap is derived from (config.ClientConnCap); 0 reads the
	// process's soft RLIMIT_NOFILE.
	DescriptorLimit uint64
	// Addresses follows the host's addresses for listeners on a specific
	// IP (addrwatch.go); nil: the kernel's, through netlink.
	Addresses hostaddr.Source
	// AccessLog is where access-log lines go; nil: standard output.
	AccessLog io.Writer
}

// App is a running holdfast. Its methods are safe for concurrent use.
type App struct {
	opts Options
	log  *slog.Logger
	reg  *prometheus.Registry
	m    *metrics.Metrics

	// applyMu serialises Start, Reload and Shutdown; mu guards the
	// fields below for readers (/readyz, /metrics, /status) and is held
	// only briefly, never while pools warm or listeners drain. cfg,
	// pools and listeners change only with both held.
	applyMu   sync.Mutex
	mu        sync.Mutex
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
	// accessLog carries every listener's access-log lines to one writer
	// goroutine; made in Start, closed (flushed) at the end of Shutdown.
	accessLog *proxy.LogQueue
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
		reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsScheduler)), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	a.ctx, a.cancel = context.WithCancel(context.WithoutCancel(ctx))
	w := a.opts.AccessLog
	if w == nil {
		w = os.Stdout
	}
	a.accessLog = proxy.NewLogQueue(w, 0, a.m.AccessLogBlocked)
	for _, w := range config.Warnings(a.cfg) {
		a.log.Warn("config warning", "warning", w)
	}
	adm, err := a.startAdmin(a.cfg)
	if err != nil {
		a.cancel()
		a.accessLog.Close()
		return err
	}
	a.admin = adm
	a.saved = a.opts.State
	if a.saved != nil {
		a.log.Info("state handed over by the previous process", "written", a.saved.Written, "pools", len(a.saved.Pools))
	}
	if path := a.cfg.StateFile; path != "" {
		// state_file is read at start; a reload that changes it applies on
		// the next restart.
		if a.saved == nil {
			a.saved = a.loadState(path)
		}
		a.stateW = state.NewWriter(path, stateDebounce, a.collectState, a.log, nil)
	}
	a.restoreOverrides(a.saved, a.cfg)
	err = a.apply(a.cfg, true)
	a.saved = nil
	if err != nil {
		adm.close()
		a.cancel()
		a.accessLog.Close()
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
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.runSampler(a.ctx)
	}()
	a.startAddrWatch()
	a.started.Store(true)
	return nil
}

// bound is a listener socket bound during apply, not yet serving.
type bound struct {
	cfg config.Listener
	ln  net.Listener
}

// staged is what apply prepared before it commits: nothing of it is
// visible to readers of the App yet.
type staged struct {
	opts     map[string]*balancer.Options
	tls      map[string]*tls.Config
	trust    map[string]proxy.TrustList
	access   map[string]proxy.AccessList
	certSets map[string]*proxy.CertSet
	fresh    []bound            // Bind and Rebind, bound, not serving
	started  map[string]*poolRT // StartPools, running, warming
}

// apply moves the running state to cfg along plan(old, cfg). Everything
// that can fail (building pool options, binding new listeners) happens
// before anything changes, so a failed apply leaves the App as it was.
// The caller holds applyMu; apply takes mu only to stage and to commit,
// never while new pools warm, so /readyz, /metrics and /status answer
// during a slow warm-up.
func (a *App) apply(cfg *config.Config, first bool) error {
	old := a.cfg // only applyMu holders write it
	if first {
		old = nil
	}
	pl := plan(old, cfg)
	a.mu.Lock()
	st, err := a.stage(cfg, pl, first)
	a.mu.Unlock()
	if err != nil {
		return err
	}
	// New pools warm before a listener routes to them: their first set is
	// applied by their own goroutine, and a request routed there before
	// that would get a 503 (Envoy warms new clusters the same way). During
	// a takeover this also keeps the new process from accepting before it
	// can route.
	started := make([]*balancer.Pool, 0, len(pl.StartPools))
	for _, name := range pl.StartPools {
		started = append(started, st.started[name].pool)
	}
	a.warm(started)
	a.mu.Lock()
	a.commit(cfg, pl, st)
	a.mu.Unlock()
	return nil
}

// stage builds and binds what cfg needs and starts its new pools. Called
// with mu held.
func (a *App) stage(cfg *config.Config, pl Plan, first bool) (*staged, error) {
	st := &staged{opts: map[string]*balancer.Options{}, tls: map[string]*tls.Config{},
		trust: map[string]proxy.TrustList{}, access: map[string]proxy.AccessList{},
		certSets: map[string]*proxy.CertSet{}, started: map[string]*poolRT{}}
	// 1. Pool options for every pool.
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
		st.opts[p.Name] = o
		st.tls[p.Name] = tc
	}
	// Trust lists, parsed once per listener (validated before; this only
	// turns them into prefixes).
	for _, l := range cfg.Listeners {
		t, err := proxy.ParseTrustList(l.TrustedProxies)
		if err != nil {
			errs = multierror.Append(errs, fmt.Errorf("listener %q: %w", l.Name, err))
			continue
		}
		st.trust[l.Name] = t
		acl, err := proxy.ParseAccessList(l.Allow, l.Deny)
		if err != nil {
			errs = multierror.Append(errs, fmt.Errorf("listener %q: %w", l.Name, err))
			continue
		}
		st.access[l.Name] = acl
	}
	if errs != nil {
		return nil, errs
	}
	// 2. Bind listeners that are new or moved; reread the certificates of
	// TLS listeners that stay (same paths, new content is picked up).
	fail := func(err error) (*staged, error) {
		for _, b := range st.fresh {
			_ = b.ln.Close()
		}
		return nil, err
	}
	for _, name := range pl.Retarget {
		l := findListener(cfg, name)
		if rt := a.listeners[name]; rt != nil && rt.certs != nil {
			set, err := proxy.LoadCertSet(l.TLS)
			if err != nil {
				return fail(fmt.Errorf("listener %q: %w", l.Name, err))
			}
			st.certSets[name] = set
		}
	}
	for _, name := range slices.Concat(pl.Bind, pl.Rebind) {
		l := findListener(cfg, name)
		ln, err := a.bind(l)
		if err != nil {
			return fail(fmt.Errorf("listener %q: %w", l.Name, err))
		}
		st.fresh = append(st.fresh, bound{l, ln})
	}
	// Nothing fails from here on. 3. Start the new pools.
	for _, name := range pl.StartPools {
		p := *findPool(cfg, name)
		st.started[name] = a.startPool(p, st.opts[name], st.tls[name])
	}
	return st, nil
}

// commit carries out the rest of pl once the new pools warmed: pools take
// their options, listeners their routes, moved and removed listeners
// drain in the background, removed pools stop. Called with mu held; it
// does not wait.
func (a *App) commit(cfg *config.Config, pl Plan, st *staged) {
	for _, name := range pl.UpdatePools {
		p, rt := *findPool(cfg, name), a.pools[name]
		if rt == nil {
			continue // not running (cannot happen: a.cfg and a.pools move together)
		}
		rt.pool.Update(st.opts[name])
		if upstreamConfig(&p) != upstreamConfig(&rt.cfg) {
			// Each backend's client is built once, with its endpoint.
			a.log.Warn("pool limits, timeouts, protocol and send_proxy_protocol keep their old values until restart", "pool", p.Name)
			p.Limits, p.Timeouts, p.SendProxyProtocol = rt.cfg.Limits, rt.cfg.Timeouts, rt.cfg.SendProxyProtocol
			p.Protocol = rt.cfg.Protocol
		}
		rt.target.SetConfig(targetConfig(&p))
		rt.tls.Set(st.tls[name]) // new connections: re-read certificates
		rt.cfg = p
	}
	for name, rt := range st.started {
		a.pools[name] = rt
	}
	targets := map[string]*proxy.Target{}
	for n, rt := range a.pools {
		targets[n] = rt.target
	}
	// Existing listeners on the same socket take the new routes in place.
	for _, name := range pl.Retarget {
		l, old := findListener(cfg, name), a.listeners[name]
		if old == nil {
			continue // not running (cannot happen: a.cfg and a.listeners move together)
		}
		old.cfg = l
		if old.http != nil {
			old.http.SetRoutes(a.routes(l, targets))
			old.http.SetAccessLog(l.AccessLog.Enabled)
			old.http.SetAccessLogCombined(l.AccessLog.Format == "combined")
			old.http.SetPolicy(httpPolicy(l, st.trust[l.Name]))
		}
		if old.tcp != nil {
			old.tcp.SetTarget(targets[l.Pool])
			old.tcp.SetAccessLog(l.AccessLog.Enabled)
		}
		if set := st.certSets[name]; set != nil {
			old.certs.Set(set)
		}
		if old.pp != nil {
			old.pp.SetTrusted(st.trust[l.Name])
		}
		old.acc.Set(st.access[l.Name])
	}
	// Listeners that moved or left drain in the background.
	for _, name := range slices.Concat(pl.Rebind, pl.Drain) {
		if old, ok := a.listeners[name]; ok {
			delete(a.listeners, name)
			go a.stopListener(old, old.cfg.Timeouts.Drain.D())
		}
	}
	for _, b := range st.fresh {
		a.listeners[b.cfg.Name] = a.serve(b, targets, st.trust[b.cfg.Name], st.access[b.cfg.Name])
	}
	// Pools no longer referenced stop once their listeners are gone.
	for _, name := range pl.StopPools {
		if rt, ok := a.pools[name]; ok {
			delete(a.pools, name)
			rt.cancel()
			a.log.Info("pool removed", "pool", name)
		}
	}
	a.cfg = cfg
	a.setConnCap(cfg)
}

func findPool(cfg *config.Config, name string) *config.Pool {
	for i := range cfg.Pools {
		if cfg.Pools[i].Name == name {
			return &cfg.Pools[i]
		}
	}
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
		a.ProxyProtocol != b.ProxyProtocol || a.Freebind != b.Freebind || a.HTTP2Only != b.HTTP2Only ||
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
// with a failure (then waiting longer would not help), or warmTimeout:
// each pool's Warmed channel, no polling.
func (a *App) warm(pools []*balancer.Pool) {
	if len(pools) == 0 {
		return
	}
	deadline := time.NewTimer(warmTimeout)
	defer deadline.Stop()
	late := false
	for _, p := range pools {
		if !late {
			select {
			case <-p.Warmed():
			case <-deadline.C:
				late = true
			}
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
	_, watched := hostaddr.Watched(l.Listen)
	watched = watched && l.Protocol != "tcp"
	lim := proxy.NewLimitListener(b.ln, proxy.LimitOptions{
		Name: l.Name, Max: l.MaxConnections, Cap: a.connCap,
		Gauge: a.m.ListenerConns.WithLabelValues(l.Name), Metrics: a.m, Log: log,
		Access: acc, TrackConns: watched,
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
		rt.tcp = proxy.NewTCP(proxy.TCPOptions{Name: l.Name, IdleTimeout: l.Timeouts.Idle.D(), Log: log, Metrics: a.m,
			AccessLog: l.AccessLog.Enabled, AccessLogQueue: a.accessLog}, targets[l.Pool])
		go func() {
			defer close(rt.done)
			_ = rt.tcp.Serve(ln)
		}()
	default:
		h := proxy.NewHTTP(proxy.HTTPOptions{
			Name: l.Name, MaxHeaderBytes: int(l.MaxHeaderBytes), MaxBodyBytes: int64(l.MaxBodyBytes),
			HeaderTimeout: l.Timeouts.Header.D(),
			ReadTimeout:   l.Timeouts.Read.D(), WriteTimeout: l.Timeouts.Write.D(), IdleTimeout: l.Timeouts.Idle.D(),
			Park: l.Timeouts.Park.D(), TrackIdle: watched, HTTP2Only: l.HTTP2Only,
			Policy:    httpPolicy(l, trust),
			AccessLog: l.AccessLog.Enabled, AccessLogCombined: l.AccessLog.Format == "combined",
			AccessLogQueue: a.accessLog,
			Log:            log, Metrics: a.m,
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
			ln = proxy.NewTLSListener(ln, rt.certs, l.HTTP2Only)
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
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
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
	warnings := a.emptyPools(cfg)
	for _, w := range warnings {
		sum += "\nwarning: " + w
	}
	a.log.Info("reloaded", "summary", summary(cfg))
	return sum, nil
}

// emptyPools warns, once per reload, of each pool that has never had a
// backend (one just added whose discovery returns nothing): the reload
// stands and the other pools serve (/readyz is not hostage to it), but the
// operator should know which pool answers 503. Called with a.mu held.
func (a *App) emptyPools(cfg *config.Config) []string {
	var out []string
	for _, p := range cfg.Pools {
		rt := a.pools[p.Name]
		if rt == nil || rt.pool.HadBackend() {
			continue
		}
		w := fmt.Sprintf("pool %q has no backend yet", p.Name)
		if d := rt.pool.Status().Discovery; d != nil && d.LastResult != "" {
			w += fmt.Sprintf(" (discovery: %s)", d.LastResult)
		}
		a.log.Warn("reloaded, but a pool has no backend yet; it answers 503 until discovery finds one", "pool", p.Name)
		out = append(out, w)
	}
	return out
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
		st.IdleConnections = gaugeValue(a.m.ListenerIdle.WithLabelValues(rt.cfg.Name))
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
	// A reload that is warming pools finishes first; later ones see
	// draining and are refused.
	a.applyMu.Lock()
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
	a.applyMu.Unlock()
	wg.Wait()
	a.accessLog.Close() // every listener has stopped: the last lines are out
	a.cancel()
	a.wg.Wait()
	if a.admin != nil {
		a.admin.close()
	}
	a.log.Info("stopped")
}
