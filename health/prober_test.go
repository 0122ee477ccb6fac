package health

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// gateChecker blocks every probe until the test releases it (or the probe's
// context ends) and records how many probes ran at once.
type gateChecker struct {
	entered  chan context.Context
	release  chan error
	inflight atomic.Int32
	peak     atomic.Int32
}

var _ Checker = (*gateChecker)(nil)

func newGate() *gateChecker {
	return &gateChecker{entered: make(chan context.Context), release: make(chan error)}
}

func (g *gateChecker) Check(ctx context.Context, addr string) error {
	n := g.inflight.Add(1)
	defer g.inflight.Add(-1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			break
		}
	}
	select {
	case g.entered <- ctx:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-g.release:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startProber runs p.Run in a goroutine; results arrive on the returned
// channel and done closes when Run returns.
func startProber(t *testing.T, p *Prober) (cancel func(), results <-chan error, done <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 16)
	d := make(chan struct{})
	go func() {
		defer close(d)
		p.Run(ctx, "backend:80", func(err error) { res <- err })
	}()
	t.Cleanup(func() {
		cancel()
		waitDone(t, d)
	})
	return cancel, res, d
}

// waitDone fails the test if Run does not return; the bound only catches a
// hang, it is not what the test waits for.
func waitDone(t *testing.T, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestProberOneProbeInFlight(t *testing.T) {
	g := newGate()
	p := &Prober{Checker: g, Interval: time.Millisecond, Timeout: time.Hour, Jitter: 0.1, Rand: func() float64 { return 0.5 }}
	_, results, _ := startProber(t, p)
	outcomes := []error{nil, errors.New("boom"), nil, nil, errors.New("bang")}
	for i, want := range outcomes {
		<-g.entered
		if n := g.inflight.Load(); n != 1 {
			t.Fatalf("probe %d: %d probes in flight", i, n)
		}
		g.release <- want
		if got := <-results; got != want {
			t.Fatalf("probe %d: result %v, want %v", i, got, want)
		}
	}
	if peak := g.peak.Load(); peak != 1 {
		t.Errorf("peak probes in flight %d, want 1", peak)
	}
}

func TestProberStops(t *testing.T) {
	tests := []struct {
		name string
		// settle brings the prober to the moment to cancel.
		settle func(t *testing.T, g *gateChecker, results <-chan error)
	}{
		{
			name:   "while a probe is in flight, without reporting it",
			settle: func(t *testing.T, g *gateChecker, _ <-chan error) { <-g.entered },
		},
		{
			name: "while waiting for the next interval",
			settle: func(t *testing.T, g *gateChecker, results <-chan error) {
				<-g.entered
				g.release <- nil
				<-results
			},
		},
		{
			name:   "before the first probe",
			settle: func(*testing.T, *gateChecker, <-chan error) {},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGate()
			// Interval an hour and Rand 0: the first probe starts at once,
			// the second never does within the test.
			rnd := func() float64 { return 0 }
			if tc.name == "before the first probe" {
				rnd = func() float64 { return 0.999 } // first probe ~1s away
			}
			p := &Prober{Checker: g, Interval: time.Hour, Timeout: time.Hour, Rand: rnd}
			cancel, results, done := startProber(t, p)
			tc.settle(t, g, results)
			cancel()
			waitDone(t, done)
			select {
			case err := <-results:
				t.Errorf("result %v reported after cancel", err)
			default:
			}
		})
	}
}

func TestProberTimeoutBoundsProbe(t *testing.T) {
	g := newGate()
	p := &Prober{Checker: g, Interval: time.Hour, Timeout: 20 * time.Millisecond, Rand: func() float64 { return 0 }}
	_, results, _ := startProber(t, p)
	ctx := <-g.entered
	if _, ok := ctx.Deadline(); !ok {
		t.Error("probe context has no deadline")
	}
	// Not released: the probe's own Timeout must end it.
	if err := <-results; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("result %v, want a deadline error", err)
	}
}

func TestProberSchedule(t *testing.T) {
	tests := []struct {
		name     string
		interval time.Duration
		jitter   float64
		r        float64
		wantNext time.Duration
		first    time.Duration
	}{
		{name: "no jitter", interval: 2 * time.Second, jitter: 0, r: 0.9, wantNext: 2 * time.Second, first: 900 * time.Millisecond},
		{name: "jitter low end", interval: 2 * time.Second, jitter: 0.1, r: 0, wantNext: 1800 * time.Millisecond, first: 0},
		{name: "jitter middle", interval: 2 * time.Second, jitter: 0.1, r: 0.5, wantNext: 2 * time.Second, first: 500 * time.Millisecond},
		{name: "jitter high end", interval: 2 * time.Second, jitter: 0.1, r: 0.75, wantNext: 2100 * time.Millisecond, first: 750 * time.Millisecond},
		{name: "short interval bounds first offset", interval: 100 * time.Millisecond, jitter: 0, r: 0.5, wantNext: 100 * time.Millisecond, first: 50 * time.Millisecond},
		{name: "jitter above 1 is clamped", interval: time.Second, jitter: 5, r: 0, wantNext: 0, first: 0},
		{name: "negative jitter is none", interval: time.Second, jitter: -1, r: 0, wantNext: time.Second, first: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := jittered(tc.interval, tc.jitter, tc.r); got != tc.wantNext {
				t.Errorf("jittered = %v, want %v", got, tc.wantNext)
			}
			if got := firstDelay(tc.interval, tc.r); got != tc.first {
				t.Errorf("firstDelay = %v, want %v", got, tc.first)
			}
		})
	}
}
