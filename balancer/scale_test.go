package balancer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/discovery"
)

// algorithms are every balance a pool accepts.
var algorithms = []string{"round_robin", "random", "least_conn", "p2c", "p2c_ewma", "consistent_hash", "maglev"}

// BenchmarkPick is one Pick per op at 10, 1,000 and 10,000 backends for
// every algorithm, in parallel: the cost must not grow with the pool
// (ns/pick flat across sizes).
func BenchmarkPick(b *testing.B) {
	for _, algo := range algorithms {
		for _, n := range []int{10, 1000, 10000} {
			b.Run(fmt.Sprintf("%s/%d", algo, n), func(b *testing.B) {
				p := newPicker(algo, backends(n))
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					h := uint64(0)
					for pb.Next() {
						h += 0x9e3779b97f4a7c15
						if p.Pick(h, nil) == nil {
							b.Fatal("no endpoint")
						}
					}
				})
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/pick")
			})
		}
	}
}

// BenchmarkPickerBuild builds each algorithm's picker over 10,000
// backends: the work a rebuild does beyond the pool's bookkeeping.
func BenchmarkPickerBuild(b *testing.B) {
	ms := backends(10000)
	for _, algo := range algorithms {
		b.Run(algo, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = newPicker(algo, ms)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/build")
		})
	}
}

// staticSource pushes the sets sent on ch.
type staticSource struct{ ch chan []discovery.Backend }

func (s staticSource) Run(ctx context.Context, update func([]discovery.Backend)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case set := <-s.ch:
			update(set)
		}
	}
}

func setOf(n, shift int) []discovery.Backend {
	set := make([]discovery.Backend, n)
	for i := range set {
		j := i + shift
		set[i] = discovery.Backend{Address: fmt.Sprintf("10.%d.%d.%d:8080", j>>16&255, j>>8&255, j&255), Weight: 1}
	}
	return set
}

// waitPicker polls until the pool has published a picker after prev with
// routable members (bounded).
func waitPicker(tb testing.TB, p *Pool, prev Picker, routable int) {
	deadline := time.Now().Add(30 * time.Second)
	for p.Picker() == prev || p.Routable() != routable {
		if time.Now().After(deadline) {
			tb.Fatalf("no new picker with %d routable (have %d)", routable, p.Routable())
		}
		runtime.Gosched()
	}
}

