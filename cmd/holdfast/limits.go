package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"syscall"

	"github.com/holdfast-lb/holdfast/internal/cgroup"
)

// raiseFileLimit lifts the soft open-files limit to the hard one (the Go
// runtime does this too since Go 1.19; doing it here makes it explicit and
// independent of that) and returns the limit now in force, 0 if unknown or
// unlimited.
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur < lim.Max {
		raised := syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			return nofile(lim.Cur), fmt.Errorf("raise RLIMIT_NOFILE from %d to %d: %w", lim.Cur, lim.Max, err)
		}
		lim = raised
	}
	return nofile(lim.Cur), nil
}

func nofile(v uint64) uint64 {
	if v == ^uint64(0) { // RLIM_INFINITY
		return 0
	}
	return v
}

// memoryLimitShare is the part of the container's memory limit given to
// the Go runtime as its soft limit; the rest covers what the runtime does
// not count (thread stacks, kernel socket buffers charged to the cgroup).
const memoryLimitShare = 0.9

// memoryLimit decides the runtime's soft memory limit: none when GOMEMLIMIT
// is set (the runtime applied it), else memoryLimitShare of the cgroup
// limit under root. It returns the limit (0: leave as is) and where it
// came from.
func memoryLimit(env, root string, self []byte) (int64, string, error) {
	if env != "" {
		return 0, "GOMEMLIMIT", nil
	}
	lim, ok, err := cgroup.MemoryLimit(root, self)
	if err != nil || !ok {
		return 0, "", err
	}
	return int64(float64(lim) * memoryLimitShare), fmt.Sprintf("90%% of the cgroup memory limit %d", lim), nil
}

// applyLimits fits the process to the machine at start: the open-files
// limit raised to the hard limit (returned, for the connection cap) and
// the Go memory limit set from the cgroup.
func applyLimits(log *slog.Logger) uint64 {
	n, err := raiseFileLimit()
	if err != nil {
		log.Warn("open-files limit", "err", err)
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err == nil {
		var lim int64
		var from string
		lim, from, err = memoryLimit(os.Getenv("GOMEMLIMIT"), "/sys/fs/cgroup", self)
		if lim > 0 {
			debug.SetMemoryLimit(lim)
			log.Info("memory limit", "bytes", lim, "from", from)
		}
	}
	if err != nil {
		log.Warn("cgroup memory limit unknown; GOMEMLIMIT not set", "err", err)
	}
	log.Info("open-files limit", "limit", n)
	return n
}
