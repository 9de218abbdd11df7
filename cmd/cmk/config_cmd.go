package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/preflight"
)

// Job statuses (seed 001), and what each means for the person waiting.
const (
	jobNew       = cmkapi.StatusNew
	jobRunning   = cmkapi.StatusRunning
	jobUpdating  = cmkapi.StatusUpdating
	jobCompleted = cmkapi.StatusCompleted
	jobFailed    = cmkapi.StatusFailed
)

var jobMeaning = map[string]string{
	jobNew:       "waiting for a worker to pick the job up",
	jobRunning:   "validating access to the vault and the key",
	jobUpdating:  "applying the key to the stores of every sandbox",
	jobCompleted: "customer-managed keys are enabled",
	jobFailed:    "the key could not be applied; nothing changed",
}

// rewrapLabelText names the bar while data keys are re-wrapped.
const rewrapLabelText = jobUpdating + ": data keys re-wrapped"

// configPollInterval is how often --wait asks for the job's status: fast
// enough that a bar moves smoothly, slow enough not to load the service.
const configPollInterval = 250 * time.Millisecond

func newConfigCmd() *cobra.Command {
	conn := &connFlags{}
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Enable customer-managed keys and follow the enablement job",
		Long: `Send a key identifier to enable customer-managed keys for an org, and follow
the job that applies it: NEW -> RUNNING (validating the vault and key) ->
UPDATE_EXISTING_RESOURCES (re-wrapping every data key of every sandbox) ->
COMPLETED, or FAILED with the failed check and what to do.

Enabling is irreversible: the org cannot go back to system-managed keys.`,
		Example: `  cmk config create --info cmk.json --name Config1 --key-id https://contoso.vault.azure.net/keys/platform-cmk/0123... --yes --wait
  cmk config status Config1 --info cmk.json --wait
  cmk config list --info cmk.json --output json`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	conn.register(cmd)
	out.register(cmd, true)
	flagErrors(cmd)
	cmd.AddCommand(newConfigCreateCmd(conn, &out), newConfigStatusCmd(conn, &out), newConfigListCmd(conn, &out))
	return cmd
}

func newConfigCreateCmd(conn *connFlags, out *outputFlag) *cobra.Command {
	var name, keyID string
	var yes, wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "create --name NAME --key-id KEY-IDENTIFIER --yes",
		Short: "Enable customer-managed keys with a Key Vault key (irreversible)",
		Long: `Submit a configuration: the platform validates the key (status RUNNING), then
re-wraps every data key of every sandbox with it (UPDATE_EXISTING_RESOURCES),
and from then on the org's data is only readable while the key is usable.

This cannot be undone. Run 'cmk doctor KEY-IDENTIFIER' first. The command
asks for confirmation on a terminal; elsewhere pass --yes.

Remember --name: you need it to check the status. Names are case-sensitive.
With --wait, follow the job to its end with a progress bar; a FAILED job
prints the failed check and numbered steps to fix it.
` + exitHelp("submitted (with --wait: COMPLETED)", "with --wait, the job FAILED"),
		Example: `  cmk config create --info cmk.json --name Config1 --key-id "$(jq -r .keyIdentifier cmk.json)" --yes --wait
  cmk config create --url https://cmk.example.com --token "$TOKEN" --org MYORG@CmkOrg \
    --name Config1 --key-id https://contoso.vault.azure.net/keys/platform-cmk/0123456789abcdef0123456789abcdef`,
		Args: exactArgs(0, ""),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return usageError(errors.New("--name is required"), "choose a name for the configuration, e.g. --name Config1; you need it to check the status")
			}
			if keyID == "" {
				return usageError(errors.New("--key-id is required"), "pass the Key Identifier of your key's current version: https://<vault>.vault.azure.net/keys/<key>/<version>")
			}
			return nil
		},
		RunE: clientRun(conn, out, func(cmd *cobra.Command, c *client, _ []string) error {
			if !yes {
				if err := confirmEnable(cmd, c.org, keyID); err != nil {
					return err
				}
			}
			job, raw, err := c.SubmitConfig(cmd.Context(), name, keyID)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if !wait {
				if out.json() {
					return printRaw(w, raw)
				}
				fmt.Fprintf(w, "Configuration %s submitted (job %s, %s).\nFollow it with: cmk config status %s --wait\n", name, job.ID, job.Status, name)
				return nil
			}
			progressTo := w
			if out.json() {
				progressTo = cmd.ErrOrStderr()
			} else {
				fmt.Fprintf(w, "Configuration %s submitted (job %s).\n", name, job.ID)
			}
			return waitAndShow(cmd, c, out, name, progressTo, timeout)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "name of the configuration (required; case-sensitive)")
	f.StringVar(&keyID, "key-id", "", "Key Vault key identifier, https://<vault>.vault.azure.net/keys/<key>/<version> (required)")
	f.BoolVarP(&yes, "yes", "y", false, "confirm that enabling customer-managed keys is irreversible")
	f.BoolVarP(&wait, "wait", "w", false, "follow the job until COMPLETED or FAILED")
	f.DurationVar(&timeout, "timeout", 15*time.Minute, "with --wait, give up waiting after this long (the job keeps running)")
	return cmd
}

