package balancer

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// backends makes n endpoints with realistic addresses, each in its own
// member, so two "instances" can build pickers from distinct Endpoint values.
func backends(n int) []member {
	ms := make([]member, n)
	for i := range ms {
		ms[i] = member{ep: &Endpoint{Addr: fmt.Sprintf("10.0.%d.%d:8080", i/200, i%200+1)}, weight: 1}
	}
	return ms
}

func keyHash(i int) uint64 { return HashString(fmt.Sprintf("user-%d", i)) }

// Two instances given the same backends in different orders (each with its
// own Endpoint values, as two processes would have) send all of 1,000 keys
// to the same address, for maglev and for consistent_hash.
func TestHashPickersAgreeAcrossInstances(t *testing.T) {
	for _, algo := range []string{"maglev", "consistent_hash"} {
		t.Run(algo, func(t *testing.T) {
			a := backends(7)
			b := backends(7)
			rand.New(rand.NewPCG(1, 2)).Shuffle(len(b), func(i, j int) { b[i], b[j] = b[j], b[i] })
			pa, pb := newPicker(algo, a), newPicker(algo, b)
			for i := range 1000 {
				ea, eb := pa.Pick(keyHash(i), nil), pb.Pick(keyHash(i), nil)
				if ea.Addr != eb.Addr {
					t.Fatalf("key %d: instance A sends it to %s, instance B to %s", i, ea.Addr, eb.Addr)
				}
			}
		})
	}
}

// The hash is fixed: these values are what every holdfast computes, so a
// change here breaks agreement between old and new instances and must be
// deliberate.
func TestHashIsFixed(t *testing.T) {
	if got, want := HashString("user-1"), HashBytes([]byte("user-1")); got != want {
		t.Fatalf("HashString %x != HashBytes %x", got, want)
	}
	// XXH64("", seed 0) is ef46db3751d8e999 per the xxHash reference.
	if got := HashString(""); got != 0xef46db3751d8e999 {
		t.Errorf("HashString(\"\") = %x, want XXH64 ef46db3751d8e999", got)
	}
	g := newMaglev(backends(3))
	var want [3]string
	for i := range 3 {
		want[i] = g.Pick(keyHash(i), nil).Addr
	}
	g2 := newMaglev(backends(3))
	for i := range 3 {
		if got := g2.Pick(keyHash(i), nil).Addr; got != want[i] {
			t.Errorf("key %d: %s, then %s from a rebuilt table", i, want[i], got)
		}
	}
}

func TestMaglevSpread(t *testing.T) {
	cases := []struct {
		name    string
		weights []float64
	}{
		{"equal 5", []float64{1, 1, 1, 1, 1}},
		{"equal 13", []float64{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
		{"weighted 1:2:3", []float64{1, 2, 3}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ms := backends(len(c.weights))
			total := 0.0
			for i, w := range c.weights {
				ms[i].weight = w
				total += w
			}
			g := newMaglev(ms)
			slots := map[*Endpoint]int{}
			for _, ix := range g.table {
				slots[g.eps[ix]]++
			}
			keys := map[*Endpoint]int{}
			const n = 20000
			for i := range n {
				keys[g.Pick(keyHash(i), nil)]++
			}
			for _, m := range ms {
				share := m.weight / total
				// The table itself is within 1% of each weight's share.
				if s := float64(slots[m.ep]) / MaglevTableSize; s < share*0.99 || s > share*1.01 {
					t.Errorf("%s: %.4f of the table, want %.4f ±1%%", m.ep.Addr, s, share)
				}
				// Keys follow within sampling noise (20,000 keys: ±10%).
				if s := float64(keys[m.ep]) / n; s < share*0.9 || s > share*1.1 {
					t.Errorf("%s: %.4f of the keys, want %.4f ±10%%", m.ep.Addr, s, share)
				}
			}
		})
	}
}

// Removing one of N backends moves its own keys and only a small fraction of
// the others': Maglev's table is not perfectly minimal, so the bound is the
// leaver's share plus 2% of all keys.
func TestMaglevRemovalMovesAboutOneNth(t *testing.T) {
	for _, n := range []int{5, 10, 30} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			ms := backends(n)
			before := newMaglev(ms)
			gone := ms[n/2].ep
			after := newMaglev(append(append([]member{}, ms[:n/2]...), ms[n/2+1:]...))
			const keys = 20000
			moved, strayed := 0, 0
			for i := range keys {
				h := keyHash(i)
				b, a := before.Pick(h, nil), after.Pick(h, nil)
				if a == gone {
					t.Fatalf("key %d still goes to the removed backend", i)
				}
				if a != b {
					moved++
					if b != gone {
						strayed++
					}
				}
			}
			frac := float64(moved) / keys
			t.Logf("%d backends, one removed: %.2f%% of keys moved (1/N = %.2f%%), %d of another backend's", n, 100*frac, 100/float64(n), strayed)
			if frac > 1/float64(n)+0.02 {
				t.Errorf("%.2f%% of keys moved, want at most 1/N + 2%% = %.2f%%", 100*frac, 100*(1/float64(n)+0.02))
			}
			if frac < 1/float64(n)*0.8 {
				t.Errorf("%.2f%% of keys moved, want about 1/N = %.2f%%: the leaver's keys must move", 100*frac, 100/float64(n))
			}
		})
	}
}

func BenchmarkMaglevPick(b *testing.B) {
	g := newMaglev(backends(10))
	b.RunParallel(func(pb *testing.PB) {
		h := uint64(0)
		for pb.Next() {
			h += 0x9e3779b97f4a7c15
			_ = g.Pick(h, nil)
		}
	})
}

func BenchmarkMaglevBuild(b *testing.B) {
	ms := backends(50)
	for b.Loop() {
		_ = newMaglev(ms)
	}
}
