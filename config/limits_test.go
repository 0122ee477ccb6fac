package config

import (
	"strings"
	"testing"
)

func limitsConfig(t *testing.T, listenerMax string, backends int) *Config {
	t.Helper()
	bs := make([]string, backends)
	for i := range bs {
		bs[i] = "127.0.0.1:" + string(rune('1'+i)) + "000"
	}
	c, err := Parse([]byte(`
listeners:
  - { name: web, listen: 127.0.0.1:8080, pool: api` + listenerMax + ` }
pools:
  - { name: api, backends: [` + strings.Join(bs, ", ") + `], limits: { max_conns_per_backend: 100, max_idle_per_backend: 10 } }
`))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientConnCap(t *testing.T) {
	for _, tc := range []struct {
		name   string
		nofile uint64
		want   int
	}{
		{"unknown limit: no cap", 0, 0},
		// avail 936; upstream 200 of at most 468.
		{"pools bound the upstream reserve", 1000, 736},
		// avail 136; upstream 200, reserve capped at 68.
		{"half for upstream at most", 200, 68},
		{"tiny limit", 10, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ClientConnCap(limitsConfig(t, "", 2), tc.nofile); got != tc.want {
				t.Errorf("ClientConnCap(%d) = %d, want %d", tc.nofile, got, tc.want)
			}
		})
	}
}

func TestDescriptorWarnings(t *testing.T) {
	for _, tc := range []struct {
		name        string
		listenerMax string
		nofile      uint64
		want        string
	}{
		{"fits", ", max_connections: 500", 1024, ""},
		{"listener and pools exceed", ", max_connections: 1000", 1024, "(1000) + pools' max_conns_per_backend × backends (200) + 64 reserved = 1264 open files, more than the open-files limit 1024"},
		{"pools alone exceed", "", 200, "= 264 open files, more than the open-files limit 200"},
		{"unknown limit", ", max_connections: 100000", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws := DescriptorWarnings(limitsConfig(t, tc.listenerMax, 2), tc.nofile)
			switch {
			case tc.want == "" && len(ws) > 0:
				t.Errorf("unexpected warnings: %q", ws)
			case tc.want != "" && (len(ws) != 1 || !strings.Contains(ws[0], tc.want)):
				t.Errorf("warnings = %q, want one containing %q", ws, tc.want)
			}
		})
	}
}
