package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdConfig configures an etcd source. Zero values take the defaults noted.
type EtcdConfig struct {
	// Pool names the pool in logs.
	Pool string
	// Prefix is the key prefix watched; each key under it is one backend.
	Prefix string
	// Endpoints are the cluster's client URLs (http://host:port).
	Endpoints []string
	// Timeout bounds one request to etcd (default 1s).
	Timeout time.Duration
	// MinRefresh is how often a healthy connection is confirmed and how
	// soon a held destructive change is offered again (default 1s);
	// failures back off from it, doubling, up to MaxRefresh (default 5s,
	// at most 5s: reconnecting to etcd is cheap and a long backoff only
	// delays the recovery).
	MinRefresh, MaxRefresh time.Duration
	// StaleFor, MaxShrink and Confirm are as for DNSConfig.
	StaleFor  time.Duration
	MaxShrink float64
	Confirm   int
}

// maxEtcdBackoff caps the wait between reconnection attempts.
const maxEtcdBackoff = 5 * time.Second

// Etcd is a Source that lists a key prefix in etcd, then watches it, and
// publishes the whole set after every change. Each key's value is
// {"address": "host:port", "weight": N} or just host:port; a value that is
// neither is logged (with its key) and left out. Deletions go through
// LastGood's shrink guard exactly as DNS answers do. While etcd cannot be
// reached (connection lost, watch cancelled, history compacted) the last
// good set keeps serving, marked stale; the source reconnects with backoff
// and lists the prefix again.
//
// Fields After, Rand and Seed may be set before Run; Run must not be called
// concurrently with itself. Lookup is safe to call concurrently.
type Etcd struct {
	// After waits like time.After (between retries, for confirmations).
	After func(time.Duration) <-chan time.Time
	// Rand returns a float in [0,1) for jitter.
	Rand func() float64
	// Seed is a saved last good set, published at once (stale) before the
	// first list, as DNS.Seed.
	Seed []Backend

	cfg EtcdConfig
	obs Observer
	log *slog.Logger
}

var _ Source = (*Etcd)(nil)