// BenchmarkPoolRebuild10k is a whole rebuild of a 10,000-backend pool as a
// discovery update causes it: one backend replaced, the set reconciled
// against the long-lived endpoints, health states, the picker built and
// published (round_robin and maglev).
func BenchmarkPoolRebuild10k(b *testing.B) {
	for _, algo := range []string{"round_robin", "maglev", "least_conn"} {
		b.Run(algo, func(b *testing.B) {
			src := staticSource{ch: make(chan []discovery.Backend)}
			p := NewPool(&Options{Name: "big", Balance: algo, PanicThreshold: 0.5, Source: src, SourceKey: "static"},
				Hooks{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
			ctx, cancel := context.WithCancel(context.Background())
			go p.Run(ctx)
			b.Cleanup(func() { cancel(); <-p.Done() })
			const n = 10000
			prev := p.Picker()
			src.ch <- setOf(n, 0)
			waitPicker(b, p, prev, n)
			b.ResetTimer()
			i := 0
			for b.Loop() {
				i++
				prev := p.Picker()
				src.ch <- setOf(n, i%2) // one backend out, one in
				waitPicker(b, p, prev, n)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/rebuild")
		})
	}
}

// BenchmarkEndpointMemory is the heap one backend endpoint costs a pool
// (entry, Endpoint, health tracker, status), from runtime.MemStats around
// a pool taking 10,000 backends.
func BenchmarkEndpointMemory(b *testing.B) {
	const n = 10000
	set := setOf(n, 0)
	for b.Loop() {
		src := staticSource{ch: make(chan []discovery.Backend)}
		p := NewPool(&Options{Name: "mem", Balance: "round_robin", PanicThreshold: 0.5, Source: src, SourceKey: "static"},
			Hooks{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		ctx, cancel := context.WithCancel(context.Background())
		go p.Run(ctx)
		waitPicker(b, p, nil, 0)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		prev := p.Picker()
		src.ch <- set
		waitPicker(b, p, prev, n)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/endpoint")
		runtime.KeepAlive(p)
		cancel()
		<-p.Done()
	}
}

// The large-pool schedule gives each member exactly its weight's turns,
// interleaved: with equal weights every member once per n turns.
func TestEDFSchedule(t *testing.T) {
	cases := []struct {
		name    string
		weights func(i int) int
		n       int
	}{
		{"10,000 equal", func(int) int { return 1 }, 10000},
		{"1,000 of weights 1..5", func(i int) int { return i%5 + 1 }, 1000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ms := backends(c.n)
			ws := make([]int, c.n)
			total := 0
			for i := range ws {
				ws[i] = c.weights(i)
				total += ws[i]
			}
			if c.n*total <= exactScheduleWork {
				t.Fatalf("case too small to take the EDF path")
			}
			s := smoothSchedule(ms, ws)
			if len(s) != total {
				t.Fatalf("schedule of %d, want %d", len(s), total)
			}
			got := map[*Endpoint]int{}
			last := map[*Endpoint]int{}
			for i, e := range s {
				got[e]++
				if j, ok := last[e]; ok && ws[0] == 1 && c.weights(1) == 1 && i-j != c.n {
					t.Fatalf("equal weights: %s again after %d turns, want %d", e.Addr, i-j, c.n)
				}
				last[e] = i
			}
			for i, m := range ms {
				if got[m.ep] != ws[i] {
					t.Fatalf("%s: %d turns, want %d", m.ep.Addr, got[m.ep], ws[i])
				}
			}
			// The heaviest members are spread: never two turns in a row.
			for i := 1; i < len(s); i++ {
				if s[i] == s[i-1] {
					t.Fatalf("%s twice in a row at %d", s[i].Addr, i)
				}
			}
		})
	}
}

// The ring's index finds the same point as a binary search of the whole
// ring, for any key.
func TestRingIndex(t *testing.T) {
	for _, n := range []int{1, 3, 1000} {
		r := newRing(backends(n))
		if !slices.IsSorted(r.points) || len(r.points) != n*vnodes {
			t.Fatalf("%d backends: %d points, sorted %v", n, len(r.points), slices.IsSorted(r.points))
		}
		for i := range 20000 {
			h := keyHash(i)
			if i%1000 == 0 {
				h = r.points[(i/1000)%len(r.points)] // exactly on a point
			}
			want, _ := slices.BinarySearch(r.points, h)
			if got := r.search(h); got != want {
				t.Fatalf("%d backends, key %x: index says %d, binary search %d", n, h, got, want)
			}
		}
		for _, h := range []uint64{0, ^uint64(0)} {
			want, _ := slices.BinarySearch(r.points, h)
			if got := r.search(h); got != want {
				t.Fatalf("%d backends, key %x: %d, want %d", n, h, got, want)
			}
		}
	}
}

// least_conn over a large pool still avoids the loaded members and never
// returns a tried one while an untried exists.
func TestLeastConnLargePool(t *testing.T) {
	ms := backends(1000)
	for i := range ms {
		if i%10 != 0 {
			ms[i].ep.inflight.Store(100) // 90% busy
		}
	}
	l := newLeastConn(ms)
	idle := 0
	for range 1000 {
		if l.Pick(0, nil).inflight.Load() == 0 {
			idle++
		}
	}
	// P(no idle member among 16 draws) = 0.9^16 ≈ 0.185.
	if idle < 700 {
		t.Errorf("%d of 1000 picks on an idle member, want about 815", idle)
	}
	tried := make([]*Endpoint, 0, len(ms)-1)
	for _, m := range ms[1:] {
		tried = append(tried, m.ep)
	}
	if e := l.Pick(0, tried); e != ms[0].ep {
		t.Errorf("with all but %s tried, picked %s", ms[0].ep.Addr, e.Addr)
	}
}
