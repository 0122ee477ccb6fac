package balancer

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// eps makes endpoints a, b, c… with the given weights.
func eps(weights ...float64) ([]*Endpoint, []member) {
	es := make([]*Endpoint, len(weights))
	ms := make([]member, len(weights))
	for i, w := range weights {
		es[i] = &Endpoint{Addr: string(rune('a' + i))}
		ms[i] = member{ep: es[i], weight: w}
	}
	return es, ms
}

func names(seq []*Endpoint) string {
	var b strings.Builder
	for _, e := range seq {
		if e == nil {
			b.WriteString("-")
			continue
		}
		b.WriteString(e.Addr)
	}
	return b.String()
}

func pickN(p Picker, n int, hash uint64, tried []*Endpoint) []*Endpoint {
	out := make([]*Endpoint, n)
	for i := range out {
		out[i] = p.Pick(hash, tried)
	}
	return out
}

func counts(seq []*Endpoint) map[string]int {
	c := map[string]int{}
	for _, e := range seq {
		if e == nil {
			c["<nil>"]++
			continue
		}
		c[e.Addr]++
	}
	return c
}

func TestRoundRobinSmoothSequence(t *testing.T) {
	cases := []struct {
		name    string
		weights []float64
		want    string // one full cycle
	}{
		{"nginx 5,1,1", []float64{5, 1, 1}, "aabacaa"},
		{"equal weights", []float64{1, 1, 1}, "abc"},
		{"1,2,3", []float64{1, 2, 3}, "cbacbc"},
		{"single", []float64{4}, "a"},
		{"weights reduced by gcd", []float64{2, 4}, "bab"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, ms := eps(c.weights...)
			p := newPicker("round_robin", ms)
			// Three cycles: the schedule repeats exactly.
			got := names(pickN(p, 3*len(c.want), 0, nil))
			if want := strings.Repeat(c.want, 3); got != want {
				t.Errorf("sequence %s, want %s", got, want)
			}
		})
	}
}

func TestRoundRobinSharesFollowWeights(t *testing.T) {
	cases := []struct {
		name    string
		weights []float64
		maxRun  int // longest run of one endpoint within a cycle (smoothness)
	}{
		{"1,2,3", []float64{1, 2, 3}, 2},
		{"5,1,1", []float64{5, 1, 1}, 2},
		{"10,1", []float64{10, 1}, 5},
		{"7,3,2,1", []float64{7, 3, 2, 1}, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, ms := eps(c.weights...)
			p := newPicker("round_robin", ms)
			total := 0.0
			for _, w := range c.weights {
				total += w
			}
			cycles := 50
			n := int(total) * cycles
			seq := pickN(p, n, 0, nil)
			got := counts(seq)
			for i, w := range c.weights {
				name := string(rune('a' + i))
				if want := int(w) * cycles; got[name] != want {
					t.Errorf("%s picked %d times in %d picks, want exactly %d", name, got[name], n, want)
				}
			}
			run, longest := 1, 1
			for i := 1; i < int(total); i++ {
				if seq[i] == seq[i-1] {
					run++
					longest = max(longest, run)
				} else {
					run = 1
				}
			}
			if longest > c.maxRun {
				t.Errorf("not smooth: a run of %d picks of one endpoint (want at most %d): %s", longest, c.maxRun, names(seq[:min(len(seq), 40)]))
			}
		})
	}
}

// Every picker avoids endpoints already tried when another one exists, and
// still answers when every endpoint was tried.
func TestPickersAvoidTried(t *testing.T) {
	algos := []string{"round_robin", "least_conn", "p2c", "p2c_ewma", "random", "consistent_hash", "maglev"}
	for _, algo := range algos {
		t.Run(algo, func(t *testing.T) {
			es, ms := eps(1, 1, 1)
			p := newPicker(algo, ms)
			for i := range 300 {
				h := HashString(fmt.Sprint(i))
				first := p.Pick(h, nil)
				if first == nil {
					t.Fatal("nil pick from a non-empty picker")
				}
				second := p.Pick(h, []*Endpoint{first})
				if second == first || second == nil {
					t.Fatalf("pick %d: retry got %v again after trying it", i, second.Addr)
				}
				if algo == "random" || algo == "p2c" || algo == "p2c_ewma" {
					continue // random draws give up after a few redraws; two tried of three is still avoided below
				}
				third := p.Pick(h, []*Endpoint{first, second})
				if third == first || third == second {
					t.Fatalf("pick %d: third try got %s, already tried %s and %s", i, third.Addr, first.Addr, second.Addr)
				}
			}
			if e := p.Pick(0, es); e == nil {
				t.Error("every endpoint tried: want some endpoint rather than none")
			}
		})
	}
}

