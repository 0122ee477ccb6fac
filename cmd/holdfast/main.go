// Command holdfast is an L4/L7 reverse-proxy load balancer that holds fast
// to what it knows when DNS, backends or configs misbehave.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
)

var (
	version = "dev"
	commit  = "none"
)

const usage = `usage: holdfast [--log-level L] [--log-format F] COMMAND [ARGS]

commands:
  run [-c FILE] [--handoff SOCK]
                           serve (FILE defaults to holdfast.yaml); SIGHUP reloads, SIGTERM drains;
                           --handoff: take the listening sockets over from the holdfast serving
                           SOCK, if any, then serve SOCK for the next one (see docs/upgrade.md)
  check [-c FILE] [--resolve]
                           validate the config; --resolve also resolves discovery and probes health
  drill [-c FILE] [--max-incident D] [--list] [DRILL...]
                           rehearse incidents (servfail, dns-outage, backend-kill, ...) against
                           FILE's pools with simulated DNS and backends on loopback; exit 1 if
                           a drill lost a request the config could have saved
  demo                     self-contained demo: embedded config, in-process backends and DNS
  version                  print version, commit and Go version
  probe [--token-file FILE] URL
                           exit 0 if URL answers 200 (a Docker HEALTHCHECK without a shell);
                           sends the admin token from FILE or $HOLDFAST_ADMIN_TOKEN, if any
  backend drain|disable|enable|weight POOL ADDRESS [N] [--admin ADDR] [--token-file FILE]
                           operator override of one backend through the admin API
                           (ADDR defaults to 127.0.0.1:9901); exit 1 for an unknown pool or backend

global flags:
  --log-level debug|info|warn|error   (default info)
  --log-format json|text              (default json)
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without os.Exit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	gf := flag.NewFlagSet("holdfast", flag.ContinueOnError)
	gf.SetOutput(stderr)
	gf.Usage = func() { fmt.Fprint(stderr, usage) }
	level := gf.String("log-level", "info", "")
	format := gf.String("log-format", "json", "")
	if err := gf.Parse(args); err != nil {
		return 2
	}
	// The flags before the command are checked here; the logger is made
	// once those after it are read too.
	if _, err := newLogger(stderr, *level, *format); err != nil {
		fmt.Fprintln(stderr, "holdfast:", err)
		return 2
	}
	rest := gf.Args()
	if len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, cargs := rest[0], rest[1:]
	// Global flags may also follow the command.
	cargs, err := stripGlobals(cargs, level, format)
	if err != nil {
		fmt.Fprintln(stderr, "holdfast:", err)
		return 2
	}
	log, err := newLogger(stderr, *level, *format)
	if err != nil {
		fmt.Fprintln(stderr, "holdfast:", err)
		return 2
	}
	ctx := context.Background()
	switch cmd {
	case "run":
		return cmdRun(ctx, cargs, stderr, log)
	case "check":
		return cmdCheck(ctx, cargs, stdout, stderr, log)
	case "demo":
		return cmdDemo(ctx, cargs, stdout, stderr, log)
	case "version":
		fmt.Fprintf(stdout, "holdfast %s (commit %s, %s %s/%s)\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "probe":
		return cmdProbe(cargs, stderr)
	case "backend":
		return cmdBackend(cargs, stdout, stderr)
	case "drill":
		return cmdDrill(ctx, cargs, stdout, stderr, log)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "holdfast: unknown command %q\n%s", cmd, usage)
	return 2
}

func stripGlobals(args []string, level, format *string) ([]string, error) {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		for _, g := range []struct {
			name string
			dst  *string
		}{{"log-level", level}, {"log-format", format}} {
			for _, p := range []string{"-" + g.name, "--" + g.name} {
				if a == p {
					if i+1 >= len(args) {
						return nil, fmt.Errorf("%s needs a value", a)
					}
					*g.dst = args[i+1]
					i++
					a = ""
				} else if v, ok := strings.CutPrefix(a, p+"="); ok {
					*g.dst = v
					a = ""
				}
			}
		}
		if a != "" {
			out = append(out, a)
		}
	}
	return out, nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad --log-level %q (want debug, info, warn or error)", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, errors.New("bad --log-format " + format + " (want json or text)")
}
