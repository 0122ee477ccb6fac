package drill

import (
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	kill := []time.Time{at(100)}
	cases := []struct {
		name   string
		r      record
		flags  uint8
		resets []time.Time
		want   Cause
	}{
		{"answered", record{method: "POST", status: 200, start: at(90), end: at(110)}, seenReached, kill, CauseNone},
		{"4xx is not a failure", record{method: "GET", status: 404}, seenReached, nil, CauseNone},
		{"POST killed in flight", record{method: "POST", status: 502, start: at(90), end: at(101)}, seenReached | seenFailed, kill, CauseInFlight},
		{"GET killed in flight could be retried", record{method: "GET", status: 502, start: at(90), end: at(101)}, seenReached | seenFailed, kill, CauseReset},
		{"TCP data killed in flight", record{method: "TCP", err: "EOF", start: at(90), end: at(101)}, seenReached | seenFailed, kill, CauseInFlight},
		{"POST never reached a backend", record{method: "POST", status: 502, start: at(300), end: at(301)}, 0, kill, CauseUnreached},
		{"POST on the dying socket at the kill", record{method: "POST", status: 502, start: at(99), end: at(102)}, 0, kill, CauseInFlight},
		{"POST started after the kill", record{method: "POST", status: 502, start: at(101), end: at(102)}, 0, kill, CauseUnreached},
		{"POST failing long after the kill", record{method: "POST", status: 502, start: at(99), end: at(1200)}, 0, kill, CauseUnreached},
		{"503 at the kill is no backend, not in flight", record{method: "POST", status: 503, start: at(99), end: at(102)}, 0, kill, CauseUnreached},
		{"GET at the kill without a receipt", record{method: "GET", status: 502, start: at(99), end: at(102)}, 0, kill, CauseUnreached},
		{"client transport error", record{method: "GET", err: "connection reset", start: at(5), end: at(6)}, 0, nil, CauseUnreached},
		{"reached and answered, yet 502", record{method: "POST", status: 502, start: at(5), end: at(6)}, seenReached, nil, CauseUnreached},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := classify(c.r, c.flags, c.resets); got != c.want {
				t.Fatalf("classify = %v, want %v", got, c.want)
			}
		})
	}
}

func TestCauseAvoidable(t *testing.T) {
	for c, want := range map[Cause]bool{CauseNone: false, CauseInFlight: false, CauseReset: true, CauseUnreached: true} {
		if c.Avoidable() != want {
			t.Errorf("%v.Avoidable() = %v, want %v", c, c.Avoidable(), want)
		}
	}
}
