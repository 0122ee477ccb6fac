package discovery

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/discovery/dnstest"
)

// waitLimit bounds every wait on a channel in these tests; nothing here
// should take more than a fraction of it.
const waitLimit = 10 * time.Second

// logBuf is a goroutine-safe log sink that tests can count lines in.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// count returns how many log lines contain every one of subs.
func (l *logBuf) count(subs ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(l.b.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLogger(t testing.TB) (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	return slog.New(slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// recObserver records what a source reports.
type recObserver struct {
	mu       sync.Mutex
	results  map[string]int
	servers  map[string]int // server+" "+result
	applied  int
	backends int
	stale    bool
	staleOn  int // transitions to stale
}

func newRecObserver() *recObserver {
	return &recObserver{results: map[string]int{}, servers: map[string]int{}}
}

func (o *recObserver) Lookup(r string) { o.mu.Lock(); o.results[r]++; o.mu.Unlock() }
func (o *recObserver) Applied(n int, _ time.Time) {
	o.mu.Lock()
	o.applied++
	o.backends = n
	o.mu.Unlock()
}
func (o *recObserver) Stale(s bool) {
	o.mu.Lock()
	if s && !o.stale {
		o.staleOn++
	}
	o.stale = s
	o.mu.Unlock()
}
func (o *recObserver) ServerResult(server, result string) {
	o.mu.Lock()
	o.servers[server+" "+result]++
	o.mu.Unlock()
}
func (o *recObserver) isStale() bool       { o.mu.Lock(); defer o.mu.Unlock(); return o.stale }
func (o *recObserver) result(r string) int { o.mu.Lock(); defer o.mu.Unlock(); return o.results[r] }

var (
	_ Observer       = (*recObserver)(nil)
	_ ServerObserver = (*recObserver)(nil)
)

// runner drives DNS.Run one lookup at a time through an injected clock:
// After hands the requested wait to the test and blocks Run until the test
// fires it, so every lookup happens exactly when the test says.
type runner struct {
	t      testing.TB
	d      *DNS
	obs    *recObserver
	logs   *logBuf
	waits  chan time.Duration
	fire   chan time.Time
	mu     sync.Mutex
	now    time.Time
	sets   [][]Backend
	done   chan error
	cancel context.CancelFunc
	begun  bool
}

func newRunner(t testing.TB, cfg DNSConfig, opts ...func(*DNS)) *runner {
	t.Helper()
	log, lb := newLogger(t)
	r := &runner{
		t:     t,
		obs:   newRecObserver(),
		logs:  lb,
		waits: make(chan time.Duration),
		fire:  make(chan time.Time),
		now:   time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		done:  make(chan error, 1),
	}
	if cfg.Pool == "" {
		cfg.Pool = "api"
	}
	r.d = NewDNS(cfg, r.obs, log)
	r.d.Now = func() time.Time { r.mu.Lock(); defer r.mu.Unlock(); return r.now }
	r.d.Rand = func() float64 { return 0.5 } // no jitter
	for _, o := range opts {
		o(r.d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.d.After = func(d time.Duration) <-chan time.Time {
		select {
		case r.waits <- d:
		case <-ctx.Done():
		}
		return r.fire
	}
	r.cancel = cancel
	go func() {
		r.done <- r.d.Run(ctx, func(bs []Backend) {
			if len(bs) == 0 {
				t.Errorf("update called with an empty set")
			}
			r.mu.Lock()
			r.sets = append(r.sets, bs)
			r.mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("Run did not return after cancel")
		}
	})
	return r
}

// lookup lets Run do its next lookup and returns the wait Run asked for
// after it.
func (r *runner) lookup() time.Duration {
	r.t.Helper()
	if r.begun {
		select {
		case r.fire <- time.Time{}:
		case <-time.After(waitLimit):
			r.t.Fatalf("Run is not waiting")
		}
	}
	r.begun = true
	select {
	case w := <-r.waits:
		r.mu.Lock()
		r.now = r.now.Add(w)
		r.mu.Unlock()
		return w
	case <-time.After(waitLimit):
		r.t.Fatalf("no lookup finished within %v", waitLimit)
		return 0
	}
}

// published returns every set update received so far.
func (r *runner) published() [][]Backend {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]Backend(nil), r.sets...)
}

// last returns the latest published set, nil if none.
func (r *runner) last() []Backend {
	p := r.published()
	if len(p) == 0 {
		return nil
	}
	return p[len(p)-1]
}

// srv4 loads four SRV backends (with A records) for name into s.
func srv4(s *dnstest.Server, name string) {
	s.Set(name, 33, /* SRV */
		name+" 30 IN SRV 10 5 8080 r1.svc.test.",
		name+" 30 IN SRV 10 5 8080 r2.svc.test.",
		name+" 30 IN SRV 10 5 8080 r3.svc.test.",
		name+" 30 IN SRV 10 5 8080 r4.svc.test.")
	for i, ip := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"} {
		host := []string{"r1", "r2", "r3", "r4"}[i] + ".svc.test."
		s.Set(host, 1 /* A */, host+" 30 IN A "+ip)
	}
}

func addrs(bs []Backend) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Address
	}
	return out
}
