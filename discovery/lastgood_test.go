package discovery

import (
	"fmt"
	"slices"
	"testing"
)

func set(addrs ...string) []Backend {
	out := make([]Backend, len(addrs))
	for i, a := range addrs {
		out[i] = Backend{Address: a, Weight: 1}
	}
	SortBackends(out)
	return out
}

func TestLastGood(t *testing.T) {
	four := set("a:1", "b:1", "c:1", "d:1")
	cases := []struct {
		name      string
		maxShrink float64
		confirm   int
		answers   [][]Backend
		verdicts  []Verdict
		want      []Backend // the set at the end
	}{
		{
			name:     "empty before first set publishes nothing",
			confirm:  3,
			answers:  [][]Backend{nil, nil, nil, nil},
			verdicts: []Verdict{RefusedEmpty, RefusedEmpty, RefusedEmpty, RefusedEmpty},
			want:     nil,
		},
		{
			name:      "first set, then unchanged",
			maxShrink: 0.5, confirm: 3,
			answers:  [][]Backend{four, four},
			verdicts: []Verdict{Applied, Unchanged},
			want:     four,
		},
		{
			name:      "growth applies at once",
			maxShrink: 0.5, confirm: 3,
			answers:  [][]Backend{four, set("a:1", "b:1", "c:1", "d:1", "e:1")},
			verdicts: []Verdict{Applied, Applied},
			want:     set("a:1", "b:1", "c:1", "d:1", "e:1"),
		},
		{
			name:      "small shrink applies at once",
			maxShrink: 0.5, confirm: 3,
			answers:  [][]Backend{four, set("a:1", "b:1")},
			verdicts: []Verdict{Applied, Applied},
			want:     set("a:1", "b:1"),
		},
		{
			name:      "weight change applies at once",
			maxShrink: 0, confirm: 3,
			answers:  [][]Backend{set("a:1"), {{Address: "a:1", Weight: 5}}},
			verdicts: []Verdict{Applied, Applied},
			want:     []Backend{{Address: "a:1", Weight: 5}},
		},
		{
			name:      "big shrink needs confirm in a row",
			maxShrink: 0.5, confirm: 3,
			answers:  [][]Backend{four, set("a:1"), set("a:1"), set("a:1")},
			verdicts: []Verdict{Applied, Held, Held, Applied},
			want:     set("a:1"),
		},
		{
			name:      "interrupted confirmation starts over",
			maxShrink: 0.5, confirm: 3,
			answers:  [][]Backend{four, set("a:1"), set("a:1"), four, set("a:1"), set("a:1")},
			verdicts: []Verdict{Applied, Held, Held, Unchanged, Held, Held},
			want:     four,
		},
		{
			name:      "different destructive answers do not add up",
			maxShrink: 0.5, confirm: 3,
			answers:  [][]Backend{four, set("a:1"), set("b:1"), set("a:1"), set("b:1")},
			verdicts: []Verdict{Applied, Held, Held, Held, Held},
			want:     four,
		},
		{
			name:      "empty is held, then refused, never applied",
			maxShrink: 0.5, confirm: 3,
			answers:  [][]Backend{four, nil, nil, nil, nil, nil},
			verdicts: []Verdict{Applied, Held, Held, RefusedEmpty, RefusedEmpty, RefusedEmpty},
			want:     four,
		},
		{
			name:      "empty refused even with confirm 1 and max_shrink 100%",
			maxShrink: 1, confirm: 1,
			answers:  [][]Backend{four, nil},
			verdicts: []Verdict{Applied, RefusedEmpty},
			want:     four,
		},
		{
			name:      "max_shrink 0 guards any removal",
			maxShrink: 0, confirm: 2,
			answers:  [][]Backend{four, set("a:1", "b:1", "c:1"), set("a:1", "b:1", "c:1")},
			verdicts: []Verdict{Applied, Held, Applied},
			want:     set("a:1", "b:1", "c:1"),
		},
		{
			name:      "replacing every backend is a full shrink",
			maxShrink: 0.5, confirm: 2,
			answers:  [][]Backend{four, set("w:1", "x:1", "y:1", "z:1"), set("w:1", "x:1", "y:1", "z:1")},
			verdicts: []Verdict{Applied, Held, Applied},
			want:     set("w:1", "x:1", "y:1", "z:1"),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lg := LastGood{MaxShrink: tc.maxShrink, Confirm: tc.confirm}
			for i, a := range tc.answers {
				if got := lg.Offer(a); got != tc.verdicts[i] {
					t.Fatalf("answer %d (%v): verdict %v, want %v", i, addrs(a), got, tc.verdicts[i])
				}
				if s := lg.Set(); s != nil && len(s) == 0 {
					t.Fatalf("answer %d: set became empty", i)
				}
			}
			if !slices.Equal(lg.Set(), tc.want) {
				t.Errorf("set %v, want %v", lg.Set(), tc.want)
			}
		})
	}
}

func TestDedupe(t *testing.T) {
	in := []Backend{
		{Address: "b:1", Weight: 1, Priority: 10},
		{Address: "a:1", Weight: 2, Priority: 20},
		{Address: "a:1", Weight: 3, Priority: 10},
		{Address: "a:1", Weight: 7, Priority: 10},
	}
	got := dedupe(in)
	want := []Backend{{Address: "a:1", Weight: 7, Priority: 10}, {Address: "b:1", Weight: 1, Priority: 10}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func ExampleLastGood() {
	lg := LastGood{MaxShrink: 0.5, Confirm: 2}
	fmt.Println(lg.Offer(set("a:1", "b:1", "c:1", "d:1")))
	fmt.Println(lg.Offer(nil)) // NXDOMAIN
	fmt.Println(lg.Offer(nil))
	fmt.Println(len(lg.Set()))
	// Output:
	// applied
	// held
	// refused_empty
	// 4
}
