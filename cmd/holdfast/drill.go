package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/holdfast-lb/holdfast/drill"
)

// cmdDrill is `holdfast drill [-c FILE] [--max-incident D] [DRILL...]`:
// exit 0 when no drill lost a request the config could have saved, 1 when
// one did (or could not run), 2 for a bad config or usage.
func cmdDrill(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	fs := flag.NewFlagSet("drill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "holdfast.yaml", "config file")
	maxIncident := fs.Duration("max-incident", 0, "cap every incident's length (shorter runs, less realistic)")
	list := fs.Bool("list", false, "list the drills and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: holdfast drill [-c FILE] [--max-incident D] [--list] [DRILL...]\ndrills: %s\n", strings.Join(drill.Names(), ", "))
	}
	// Flags may follow the drill names too.
	var names []string
	rest := args
	for range len(args) + 1 {
		if err := fs.Parse(rest); err != nil {
			return 2
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		names = append(names, rest[0])
		rest = rest[1:]
	}
	if *list {
		for _, n := range drill.Names() {
			fmt.Fprintf(stdout, "%-15s %s\n", n, drill.About(n))
		}
		return 0
	}
	// holdfast's own logs during the drills are the incidents' expected
	// warnings; they are shown only with --log-level debug.
	dlog := slog.New(slog.DiscardHandler)
	if log.Enabled(ctx, slog.LevelDebug) {
		dlog = log
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	results, notes, err := drill.Run(ctx, *path, names, drill.Options{Log: dlog, MaxIncident: *maxIncident})
	if err != nil {
		var ue *drill.UsageError
		if errors.As(err, &ue) {
			fmt.Fprintln(stderr, "holdfast drill:", err)
			return 2
		}
		fmt.Fprintln(stderr, "holdfast drill:", err)
		return 1
	}
	drill.WriteTable(stdout, results, notes)
	lost := 0
	for _, r := range results {
		if r.Lost() {
			lost++
		}
	}
	fmt.Fprintf(stdout, "\n%d drill(s) in %s: ", len(results), time.Since(start).Round(100*time.Millisecond))
	if lost > 0 {
		fmt.Fprintf(stdout, "%d lost requests the config could have saved (or could not run)\n", lost)
		return 1
	}
	fmt.Fprintln(stdout, "no request lost that the config could have saved")
	return 0
}
