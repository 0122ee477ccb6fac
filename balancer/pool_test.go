package balancer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/discovery"
	"github.com/holdfast-lb/holdfast/health"
)

// pushSource is a discovery.Source the test feeds whole sets through.
type pushSource struct{ sets chan []discovery.Backend }

func newPushSource() *pushSource { return &pushSource{sets: make(chan []discovery.Backend)} }

func (s *pushSource) Run(ctx context.Context, update func([]discovery.Backend)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case bs := <-s.sets:
			update(bs)
		}
	}
}

func (s *pushSource) push(t *testing.T, bs ...discovery.Backend) {
	t.Helper()
	select {
	case s.sets <- bs:
	case <-time.After(5 * time.Second):
		t.Fatal("pool did not take the set")
	}
}

// switchChecker fails the addresses marked down. Safe for concurrent use.
type switchChecker struct {
	mu   sync.Mutex
	down map[string]bool
}

func (c *switchChecker) Check(_ context.Context, addr string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down[addr] {
		return errors.New("down")
	}
	return nil
}

func (c *switchChecker) set(down ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = map[string]bool{}
	for _, a := range down {
		c.down[a] = true
	}
}

var _ health.Checker = (*switchChecker)(nil)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// runPool starts p and stops it at the end of the test.
func runPool(t *testing.T, p *Pool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	go p.Run(ctx)
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.Done():
		case <-time.After(5 * time.Second):
			t.Error("pool did not stop")
		}
	})
}