// confirmEnable asks a person at a terminal to confirm; elsewhere --yes is
// required.
func confirmEnable(cmd *cobra.Command, org, keyID string) error {
	hint := "enabling customer-managed keys cannot be undone; run 'cmk doctor " + keyID + "' first, then pass --yes to confirm"
	if !isTerminal(os.Stdin) || cmd.InOrStdin() != os.Stdin {
		return usageError(errors.New("confirmation required"), hint)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "Enable customer-managed keys for org %s with\n  %s ?\n"+
		"This cannot be undone: from now on the org's data is readable only while this key is usable.\nType yes to continue: ", org, keyID)
	line, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	if strings.TrimSpace(line) != "yes" {
		return usageError(errors.New("not confirmed; nothing was changed"), hint)
	}
	return nil
}

func newConfigStatusCmd(conn *connFlags, out *outputFlag) *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Show a configuration's status; --wait follows it to the end",
		Long: `Show the status of the enablement job of configuration NAME (case-sensitive):
NEW, RUNNING, UPDATE_EXISTING_RESOURCES (with data keys re-wrapped so far),
COMPLETED or FAILED (with the failed check and numbered steps).
` + exitHelp("the job is COMPLETED or still going (with --wait: COMPLETED)", "the job FAILED"),
		Example: `  cmk config status Config1 --info cmk.json
  cmk config status Config1 --info cmk.json --wait
  cmk config status Config1 --info cmk.json --output json | jq -r .status`,
		Args: exactArgs(1, "the configuration NAME"),
		RunE: clientRun(conn, out, func(cmd *cobra.Command, c *client, args []string) error {
			if wait {
				progressTo := cmd.OutOrStdout()
				if out.json() {
					progressTo = cmd.ErrOrStderr()
				}
				return waitAndShow(cmd, c, out, args[0], progressTo, timeout)
			}
			v, raw, err := c.Config(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return showConfig(cmd, out, v, raw)
		}),
	}
	cmd.Flags().BoolVarP(&wait, "wait", "w", false, "follow the job until COMPLETED or FAILED")
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Minute, "with --wait, give up waiting after this long (the job keeps running)")
	return cmd
}

func newConfigListCmd(conn *connFlags, out *outputFlag) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the org's configurations with their status",
		Long: `List every configuration of the org, newest job states included. A FAILED
configuration stays listed as a record of what was tried.
` + exitHelp("the configurations were listed", ""),
		Example: `  cmk config list --info cmk.json
  cmk config list --info cmk.json --output json`,
		Args: exactArgs(0, ""),
		RunE: clientRun(conn, out, func(cmd *cobra.Command, c *client, _ []string) error {
			list, raw, err := c.Configs(cmd.Context())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if out.json() {
				return printRaw(w, raw)
			}
			if len(list.Configs) == 0 {
				fmt.Fprintf(w, "Org %s has no configurations: its data is protected by system-managed keys.\n", c.org)
				return nil
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATUS\tKEY\tDATA KEYS\tUPDATED")
			for _, v := range list.Configs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.Name, v.Status, keyLabel(&v), rewrapLabel(&v), isoClock(v.UpdatedAt))
			}
			return tw.Flush()
		}),
	}
}

// waitAndShow follows configuration name until it ends, drawing progress on
// progressTo, then prints the final state (text or JSON).
func waitAndShow(cmd *cobra.Command, c *client, out *outputFlag, name string, progressTo io.Writer, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	v, raw, err := waitConfig(ctx, c, name, newProgressBar(progressTo))
	if errors.Is(err, context.DeadlineExceeded) && cmd.Context().Err() == nil {
		return withHint(fmt.Errorf("configuration %s did not finish within %s", name, timeout),
			"the job keeps running on the server; check again with 'cmk config status "+name+" --wait'")
	}
	if err != nil {
		return err
	}
	return showConfig(cmd, out, v, raw)
}

