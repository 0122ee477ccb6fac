package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const backendUsage = "usage: holdfast backend drain|disable|enable|weight POOL ADDRESS [N] [--admin ADDR] [--token-file FILE]"

// cmdBackend drives POST /backends/{pool}/{address}/{action} on a running
// holdfast. Exit 0 done, 1 refused (unknown pool or backend, bad value,
// unreachable admin), 2 usage.
func cmdBackend(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	adminAddr := fs.String("admin", "127.0.0.1:9901", "admin address (host:port or URL)")
	tokenFile := fs.String("token-file", "", "file holding the admin token (default: $"+tokenEnv+")")
	// Flags may come before or after the operands.
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) < 3 {
		fmt.Fprintln(stderr, backendUsage)
		return 2
	}
	action, pool, addr := pos[0], pos[1], pos[2]
	q := ""
	switch action {
	case "drain", "disable", "enable":
		if len(pos) != 3 {
			fmt.Fprintln(stderr, backendUsage)
			return 2
		}
	case "weight":
		if len(pos) != 4 {
			fmt.Fprintln(stderr, "holdfast backend weight needs N: "+backendUsage)
			return 2
		}
		if _, err := strconv.Atoi(pos[3]); err != nil {
			fmt.Fprintf(stderr, "holdfast backend: weight %q is not a number\n", pos[3])
			return 2
		}
		q = "?value=" + url.QueryEscape(pos[3])
	default:
		fmt.Fprintf(stderr, "holdfast backend: unknown action %q\n%s\n", action, backendUsage)
		return 2
	}
	tok, err := adminToken(*tokenFile)
	if err != nil {
		fmt.Fprintln(stderr, "holdfast backend:", err)
		return 1
	}
	base := *adminAddr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	target := strings.TrimSuffix(base, "/") + "/backends/" + url.PathEscape(pool) + "/" + url.PathEscape(addr) + "/" + action + q
	req, err := http.NewRequest(http.MethodPost, target, nil)
	if err != nil {
		fmt.Fprintln(stderr, "holdfast backend:", err)
		return 2
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "holdfast backend:", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "holdfast backend %s %s %s: %s: %s", action, pool, addr, resp.Status, body)
		if len(body) == 0 || body[len(body)-1] != '\n' {
			fmt.Fprintln(stderr)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s %s %s: ok\n", action, pool, addr)
	return 0
}
