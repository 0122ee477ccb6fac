package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMemoryLimit(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "memory.max"), []byte("1000000000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, env string
		root      string
		want      int64
	}{
		{"90% of the cgroup limit", "", root, 900000000},
		{"GOMEMLIMIT given: left alone", "512MiB", root, 0},
		{"no cgroup limit", "", t.TempDir(), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := memoryLimit(tc.env, tc.root, []byte("0::/\n"))
			if err != nil || got != tc.want {
				t.Errorf("memoryLimit = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// TestCheckWarnsOnDescriptorLimit: check warns (and still exits 0) when
// the listeners' and pools' limits need more open files than the limit
// run would have, and is quiet when they fit.
func TestCheckWarnsOnDescriptorLimit(t *testing.T) {
	limit, err := raiseFileLimit()
	if err != nil || limit == 0 || limit > 1<<30 {
		t.Skipf("open-files limit %d (%v): cannot exceed it in a config", limit, err)
	}
	cfg := func(maxConns uint64) string {
		return writeFile(t, "holdfast.yaml", fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:8080, pool: api, max_connections: %d }
pools:
  - { name: api, backends: [127.0.0.1:9001, 127.0.0.1:9002], limits: { max_conns_per_backend: 10, max_idle_per_backend: 10 } }
`, maxConns))
	}
	code, _, stderr := runCLI("check", "-c", cfg(limit))
	want := fmt.Sprintf("warning: limits: listeners' max_connections (%d) + pools' max_conns_per_backend × backends (20) + 64 reserved = %d open files, more than the open-files limit %d",
		limit, limit+84, limit)
	if code != 0 || !strings.Contains(stderr, want) {
		t.Errorf("check = %d, stderr %q; want 0 and %q", code, stderr, want)
	}
	code, _, stderr = runCLI("check", "-c", cfg(limit-84))
	if code != 0 || strings.Contains(stderr, "warning") {
		t.Errorf("limits that fit: check = %d, stderr %q", code, stderr)
	}
}
