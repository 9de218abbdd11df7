package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/cmkapi"
)

// Health states of the API.
const (
	stateHealthy       = cmkapi.StateHealthy
	stateSystemManaged = cmkapi.StateSystemManaged
)

var stateMeaning = map[string]string{
	stateHealthy:         "the key works: wrap and unwrap proved by the last check",
	cmkapi.StateDegraded: "data is readable, but new data keys cannot be wrapped",
	cmkapi.StateCoasting: "the vault is unreachable for a transient reason; data is served from keys in memory for the grace period",
	cmkapi.StateRevoked:  "access to the key is withdrawn: every read and write of the org's data is refused",
	stateSystemManaged:   "the org's data is protected by system-managed keys; there is no customer key to check",
}

func healthLong(what string) string {
	return what + `

Prints the state (HEALTHY, DEGRADED, COASTING, REVOKED or SYSTEM_MANAGED),
the cause and what the last check found, whether the org's data is refused,
the key and version in use, a key rotation in progress, and numbered steps
when something is wrong.
` + exitHelp("the state is HEALTHY or SYSTEM_MANAGED", "any other state (DEGRADED, COASTING, REVOKED)")
}

func newRecheckCmd() *cobra.Command {
	conn := &connFlags{}
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "recheck",
		Short: "Check the org's key now and print its health",
		Long: healthLong(`Ask cmk to check the org's customer-managed key now, instead of waiting for
the monitor's next scheduled check, and print the result. Run it after fixing
a key problem: a good check restores access to the data at once and resolves
the open alerts.`),
		Example: `  cmk recheck --info cmk.json
  cmk recheck --info cmk.json --output json | jq -r .state
  cmk recheck --info cmk.json && echo "key is fine"`,
		Args: exactArgs(0, ""),
		RunE: clientRun(conn, &out, func(cmd *cobra.Command, c *client, _ []string) error {
			h, raw, err := c.Recheck(cmd.Context())
			var ae *cmkapi.Error
			if errors.As(err, &ae) && ae.ErrorCode == cmkapi.CodeCMKNotEnabled {
				// Nothing to check: the org is on system-managed keys.
				h, raw, err = c.Health(cmd.Context())
			}
			if err != nil {
				return err
			}
			return showHealth(cmd, c, &out, h, raw)
		}),
	}
	conn.register(cmd)
	out.register(cmd, false)
	flagErrors(cmd)
	return cmd
}

func newHealthCmd() *cobra.Command {
	conn := &connFlags{}
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Print the org's key health as of the last check",
		Long:  healthLong(`Print the health of the org's customer-managed key as of the monitor's last check, without checking again (see 'cmk recheck').`),
		Example: `  cmk health --info cmk.json
  cmk health --info cmk.json --output json | jq .rotation`,
		Args: exactArgs(0, ""),
		RunE: clientRun(conn, &out, func(cmd *cobra.Command, c *client, _ []string) error {
			h, raw, err := c.Health(cmd.Context())
			if err != nil {
				return err
			}
			return showHealth(cmd, c, &out, h, raw)
		}),
	}
	conn.register(cmd)
	out.register(cmd, false)
	flagErrors(cmd)
	return cmd
}

func showHealth(cmd *cobra.Command, c *client, out *outputFlag, h *cmkapi.Health, raw []byte) error {
	if err := out.show(cmd.OutOrStdout(), raw, func(w io.Writer) { printHealth(w, h) }); err != nil {
		return err
	}
	if !out.json() && h.State != stateSystemManaged {
		// The open alerts say what the platform has told the org's admins;
		// a failure to list them does not change the health shown above.
		if list, _, err := c.Alerts(cmd.Context(), cmkapi.AlertOpen); err == nil {
			printOpenAlerts(cmd.OutOrStdout(), list.Alerts)
		} else {
			fmt.Fprintf(cmd.OutOrStdout(), "Open alerts: could not be listed (%v)\n", c.explain(err))
		}
	}
	if h.State != stateHealthy && h.State != stateSystemManaged {
		return problem()
	}
	return nil
}

// printHealth writes an org's key health for a person.
func printHealth(w io.Writer, h *cmkapi.Health) {
	fmt.Fprintf(w, "Key health of org %s: %s", h.OrgID, h.State)
	if h.Since != nil {
		fmt.Fprintf(w, " since %s", clock(*h.Since))
	}
	fmt.Fprintln(w)
	if m := stateMeaning[h.State]; m != "" {
		fmt.Fprintf(w, "  %s\n", m)
	}
	if h.State == stateSystemManaged {
		return
	}
	key := h.KeyVaultURI + "/keys/" + h.KeyName
	if h.KeyVersion != "" {
		key += " (version " + h.KeyVersion + ")"
	}
	fmt.Fprintf(w, "  key:        %s\n", key)
	if h.Cause != "" {
		fmt.Fprintf(w, "  cause:      %s\n", h.Cause)
	}
	if h.Message != "" {
		fmt.Fprintf(w, "  found:      %s\n", h.Message)
	}
	switch {
	case h.DataBlocked:
		fmt.Fprintln(w, "  data:       REFUSED — reads and writes of the org's data fail until access returns")
	case h.CoastingUntil != nil:
		fmt.Fprintf(w, "  data:       available until %s unless the vault answers again (the grace period)\n", clock(*h.CoastingUntil))
	default:
		fmt.Fprintln(w, "  data:       available")
	}
	if h.LastCheck != nil {
		line := clock(*h.LastCheck)
		if h.LastOK != nil && h.State != stateHealthy {
			line += ", last good check " + clock(*h.LastOK)
		}
		if h.NextCheck != nil {
			line += ", next " + clock(*h.NextCheck)
		}
		fmt.Fprintf(w, "  checked:    %s\n", line)
	}
	if r := h.Rotation; r != nil {
		fmt.Fprintf(w, "  rotation:   re-wrapping data keys to version %s: %d/%d done\n", r.TargetVersion, r.DataKeysRewrapped, r.DataKeysTotal)
	}
	if len(h.Remedy) > 0 {
		fmt.Fprintln(w, "What to do:")
		printSteps(w, "  ", h.Remedy)
		fmt.Fprintln(w, "Then run 'cmk recheck' to restore access at once.")
	}
}

// printOpenAlerts lists the open alerts under the health, newest first,
// with the shortest ID prefix 'cmk alerts show' accepts.
func printOpenAlerts(w io.Writer, list []cmkapi.Alert) {
	if len(list) == 0 {
		fmt.Fprintln(w, "Open alerts: none")
		return
	}
	fmt.Fprintf(w, "Open alerts (%d; details with 'cmk alerts show ID'):\n", len(list))
	ids := make([]string, len(list))
	for i, a := range list {
		ids[i] = a.ID
	}
	for _, a := range list {
		fmt.Fprintf(w, "  %s  %s: %s, last seen %s\n", shortID(a.ID, ids), kindTitle(a), a.Cause, clock(a.LastSeen))
	}
}
