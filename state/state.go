// Package state is holdfast's state file: what a restarted process needs to
// serve at once and to keep the holds it had. It holds, per pool, the last
// good discovery set (with the discovery source it came from), each
// backend's saved health, and the operator's overrides.
//
// The file is JSON with a version; Parse refuses anything else (a corrupt,
// truncated or foreign file) with an error, never a panic, so the caller
// can log one line and start without it. Write replaces the file
// atomically: a temp file in the same directory, fsync, rename, fsync of
// the directory, so a crash leaves the old file or the new one, never half
// of one.
package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Version is the format this holdfast reads and writes. A file of another
// version is foreign and ignored.
const Version = 1

// MaxSize bounds what Read accepts: far above any real pool set, small
// enough that a wrong path (a log file, a disk image) is refused quickly.
const MaxSize = 64 << 20

// File is the whole state file.
type File struct {
	Version int `json:"version"`
	// Written is when the process wrote the file (informational).
	Written time.Time `json:"written"`
	// Pools by name.
	Pools map[string]Pool `json:"pools,omitempty"`
	// Overrides are the operator's, by pool and backend address.
	Overrides map[string]map[string]Override `json:"overrides,omitempty"`
}

// Pool is one pool's saved state.
type Pool struct {
	// Source identifies the discovery source Set came from (the pool's
	// SourceKey); a set from another source is not restored. Empty for
	// static pools, which save no set.
	Source string `json:"source,omitempty"`
	// Set is the last good discovery set.
	Set []Backend `json:"set,omitempty"`
	// Health is each backend's saved health, by address.
	Health map[string]Health `json:"health,omitempty"`
}

// Backend is one member of a saved set.
type Backend struct {
	Address  string `json:"address"`
	Weight   int    `json:"weight"`
	Priority int    `json:"priority,omitempty"`
}

// Health is what a backend's health tracker keeps across a restart: the
// check verdict, a running hold or ejection (by their wall-clock ends, so
// time spent down counts), and the escalation levels.
type Health struct {
	ChecksPassing bool      `json:"checks_passing"`
	HeldUntil     time.Time `json:"held_until,omitzero"`
	HoldFor       string    `json:"hold_for,omitempty"` // the running hold's length, a Go duration
	HoldLevel     int       `json:"hold_level,omitempty"`
	HoldReason    string    `json:"hold_reason,omitempty"`
	EjectedUntil  time.Time `json:"ejected_until,omitzero"`
	Ejections     int       `json:"ejections,omitempty"`
}

// Override is an operator's override of one backend.
type Override struct {
	Drain   bool `json:"drain,omitempty"`
	Disable bool `json:"disable,omitempty"`
	Weight  int  `json:"weight,omitempty"`
}

// ErrForeign is a file that is not a holdfast state file of this Version.
var ErrForeign = errors.New("not a holdfast state file of version " + fmt.Sprint(Version))

// Parse decodes and validates a state file. Every error says what is wrong
// and where; nothing in b can make it panic.
func Parse(b []byte) (*File, error) {
	var probe struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	if probe.Version == nil || *probe.Version != Version {
		got := "none"
		if probe.Version != nil {
			got = fmt.Sprint(*probe.Version)
		}
		return nil, fmt.Errorf("state file: version %s: %w", got, ErrForeign)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	if err := f.validate(); err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	return &f, nil
}

func (f *File) validate() error {
	for name, p := range f.Pools {
		if name == "" {
			return errors.New("pools: empty pool name")
		}
		seen := make(map[string]bool, len(p.Set))
		for i, b := range p.Set {
			if err := checkAddr(b.Address); err != nil {
				return fmt.Errorf("pools.%s.set[%d]: %w", name, i, err)
			}
			if b.Weight < 1 || b.Weight > 65535 {
				return fmt.Errorf("pools.%s.set[%d]: weight %d out of range 1..65535", name, i, b.Weight)
			}
			if b.Priority < 0 || b.Priority > 65535 {
				return fmt.Errorf("pools.%s.set[%d]: priority %d out of range 0..65535", name, i, b.Priority)
			}
			if seen[b.Address] {
				return fmt.Errorf("pools.%s.set[%d]: duplicate address %s", name, i, b.Address)
			}
			seen[b.Address] = true
		}
		for addr, h := range p.Health {
			if err := checkAddr(addr); err != nil {
				return fmt.Errorf("pools.%s.health[%q]: %w", name, addr, err)
			}
			if h.HoldFor != "" {
				if d, err := time.ParseDuration(h.HoldFor); err != nil || d < 0 {
					return fmt.Errorf("pools.%s.health[%q].hold_for: bad duration %q", name, addr, h.HoldFor)
				}
			}
			if h.HoldLevel < 0 || h.HoldLevel > 64 || h.Ejections < 0 || h.Ejections > 1<<20 {
				return fmt.Errorf("pools.%s.health[%q]: hold_level or ejections out of range", name, addr)
			}
		}
	}
	for name, bs := range f.Overrides {
		for addr, o := range bs {
			if err := checkAddr(addr); err != nil {
				return fmt.Errorf("overrides.%s[%q]: %w", name, addr, err)
			}
			if o.Weight < 0 || o.Weight > 65535 {
				return fmt.Errorf("overrides.%s[%q]: weight %d out of range 0..65535", name, addr, o.Weight)
			}
		}
	}
	return nil
}

func checkAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("bad address %q (want host:port)", a)
	}
	return nil
}

// Read reads and parses the file at path. A missing file is
// os.ErrNotExist (a first start), anything else a reason to start without
// it.
func Read(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("state file %s: larger than %d bytes", path, MaxSize)
	}
	f, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// Write replaces the file at path with f, atomically: a temp file in the
// same directory is written and fsynced, renamed over path, and the
// directory fsynced so the rename itself is durable.
func Write(path string, f *File) error {
	c := *f
	c.Version = Version
	b, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return fmt.Errorf("state file %s: encode: %w", path, err)
	}
	b = append(b, '\n')
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("state file %s: %w", path, err)
	}
	done := false
	defer func() {
		if !done {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(b); err != nil {
		return fmt.Errorf("state file %s: write %s: %w", path, tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("state file %s: fsync %s: %w", path, tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("state file %s: close %s: %w", path, tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("state file %s: rename: %w", path, err)
	}
	done = true
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("state file %s: open dir for fsync: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("state file %s: fsync dir: %w", path, err)
	}
	return nil
}