func TestEmptyPickerGivesNil(t *testing.T) {
	for _, algo := range []string{"round_robin", "least_conn", "p2c", "random", "consistent_hash", "maglev"} {
		t.Run(algo, func(t *testing.T) {
			if e := newPicker(algo, nil).Pick(1, nil); e != nil {
				t.Errorf("got %s from an empty set", e.Addr)
			}
		})
	}
}

func TestLeastConnPicksLeastLoaded(t *testing.T) {
	cases := []struct {
		name     string
		weights  []float64
		inflight []int
		tried    []int
		want     string
	}{
		{"fewest in flight", []float64{1, 1, 1}, []int{3, 1, 2}, nil, "b"},
		{"idle wins", []float64{1, 1, 1}, []int{5, 0, 5}, nil, "b"},
		{"per unit of weight", []float64{4, 1, 1}, []int{4, 2, 2}, nil, "a"},
		{"skips tried", []float64{1, 1, 1}, []int{3, 1, 2}, []int{1}, "c"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			es, ms := eps(c.weights...)
			for i, n := range c.inflight {
				for range n {
					es[i].Begin()
				}
			}
			var tried []*Endpoint
			for _, i := range c.tried {
				tried = append(tried, es[i])
			}
			p := newPicker("least_conn", ms)
			for i := range 20 {
				if e := p.Pick(0, tried); e.Addr != c.want {
					t.Fatalf("pick %d: got %s, want %s", i, e.Addr, c.want)
				}
			}
		})
	}
}

// Ties spread over every member instead of piling onto the first.
func TestLeastConnSpreadsTies(t *testing.T) {
	_, ms := eps(1, 1, 1)
	got := counts(pickN(newPicker("least_conn", ms), 300, 0, nil))
	for _, n := range []string{"a", "b", "c"} {
		if got[n] < 50 {
			t.Errorf("%s got %d of 300 tied picks: %v", n, got[n], got)
		}
	}
}

func TestP2CPrefersLessLoaded(t *testing.T) {
	cases := []struct {
		name  string
		algo  string
		setup func(es []*Endpoint)
	}{
		{"p2c in flight", "p2c", func(es []*Endpoint) {
			for range 10 {
				es[0].Begin()
			}
		}},
		{"p2c_ewma latency", "p2c_ewma", func(es []*Endpoint) {
			es[0].Begin()
			es[0].End(100 * time.Millisecond)
			es[1].Begin()
			es[1].End(time.Millisecond)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			es, ms := eps(1, 1)
			c.setup(es)
			got := counts(pickN(newPicker(c.algo, ms), 2000, 0, nil))
			// Only a draw of the busy member twice picks it: about 1/16.
			if got["b"] < 1700 {
				t.Errorf("less loaded b got %d of 2000 picks, want >= 1700: %v", got["b"], got)
			}
		})
	}
}

func TestRandomRoughlyWeighted(t *testing.T) {
	_, ms := eps(1, 3)
	const n = 8000
	got := counts(pickN(newPicker("random", ms), n, 0, nil))
	// Expected share of b is 0.75; ±0.04 is more than 8 standard deviations.
	if s := float64(got["b"]) / n; s < 0.71 || s > 0.79 {
		t.Errorf("b share %.3f, want about 0.75: %v", s, got)
	}
}

