package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"
)

// Observer learns what a DNS source does, for metrics. Implementations must
// be safe for concurrent use (one Observer may serve several pools' sources,
// and SRV follow-ups run concurrently).
type Observer interface {
	// Lookup is called once per lookup with its result (a Result constant).
	Lookup(result string)
	// Applied is called when a set is published or an answer confirms the
	// current one unchanged: the number of backends served and when.
	Applied(backends int, at time.Time)
	// Stale is called when the source starts or stops serving a set DNS no
	// longer vouches for (lookups failing, or a destructive answer held).
	Stale(stale bool)
}

// NopObserver is an Observer that does nothing.
type NopObserver struct{}

// Lookup does nothing.
func (NopObserver) Lookup(string) {}

// Applied does nothing.
func (NopObserver) Applied(int, time.Time) {}

// Stale does nothing.
func (NopObserver) Stale(bool) {}

var _ Observer = NopObserver{}

// AnswerObserver may be implemented by an Observer to learn each lookup's
// detail for the status page: its result, how many records the answer
// held, and the error (nil for an answer).
type AnswerObserver interface {
	Answered(result string, records int, err error)
}

// DNSConfig configures a DNS source. Zero values take the defaults noted.
type DNSConfig struct {
	// Pool names the pool in logs.
	Pool string
	// Type is "srv" (SRV records, targets resolved to A/AAAA) or "a" (A and
	// AAAA records of Name, on Port).
	Type string
	Name string
	Port int // type "a" only

	// Resolver names the resolver in logs.
	Resolver string
	// Servers are host:port, asked in order; empty means SystemServers.
	Servers  []string
	Timeout  time.Duration // per query to one server; default 1s
	Attempts int           // per server; default 2

	// MinRefresh and MaxRefresh clamp the answer's TTL to the next lookup
	// (defaults 1s and 30s); failures back off exponentially from MinRefresh
	// up to MaxRefresh.
	MinRefresh, MaxRefresh time.Duration
	// StaleFor is how long the last good set serves through failures before
	// an error is logged; 0 is forever. The set is kept either way.
	StaleFor time.Duration
	// MaxShrink is the share (0..1) of backends one answer may remove and
	// still apply at once; 0 means every removal must be confirmed.
	MaxShrink float64
	// Confirm is how many identical destructive answers in a row apply one
	// (default 1).
	Confirm int
}

// DNS is a Source that looks a name up periodically and publishes the set,
// holding the last good set through failures (see LastGood).
//
// Fields Now, After and Rand may be replaced before Run (tests inject a
// clock); Run must not be called concurrently with itself. Lookup is safe to
// call concurrently.
type DNS struct {
	// Now returns the current time (default time.Now).
	Now func() time.Time
	// After waits like time.After; Run uses it between lookups.
	After func(time.Duration) <-chan time.Time
	// Rand returns a float in [0,1) for jitter (default math/rand/v2).
	Rand func() float64
	// Seed, when not empty, is a last good set saved by an earlier process
	// (the state file): Run publishes it at once, marked stale, before its
	// first lookup, and LastGood guards it like any set DNS gave, so a
	// restart during a DNS outage still serves and the first answer goes
	// through the shrink guard. Set before Run.
	Seed []Backend

	cfg      DNSConfig
	obs      Observer
	log      *slog.Logger
	resolver *Resolver
	initErr  error

	// seenV6 is set once an answer carried an IPv6 address; until then a
	// failing AAAA query does not fail a lookup whose A query succeeded.
	seenV6   atomic.Bool
	warnedV6 atomic.Bool
}

var _ Source = (*DNS)(nil)

