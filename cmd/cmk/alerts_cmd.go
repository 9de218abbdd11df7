package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/guidance"
)

func newAlertsCmd() *cobra.Command {
	conn := &connFlags{}
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "alerts",
		Short: "List, show and acknowledge key alerts",
		Long: `Key alerts are raised by the key-health monitor when the platform cannot use
an org's customer-managed key, in three kinds:

  Key access disabled   the key is disabled in the vault
  Key access failure    the key, vault, role, consent or network is gone or refused
  Alert notification    transient trouble (timeouts, throttling) or flapping access

Each alert carries its cause, probable causes and numbered steps. It stays
OPEN while the problem lasts and is RESOLVED on the first good check after.
Acknowledging records that someone is on it; it does not close the alert.

An alert ID may be shortened to any prefix that names one alert of the org
(the list shows the shortest such prefix of at least 8 characters).`,
		Example: `  cmk alerts list --info cmk.json
  cmk alerts list --info cmk.json --status OPEN --output json
  cmk alerts show --info cmk.json 5b0c6d1e-...
  cmk alerts ack --info cmk.json 5b0c6d1e-...`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	conn.register(cmd)
	out.register(cmd, true)
	flagErrors(cmd)
	cmd.AddCommand(newAlertsListCmd(conn, &out), newAlertsShowCmd(conn, &out), newAlertsAckCmd(conn, &out))
	return cmd
}

func newAlertsListCmd(conn *connFlags, out *outputFlag) *cobra.Command {
	var status string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List alerts, newest first",
		Long: `List the org's key alerts: id, kind, cause, status, first and last seen, and
how many times the check found the problem. Use 'cmk alerts show ID' for the
steps.
` + exitHelp("the alerts were listed", ""),
		Example: `  cmk alerts list --info cmk.json
  cmk alerts list --info cmk.json --status OPEN
  cmk alerts list --info cmk.json --output json | jq -r '.alerts[].id'`,
		Args: exactArgs(0, ""),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			switch strings.ToUpper(status) {
			case "", cmkapi.AlertOpen, cmkapi.AlertResolved:
				status = strings.ToUpper(status)
				return nil
			}
			return usageError(fmt.Errorf("--status %q is not an alert status", status), "use --status OPEN or --status RESOLVED, or leave it out for all alerts")
		},
		RunE: clientRun(conn, out, func(cmd *cobra.Command, c *client, _ []string) error {
			list, raw, err := c.Alerts(cmd.Context(), status)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if out.json() {
				return printRaw(w, raw)
			}
			if len(list.Alerts) == 0 {
				if status == "" {
					fmt.Fprintln(w, "No alerts.")
				} else {
					fmt.Fprintf(w, "No %s alerts.\n", status)
				}
				return nil
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tKIND\tCAUSE\tSTATUS\tFIRST SEEN\tLAST SEEN\tOCCURRENCES")
			ids := make([]string, len(list.Alerts))
			for i, a := range list.Alerts {
				ids[i] = a.ID
			}
			for _, a := range list.Alerts {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", shortID(a.ID, ids), kindTitle(a), a.Cause, statusLabel(a), clock(a.FirstSeen), clock(a.LastSeen), a.Occurrences)
			}
			return tw.Flush()
		}),
	}
	cmd.Flags().StringVar(&status, "status", "", "only alerts with this status: OPEN or RESOLVED")
	return cmd
}

func newAlertsShowCmd(conn *connFlags, out *outputFlag) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show an alert with its causes and numbered steps",
		Long: `Show one alert: what happened, what the last check found, whether the org's
data is refused, the probable causes and the numbered steps to resolve it.
` + exitHelp("the alert was shown", ""),
		Example: `  cmk alerts show --info cmk.json 5b0c6d1e-0d4f-4d8e-9a55-0c2b1c3e4f5a`,
		Args:    exactArgs(1, "the alert ID (see 'cmk alerts list')"),
		RunE: clientRun(conn, out, func(cmd *cobra.Command, c *client, args []string) error {
			id, err := resolveAlertID(cmd, c, args[0])
			if err != nil {
				return err
			}
			a, raw, err := c.Alert(cmd.Context(), id)
			if err != nil {
				return err
			}
			if out.json() {
				return printRaw(cmd.OutOrStdout(), raw)
			}
			printAlert(cmd.OutOrStdout(), *a)
			return nil
		}),
	}
}

