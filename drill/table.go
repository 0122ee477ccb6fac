package drill

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteTable prints results as the `holdfast drill` table: one row per
// drill, then its advice lines, then what the simulation changed.
func WriteTable(w io.Writer, results []Result, notes []string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DRILL\tREQUESTS\tFAILED\tAFTER SETTLING\tVERDICT\tADVICE")
	for _, r := range results {
		var advice []string
		switch {
		case r.Err != nil:
			advice = []string{r.Err.Error()}
		case r.Skip != "":
			advice = []string{"skipped: " + r.Skip}
		}
		for _, a := range r.Advice {
			advice = append(advice, a.String())
		}
		if r.Unavoidable > 0 {
			advice = append(advice, fmt.Sprintf("%d failed in flight on a failed backend (POST or TCP data already sent): no config can save those", r.Unavoidable))
		}
		failed := strconv.Itoa(r.Failed)
		if r.Unavoidable > 0 {
			failed = fmt.Sprintf("%d (%d unavoidable)", r.Failed, r.Unavoidable)
		}
		first := "-"
		if len(advice) > 0 {
			first = advice[0]
		}
		if r.Skip != "" || r.Err != nil && r.Requests == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t%s\t%s\n", r.Drill, r.Verdict, first)
		} else {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\n", r.Drill, r.Requests, failed, r.Settled, r.Verdict, first)
		}
		for _, a := range advice[min(1, len(advice)):] {
			fmt.Fprintf(tw, "\t\t\t\t\t%s\n", a)
		}
	}
	_ = tw.Flush()
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nsimulation: "+strings.Join(notes, "\n            "))
	}
}
