package cgroup

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMemoryLimit(t *testing.T) {
	type file struct{ path, content string }
	for _, tc := range []struct {
		name   string
		files  []file
		self   string
		want   int64
		wantOK bool
	}{
		{"v2 namespaced: the root is the container",
			[]file{{"memory.max", "536870912\n"}}, "0::/\n", 536870912, true},
		{"v2 unlimited", []file{{"memory.max", "max\n"}}, "0::/\n", 0, false},
		{"v2 nested: the tighter parent wins",
			[]file{{"memory.max", "max\n"}, {"kubepods/memory.max", "1073741824\n"}, {"kubepods/pod1/memory.max", "2147483648\n"}},
			"0::/kubepods/pod1\n", 1073741824, true},
		{"v2 path not mounted here: read the root",
			[]file{{"memory.max", "268435456\n"}}, "0::/system.slice/holdfast.service\n", 268435456, true},
		{"v1",
			[]file{{"memory/memory.limit_in_bytes", "9223372036854771712\n"}, {"memory/docker/abc/memory.limit_in_bytes", "104857600\n"}},
			"12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n", 104857600, true},
		{"v1 unlimited", []file{{"memory/memory.limit_in_bytes", "9223372036854771712\n"}}, "4:memory:/\n", 0, false},
		{"hybrid: v2 without a limit falls back to v1",
			[]file{{"unified/x", ""}, {"memory/memory.limit_in_bytes", "52428800\n"}}, "0::/\n3:memory:/\n", 52428800, true},
		{"no cgroup", nil, "", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for _, f := range tc.files {
				p := filepath.Join(root, f.path)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(f.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, ok, err := MemoryLimit(root, []byte(tc.self))
			if err != nil || got != tc.want || ok != tc.wantOK {
				t.Errorf("MemoryLimit = %d, %v, %v; want %d, %v", got, ok, err, tc.want, tc.wantOK)
			}
		})
	}
}

func TestMemoryLimitMalformed(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "memory.max"), []byte("lots\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := MemoryLimit(root, []byte("0::/\n")); err == nil {
		t.Error("a malformed memory.max gave no error")
	}
}
