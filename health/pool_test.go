package health

import (
	"math"
	"testing"
	"time"
)

func TestEjectionAllowed(t *testing.T) {
	tests := []struct {
		name       string
		ejected    int
		total      int
		maxEjected float64
		want       bool
	}{
		{name: "half of 10, none ejected", ejected: 0, total: 10, maxEjected: 0.5, want: true},
		{name: "half of 10, 4 ejected", ejected: 4, total: 10, maxEjected: 0.5, want: true},
		{name: "half of 10, 5 ejected", ejected: 5, total: 10, maxEjected: 0.5, want: false},
		{name: "half of 3 rounds down to 1", ejected: 1, total: 3, maxEjected: 0.5, want: false},
		{name: "10% of 3 still allows one", ejected: 0, total: 3, maxEjected: 0.1, want: true},
		{name: "10% of 3, one ejected", ejected: 1, total: 3, maxEjected: 0.1, want: false},
		{name: "29% of 100 is 29 despite float error", ejected: 28, total: 100, maxEjected: 0.29, want: true},
		{name: "29% of 100, 29 ejected", ejected: 29, total: 100, maxEjected: 0.29, want: false},
		{name: "100% of 4, 3 ejected", ejected: 3, total: 4, maxEjected: 1, want: true},
		{name: "100% of 4, all ejected", ejected: 4, total: 4, maxEjected: 1, want: false},
		{name: "single backend never ejected", ejected: 0, total: 1, maxEjected: 1, want: false},
		{name: "empty pool", ejected: 0, total: 0, maxEjected: 0.5, want: false},
		{name: "0% turns ejection off", ejected: 0, total: 10, maxEjected: 0, want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := EjectionAllowed(tc.ejected, tc.total, tc.maxEjected); got != tc.want {
				t.Errorf("EjectionAllowed(%d, %d, %v) = %v, want %v", tc.ejected, tc.total, tc.maxEjected, got, tc.want)
			}
		})
	}
}

func TestPanic(t *testing.T) {
	tests := []struct {
		name      string
		routable  int
		total     int
		threshold float64
		want      bool
	}{
		{name: "all routable", routable: 4, total: 4, threshold: 0.5, want: false},
		{name: "exactly at threshold is not panic", routable: 2, total: 4, threshold: 0.5, want: false},
		{name: "below threshold", routable: 1, total: 4, threshold: 0.5, want: true},
		{name: "none routable", routable: 0, total: 4, threshold: 0.5, want: true},
		{name: "30% of 10 at 3 despite float error", routable: 3, total: 10, threshold: 0.3, want: false},
		{name: "30% of 10 at 2", routable: 2, total: 10, threshold: 0.3, want: true},
		{name: "threshold 0 never panics", routable: 0, total: 4, threshold: 0, want: false},
		{name: "empty pool never panics", routable: 0, total: 0, threshold: 0.5, want: false},
		{name: "100% panics on any loss", routable: 9, total: 10, threshold: 1, want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Panic(tc.routable, tc.total, tc.threshold); got != tc.want {
				t.Errorf("Panic(%d, %d, %v) = %v, want %v", tc.routable, tc.total, tc.threshold, got, tc.want)
			}
		})
	}
}

func TestSlowStartWeight(t *testing.T) {
	since := t0
	tests := []struct {
		name    string
		base    int
		elapsed time.Duration
		since   time.Time
		window  time.Duration
		want    float64
	}{
		{name: "no window gives base", base: 10, elapsed: 0, since: since, window: 0, want: 10},
		{name: "zero since gives base", base: 10, elapsed: 0, since: time.Time{}, window: time.Minute, want: 10},
		{name: "start is 10%", base: 10, elapsed: 0, since: since, window: 100 * s, want: 1},
		{name: "half way is 55%", base: 10, elapsed: 50 * s, since: since, window: 100 * s, want: 5.5},
		{name: "end of window is base", base: 10, elapsed: 100 * s, since: since, window: 100 * s, want: 10},
		{name: "after the window is base", base: 10, elapsed: time.Hour, since: since, window: 100 * s, want: 10},
		{name: "clock before since is the floor", base: 10, elapsed: -s, since: since, window: 100 * s, want: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := SlowStartWeight(tc.base, tc.since, t0.Add(tc.elapsed), tc.window)
			if math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("SlowStartWeight = %v, want %v", got, tc.want)
			}
		})
	}
}
