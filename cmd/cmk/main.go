// Command cmk runs the customer-managed-key service, its local Azure
// emulator, and the tools around them.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// userError is an error with a hint for the person at the terminal.
type userError struct {
	err  error
	hint string
}

func (e *userError) Error() string { return e.err.Error() }

func withHint(err error, hint string) error { return &userError{err: err, hint: hint} }

func main() {
	root := &cobra.Command{
		Use:           "cmk",
		Short:         "Customer-managed keys (bring your own key) for a multi-tenant data platform",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCmd(), newDevCmd(), newTokenCmd(), newAzureEmulatorCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		var ue *userError
		if errors.As(err, &ue) && ue.hint != "" {
			fmt.Fprintln(os.Stderr, "hint:", ue.hint)
		}
		os.Exit(1)
	}
}
