package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/holdfast-lb/holdfast/app"
	"github.com/holdfast-lb/holdfast/config"
)

func cmdCheck(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "holdfast.yaml", "config file")
	resolve := fs.Bool("resolve", false, "also resolve discovery and probe health once")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printConfigErrors(stderr, *path, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: valid (%d listeners, %d pools)\n", *path, len(cfg.Listeners), len(cfg.Pools))
	warnings := config.Warnings(cfg)
	// The limit run would have: the soft limit raised to the hard one.
	if n, err := raiseFileLimit(); err == nil {
		warnings = append(warnings, config.DescriptorWarnings(cfg, n)...)
	}
	for _, w := range warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if !*resolve {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	report := app.Resolve(ctx, cfg, log)
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	var empty []string
	for _, p := range report {
		fmt.Fprintf(tw, "\npool %s (%s)\n", p.Pool, p.Source)
		if p.Err != nil {
			fmt.Fprintf(tw, "  error: %v\n", p.Err)
		}
		fmt.Fprintln(tw, "  BACKEND\tPRIORITY\tWEIGHT\tHEALTH")
		for _, b := range p.Backends {
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%s\n", b.Address, b.Priority, b.Weight, b.Health)
		}
		for _, sk := range p.Skipped {
			fmt.Fprintf(tw, "  skipped value %s\n", sk)
		}
		if p.Healthy == 0 {
			fmt.Fprintf(tw, "  => pool %s would start EMPTY\n", p.Pool)
			empty = append(empty, strconv.Quote(p.Pool))
		}
	}
	_ = tw.Flush()
	if len(empty) > 0 {
		fmt.Fprintf(stdout, "\nwould start empty: pool %s\n", strings.Join(empty, ", pool "))
		return 1
	}
	return 0
}
