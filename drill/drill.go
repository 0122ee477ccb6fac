// Package drill rehearses real incidents against a user's own config:
// `holdfast drill`. Each drill starts the config in-process with its
// resolvers and backends replaced by simulated ones of the same shape on
// loopback, drives steady GET and POST load through every listener,
// injects one incident, and reports what a client saw, classified by
// cause, with advice naming what in the config would have saved the
// requests that failed.
package drill

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holdfast-lb/holdfast/app"
	"github.com/holdfast-lb/holdfast/config"
)

// Options tune a drill run. Zero values take the defaults noted.
type Options struct {
	// Log receives holdfast's own logs during the drills (default: none).
	Log *slog.Logger
	// Warmup is the steady load before an incident (default 1s); Settle
	// the load after it, counted as "after settling" (default 2s).
	Warmup, Settle time.Duration
	// MaxIncident caps every incident's length (0: no cap beyond each
	// drill's own). Shorter is faster and less realistic.
	MaxIncident time.Duration
	// Clients is how many clients conn-explosion opens (default 2000).
	Clients int
}

func (o Options) withDefaults() Options {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Warmup <= 0 {
		o.Warmup = time.Second
	}
	if o.Settle <= 0 {
		o.Settle = 2 * time.Second
	}
	if o.Clients <= 0 {
		o.Clients = 2000
	}
	return o
}

// Result is one drill's outcome.
type Result struct {
	Drill string
	// Requests counts every request the drill's clients sent; Failed
	// those that failed (5xx or transport error); Unavoidable the failed
	// ones no config could have saved (a POST in flight on a killed
	// backend); Settled the failed ones sent after the settle point.
	Requests, Failed, Unavoidable, Settled int
	// Verdict is "pass", "warn" (passed, with warnings), "FAIL",
	// "skipped" or "error".
	Verdict string
	Advice  []Advice
	// Skip says why a skipped drill did not apply; Err why one could not run.
	Skip string
	Err  error
	// Took is how long the drill ran.
	Took time.Duration
}

// Lost reports whether the drill lost a request the config could have
// saved (or could not run at all).
func (r Result) Lost() bool { return r.Verdict == "FAIL" || r.Verdict == "error" }

// Names lists every drill, in the order a default run goes through them.
func Names() []string {
	out := make([]string, len(incidents))
	for i, in := range incidents {
		out[i] = in.name
	}
	return out
}

// UsageError is a bad drill name or an unusable config: the command exits 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Run loads the config at path and runs the named drills (none: every
// drill), one after the other, each in a fresh simulated world. It
// returns one Result per drill and the changes the simulation made to the
// config (notes). A bad path, config or drill name is a *UsageError.
func Run(ctx context.Context, path string, names []string, o Options) ([]Result, []string, error) {
	o = o.withDefaults()
	cfg, err := config.Load(path)
	if err != nil {
		return nil, nil, &UsageError{err}
	}
	var chosen []*incident
	if len(names) == 0 {
		for i := range incidents {
			chosen = append(chosen, &incidents[i])
		}
	}
	for _, n := range names {
		in := findIncident(n)
		if in == nil {
			return nil, nil, &UsageError{fmt.Errorf("unknown drill %q (want one of %s)", n, strings.Join(Names(), ", "))}
		}
		chosen = append(chosen, in)
	}
	var out []Result
	var notes []string
	for _, in := range chosen {
		if ctx.Err() != nil {
			break
		}
		res, ns := runOne(ctx, path, cfg, in, o)
		out = append(out, res)
		for _, n := range ns {
			if !slices.Contains(notes, n) {
				notes = append(notes, n)
			}
		}
	}
	return out, notes, nil
}

// drill is one drill in progress.
type drill struct {
	o    Options
	in   *incident
	w    *world
	app  *app.App
	path string // the user's config file
	// reloadPath is the file the App reloads from (bad-reload writes it).
	reloadPath string
	clients    int // conn-explosion clients
	ids        atomic.Uint64
	mu         sync.Mutex
	extra      []record // requests sent by the incident itself (conn-explosion)
	notes      []Advice // what the incident itself found
}

