// Command cmk runs the customer-managed-key service, its local Azure
// emulator, and the tools around them. It is the development CLI: the
// production server, without the emulator, demo and benchmarks, is cmd/cmkd.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/servecmd"
)

// userError is an error with a hint for the person at the terminal.
type userError struct {
	err  error
	hint string
}

func (e *userError) Error() string { return e.err.Error() }
func (e *userError) Hint() string  { return e.hint }

func withHint(err error, hint string) error { return &userError{err: err, hint: hint} }

func main() { os.Exit(run(os.Args[1:])) }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "cmk",
		Short:         "Customer-managed keys (bring your own key) for a multi-tenant data platform",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       servecmd.VersionLine("cmk"),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(newServeCmd(), newDevCmd(), newTokenCmd(), newAzureEmulatorCmd(), newAWSEmulatorCmd(), newDoctorCmd(), newConfigCmd(), newAlertsCmd(), newRecheckCmd(), newHealthCmd(), newDemoCmd(), newBenchCmd(), newAuditCmd(), newOrgsCmd(), newHistoryCmd(), newPlatformKeyCmd())
	return root
}

// run executes the command line args and returns the process exit status.
func run(args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) && ee.err == nil {
		return ee.code // the command has said everything already
	}
	if unknownCommand(err) {
		// Cobra's text already lists the closest commands, if any.
		fmt.Fprintln(os.Stderr, "error:", strings.TrimSpace(err.Error()))
		fmt.Fprintln(os.Stderr, "hint: run 'cmk --help' for the list of commands")
		return exitUsage
	}
	fmt.Fprintln(os.Stderr, "error:", err)
	if hint := servecmd.HintOf(err); hint != "" { // from cmk's commands and from servecmd
		fmt.Fprintln(os.Stderr, "hint:", hint)
	}
	return exitCode(err)
}

// unknownCommand reports whether err is cobra's answer to a command name it
// does not know (cobra has no typed error for it).
func unknownCommand(err error) bool {
	return strings.HasPrefix(err.Error(), "unknown command ")
}
