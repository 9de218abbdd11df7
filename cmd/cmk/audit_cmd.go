package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/cmkapi"
)

func newAuditCmd() *cobra.Command {
	conn := &connFlags{}
	var since, until, op, actor, format string
	var limit int
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "List the org's audit trail: key operations and administrators' actions",
		Long: `List the org's audit trail, newest first: every call to the customer key
(describe, wrap, unwrap), the monitor's findings (revocation, recovery,
rotation) and every administrator's action (config.submit, alert.acknowledge,
webhook.add, webhook.delete, health.recheck, sandbox.create, tenant.bind),
with the time, the actor and the outcome. No entry holds key material.

The actor is "system" for the service's own work, "user:<subject>" for a
request made with a platform token, and "tenant-admin:<tenant>" for the Azure
administrator who gave consent.

--since and --until take an RFC 3339 time (2026-01-02T15:04:05Z) or a
duration back from now (90m, 24h, 7d). --output csv writes the entries as a
spreadsheet-safe CSV file with a header row, for an auditor to take away.
` + exitHelp("the entries were listed", ""),
		Example: `  cmk audit --info cmk.json --since 24h
  cmk audit --info cmk.json --actor system --op revocation
  cmk audit --info cmk.json --since 2026-11-01T00:00:00Z --until 2026-12-01T00:00:00Z --output csv > audit.csv`,
		Args: exactArgs(0, ""),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			switch format {
			case "text", "json", "csv":
				return nil
			}
			return usageError(fmt.Errorf("--output %q is not a known format", format), "use --output text (the default), json or csv")
		},
		RunE: clientRun(conn, nil, func(cmd *cobra.Command, c *client, _ []string) error {
			now := time.Now()
			p := cmkapi.AuditParams{Operation: op, Actor: actor, Limit: limit}
			var err error
			if p.Since, err = whenFlag("--since", since, now); err != nil {
				return err
			}
			if p.Until, err = whenFlag("--until", until, now); err != nil {
				return err
			}
			list, raw, err := c.Audit(cmd.Context(), p)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			switch format {
			case "json":
				return printRaw(w, raw)
			case "csv":
				return cmkapi.WriteAuditCSV(w, list.Entries)
			}
			if len(list.Entries) == 0 {
				fmt.Fprintln(w, "No audit entries match.")
				return nil
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "AT\tACTOR\tOPERATION\tOUTCOME\tDETAIL")
			for _, e := range list.Entries {
				detail := e.Detail
				if detail == "" && e.Key != "" {
					detail = e.Key
					if e.KeyVersion != "" {
						detail += " (version " + e.KeyVersion + ")"
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", clock(e.At), oneLine(e.Actor), oneLine(e.Operation), oneLine(e.Outcome), oneLine(detail))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if limit > 0 && len(list.Entries) == limit {
				fmt.Fprintf(w, "(the newest %d entries; narrow with --since/--until or raise --limit)\n", limit)
			}
			return nil
		}),
	}
	conn.register(cmd)
	cmd.Flags().StringVarP(&format, "output", "o", "text", "output format: text, json or csv")
	cmd.Flags().StringVar(&since, "since", "", "only entries at or after this time: RFC 3339, or a duration back from now (24h, 7d)")
	cmd.Flags().StringVar(&until, "until", "", "only entries before this time: RFC 3339, or a duration back from now")
	cmd.Flags().StringVar(&op, "op", "", "only entries of this operation (e.g. unwrap, revocation, config.submit)")
	cmd.Flags().StringVar(&actor, "actor", "", "only entries of this actor (system, user:<subject>, tenant-admin:<tenant>)")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many entries (1 to 1000)")
	flagErrors(cmd)
	return cmd
}

// whenFlag reads a time flag: an RFC 3339 time, or a duration back from now
// in Go's form (90m, 24h) or in days (7d).
func whenFlag(name, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if n, ok := strings.CutSuffix(v, "d"); ok && err != nil {
		var days int
		if _, serr := fmt.Sscanf(n, "%d", &days); serr == nil && fmt.Sprint(days) == n {
			d, err = time.Duration(days)*24*time.Hour, nil
		}
	}
	if err != nil || d <= 0 {
		return time.Time{}, usageError(fmt.Errorf("%s %q is neither an RFC 3339 time nor a duration", name, v),
			"use a time such as 2026-01-02T15:04:05Z, or how long ago, such as 90m, 24h or 7d")
	}
	return now.Add(-d), nil
}

// oneLine keeps a table cell on one line and inert whatever it holds: runs
// of white space become one space, and control and format characters
// (terminal escapes, text-direction overrides) are shown as U+FFFD, so no
// entry can move the cursor or forge another line on the reader's terminal.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return ' '
		}
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return unicode.ReplacementChar
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}
