package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/cmkapi"
)

func newDoctorCmd() *cobra.Command {
	conn := &connFlags{}
	var out outputFlag
	var awsPolicy bool
	cmd := &cobra.Command{
		Use:   "doctor [KEY-IDENTIFIER | KEY-ARN]",
		Short: "Check a Key Vault or AWS KMS key against every requirement before enabling CMK with it",
		Long: `Run the preflight of a key from the terminal: the same checks the enablement
job runs while its status is RUNNING, in the order a request travels (sign-in,
network, role, key state, key type, vault settings, a real wrap/unwrap).

Every check runs that can: a failure stops only the checks that depend on
it. The report names the key and the time of the checks, then lists
  ✗  failed: what was found, then numbered steps to fix it
  !  could not tell (throttled or a transient failure): try again
  ✓  passed
  -  not run: it waits for the check it names to pass

Fix the failures and run doctor again. Nothing is changed on the
platform or in the vault; a wrap/unwrap round trip of random bytes is the
only key operation.

An AWS KMS key is named by its key ARN (or alias ARN); its checks are the
ARN, the platform's credentials, the key policy's DescribeKey statement, the
key's existence, state (not pending deletion, enabled), spec and usage, and
an Encrypt/Decrypt round trip with the org's encryption context, which
proves the key policy holds this org's statements. --aws-policy prints those
statements, made for the org, to paste into the key policy.

With --info (a file from 'cmk dev --info') the key identifier defaults to
the demo key in that file.
` + exitHelp("every check passed", "a check failed") + `
     or a check could not run for a transient reason (try again)`,
		Example: `  cmk doctor https://contoso.vault.azure.net/keys/platform-cmk/0123456789abcdef0123456789abcdef
  cmk doctor --info cmk.json
  cmk doctor arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab
  cmk doctor --aws-policy
  cmk doctor --url https://cmk.example.com --token "$TOKEN" --org MYORG@CmkOrg https://contoso.vault.azure.net/keys/platform-cmk
  cmk doctor --info cmk.json --output json | jq '.results[] | select(.status != "PASSED")'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return exactArgs(1, "one KEY-IDENTIFIER")(cmd, args)
			}
			return nil
		},
		RunE: clientRun(conn, &out, func(cmd *cobra.Command, c *client, args []string) error {
			if awsPolicy {
				p, raw, err := c.AWSKeyPolicy(cmd.Context())
				if err != nil {
					return err
				}
				return out.show(cmd.OutOrStdout(), raw, func(w io.Writer) { printAWSPolicy(w, p) })
			}
			kid := c.keyIdentifier
			if len(args) == 1 {
				kid = args[0]
			}
			if kid == "" {
				return usageError(errors.New("no key identifier"),
					"pass the Key Identifier of your key's current version, e.g. cmk doctor https://<vault>.vault.azure.net/keys/<key>/<version>")
			}
			rep, raw, err := c.Preflight(cmd.Context(), kid)
			if err != nil {
				return err
			}
			if err := out.show(cmd.OutOrStdout(), raw, func(w io.Writer) { printReport(w, rep) }); err != nil {
				return err
			}
			return doctorVerdict(rep)
		}),
	}
	cmd.Flags().BoolVar(&awsPolicy, "aws-policy", false, "print the key-policy statements the org adds to its AWS KMS key, instead of checking a key")
	conn.register(cmd)
	out.register(cmd, false)
	flagErrors(cmd)
	return cmd
}

// doctorVerdict maps a report to the exit status.
func doctorVerdict(rep *cmkapi.PreflightReport) error {
	failed, unknown := 0, 0
	for _, r := range rep.Results {
		switch r.Status {
		case cmkapi.CheckFailed:
			failed++
		case cmkapi.CheckError:
			unknown++
		}
	}
	switch {
	case failed > 0:
		return problem()
	case unknown > 0:
		return &exitError{code: exitUsage}
	}
	return nil
}

var checkMarks = map[string]string{
	cmkapi.CheckPassed:  "✓",
	cmkapi.CheckFailed:  "✗",
	cmkapi.CheckError:   "!",
	cmkapi.CheckSkipped: "-",
}

// printReport writes a preflight report for a person: which key and when,
// then the failures first (what was found, numbered steps to fix it), the
// checks that passed, and the ones not run with what they wait for.
func printReport(w io.Writer, rep *cmkapi.PreflightReport) {
	fmt.Fprintf(w, "Preflight of %s\n", rep.KeyIdentifier)
	if !rep.CheckedAt.IsZero() {
		fmt.Fprintf(w, "Checked at %s\n", clock(rep.CheckedAt))
	}
	fmt.Fprintln(w)
	passed, failed, unknown, skipped := 0, 0, 0, 0
	for _, r := range rep.Results {
		switch r.Status {
		case cmkapi.CheckPassed:
			passed++
		case cmkapi.CheckSkipped:
			skipped++
		case cmkapi.CheckFailed:
			failed++
		case cmkapi.CheckError:
			unknown++
		}
	}
	for _, group := range [][]string{{cmkapi.CheckFailed, cmkapi.CheckError}, {cmkapi.CheckPassed}, {cmkapi.CheckSkipped}} {
		for _, r := range rep.Results {
			if !slices.Contains(group, r.Status) {
				continue
			}
			mark := checkMarks[r.Status]
			if mark == "" {
				mark = "?"
			}
			fmt.Fprintf(w, "  %s %s\n", mark, r.Title)
			switch r.Status {
			case cmkapi.CheckSkipped:
				if r.Message != "" {
					fmt.Fprintf(w, "      %s\n", r.Message)
				}
			case cmkapi.CheckFailed, cmkapi.CheckError:
				code := r.Code
				if code != "" {
					code = " [" + code + "]"
				}
				fmt.Fprintf(w, "      %s%s\n", r.Message, code)
				if len(r.Remedy) > 0 {
					fmt.Fprintln(w, "      What to do:")
					printSteps(w, "        ", r.Remedy)
				}
			}
		}
	}
	fmt.Fprintln(w)
	switch {
	case failed > 0:
		fmt.Fprintf(w, "FAILED: %d of %d checks failed (%d passed, %d not run). Fix the failures listed first, then run cmk doctor again.\n",
			failed, len(rep.Results), passed, skipped)
	case unknown > 0:
		fmt.Fprintf(w, "UNKNOWN: %d check(s) could not run for a transient reason (%d passed). Try again in a minute.\n", unknown, passed)
	default:
		fmt.Fprintf(w, "PASSED: all %d checks passed. This key can be used to enable customer-managed keys.\n", passed)
	}
}

// printAWSPolicy writes an org's key-policy statements for a person.
func printAWSPolicy(w io.Writer, p *cmkapi.AWSKeyPolicy) {
	fmt.Fprintf(w, "Key-policy statements for org %s\n\n", p.IMSOrgID)
	fmt.Fprintf(w, "Create a symmetric key (key spec %s, usage %s, single-Region) in %s, then add these\n", p.KeySpec, p.KeyUsage, strings.Join(p.Regions, " or "))
	fmt.Fprintf(w, "statements to its key policy's \"Statement\" list. They grant the platform's account %s\n", p.PlatformAccount)
	fmt.Fprintln(w, "DescribeKey, and the use of the key only with this org's encryption context, so the key can")
	fmt.Fprintln(w, "serve this org alone. Removing them (or disabling the key) withdraws the platform's access.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, p.StatementsJSON)
}
