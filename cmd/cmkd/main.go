// Command cmkd is the production cmk server: the control-plane API, the
// enablement workers and the key health monitor, configured by flags and
// CMK_* environment variables (see cmkd --help).
//
// It holds the service and nothing else: no local Azure emulator, demo,
// benchmarks or development world (deps_test.go checks its dependencies).
// Those are in the development CLI, cmd/cmk, whose 'cmk serve' is this
// command plus the --emulator flags.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/servecmd"
)

func main() { os.Exit(run(os.Args[1:])) }

// run executes the command line args and returns the process exit status.
func run(args []string) int {
	cmd := servecmd.New("cmkd")
	cmd.Version = servecmd.VersionLine("cmkd")
	cmd.SetVersionTemplate("{{.Version}}\n")
	cmd.AddCommand(servecmd.PlatformKeyCommand("cmkd", func(path string, run servecmd.RunFunc) *cobra.Command {
		return servecmd.NewWith(path, run)
	}))
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		if hint := servecmd.HintOf(err); hint != "" {
			fmt.Fprintln(os.Stderr, "hint:", hint)
		}
		return 1
	}
	return 0
}
