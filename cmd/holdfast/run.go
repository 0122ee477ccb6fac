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
	"syscall"
	"time"

	"github.com/holdfast-lb/holdfast/app"
	"github.com/holdfast-lb/holdfast/config"
)

func cmdRun(ctx context.Context, args []string, stderr io.Writer, log *slog.Logger) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "holdfast.yaml", "config file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printConfigErrors(stderr, *path, err)
		return 1
	}
	a := app.New(cfg, app.Options{Log: log, ConfigPath: *path})
	return serve(ctx, a, log)
}

// serve runs a until SIGTERM/SIGINT, reloading on SIGHUP.
func serve(ctx context.Context, a *app.App, log *slog.Logger) int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	if err := a.Start(ctx); err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	log.Info("holdfast started", "version", version, "admin", a.AdminAddr().String())
	for s := range sigs {
		switch s {
		case syscall.SIGHUP:
			_, _ = a.Reload()
		default:
			log.Info("signal received, draining", "signal", s.String())
			done := make(chan struct{})
			go func() { a.Shutdown(context.Background()); close(done) }()
			select {
			case <-done:
			case s2 := <-sigs:
				if s2 == syscall.SIGINT || s2 == syscall.SIGTERM {
					log.Warn("second signal: exiting without waiting")
					return 1
				}
				<-done
			}
			return 0
		}
	}
	return 0
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

func cmdProbe(args []string, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: holdfast probe URL")
		return 2
	}
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(args[0])
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
