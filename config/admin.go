package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
)

// maxTokenBytes bounds an admin token file: a token is a line, not a blob.
const maxTokenBytes = 4096

// ReadToken reads an admin bearer token from path, trimmed of surrounding
// whitespace (a trailing newline from `echo` or a Kubernetes Secret). An
// unreadable, empty or oversized file is an error: an admin API that was
// meant to be protected must not start open.
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token: %w", err)
	}
	if len(b) > maxTokenBytes {
		return "", fmt.Errorf("token file %s: %d bytes, want at most %d", path, len(b), maxTokenBytes)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("token file %s: the token contains whitespace (want one line)", path)
	}
	return tok, nil
}

func validateAdmin(c *Config, w *walker) {
	checkListen(w, "admin.listen", c.Admin.Listen)
	if c.Admin.TokenFile != "" {
		if _, err := ReadToken(c.Admin.TokenFile); err != nil {
			w.errorf("admin.token_file", "%v", err)
		}
	}
}

// adminWarnings: an admin API reachable from other hosts without a token
// lets anyone there reload, drain backends and read profiles.
func adminWarnings(c *Config) []string {
	if c.Admin.TokenFile != "" || loopbackListen(c.Admin.Listen) {
		return nil
	}
	return []string{"admin.listen: " + c.Admin.Listen + " is reachable beyond this host and admin.token_file is not set: anyone who can connect can reload and drain backends"}
}

// loopbackListen reports whether addr binds only loopback ("127.0.0.1:9901",
// "[::1]:9901", "localhost:9901"). An empty host binds every interface.
// An unparsable address counts as loopback here: validation reports it.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host != ""
	}
	return ip.Unmap().IsLoopback()
}