// NewEtcd returns an etcd source; obs and log may be nil.
func NewEtcd(cfg EtcdConfig, obs Observer, log *slog.Logger) *Etcd {
	if obs == nil {
		obs = NopObserver{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.MinRefresh <= 0 {
		cfg.MinRefresh = time.Second
	}
	if cfg.MaxRefresh <= 0 || cfg.MaxRefresh > maxEtcdBackoff {
		cfg.MaxRefresh = maxEtcdBackoff
	}
	cfg.MaxRefresh = max(cfg.MaxRefresh, cfg.MinRefresh)
	if cfg.Confirm < 1 {
		cfg.Confirm = 1
	}
	return &Etcd{After: time.After, Rand: rand.Float64, cfg: cfg, obs: obs,
		log: log.With("pool", cfg.Pool, "prefix", cfg.Prefix)}
}

// Observer returns the Observer the source reports to.
func (e *Etcd) Observer() Observer { return e.obs }

func (e *Etcd) client() (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            e.cfg.Endpoints,
		DialTimeout:          e.cfg.Timeout,
		DialKeepAliveTime:    e.cfg.MinRefresh,
		DialKeepAliveTimeout: e.cfg.Timeout,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", e.cfg.Endpoints, err)
	}
	return cli, nil
}

// Lookup lists the prefix once and returns the set (sorted) with the
// values it had to skip. It does not touch the state Run keeps; `holdfast
// check --resolve` uses it.
func (e *Etcd) Lookup(ctx context.Context) ([]Backend, []string, error) {
	cli, err := e.client()
	if err != nil {
		return nil, nil, err
	}
	defer cli.Close()
	view, _, err := e.list(ctx, cli)
	if err != nil {
		return nil, nil, err
	}
	var bad []string
	for k, v := range view.bad {
		bad = append(bad, fmt.Sprintf("%s: %v", k, v))
	}
	sort.Strings(bad)
	return view.set(), bad, nil
}

// etcdView is what the prefix holds now: a backend per key, and the keys
// whose values could not be used.
type etcdView struct {
	good map[string]Backend
	bad  map[string]error
}

func (v *etcdView) put(key string, value []byte) {
	b, err := ParseEtcdValue(value)
	if err != nil {
		delete(v.good, key)
		v.bad[key] = err
		return
	}
	delete(v.bad, key)
	v.good[key] = b
}

func (v *etcdView) del(key string) {
	delete(v.good, key)
	delete(v.bad, key)
}

func (v *etcdView) set() []Backend {
	bs := make([]Backend, 0, len(v.good))
	for _, b := range v.good {
		bs = append(bs, b)
	}
	return dedupe(bs)
}

// ParseEtcdValue reads one key's value: {"address": "host:port",
// "weight": N} (weight 1..1000, default 1) or a bare host:port, the host an
// IP literal.
func ParseEtcdValue(value []byte) (Backend, error) {
	s := strings.TrimSpace(string(value))
	b := Backend{Weight: 1}
	if strings.HasPrefix(s, "{") {
		var v struct {
			Address string `json:"address"`
			Weight  *int   `json:"weight"`
		}
		dec := json.NewDecoder(strings.NewReader(s))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v); err != nil {
			return b, fmt.Errorf("bad JSON value: %w", err)
		}
		if v.Weight != nil {
			if *v.Weight < 1 || *v.Weight > 1000 {
				return b, fmt.Errorf("weight %d out of range (want 1..1000)", *v.Weight)
			}
			b.Weight = *v.Weight
		}
		s = v.Address
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return b, fmt.Errorf("bad address %q (want host:port or {\"address\": \"host:port\", \"weight\": N})", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return b, fmt.Errorf("bad port in %q (want 1..65535)", s)
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return b, fmt.Errorf("bad address %q (want an IP literal)", s)
	}
	b.Address = net.JoinHostPort(ip.String(), port)
	return b, nil
}

// list reads the whole prefix and returns it with the revision it was read at.
func (e *Etcd) list(ctx context.Context, cli *clientv3.Client) (*etcdView, int64, error) {
	cctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	resp, err := cli.Get(cctx, e.cfg.Prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("etcd list %q: %w", e.cfg.Prefix, err)
	}
	v := &etcdView{good: map[string]Backend{}, bad: map[string]error{}}
	for _, kv := range resp.Kvs {
		v.put(string(kv.Key), kv.Value)
	}
	return v, resp.Header.Revision, nil
}

// etcdResult maps an etcd error to a lookups metric result.
func etcdResult(err error) string {
	switch {
	case err == nil:
		return ResultOK
	case errors.Is(err, context.DeadlineExceeded):
		return ResultTimeout
	default:
		return ResultError
	}
}

// Run lists and watches the prefix until ctx ends, calling update with every
// set LastGood applies. It returns nil when ctx ends.
func (e *Etcd) Run(ctx context.Context, update func([]Backend)) error {
	r := &etcdRun{e: e, update: update, lg: LastGood{MaxShrink: e.cfg.MaxShrink, Confirm: e.cfg.Confirm},
		logged: map[string]string{}}
	e.obs.Stale(false)
	if len(e.Seed) > 0 {
		seed := dedupe(slices.Clone(e.Seed))
		r.lg.set = seed
		r.setStale(true)
		update(slices.Clone(seed))
		e.log.Info("serving the saved backend set until etcd answers", "backends", len(seed))
	}
	var cli *clientv3.Client
	defer func() {
		if cli != nil {
			_ = cli.Close()
		}
	}()
	for ctx.Err() == nil {
		if cli == nil {
			c, err := e.client()
			if err != nil {
				r.failed(err)
			} else {
				cli = c
			}
		}
		if cli != nil {
			r.session(ctx, cli)
		}
		if ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-e.After(r.backoff()):
		}
	}
	return nil
}

// etcdRun is what Run keeps across sessions.
type etcdRun struct {
	e        *Etcd
	update   func([]Backend)
	lg       LastGood
	view     *etcdView
	failures int
	stale    bool
	since    time.Time
	expired  bool
	failing  bool
	noneYet  bool              // "no backends yet" logged
	logged   map[string]string // bad key -> the value's error, logged once
}

// session lists the prefix, then follows the watch until etcd fails or ctx
// ends.
func (r *etcdRun) session(ctx context.Context, cli *clientv3.Client) {
	e := r.e
	view, rev, err := e.list(ctx, cli)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		r.failed(err)
		return
	}
	if len(view.good) == 0 {
		e.obs.Lookup(ResultEmpty)
	} else {
		e.obs.Lookup(ResultOK)
	}
	if r.failing {
		e.log.Info("etcd reachable again; listed the prefix", "stale_seconds", time.Since(r.since).Seconds())
		r.failing = false
	}
	r.failures = 0
	r.view = view
	r.offer()

	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := cli.Watch(wctx, e.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	// The watch alone cannot tell a lost connection from a quiet prefix
	// (the client re-dials behind it), so a cheap read confirms etcd each
	// MinRefresh; it also re-offers a held destructive change.
	tick := e.After(r.jitter(e.cfg.MinRefresh))
	for {
		select {
		case <-ctx.Done():
			return
		case resp, ok := <-wch:
			if !ok {
				r.failed(errors.New("etcd watch closed"))
				return
			}
			if err := resp.Err(); err != nil || resp.Canceled {
				if err == nil {
					err = errors.New("etcd watch cancelled")
				}
				if resp.CompactRevision != 0 {
					err = fmt.Errorf("etcd history compacted past revision %d: %w", resp.CompactRevision, err)
				}
				r.failed(err)
				return
			}
			r.apply(resp.Events)
			// Take what else is already queued, so a bulk delete is judged
			// as one change.
		drain:
			for {
				select {
				case more, ok := <-wch:
					if !ok || more.Err() != nil || more.Canceled {
						r.offer()
						r.failed(errors.New("etcd watch cancelled"))
						return
					}
					r.apply(more.Events)
				default:
					break drain
				}
			}
			r.offer()
		case <-tick:
			cctx, ccancel := context.WithTimeout(ctx, e.cfg.Timeout)
			_, err := cli.Get(cctx, e.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
			ccancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				r.failed(fmt.Errorf("etcd unreachable: %w", err))
				return
			}
			e.obs.Lookup(ResultOK)
			r.offer()
			tick = e.After(r.jitter(e.cfg.MinRefresh))
		}
	}
}