// waitFor polls cond every 5ms for at most timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// serving is the sorted addresses the current picker can return.
func serving(p *Pool) string {
	var out []string
	for _, e := range endpointsOf(p.Picker()) {
		out = append(out, e.Addr)
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func endpoint(p *Pool, addr string) *Endpoint {
	for _, e := range endpointsOf(p.Picker()) {
		if e.Addr == addr {
			return e
		}
	}
	return nil
}

func be(addr string, weight, prio int) discovery.Backend {
	return discovery.Backend{Address: addr, Weight: weight, Priority: prio}
}

func TestPoolKeepsEndpointsAcrossSets(t *testing.T) {
	src := newPushSource()
	var made atomic.Int32
	p := NewPool(&Options{Name: "api", Balance: "least_conn", Source: src},
		Hooks{NewUpstream: func(*Endpoint) Upstream { made.Add(1); return nil }}, nil, quietLog())
	runPool(t, p)

	src.push(t, be("a:1", 1, 0), be("b:1", 1, 0))
	waitFor(t, 2*time.Second, "a and b served", func() bool { return serving(p) == "a:1,b:1" })
	a := endpoint(p, "a:1")
	a.Begin() // a request in flight on a
	defer a.End(0)

	src.push(t, be("a:1", 3, 0), be("b:1", 1, 0), be("c:1", 1, 0))
	waitFor(t, 2*time.Second, "a, b and c served", func() bool { return serving(p) == "a:1,b:1,c:1" })
	if got := endpoint(p, "a:1"); got != a {
		t.Fatalf("a got a new *Endpoint on a set update (%p, was %p): its state would be lost", got, a)
	}
	if a.Inflight() != 1 {
		t.Errorf("a's in-flight count is %d after the update, want 1", a.Inflight())
	}
	if n := made.Load(); n != 3 {
		t.Errorf("NewUpstream called %d times for 3 distinct backends, want 3", n)
	}
	// The new weight applies: least_conn divides in-flight by weight.
	st := p.Status()
	for _, b := range st.Backends {
		if b.Address == "a:1" && b.Weight != 3 {
			t.Errorf("a's weight in status is %d, want 3", b.Weight)
		}
	}
}

func TestPoolDrainsRemovedBackend(t *testing.T) {
	src := newPushSource()
	closed := make(chan *Endpoint, 4)
	p := NewPool(&Options{Name: "api", Balance: "round_robin", Source: src},
		Hooks{CloseUpstream: func(e *Endpoint) { closed <- e }}, nil, quietLog())
	runPool(t, p)

	src.push(t, be("a:1", 1, 0), be("b:1", 1, 0))
	waitFor(t, 2*time.Second, "a and b served", func() bool { return serving(p) == "a:1,b:1" })
	b := endpoint(p, "b:1")
	b.Begin() // b has a request in flight when it leaves

	src.push(t, be("a:1", 1, 0))
	waitFor(t, 2*time.Second, "only a served", func() bool { return serving(p) == "a:1" })
	if !b.Draining() {
		t.Error("removed backend does not report Draining")
	}
	for i := range 50 {
		if e := p.Picker().Pick(0, nil); e != endpointsOf(p.Picker())[0] || e.Addr != "a:1" {
			t.Fatalf("pick %d went to %s after b was removed", i, e.Addr)
		}
	}
	select {
	case e := <-closed:
		t.Fatalf("%s closed while a request was still in flight", e.Addr)
	default:
	}
	var inStatus bool
	for _, s := range p.Status().Backends {
		if s.Address == "b:1" {
			inStatus = true
			if s.Routable {
				t.Error("draining backend shown as routable")
			}
		}
	}
	if !inStatus {
		t.Error("draining backend missing from status while it still has a request in flight")
	}

	b.End(0)
	select {
	case e := <-closed:
		if e != b {
			t.Fatalf("closed %s, want b", e.Addr)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("drained backend not closed after its last request ended")
	}
	waitFor(t, 2*time.Second, "b gone from status", func() bool {
		for _, s := range p.Status().Backends {
			if s.Address == "b:1" {
				return false
			}
		}
		return true
	})
}

// A backend that comes back while still draining gets its endpoint back.
func TestPoolDrainingBackendReturns(t *testing.T) {
	src := newPushSource()
	p := NewPool(&Options{Name: "api", Balance: "round_robin", Source: src}, Hooks{}, nil, quietLog())
	runPool(t, p)
	src.push(t, be("a:1", 1, 0), be("b:1", 1, 0))
	waitFor(t, 2*time.Second, "a and b served", func() bool { return serving(p) == "a:1,b:1" })
	b := endpoint(p, "b:1")
	b.Begin()
	defer b.End(0)
	src.push(t, be("a:1", 1, 0))
	waitFor(t, 2*time.Second, "b removed", func() bool { return serving(p) == "a:1" })
	src.push(t, be("a:1", 1, 0), be("b:1", 1, 0))
	waitFor(t, 2*time.Second, "b back", func() bool { return serving(p) == "a:1,b:1" })
	if got := endpoint(p, "b:1"); got != b || got.Draining() {
		t.Errorf("b came back as %p (draining=%v), want the same endpoint %p, not draining", got, got.Draining(), b)
	}
}

// Health-driven scenarios: each step marks some backends down and says what
// the pool must serve.
func TestPoolHealthGroups(t *testing.T) {
	type step struct {
		down    []string
		serving string // "" = nothing (503)
		panic   bool
	}
	cases := []struct {
		name      string
		threshold float64
		set       []discovery.Backend
		steps     []step
	}{
		{
			name: "SRV priority groups", threshold: 0,
			set: []discovery.Backend{be("a:1", 1, 0), be("b:1", 1, 0), be("c:1", 1, 1), be("d:1", 1, 2)},
			steps: []step{
				{nil, "a:1,b:1", false},
				{[]string{"a:1"}, "b:1", false},
				{[]string{"a:1", "b:1"}, "c:1", false},            // next group takes over
				{[]string{"a:1", "b:1", "c:1"}, "d:1", false},     // and the next
				{[]string{"b:1", "c:1"}, "a:1", false},            // the lowest group serves again at once
				{[]string{"a:1", "b:1", "c:1", "d:1"}, "", false}, // nothing routable, no panic: 503
				{nil, "a:1,b:1", false},
			},
		},
		{
			name: "panic mode", threshold: 0.5,
			set: []discovery.Backend{be("a:1", 1, 0), be("b:1", 1, 0), be("c:1", 1, 0), be("d:1", 1, 0)},
			steps: []step{
				{nil, "a:1,b:1,c:1,d:1", false},
				{[]string{"a:1", "b:1"}, "c:1,d:1", false},                      // exactly 50%: no panic
				{[]string{"a:1", "b:1", "c:1"}, "a:1,b:1,c:1,d:1", true},        // below: every backend
				{[]string{"a:1", "b:1", "c:1", "d:1"}, "a:1,b:1,c:1,d:1", true}, // none routable: still every backend
				{[]string{"d:1"}, "a:1,b:1,c:1", false},
			},
		},
		{
			name: "panic is per serving group", threshold: 0.5,
			set: []discovery.Backend{be("a:1", 1, 0), be("b:1", 1, 0), be("c:1", 1, 0), be("x:1", 1, 1)},
			steps: []step{
				{[]string{"a:1", "b:1"}, "a:1,b:1,c:1", true}, // 1 of 3 in group 0: panic within it
				{[]string{"a:1", "b:1", "c:1"}, "x:1", false},
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := newPushSource()
			chk := &switchChecker{}
			p := NewPool(&Options{
				Name: "api", Balance: "round_robin", PanicThreshold: c.threshold, Source: src,
				Policy: health.Policy{Rise: 1, Fall: 1},
				Prober: &health.Prober{Checker: chk, Interval: 5 * time.Millisecond, Timeout: time.Second},
			}, Hooks{}, nil, quietLog())
			runPool(t, p)
			src.push(t, c.set...)
			for i, s := range c.steps {
				chk.set(s.down...)
				waitFor(t, 3*time.Second, "step "+string(rune('0'+i))+" serving "+s.serving, func() bool {
					return serving(p) == s.serving && p.Status().Panic == s.panic
				})
				if s.serving == "" {
					if e := p.Picker().Pick(0, nil); e != nil {
						t.Fatalf("step %d: picked %s with nothing routable", i, e.Addr)
					}
					if p.Ready() {
						t.Fatalf("step %d: Ready with nothing routable", i)
					}
				} else if !p.Ready() {
					t.Fatalf("step %d: not Ready while serving %s", i, s.serving)
				}
			}
		})
	}
}

// Live-traffic failures eject a backend, never more than max_ejected.
func TestPoolOutlierEjection(t *testing.T) {
	src := newPushSource()
	p := NewPool(&Options{
		Name: "api", Balance: "round_robin", MaxEjected: 0.5, Source: src,
		Policy: health.Policy{ConsecutiveFailures: 3, Ejection: time.Minute},
	}, Hooks{}, nil, quietLog())
	runPool(t, p)
	src.push(t, be("a:1", 1, 0), be("b:1", 1, 0))
	waitFor(t, 2*time.Second, "a and b served", func() bool { return serving(p) == "a:1,b:1" })
	a, b := endpoint(p, "a:1"), endpoint(p, "b:1")
	for range 3 {
		a.Failure()
	}
	waitFor(t, 2*time.Second, "a ejected", func() bool { return serving(p) == "b:1" })
	for range 10 {
		b.Failure()
	}
	// b's failures reach the pool goroutine; it must refuse to eject b (max 50% of 2).
	waitFor(t, 2*time.Second, "pool saw b's failures", func() bool {
		for _, s := range p.Status().Backends {
			if s.Address == "a:1" && s.State == "ejected" {
				return true
			}
		}
		return false
	})
	for range 20 {
		b.Failure()
		if serving(p) != "b:1" {
			t.Fatalf("serving %q: the last backend was ejected past max_ejected", serving(p))
		}
	}
}

// The pool's timeline records each change where it happens: an ejection,
// an operator's drain and its undo, a backend that joins a serving pool,
// and sampled traffic shows on the drained backend still.
func TestPoolTimeline(t *testing.T) {
	src := newPushSource()
	ovs := NewOverrides()
	p := NewPool(&Options{
		Name: "api", Balance: "round_robin", MaxEjected: 0.5, Source: src, Overrides: ovs,
		Policy: health.Policy{ConsecutiveFailures: 3, Ejection: time.Minute},
	}, Hooks{}, nil, quietLog())
	runPool(t, p)
	src.push(t, be("a:1", 1, 0), be("b:1", 1, 0))
	waitFor(t, 2*time.Second, "a and b served", func() bool { return serving(p) == "a:1,b:1" })
	a := endpoint(p, "a:1")
	for range 3 {
		a.Failure()
	}
	waitFor(t, 2*time.Second, "a ejected", func() bool { return serving(p) == "b:1" })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	b := endpoint(p, "b:1")
	b.Begin() // in flight while drained
	if _, err := p.Override(ctx, "b:1", func(o Override) Override { o.Drain = true; return o }); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Override(ctx, "b:1", func(Override) Override { return Override{} }); err != nil {
		t.Fatal(err)
	}
	src.push(t, be("a:1", 1, 0), be("b:1", 1, 0), be("c:1", 1, 0))
	waitFor(t, 2*time.Second, "c served", func() bool { return strings.Contains(serving(p), "c:1") })

	var got []string
	for _, e := range p.Status().Events {
		got = append(got, e.Backend+" "+e.Kind+" "+e.From+">"+e.To)
	}
	want := []string{
		"a:1 ejection healthy>ejected",
		"b:1 override none>drain", "b:1 override healthy>draining",
		"b:1 override drain>none", "b:1 override draining>healthy",
		"c:1 discovery >added",
	}
	if !slices.Equal(got, want) {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	b.Traffic.Status(Out2xx, time.Millisecond)
	now := time.Now()
	p.Sample(now)
	p.Sample(now.Add(time.Second))
	for _, s := range p.Status().Backends {
		if s.Address == "b:1" && (s.Traffic == nil || s.Traffic.Totals["2xx"] != 1 || s.Inflight != 1 || s.Traffic.Series.Inflight[0] != 1) {
			t.Errorf("b's status after sampling: %+v traffic %+v", s, s.Traffic)
		}
	}
	b.End(time.Millisecond)
}
