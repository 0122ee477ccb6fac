package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/holdfast-lb/holdfast/app"
	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/handoff"
)

func cmdRun(ctx context.Context, args []string, stderr io.Writer, log *slog.Logger) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "holdfast.yaml", "config file")
	handoffPath := fs.String("handoff", "", "unix socket on which a running holdfast hands its listening sockets to a new one (upgrade without refusing connections)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printConfigErrors(stderr, *path, err)
		return 1
	}
	opts := app.Options{Log: log, ConfigPath: *path, DescriptorLimit: applyLimits(log)}
	var ho *handoff.Handoff
	if *handoffPath != "" {
		// Only once the config is known good: a bad one never disturbs
		// the running process.
		if ho, err = handoff.Inherit(*handoffPath, version, log); err != nil {
			log.Error("handoff failed", "err", err)
			return 1
		}
		opts.Inherited = ho.Inherited()
		opts.State = ho.State()
	}
	a := app.New(cfg, opts)
	return serveHandoff(ctx, a, log, ho)
}

// serve runs a until SIGTERM/SIGINT, reloading on SIGHUP.
func serve(ctx context.Context, a *app.App, log *slog.Logger) int {
	return serveHandoff(ctx, a, log, nil)
}

// serveHandoff is serve with an optional socket handoff: a takeover by a
// successor drains this process as SIGTERM would, less drain_delay.
func serveHandoff(ctx context.Context, a *app.App, log *slog.Logger, ho *handoff.Handoff) int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	if err := a.Start(ctx); err != nil {
		log.Error("start failed", "err", err)
		if ho != nil {
			ho.Abort() // the previous process keeps serving
		}
		return 1
	}
	var takeover <-chan struct{}
	if ho != nil {
		ch, err := ho.Complete(a, app.AdminKey(a.Config().Admin.Listen))
		if err != nil {
			log.Error("handoff: serving, but a later process cannot take over from this one", "err", err)
		}
		takeover = ch
	}
	log.Info("holdfast started", "version", version, "admin", a.AdminAddr().String())
	var drained chan struct{} // closed when a drain has finished
	handedOver := false
	for {
		select {
		case <-drained:
			if handedOver {
				// "SIGTERM the old process", the documented last step of an
				// upgrade, may arrive after a fast drain has finished: the
				// process is exiting anyway, so it must not die of it.
				signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
			}
			return 0
		case <-takeover:
			takeover = nil
			if drained != nil {
				continue
			}
			log.Info("handoff: a new process took over the listening sockets; draining")
			handedOver = true
			drained = make(chan struct{})
			go func() { a.HandOver(context.Background()); close(drained) }()
		case s := <-sigs:
			switch {
			case s == syscall.SIGHUP:
				if drained == nil {
					_, _ = a.Reload()
				}
			case drained == nil && ho.SuccessorServing(5*time.Second):
				// The takeover is done but not yet seen above.
				log.Info("signal received after a new process took over the listening sockets; draining", "signal", s.String())
				takeover = nil
				handedOver = true
				drained = make(chan struct{})
				go func() { a.HandOver(context.Background()); close(drained) }()
			case drained == nil:
				log.Info("signal received, draining", "signal", s.String())
				ho.Stop()
				drained = make(chan struct{})
				go func() { a.Shutdown(context.Background()); close(drained) }()
			case handedOver:
				// The usual upgrade step "SIGTERM the old process" may
				// arrive after the takeover began the same drain.
				log.Info("signal received; already draining after a handoff", "signal", s.String())
			default:
				log.Warn("second signal: exiting without waiting")
				return 1
			}
		}
	}
}

func printConfigErrors(w io.Writer, path string, err error) {
	if fes := config.Errors(err); len(fes) > 0 {
		for _, fe := range fes {
			fmt.Fprintln(w, fe.Error())
		}
		fmt.Fprintf(w, "%s: %d error(s)\n", path, len(fes))
		return
	}
	fmt.Fprintf(w, "%s: %v\n", path, err)
}

// tokenEnv names the environment variable that holds an admin token for
// the commands that call the admin API (--token-file wins over it).
const tokenEnv = "HOLDFAST_ADMIN_TOKEN"

// adminToken is the bearer token to send: read from file, else from
// $HOLDFAST_ADMIN_TOKEN, else none.
func adminToken(file string) (string, error) {
	if file != "" {
		return config.ReadToken(file)
	}
	return strings.TrimSpace(os.Getenv(tokenEnv)), nil
}

func cmdProbe(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tokenFile := fs.String("token-file", "", "file holding the admin token (default: $"+tokenEnv+")")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: holdfast probe [--token-file FILE] URL")
		return 2
	}
	tok, err := adminToken(*tokenFile)
	if err != nil {
		fmt.Fprintln(stderr, "probe:", err)
		return 2
	}
	req, err := http.NewRequest(http.MethodGet, fs.Arg(0), nil)
	if err != nil {
		fmt.Fprintln(stderr, "probe:", err)
		return 2
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "probe:", err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, "probe:", resp.Status)
		return 1
	}
	return 0
}
