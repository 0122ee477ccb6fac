package state

import (
	"context"
	"log/slog"
	"time"
)

// Writer writes the state file after changes, debounced: a burst of changes
// (a discovery update that moves twenty backends, a flapping check) costs
// one write, Debounce after the first change of the burst. Changed is safe
// for concurrent use and never blocks; Run is the one goroutine that writes.
type Writer struct {
	path     string
	debounce time.Duration
	collect  func() *File
	log      *slog.Logger
	after    func(time.Duration) <-chan time.Time
	changed  chan struct{}
	// OnWrite, when set, is called after every write attempt (tests).
	OnWrite func(error)
}

// NewWriter returns a Writer of path that asks collect for the state to
// write. after is the clock (nil: time.After).
func NewWriter(path string, debounce time.Duration, collect func() *File, log *slog.Logger, after func(time.Duration) <-chan time.Time) *Writer {
	if after == nil {
		after = time.After
	}
	return &Writer{path: path, debounce: debounce, collect: collect, log: log.With("state_file", path),
		after: after, changed: make(chan struct{}, 1)}
}

// Changed notes that the state changed; a write follows within Debounce.
func (w *Writer) Changed() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// Run writes after changes until ctx ends, then writes once more if a
// change is pending, so a clean shutdown leaves the latest state.
func (w *Writer) Run(ctx context.Context) {
	failing := false
	write := func() {
		err := Write(w.path, w.collect())
		switch {
		case err != nil && !failing:
			w.log.Error("state file not written", "err", err)
		case err == nil && failing:
			w.log.Info("state file written again")
		}
		failing = err != nil
		if w.OnWrite != nil {
			w.OnWrite(err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			select {
			case <-w.changed: // a change nobody wrote yet
				write()
			default:
			}
			return
		case <-w.changed:
		}
		select {
		case <-ctx.Done():
			write()
			return
		case <-w.after(w.debounce):
		}
		write()
	}
}
