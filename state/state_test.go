package state

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sample() *File {
	return &File{
		Version: Version,
		Written: time.Date(2026, 12, 2, 16, 0, 0, 0, time.UTC),
		Pools: map[string]Pool{
			"api": {Source: "srv|_http._tcp.api.test.", Set: []Backend{{Address: "10.0.0.1:80", Weight: 1}, {Address: "10.0.0.2:80", Weight: 3, Priority: 10}},
				Health: map[string]Health{"10.0.0.2:80": {ChecksPassing: true, HeldUntil: time.Date(2026, 12, 2, 16, 5, 0, 0, time.UTC), HoldFor: "5m0s", HoldLevel: 2, HoldReason: "flapping"}}},
		},
		Overrides: map[string]map[string]Override{"api": {"10.0.0.1:80": {Drain: true}}},
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := Write(path, sample()); err != nil {
		t.Fatal(err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sample()) {
		t.Errorf("read back %+v, want %+v", got, sample())
	}
	// No temp file is left behind.
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the state file", len(ents))
	}
}

func TestParseRefuses(t *testing.T) {
	cases := []struct {
		name, doc, msg string
		foreign        bool
	}{
		{name: "empty", doc: "", msg: "unexpected end"},
		{name: "truncated", doc: `{"version":1,"pools":{"api":{"set":[{"address":"10.0.0.1:80"`, msg: "unexpected end"},
		{name: "not json", doc: "\x00\x01garbage", msg: "invalid character"},
		{name: "no version", doc: `{"pools":{}}`, foreign: true},
		{name: "other version", doc: `{"version":2}`, foreign: true},
		{name: "some other program's JSON", doc: `{"name":"x","version":"1.2"}`, msg: "cannot unmarshal"},
		{name: "unknown key", doc: `{"version":1,"pool":{}}`, msg: "unknown field"},
		{name: "bad address", doc: `{"version":1,"pools":{"api":{"set":[{"address":"nope","weight":1}]}}}`, msg: "bad address"},
		{name: "zero weight", doc: `{"version":1,"pools":{"api":{"set":[{"address":"10.0.0.1:80","weight":0}]}}}`, msg: "weight 0 out of range"},
		{name: "duplicate", doc: `{"version":1,"pools":{"api":{"set":[{"address":"10.0.0.1:80","weight":1},{"address":"10.0.0.1:80","weight":1}]}}}`, msg: "duplicate"},
		{name: "bad hold", doc: `{"version":1,"pools":{"api":{"health":{"10.0.0.1:80":{"checks_passing":true,"hold_for":"forever"}}}}}`, msg: "bad duration"},
		{name: "trailing data", doc: `{"version":1} {"version":1}`, msg: "after top-level value"},
		{name: "bad override weight", doc: `{"version":1,"overrides":{"api":{"10.0.0.1:80":{"weight":-1}}}}`, msg: "out of range"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.doc))
			if err == nil {
				t.Fatal("parsed, want an error")
			}
			if c.foreign != errors.Is(err, ErrForeign) {
				t.Errorf("error %q: foreign %v, want %v", err, errors.Is(err, ErrForeign), c.foreign)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q, want it to contain %q", err, c.msg)
			}
		})
	}
}

func TestReadMissingAndUnreadable(t *testing.T) {
	dir := t.TempDir()
	if _, err := Read(filepath.Join(dir, "none.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want os.ErrNotExist", err)
	}
	if _, err := Read(dir); err == nil {
		t.Error("a directory read as a state file")
	}
}

// TestWriterDebounces: a burst of changes is one write, after the debounce
// (an injected clock fires it); a change pending at shutdown is written.
func TestWriterDebounces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	tick := make(chan time.Time)
	collected := 0
	w := NewWriter(path, time.Second, func() *File { collected++; return sample() }, slog.New(slog.DiscardHandler),
		func(time.Duration) <-chan time.Time { return tick })
	writes := make(chan error, 10)
	w.OnWrite = func(err error) { writes <- err }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()

	for range 5 {
		w.Changed()
	}
	select {
	case err := <-writes:
		t.Fatalf("wrote (%v) before the debounce ran out", err)
	default:
	}
	tick <- time.Now()
	if err := <-writes; err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path); err != nil {
		t.Fatal(err)
	}
	w.Changed()
	cancel()
	<-done
	select {
	case err := <-writes:
		if err != nil {
			t.Fatal(err)
		}
	default:
		t.Error("a change pending at shutdown was not written")
	}
	if collected != 2 {
		t.Errorf("collected %d times for two bursts, want 2", collected)
	}
}