func (r *etcdRun) apply(evs []*clientv3.Event) {
	for _, ev := range evs {
		switch ev.Type {
		case mvccpb.PUT:
			r.view.put(string(ev.Kv.Key), ev.Kv.Value)
		case mvccpb.DELETE:
			r.view.del(string(ev.Kv.Key))
		}
	}
}

// offer hands the current view to LastGood and publishes what it applies.
func (r *etcdRun) offer() {
	e := r.e
	for k, err := range r.view.bad {
		if r.logged[k] != err.Error() {
			r.logged[k] = err.Error()
			e.log.Warn("etcd value ignored", "key", k, "err", err)
		}
	}
	for k := range r.logged {
		if _, ok := r.view.bad[k]; !ok {
			delete(r.logged, k)
		}
	}
	set := r.view.set()
	before := len(r.lg.Set())
	now := time.Now()
	switch r.lg.Offer(set) {
	case Applied:
		pub := slices.Clone(r.lg.Set())
		r.update(pub)
		e.obs.Applied(len(pub), now)
		e.log.Info("etcd backend set changed", "backends", len(pub), "before", before)
		r.setStale(false)
	case Unchanged:
		e.obs.Applied(len(set), now)
		r.setStale(false)
	case Held:
		_, n := r.lg.Pending()
		if n == 1 {
			e.log.Warn("etcd change would remove too many backends; waiting for confirmation",
				"backends", before, "answer", len(set), "confirm", e.cfg.Confirm)
		}
		r.setStale(true)
	case RefusedEmpty:
		if r.lg.Set() == nil {
			if !r.noneYet {
				r.noneYet = true
				e.log.Warn("etcd prefix has no backends; no backend set yet")
			}
			return
		}
		if _, n := r.lg.Pending(); n == e.cfg.Confirm {
			e.log.Error("etcd prefix confirms no backends; keeping the last good set", "backends", before)
		}
		r.setStale(true)
	}
	r.checkExpired()
}

// failed records a failed request or a broken watch.
func (r *etcdRun) failed(err error) {
	e := r.e
	e.obs.Lookup(etcdResult(err))
	r.failures++
	if !r.failing {
		r.failing = true
		if r.lg.Set() == nil {
			e.log.Warn("etcd unreachable; no backend set yet", "err", err)
		} else {
			e.log.Warn("etcd unreachable; serving the last good set", "err", err, "backends", len(r.lg.Set()))
		}
	}
	if r.lg.Set() != nil {
		r.setStale(true)
	}
	r.checkExpired()
}

// checkExpired logs once when the set has been stale for stale_for.
func (r *etcdRun) checkExpired() {
	sf := r.e.cfg.StaleFor
	if !r.stale || r.expired || sf <= 0 || time.Since(r.since) < sf {
		return
	}
	r.expired = true
	r.e.log.Error("etcd has not confirmed the backend set for longer than stale_for; still serving it",
		"stale_for", sf.String(), "backends", len(r.lg.Set()))
}

func (r *etcdRun) setStale(stale bool) {
	if stale == r.stale {
		return
	}
	r.stale = stale
	if stale {
		r.since = time.Now()
	} else {
		r.expired = false
	}
	r.e.obs.Stale(stale)
}

// backoff doubles from MinRefresh per consecutive failure up to MaxRefresh.
func (r *etcdRun) backoff() time.Duration {
	d := r.e.cfg.MinRefresh
	for i := 1; i < r.failures && d < r.e.cfg.MaxRefresh; i++ {
		d *= 2
	}
	return r.jitter(min(d, r.e.cfg.MaxRefresh))
}

func (r *etcdRun) jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*r.e.Rand()))
}
