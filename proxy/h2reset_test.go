package proxy

import (
	"io"
	"log/slog"
	"net"
	"testing"
)

// TestH2ResetHeuristic: a client whose streams are mostly reset before
// their answer is cut off once resetFloor of them were; one that resets
// some of many is not.
func TestH2ResetHeuristic(t *testing.T) {
	tests := []struct {
		name         string
		normal, rst  int
		wantClosedAt int // reset count at which the connection closes; 0: never
	}{
		{name: "all reset", rst: resetFloor + 50, wantClosedAt: resetFloor},
		{name: "a third reset", normal: 2 * (resetFloor + 50), rst: resetFloor + 50},
		{name: "few streams", rst: resetFloor - 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer b.Close()
			st := &h2ConnState{c: a, side: &h2Side{log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
			closedAt := 0
			for i := 0; i < tc.normal; i++ {
				st.ended(false)
			}
			for i := 1; i <= tc.rst; i++ {
				st.ended(true)
				if closedAt == 0 && st.cut.Load() {
					closedAt = i
				}
			}
			if closedAt != tc.wantClosedAt {
				t.Fatalf("closed at reset %d, want %d", closedAt, tc.wantClosedAt)
			}
			if tc.wantClosedAt > 0 {
				if _, err := a.Write([]byte("x")); err == nil {
					t.Fatal("connection still open")
				}
			}
		})
	}
}