func (d *drill) note(a Advice) {
	d.mu.Lock()
	d.notes = append(d.notes, a)
	d.mu.Unlock()
}

func (d *drill) addRecords(rs []record) {
	d.mu.Lock()
	d.extra = append(d.extra, rs...)
	d.mu.Unlock()
}

// freshConfig reloads the user's config and points it at the world.
func (d *drill) freshConfig() (*config.Config, error) {
	cfg, err := config.Load(d.path)
	if err != nil {
		return nil, err
	}
	d.w.rewrite(cfg)
	return cfg, nil
}

// startupTimeout bounds the wait for every simulated backend to be
// routable before the load starts.
const startupTimeout = 10 * time.Second

func runOne(ctx context.Context, path string, cfg *config.Config, in *incident, o Options) (res Result, notes []string) {
	start := time.Now()
	res = Result{Drill: in.name}
	defer func() { res.Took = time.Since(start) }()
	if in.dns && !hasDNSPool(cfg) {
		res.Verdict, res.Skip = "skipped", "no DNS pool"
		return res, nil
	}
	if len(targets(cfg)) == 0 {
		res.Verdict, res.Skip = "skipped", "no listener reaches a pool"
		return res, nil
	}
	w, err := newWorld(cfg)
	if err != nil {
		res.Verdict, res.Err = "error", err
		return res, nil
	}
	defer w.close()
	tmp, err := os.MkdirTemp("", "holdfast-drill-")
	if err != nil {
		res.Verdict, res.Err = "error", err
		return res, nil
	}
	defer os.RemoveAll(tmp)
	d := &drill{o: o, in: in, w: w, path: path, reloadPath: filepath.Join(tmp, "reload.yaml"), clients: o.Clients}
	if in.name == "conn-explosion" {
		var warn *Advice
		if d.clients, warn = explosionClients(o.Clients); warn != nil {
			d.note(*warn)
		}
	}
	dcfg, err := d.freshConfig()
	if err != nil {
		res.Verdict, res.Err = "error", err
		return res, w.notes
	}
	d.app = app.New(dcfg, app.Options{Log: o.Log, ConfigPath: d.reloadPath})
	if err := d.app.Start(ctx); err != nil {
		res.Verdict, res.Err = "error", fmt.Errorf("start: %w", err)
		return res, w.notes
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.app.Shutdown(sctx)
	}()
	if err := d.waitRoutable(ctx); err != nil {
		res.Verdict, res.Err = "error", err
		return res, w.notes
	}

	ts := targets(dcfg)
	gen := startLoad(&d.ids, ts, func(l string) string { return d.app.ListenerAddr(l).String() })
	wait(ctx, o.Warmup)
	length := in.length(dcfg)
	if o.MaxIncident > 0 {
		length = min(length, o.MaxIncident)
	}
	stop, done, err := in.inject(ctx, d, length)
	if err != nil {
		gen.stop()
		res.Verdict, res.Err = "error", fmt.Errorf("inject: %w", err)
		return res, w.notes
	}
	waitOr(ctx, length, done)
	if !in.persistent {
		stop()
	}
	settleAt := time.Now()
	wait(ctx, o.Settle)
	if in.persistent {
		stop()
	}
	records := append(gen.stop(), d.extra...)
	return d.report(res, records, settleAt), w.notes
}