// NewDNS returns a DNS source. obs and log may be nil. When cfg.Servers is
// empty the servers of /etc/resolv.conf are used; if that fails every lookup
// fails with that error.
func NewDNS(cfg DNSConfig, obs Observer, log *slog.Logger) *DNS {
	if obs == nil {
		obs = NopObserver{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Attempts < 1 {
		cfg.Attempts = 2
	}
	if cfg.MinRefresh <= 0 {
		cfg.MinRefresh = time.Second
	}
	if cfg.MaxRefresh <= 0 {
		cfg.MaxRefresh = 30 * time.Second
	}
	cfg.MaxRefresh = max(cfg.MaxRefresh, cfg.MinRefresh)
	if cfg.Confirm < 1 {
		cfg.Confirm = 1
	}
	d := &DNS{
		Now:   time.Now,
		After: time.After,
		Rand:  rand.Float64,
		cfg:   cfg,
		obs:   obs,
		log:   log,
	}
	servers := cfg.Servers
	if len(servers) == 0 {
		servers, d.initErr = SystemServers()
	}
	d.resolver = NewResolver(cfg.Resolver, servers, cfg.Timeout, cfg.Attempts, log.With("pool", cfg.Pool))
	if so, ok := obs.(ServerObserver); ok {
		d.resolver.Observer = so
	}
	return d
}

// Observer returns the Observer the source reports to (NopObserver when none
// was given), so whoever runs the source can show what it reports.
func (d *DNS) Observer() Observer { return d.obs }

// Lookup resolves the configured name once and returns the set (sorted with
// SortBackends), the TTL the answer may be cached for, and an error. NXDOMAIN
// and an answer with no usable record are errors with ResultOf
// ResultNXDomain and ResultEmpty. It does not touch the state Run keeps.
func (d *DNS) Lookup(ctx context.Context) ([]Backend, time.Duration, error) {
	if d.initErr != nil {
		return nil, 0, &LookupError{Name: d.cfg.Name, Type: d.cfg.Type, Result: ResultError, Err: d.initErr}
	}
	var (
		set []Backend
		ttl uint32
		err error
	)
	switch d.cfg.Type {
	case "srv":
		set, ttl, err = d.lookupSRV(ctx, d.cfg.Name)
	case "a":
		set, ttl, err = d.lookupA(ctx, d.cfg.Name, d.cfg.Port)
	default:
		err = fmt.Errorf("unknown discovery type %q (want srv or a)", d.cfg.Type)
	}
	return set, time.Duration(ttl) * time.Second, err
}

// Run looks the name up until ctx ends, calling update with every set that
// LastGood applies. It never calls update with an empty set, and publishes
// nothing before the first successful answer. It returns nil when ctx ends.
func (d *DNS) Run(ctx context.Context, update func([]Backend)) error {
	st := runState{
		d:    d,
		lg:   LastGood{MaxShrink: d.cfg.MaxShrink, Confirm: d.cfg.Confirm},
		stat: "ok",
	}
	d.obs.Stale(false)
	if len(d.Seed) > 0 {
		seed := dedupe(slices.Clone(d.Seed))
		st.lg.set = seed
		st.setStale(true, d.Now())
		update(slices.Clone(seed))
		d.log.Info("serving the saved backend set until DNS answers", "pool", d.cfg.Pool, "name", d.cfg.Name, "backends", len(seed))
	}
	for {
		wait := st.step(ctx, update)
		if ctx.Err() != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.After(wait):
		}
	}
}

// runState is what Run keeps between lookups.
type runState struct {
	d        *DNS
	lg       LastGood
	failures int       // consecutive failed lookups, for backoff
	stale    bool      // the published set is not what DNS says now
	since    time.Time // when stale started
	expired  bool      // stale_for ran out (logged once)
	stat     string    // last logged state: "ok", "failing", "held", "empty"
	noneYet  bool      // "no set yet" logged
}

// step does one lookup and returns how long to wait before the next.
func (s *runState) step(ctx context.Context, update func([]Backend)) time.Duration {
	d := s.d
	set, ttl, err := d.Lookup(ctx)
	if ctx.Err() != nil {
		return 0
	}
	result := ResultOf(err)
	d.obs.Lookup(result)
	if ao, ok := d.obs.(AnswerObserver); ok {
		ao.Answered(result, len(set), err)
	}
	now := d.Now()
	log := d.log.With("pool", d.cfg.Pool, "name", d.cfg.Name)

	if result != ResultOK && !destructive(result) {
		s.failures++
		if s.lg.Set() == nil {
			if !s.noneYet {
				s.noneYet = true
				log.Warn("DNS lookup failed; no backend set yet", "result", result, "err", err)
			}
		} else {
			if s.stat != "failing" {
				log.Warn("DNS lookup failed; serving the last good set", "result", result, "err", err, "backends", len(s.lg.Set()))
				s.stat = "failing"
			}
			s.setStale(true, now)
		}
		s.checkExpired(now, log)
		return s.backoff()
	}

	s.failures = 0
	if s.stat == "failing" {
		log.Info("DNS lookup succeeded again", "result", result, "stale_seconds", now.Sub(s.since).Seconds())
		s.stat = "ok"
	}
	before := len(s.lg.Set())
	v := s.lg.Offer(set)
	switch v {
	case Applied:
		pub := slices.Clone(s.lg.Set())
		update(pub)
		d.obs.Applied(len(pub), now)
		switch {
		case before == 0:
			log.Info("DNS backend set ready", "backends", len(pub))
		case s.stat == "held":
			log.Warn("DNS answer confirmed; applying the smaller set", "backends", len(pub), "before", before, "confirm", d.cfg.Confirm)
		default:
			log.Info("DNS backend set changed", "backends", len(pub), "before", before)
		}
		s.noneYet = false
		s.stat = "ok"
		s.setStale(false, now)
	case Unchanged:
		d.obs.Applied(len(s.lg.Set()), now)
		if s.stat != "ok" {
			log.Info("DNS answer matches the served set again", "backends", len(s.lg.Set()))
			s.stat = "ok"
		}
		s.setStale(false, now)
	case Held:
		_, n := s.lg.Pending()
		if s.stat != "held" {
			log.Warn("DNS answer would remove too many backends; waiting for confirmation",
				"result", result, "backends", len(s.lg.Set()), "answer", len(set), "confirm", d.cfg.Confirm, "seen", n)
			s.stat = "held"
		}
		s.setStale(true, now)
	case RefusedEmpty:
		if s.lg.Set() == nil {
			if !s.noneYet {
				s.noneYet = true
				log.Warn("DNS answer has no backends; no backend set yet", "result", result)
			}
			break
		}
		if s.stat != "empty" {
			log.Error("DNS confirms no backends; keeping the last good set (a pool never empties because of DNS)",
				"result", result, "backends", len(s.lg.Set()))
			s.stat = "empty"
		}
		s.setStale(true, now)
	}
	s.checkExpired(now, log)
	if _, n := s.lg.Pending(); n > 0 {
		// A destructive answer awaits confirmation: ask again soon.
		return s.jitter(d.cfg.MinRefresh)
	}
	return s.refresh(ttl)
}

func (s *runState) setStale(stale bool, now time.Time) {
	if stale == s.stale {
		return
	}
	s.stale = stale
	if stale {
		s.since = now
	} else {
		s.expired = false
	}
	s.d.obs.Stale(stale)
}

func (s *runState) checkExpired(now time.Time, log *slog.Logger) {
	sf := s.d.cfg.StaleFor
	if !s.stale || s.expired || sf <= 0 || now.Sub(s.since) < sf {
		return
	}
	s.expired = true
	log.Error("DNS has not confirmed the backend set for longer than stale_for; still serving it",
		"stale_for", sf.String(), "backends", len(s.lg.Set()))
}

// refresh is the TTL clamped to [MinRefresh, MaxRefresh], with jitter.
func (s *runState) refresh(ttl time.Duration) time.Duration {
	return s.jitter(min(max(ttl, s.d.cfg.MinRefresh), s.d.cfg.MaxRefresh))
}

// backoff doubles from MinRefresh per consecutive failure, up to MaxRefresh,
// with jitter.
func (s *runState) backoff() time.Duration {
	d := s.d.cfg.MinRefresh
	for i := 1; i < s.failures && d < s.d.cfg.MaxRefresh; i++ {
		d *= 2
	}
	return s.jitter(min(d, s.d.cfg.MaxRefresh))
}

// jitter spreads d by ±10% so many balancers do not ask in lockstep.
func (s *runState) jitter(d time.Duration) time.Duration {
	f := 0.9 + 0.2*s.d.Rand()
	return time.Duration(float64(d) * f)
}
