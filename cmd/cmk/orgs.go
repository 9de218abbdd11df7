package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/guidance"
)

func newOrgsCmd() *cobra.Command {
	var opURL, tokenFile, state string
	var active bool
	var limit int
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "orgs",
		Short: "The operator's view: orgs by key state, with cause, since, coasting deadline and job progress",
		Long: `List the orgs on their own keys and those with an unfinished enablement job,
for the platform's operators: each org's key state (HEALTHY, DEGRADED, COASTING,
REVOKED, or SYSTEM_MANAGED while a job runs), its cause and since when, until
when a coasting org's data is still served, and the job's progress.

It talks to the operator listener (cmk serve --operator-addr), never to the
API tenants use, with the operator token: --operator-token-file FILE, or
CMK_OPERATOR_TOKEN.
` + exitHelp("the orgs were listed", ""),
		Example: `  cmk orgs --operator-url http://127.0.0.1:9090 --operator-token-file /etc/cmk/operator-token
  CMK_OPERATOR_URL=http://10.0.0.5:9090 CMK_OPERATOR_TOKEN=... cmk orgs --state REVOKED
  cmk orgs --jobs-active --output json | jq '.orgs[].job'`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			if opURL == "" {
				opURL = os.Getenv("CMK_OPERATOR_URL")
			}
			if u, err := url.Parse(opURL); opURL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return usageError(fmt.Errorf("--operator-url %q is not an http(s) URL", opURL), "pass the operator listener's URL (cmk serve --operator-addr) with --operator-url or CMK_OPERATOR_URL")
			}
			token := os.Getenv("CMK_OPERATOR_TOKEN")
			if tokenFile != "" {
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return usageError(fmt.Errorf("read --operator-token-file: %w", err), "the file holds the operator token the service was started with")
				}
				token = strings.TrimRight(string(b), "\r\n")
			}
			if token == "" {
				return usageError(errors.New("no operator token"), "pass --operator-token-file FILE or set CMK_OPERATOR_TOKEN")
			}
			c := &cmkapi.OperatorClient{BaseURL: strings.TrimRight(opURL, "/"), Token: token, HTTP: &http.Client{Timeout: time.Minute}}
			list, raw, err := c.Orgs(cmd.Context(), cmkapi.OperatorParams{State: strings.ToUpper(state), ActiveJobs: active, Limit: limit})
			if err != nil {
				var ae *cmkapi.Error
				if errors.As(err, &ae) {
					return &exitError{code: exitUsage, err: withHint(err, "check the operator token and the filters")}
				}
				return &exitError{code: exitUsage, err: withHint(err, "is the operator listener running there (cmk serve --operator-addr)?")}
			}
			w := cmd.OutOrStdout()
			if out.json() {
				return printRaw(w, raw)
			}
			printOrgs(w, list)
			return nil
		},
	}
	cmd.Flags().StringVar(&opURL, "operator-url", "", "the operator listener's URL (env CMK_OPERATOR_URL)")
	cmd.Flags().StringVar(&tokenFile, "operator-token-file", "", "file holding the operator token (or env CMK_OPERATOR_TOKEN)")
	cmd.Flags().StringVar(&state, "state", "", "only orgs in this state: HEALTHY, DEGRADED, COASTING, REVOKED or SYSTEM_MANAGED")
	cmd.Flags().BoolVar(&active, "jobs-active", false, "only orgs with an unfinished enablement job")
	cmd.Flags().IntVar(&limit, "limit", 500, "at most this many orgs (1 to 5000)")
	out.register(cmd, false)
	flagErrors(cmd)
	return cmd
}

// leaseText says which worker holds a job's lease and until when, or that
// the lease was left to expire by a worker that stopped.
func leaseText(j *cmkapi.OperatorJob, now time.Time) string {
	if j.LeaseHolder == "" || j.LeaseUntil == nil {
		return ""
	}
	if j.LeaseUntil.Before(now) {
		return fmt.Sprintf(", lease of %s expired %s", j.LeaseHolder, clock(*j.LeaseUntil))
	}
	return fmt.Sprintf(", held by %s until %s", j.LeaseHolder, clock(*j.LeaseUntil))
}

func printOrgs(w interface{ Write([]byte) (int, error) }, l *cmkapi.OperatorOrgList) {
	var parts []string
	for _, st := range []string{cmkapi.StateHealthy, cmkapi.StateDegraded, cmkapi.StateCoasting, cmkapi.StateRevoked, cmkapi.StateSystemManaged} {
		parts = append(parts, fmt.Sprintf("%s %d", st, l.Counts[st]))
	}
	fmt.Fprintf(w, "Orgs at %s: %s\n", clock(l.GeneratedAt), strings.Join(parts, ", "))
	if len(l.Orgs) == 0 {
		fmt.Fprintln(w, "No org matches.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ORG\tSTATE\tCAUSE\tSINCE\tDATA SERVED UNTIL\tJOB")
	for _, o := range l.Orgs {
		since, until, job := "-", "-", "-"
		if o.Since != nil {
			since = clock(*o.Since)
		}
		if o.CoastingUntil != nil {
			until = clock(*o.CoastingUntil)
		}
		if j := o.Job; j != nil {
			job = fmt.Sprintf("%s %s %d/%d", j.Name, j.Status, j.Done, j.Total)
			if j.LastError != nil {
				job += " (" + j.LastError.Code + ")"
			}
			job += ", for " + guidance.Duration(time.Since(j.CreatedAt))
			job += leaseText(j, time.Now())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", oneLine(o.OrgID), o.State, oneLine(o.Cause), since, until, oneLine(job))
	}
	tw.Flush()
	if l.Next != "" {
		fmt.Fprintf(w, "(more orgs follow %s; narrow with --state or raise --limit)\n", l.Next)
	}
}
