package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/holdfast-lb/holdfast/config"
)

// writeToken writes an admin token file into the test's temp dir.
func writeToken(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadToken(t *testing.T) {
	cases := []struct {
		name    string
		content *string // nil: no file
		want    string
		wantErr string
	}{
		{name: "plain", content: ptr("s3cret"), want: "s3cret"},
		{name: "trailing newline and spaces", content: ptr("  s3cret \n\n"), want: "s3cret"},
		{name: "empty", content: ptr(""), wantErr: "empty"},
		{name: "only whitespace", content: ptr(" \n\t\n"), wantErr: "empty"},
		{name: "two words", content: ptr("s3cret other\n"), wantErr: "whitespace"},
		{name: "oversized", content: ptr(strings.Repeat("a", 5000)), wantErr: "at most"},
		{name: "missing", content: nil, wantErr: "no such file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "absent")
			if c.content != nil {
				path = writeToken(t, *c.content)
			}
			got, err := config.ReadToken(path)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("ReadToken = %q, %v; want an error containing %q", got, err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("ReadToken = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

func ptr(s string) *string { return &s }

// A token file that cannot serve is a config error at admin.token_file,
// so `holdfast check` and a reload report it before anything starts.
func TestAdminTokenFileErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{empty, filepath.Join(dir, "missing")} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			_, err := config.Parse([]byte("admin: { token_file: " + path + " }\n" +
				"listeners: [{ name: web, listen: \"127.0.0.1:0\", pool: p }]\npools: [{ name: p, backends: [127.0.0.1:9001] }]\n"))
			for _, fe := range config.Errors(err) {
				if fe.Path == "admin.token_file" {
					return
				}
			}
			t.Fatalf("no error at admin.token_file: %v", err)
		})
	}
}

func TestWarnAdminOpen(t *testing.T) {
	token := writeToken(t, "s3cret\n")
	cases := []struct {
		name, admin string
		warn        bool
	}{
		{"default loopback", `{}`, false},
		{"ipv4 loopback", `{ listen: "127.0.0.1:9901" }`, false},
		{"ipv6 loopback", `{ listen: "[::1]:9901" }`, false},
		{"localhost", `{ listen: "localhost:9901" }`, false},
		{"all interfaces", `{ listen: "0.0.0.0:9901" }`, true},
		{"empty host", `{ listen: ":9901" }`, true},
		{"all ipv6", `{ listen: "[::]:9901" }`, true},
		{"private address", `{ listen: "10.1.2.3:9901" }`, true},
		{"all interfaces with a token", `{ listen: "0.0.0.0:9901", token_file: ` + token + ` }`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte("admin: " + c.admin + "\n" +
				"listeners: [{ name: web, listen: \"127.0.0.1:0\", pool: p }]\npools: [{ name: p, backends: [127.0.0.1:9001] }]\n"))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range config.Warnings(cfg) {
				if strings.HasPrefix(w, "admin.listen:") {
					got = append(got, w)
				}
			}
			if c.warn != (len(got) == 1) || len(got) > 1 {
				t.Fatalf("admin warnings %q, want warning: %v", got, c.warn)
			}
			if c.warn && !strings.Contains(got[0], "token_file") {
				t.Errorf("warning %q does not say what to set", got[0])
			}
		})
	}
}