// waitRoutable waits until every pool routes to all its simulated backends.
func (d *drill) waitRoutable(ctx context.Context) error {
	deadline := time.Now().Add(startupTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for _, sp := range d.w.pools {
		for {
			p := d.app.Pool(sp.name)
			if p != nil && p.Routable() >= len(sp.backends) {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				n := 0
				if p != nil {
					n = p.Routable()
				}
				return fmt.Errorf("pool %q: %d of %d simulated backends routable after %s (do its health settings fit an HTTP backend answering %s?)",
					sp.name, n, len(sp.backends), startupTimeout, sp.cfg.Health.Path)
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
		}
	}
	return nil
}

// report classifies every record and applies the advice rules per pool.
func (d *drill) report(res Result, records []record, settleAt time.Time) Result {
	var resets []time.Time
	for _, sp := range d.w.pools {
		for _, b := range sp.backends {
			resets = append(resets, b.resetTimes()...)
		}
	}
	findings := map[string]*finding{}
	for _, sp := range d.w.pools {
		f := &finding{drill: d.in.name, pool: sp.cfg, causes: map[Cause]int{}, status: map[int]int{},
			backends: len(sp.backends)}
		if sp.dnsPool() {
			f.resolverServers = len(d.w.dns[sp.resolver])
		}
		findings[sp.name] = f
	}
	cfg := d.app.Config()
	for _, l := range cfg.Listeners {
		for _, pn := range poolsBehind(l) {
			if f := findings[pn]; f != nil && l.MaxConnections > 0 && (f.maxConnections == 0 || l.MaxConnections < f.maxConnections) {
				f.maxConnections = l.MaxConnections
			}
		}
	}
	for _, r := range records {
		res.Requests++
		c := classify(r, d.w.led.get(r.id), resets)
		if c == CauseNone {
			continue
		}
		res.Failed++
		if !c.Avoidable() {
			res.Unavoidable++
		}
		late := !r.start.Before(settleAt)
		if late {
			res.Settled++
		}
		if f := findings[r.pool]; f != nil {
			f.causes[c]++
			f.status[r.status]++
			if late && c.Avoidable() {
				f.settled++
			}
		}
	}
	names := make([]string, 0, len(findings))
	for n := range findings {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		res.Advice = append(res.Advice, advise(*findings[n])...)
	}
	res.Advice = append(res.Advice, d.notes...)
	res.Verdict = "pass"
	for _, a := range res.Advice {
		if a.Warning {
			res.Verdict = "warn"
		}
	}
	for _, a := range res.Advice {
		if !a.Warning {
			res.Verdict = "FAIL"
		}
	}
	if res.Failed > res.Unavoidable && res.Verdict != "FAIL" {
		// Every avoidable failure gets advice; this is a safety net.
		res.Verdict = "FAIL"
	}
	return res
}

func poolsBehind(l config.Listener) []string {
	out := []string{l.Pool}
	for _, r := range l.Routes {
		if r.Pool != "" {
			out = append(out, r.Pool)
		}
	}
	return out
}

func hasDNSPool(cfg *config.Config) bool {
	for _, p := range cfg.Pools {
		if p.Discovery != nil {
			return true
		}
	}
	return false
}

// wait returns after d or when ctx ends.
func wait(ctx context.Context, d time.Duration) { waitOr(ctx, d, nil) }

// waitOr returns after d, when done is closed, or when ctx ends.
func waitOr(ctx context.Context, d time.Duration, done <-chan struct{}) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-done:
	case <-ctx.Done():
	}
}

// descriptorsPerClient is what one conn-explosion client costs the
// process: its own socket, holdfast's side of it, and a share of the
// upstream connections; spareDescriptors covers everything else.
const (
	descriptorsPerClient = 3
	spareDescriptors     = 512
)

// explosionClients raises RLIMIT_NOFILE for want clients and returns how
// many the limit allows, with a warning when that is fewer.
func explosionClients(want int) (int, *Advice) {
	limit := raiseNoFile(uint64(want*descriptorsPerClient + spareDescriptors))
	if limit == 0 {
		return want, nil
	}
	can := (int(limit) - spareDescriptors) / descriptorsPerClient
	if can >= want {
		return want, nil
	}
	can = max(can, 1)
	return can, &Advice{Warning: true, Text: fmt.Sprintf(
		"open-files limit %d (hard): %d clients instead of %d; raise `ulimit -Hn` for the full drill", limit, can, want)}
}
