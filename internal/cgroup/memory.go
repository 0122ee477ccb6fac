// Package cgroup reads the memory limit of the cgroup a process runs in,
// for cgroup v2 and v1, so that the Go runtime's memory limit can fit the
// container.
package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// unlimitedV1 is where cgroup v1 reports "no limit" (a page-rounded
// 2^63-1); anything this large means no limit.
const unlimitedV1 = 1 << 60

// MemoryLimit returns the memory limit, in bytes, of the cgroup described
// by selfCgroup (the contents of /proc/self/cgroup) under root (where the
// hierarchy is mounted, normally /sys/fs/cgroup). The tightest limit of
// the cgroup and its ancestors applies, as the kernel applies it. ok is
// false when no limit is set or no cgroup memory controller is found.
func MemoryLimit(root string, selfCgroup []byte) (limit int64, ok bool, err error) {
	v2, v1, err := parseSelf(selfCgroup)
	if err != nil {
		return 0, false, err
	}
	if v2 != "" {
		if limit, ok, err = tightest(root, v2, "memory.max"); ok || err != nil {
			return limit, ok, err
		}
	}
	if v1 != "" {
		return tightest(filepath.Join(root, "memory"), v1, "memory.limit_in_bytes")
	}
	return 0, false, nil
}

// parseSelf finds the v2 path ("0::/path") and the v1 memory path
// ("N:...memory...:/path").
func parseSelf(b []byte) (v2, v1 string, err error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2 = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" {
				v1 = parts[2]
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", fmt.Errorf("read /proc/self/cgroup: %w", err)
	}
	return v2, v1, nil
}

// tightest reads file in dir root/path and each ancestor up to root and
// returns the smallest limit. A cgroup path not visible under root (a
// namespaced mount shows the process's own cgroup as the root) is read at
// root alone.
func tightest(root, path, file string) (int64, bool, error) {
	dir := filepath.Join(root, path)
	if _, err := os.Stat(dir); err != nil {
		dir = root
	}
	var best int64
	found := false
	for {
		v, ok, err := readLimit(filepath.Join(dir, file))
		if err != nil {
			return 0, false, err
		}
		if ok && (!found || v < best) {
			best, found = v, true
		}
		if dir == root || len(dir) < len(root) {
			break
		}
		dir = filepath.Dir(dir)
	}
	return best, found, nil
}

// readLimit reads one limit file: a number of bytes, or "max" (none). A
// missing file is no limit.
func readLimit(path string) (int64, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read %s: %w", path, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, false, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("parse %s: %w", path, err)
	}
	if v <= 0 || v >= unlimitedV1 {
		return 0, false, nil
	}
	return v, true, nil
}
