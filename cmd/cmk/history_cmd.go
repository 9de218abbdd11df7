package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/guidance"
)

// historyFlags are the period and format flags of cmk history and its
// report.
type historyFlags struct {
	since, until, format string
}

func (f *historyFlags) register(cmd *cobra.Command, formats string) {
	cmd.Flags().StringVarP(&f.format, "output", "o", "text", "output format: "+formats)
	cmd.Flags().StringVar(&f.since, "since", "", "start of the period: RFC 3339, or a duration back from now (30d); default 90 days back")
	cmd.Flags().StringVar(&f.until, "until", "", "end of the period: RFC 3339, or a duration back from now; default now")
}

func (f *historyFlags) params() (cmkapi.HistoryParams, error) {
	now := time.Now()
	var p cmkapi.HistoryParams
	var err error
	if p.Since, err = whenFlag("--since", f.since, now); err != nil {
		return p, err
	}
	p.Until, err = whenFlag("--until", f.until, now)
	return p, err
}

func checkFormat(format string, allowed ...string) error {
	for _, a := range allowed {
		if format == a {
			return nil
		}
	}
	list := strings.Join(allowed[:len(allowed)-1], ", ") + " or " + allowed[len(allowed)-1]
	return usageError(fmt.Errorf("--output %q is not a known format", format), "use --output "+list)
}

func newHistoryCmd() *cobra.Command {
	conn := &connFlags{}
	f := &historyFlags{}
	cmd := &cobra.Command{
		Use:   "history",
		Short: "List the episodes of the org's key not being healthy, and which stores refused data",
		Long: `List, newest first, each episode of the org's key not being HEALTHY: when it
started and ended, how long it lasted, its causes as they changed, the worst
state, when the org's data was refused, and per store (lake, profile,
profile-cache) the first and last refused request, how many, and when data
was served again. Times are ISO 8601 with their zone.

"cmk history report" writes the access report of the same period for an
auditor: JSON, or a printable HTML page (-o html > report.html).
` + exitHelp("the history was listed", ""),
		Example: `  cmk history --info cmk.json --since 30d
  cmk history --info cmk.json -o json
  cmk history report --info cmk.json -o html > report.html`,
		Args:    exactArgs(0, ""),
		PreRunE: func(*cobra.Command, []string) error { return checkFormat(f.format, "text", "json") },
		RunE: clientRun(conn, nil, func(cmd *cobra.Command, c *client, _ []string) error {
			p, err := f.params()
			if err != nil {
				return err
			}
			h, raw, err := c.History(cmd.Context(), p)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if f.format == "json" {
				return printRaw(w, raw)
			}
			fmt.Fprintf(w, "Key history of %s, %s to %s\n", h.Org, clock(h.Since), clock(h.Until))
			if len(h.Episodes) == 0 {
				fmt.Fprintln(w, "The key was healthy throughout.")
				return nil
			}
			for _, e := range h.Episodes {
				printEpisode(w, e)
			}
			return nil
		}),
	}
	conn.register(cmd)
	f.register(cmd, "text or json")
	flagErrors(cmd)
	cmd.AddCommand(newHistoryReportCmd())
	return cmd
}

func printEpisode(w io.Writer, e cmkapi.Episode) {
	end := "ongoing"
	if e.End != nil {
		end = clock(*e.End)
	}
	fmt.Fprintf(w, "\n%s → %s (%s), worst %s\n", clock(e.Start), end, forPeople(e.DurationSeconds), e.WorstState)
	for _, c := range e.Causes {
		fmt.Fprintf(w, "  %s  %s  %s\n", clock(c.At), c.State, c.Cause)
	}
	if e.BlockedFrom == nil {
		fmt.Fprintln(w, "  Data was served throughout.")
	} else {
		until := "now"
		if e.BlockedUntil != nil {
			until = clock(*e.BlockedUntil)
		}
		fmt.Fprintf(w, "  Data refused from %s until %s (%s)\n", clock(*e.BlockedFrom), until, forPeople(e.BlockedSeconds))
	}
	for _, s := range e.Stores {
		resumed := "not yet"
		if s.Resumed != nil {
			resumed = clock(*s.Resumed)
		}
		fmt.Fprintf(w, "  %-13s refused %d from %s to %s, served again %s\n", s.Store, s.Refused, clockPtr(s.FirstRefused), clockPtr(s.LastRefused), resumed)
	}
}

// forPeople is a duration in whole seconds, for people.
func forPeople(sec int64) string {
	if sec < 1 {
		return "under a second"
	}
	return guidance.Duration(time.Duration(sec) * time.Second)
}

func clockPtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return clock(*t)
}

func newHistoryReportCmd() *cobra.Command {
	conn := &connFlags{}
	f := &historyFlags{}
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Write the org's access report: JSON, or a printable HTML page",
		Long: `Write the org's access report over a period: the org, its keys, the total
time its data was refused, each episode with the stores that refused data
and when they were served again, and the audit entries of revocation and
recovery. -o html writes a self-contained page without scripts, for
printing or filing.
` + exitHelp("the report was written", ""),
		Example: `  cmk history report --info cmk.json -o html > report.html
  cmk history report --info cmk.json --since 2026-10-01T00:00:00Z --until 2027-01-01T00:00:00Z`,
		Args:    exactArgs(0, ""),
		PreRunE: func(*cobra.Command, []string) error { return checkFormat(f.format, "text", "json", "html") },
		RunE: clientRun(conn, nil, func(cmd *cobra.Command, c *client, _ []string) error {
			p, err := f.params()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if f.format == "html" {
				page, err := c.AccessReportHTML(cmd.Context(), p)
				if err != nil {
					return err
				}
				_, err = w.Write(page)
				return err
			}
			rep, raw, err := c.AccessReport(cmd.Context(), p)
			if err != nil {
				return err
			}
			if f.format == "json" {
				return printRaw(w, raw)
			}
			fmt.Fprintf(w, "Access report of %s, %s to %s\n", rep.Org, clock(rep.Since), clock(rep.Until))
			fmt.Fprintf(w, "Keys: %s\n", strings.Join(rep.Keys, ", "))
			fmt.Fprintf(w, "Episodes: %d; data refused in all: %s\n", len(rep.Episodes), forPeople(rep.BlockedSeconds))
			for _, e := range rep.Episodes {
				printEpisode(w, e)
			}
			if len(rep.Audit) > 0 {
				fmt.Fprintln(w, "\nAudit entries (revocation and recovery):")
				for _, a := range rep.Audit {
					fmt.Fprintf(w, "  %s  %s  %s  %s\n", clock(a.At), a.Operation, a.Actor, oneLine(a.Detail))
				}
			}
			return nil
		}),
	}
	conn.register(cmd)
	f.register(cmd, "text, json or html")
	flagErrors(cmd)
	return cmd
}