func TestConsistentHash(t *testing.T) {
	const keys = 3000
	es, ms := eps(1, 1, 1, 1, 1)
	ring := newPicker("consistent_hash", ms)
	before := make([]*Endpoint, keys)
	share := map[string]int{}
	for i := range before {
		h := HashString(fmt.Sprintf("user-%d", i))
		before[i] = ring.Pick(h, nil)
		share[before[i].Addr]++
		if again := ring.Pick(h, nil); again != before[i] {
			t.Fatalf("key %d moved between two picks: %s then %s", i, before[i].Addr, again.Addr)
		}
	}
	t.Run("spread", func(t *testing.T) {
		for _, e := range es {
			if n := share[e.Addr]; n < keys/5/2 || n > keys/5*2 {
				t.Errorf("%s owns %d of %d keys, want near %d: %v", e.Addr, n, keys, keys/5, share)
			}
		}
	})
	t.Run("stable across rebuilds", func(t *testing.T) {
		rebuilt := newPicker("consistent_hash", []member{ms[4], ms[2], ms[0], ms[3], ms[1]})
		for i := range before {
			if e := rebuilt.Pick(HashString(fmt.Sprintf("user-%d", i)), nil); e != before[i] {
				t.Fatalf("key %d: %s after rebuild with the same members, was %s", i, e.Addr, before[i].Addr)
			}
		}
	})
	t.Run("member leaves: only its keys move", func(t *testing.T) {
		gone := es[2]
		smaller := newPicker("consistent_hash", []member{ms[0], ms[1], ms[3], ms[4]})
		moved := 0
		for i := range before {
			e := smaller.Pick(HashString(fmt.Sprintf("user-%d", i)), nil)
			switch {
			case e == gone:
				t.Fatalf("key %d still goes to the removed member", i)
			case before[i] != gone && e != before[i]:
				t.Fatalf("key %d moved from %s to %s though %s stayed", i, before[i].Addr, e.Addr, before[i].Addr)
			case before[i] == gone:
				moved++
			}
		}
		if moved != share[gone.Addr] {
			t.Errorf("%d keys moved, want exactly the %d the leaver owned", moved, share[gone.Addr])
		}
	})
	t.Run("member joins: keys move only to it", func(t *testing.T) {
		newcomer := &Endpoint{Addr: "f"}
		bigger := newPicker("consistent_hash", append(append([]member{}, ms...), member{ep: newcomer, weight: 1}))
		moved := 0
		for i := range before {
			e := bigger.Pick(HashString(fmt.Sprintf("user-%d", i)), nil)
			if e != before[i] {
				if e != newcomer {
					t.Fatalf("key %d moved from %s to %s, not to the newcomer", i, before[i].Addr, e.Addr)
				}
				moved++
			}
		}
		if moved == 0 || moved > keys/6*2 {
			t.Errorf("%d of %d keys moved to the newcomer, want about %d", moved, keys, keys/6)
		}
	})
}

func TestEndpointCounters(t *testing.T) {
	e := &Endpoint{Addr: "a"}
	signals := 0
	e.signal = func(*Endpoint) { signals++ }
	e.ejectThreshold.Store(3)
	e.Begin()
	e.Begin()
	if e.Inflight() != 2 {
		t.Fatalf("inflight %d, want 2", e.Inflight())
	}
	e.End(80 * time.Millisecond)
	e.End(0)
	if e.Inflight() != 0 {
		t.Fatalf("inflight %d after End, want 0", e.Inflight())
	}
	if l := e.LatencyEWMA(); l != 70*time.Millisecond {
		t.Errorf("ewma %v, want 70ms (80ms then a 0 sample at alpha 1/8)", l)
	}
	e.Failure()
	e.Failure()
	if signals != 0 {
		t.Fatal("signalled the pool below the outlier threshold")
	}
	e.Success()
	e.Failure()
	e.Failure()
	if e.ConsecutiveFailures() != 2 || signals != 0 {
		t.Fatalf("a success must reset the run: consecutive=%d signals=%d", e.ConsecutiveFailures(), signals)
	}
	e.Failure()
	if signals != 1 {
		t.Errorf("3 failures in a row: %d signals, want 1", signals)
	}
}