func newAlertsAckCmd(conn *connFlags, out *outputFlag) *cobra.Command {
	return &cobra.Command{
		Use:   "ack ID",
		Short: "Acknowledge an alert (someone is on it)",
		Long: `Record that someone is handling the alert. The alert stays OPEN until the
key's next good check resolves it.
` + exitHelp("the alert is acknowledged", ""),
		Example: `  cmk alerts ack --info cmk.json 5b0c6d1e-0d4f-4d8e-9a55-0c2b1c3e4f5a`,
		Args:    exactArgs(1, "the alert ID (see 'cmk alerts list')"),
		RunE: clientRun(conn, out, func(cmd *cobra.Command, c *client, args []string) error {
			id, err := resolveAlertID(cmd, c, args[0])
			if err != nil {
				return err
			}
			a, raw, err := c.AcknowledgeAlert(cmd.Context(), id)
			if err != nil {
				return err
			}
			if out.json() {
				return printRaw(cmd.OutOrStdout(), raw)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Acknowledged alert %s (%s, %s) as %s.\n", a.ID, kindTitle(*a), a.Status, a.AcknowledgedBy)
			return nil
		}),
	}
}

func kindTitle(a cmkapi.Alert) string {
	if a.Title != "" {
		return a.Title
	}
	if t := guidance.AlertTitle(a.Kind); t != "" {
		return t
	}
	return a.Kind
}

func statusLabel(a cmkapi.Alert) string {
	if a.AcknowledgedAt != nil && a.Status == "OPEN" {
		return "OPEN (acked)"
	}
	return a.Status
}

// printAlert writes one alert for a person.
func printAlert(w io.Writer, a cmkapi.Alert) {
	fmt.Fprintf(w, "%s — %s\n", kindTitle(a), statusLabel(a))
	fmt.Fprintf(w, "  id:          %s\n", a.ID)
	fmt.Fprintf(w, "  org:         %s\n", a.OrgID)
	fmt.Fprintf(w, "  cause:       %s\n", a.Cause)
	fmt.Fprintf(w, "  first seen:  %s\n", clock(a.FirstSeen))
	fmt.Fprintf(w, "  last seen:   %s (found by %d check(s))\n", clock(a.LastSeen), a.Occurrences)
	if a.ResolvedAt != nil {
		fmt.Fprintf(w, "  resolved:    %s\n", clock(*a.ResolvedAt))
	}
	if a.AcknowledgedAt != nil {
		fmt.Fprintf(w, "  acknowledged: %s by %s\n", clock(*a.AcknowledgedAt), a.AcknowledgedBy)
	}
	if a.DataBlocked && a.Status == "OPEN" {
		fmt.Fprintln(w, "  data:        REFUSED — every read and write of the org's data fails until this is resolved")
	}
	if a.Summary != "" {
		fmt.Fprintf(w, "\n%s\n", a.Summary)
	}
	if a.Message != "" {
		fmt.Fprintf(w, "Last check found: %s\n", a.Message)
	}
	if len(a.ProbableCauses) > 0 {
		fmt.Fprintln(w, "\nProbable causes:")
		for _, pc := range a.ProbableCauses {
			fmt.Fprintf(w, "  - %s\n", pc)
		}
	}
	if len(a.Steps) > 0 {
		fmt.Fprintln(w, "\nWhat to do:")
		printSteps(w, "  ", a.Steps)
	}
}

// shortIDLen is the shortest alert ID prefix shown: long enough to stay
// unique among an org's alerts in practice and to read aloud.
const shortIDLen = 8

// shortID is the shortest prefix of id, at least shortIDLen long, that no
// other ID in ids starts with.
func shortID(id string, ids []string) string {
	n := min(shortIDLen, len(id))
	for ; n < len(id); n++ {
		unique := true
		for _, o := range ids {
			if o != id && strings.HasPrefix(o, id[:n]) {
				unique = false
				break
			}
		}
		if unique {
			break
		}
	}
	return id[:n]
}

// resolveAlertID turns what was typed (a whole alert ID, or a prefix of
// one) into the org's alert ID, listing the org's alerts for a prefix.
func resolveAlertID(cmd *cobra.Command, c *client, typed string) (string, error) {
	typed = strings.ToLower(strings.TrimSpace(typed))
	if typed == "" {
		return "", usageError(errors.New("the alert ID is empty"), "pass an ID or a prefix of one from 'cmk alerts list'")
	}
	if len(typed) == 36 { // a whole UUID: the server answers for it
		return typed, nil
	}
	list, _, err := c.Alerts(cmd.Context(), "")
	if err != nil {
		return "", c.explain(err)
	}
	var found []string
	for _, a := range list.Alerts {
		if strings.HasPrefix(a.ID, typed) {
			found = append(found, a.ID)
		}
	}
	switch len(found) {
	case 0:
		// Let the server answer: an ID of another length it may still know.
		return typed, nil
	case 1:
		return found[0], nil
	}
	n := len(found)
	if n > 5 {
		found = append(found[:5], "...")
	}
	return "", usageError(fmt.Errorf("%q is the start of %d alert IDs: %s", typed, n, strings.Join(found, ", ")),
		"type more of the ID (see 'cmk alerts list')")
}