// showConfig prints a configuration's state, and fails the command if its
// job failed.
func showConfig(cmd *cobra.Command, out *outputFlag, v *cmkapi.Config, raw []byte) error {
	if err := out.show(cmd.OutOrStdout(), raw, func(w io.Writer) { printConfig(w, v) }); err != nil {
		return err
	}
	if v.Status == jobFailed {
		return problem()
	}
	return nil
}

// waitConfig polls configuration name until COMPLETED or FAILED.
func waitConfig(ctx context.Context, c *client, name string, bar *progressBar) (*cmkapi.Config, []byte, error) {
	lastProblem := ""
	defer bar.Done()
	for {
		v, raw, err := c.Config(ctx, name)
		if err != nil {
			return nil, nil, err
		}
		if v.LastError != nil && v.LastError.Message != lastProblem && v.Status != jobCompleted && v.Status != jobFailed {
			lastProblem = v.LastError.Message
			bar.Note("  ! %s [%s]; retrying", v.LastError.Message, v.LastError.Code)
		}
		switch v.Status {
		case jobCompleted, jobFailed:
			if v.Status == jobCompleted && v.Progress.DataKeysTotal > 0 {
				// Leave the full bar on screen above the final status.
				bar.Set(rewrapLabelText, v.Progress.DataKeysRewrapped, v.Progress.DataKeysTotal)
				bar.Done()
			}
			bar.Phase(v.Status)
			return v, raw, nil
		case jobUpdating:
			bar.Set(rewrapLabelText, v.Progress.DataKeysRewrapped, v.Progress.DataKeysTotal)
		default:
			bar.Phase(v.Status + ": " + jobMeaning[v.Status])
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(configPollInterval):
		}
	}
}

// printConfig writes one configuration for a person.
func printConfig(w io.Writer, v *cmkapi.Config) {
	fmt.Fprintf(w, "Configuration %s (job %s)\n", v.Name, v.ID)
	meaning := jobMeaning[v.Status]
	if meaning != "" {
		meaning = " — " + meaning
	}
	fmt.Fprintf(w, "  status:    %s%s\n", v.Status, meaning)
	fmt.Fprintf(w, "  org:       %s\n", v.IMSOrgID)
	fmt.Fprintf(w, "  key:       %s\n", keyLabel(v))
	if v.Progress.DataKeysTotal > 0 {
		fmt.Fprintf(w, "  data keys: %s re-wrapped\n", rewrapLabel(v))
	}
	fmt.Fprintf(w, "  updated:   %s\n", isoClock(v.UpdatedAt))
	if v.LastError != nil && v.Status != jobCompleted && v.Status != jobFailed {
		fmt.Fprintf(w, "  retrying:  %s [%s]\n", v.LastError.Message, v.LastError.Code)
		printSteps(w, "    ", v.LastError.Remedy)
	}
	if f := v.Failure; f != nil && v.Status == jobFailed {
		title := f.Title
		if title == "" {
			title = preflight.Title(f.Check)
		}
		fmt.Fprintf(w, "\nFailed check: %s (%s) [%s]\n", title, f.Check, f.Code)
		fmt.Fprintf(w, "  %s\n", f.Message)
		if len(f.Remedy) > 0 {
			fmt.Fprintln(w, "What to do:")
			printSteps(w, "  ", f.Remedy)
		}
		fmt.Fprintln(w, "\nThe org still uses system-managed keys. Fix the key, check it with 'cmk doctor', then submit a configuration with a new name.")
	}
}

func keyLabel(v *cmkapi.Config) string {
	d := v.ConfigData
	if d.KeyVaultURI == "" {
		return d.KeyVaultKeyIdentifier
	}
	s := strings.TrimRight(d.KeyVaultURI, "/") + "/keys/" + d.KeyName
	if d.KeyVersion != "" {
		s += " (version " + d.KeyVersion + ")"
	}
	return s
}

func rewrapLabel(v *cmkapi.Config) string {
	if v.Progress.DataKeysTotal == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d", v.Progress.DataKeysRewrapped, v.Progress.DataKeysTotal)
}

// isoClock formats an RFC 3339 time from the API for a table.
func isoClock(s string) string {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return s
	}
	return clock(t)
}
