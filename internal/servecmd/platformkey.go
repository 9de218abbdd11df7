package servecmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/platformkey"
	"github.com/cmk-project/cmk/internal/service"
)

// PlatformKeyCommand returns 'platform-key' and its subcommands (status,
// rotate, migrate). Each takes every setting of the serve command (flags,
// CMK_* variables, --config), so it reaches the same database and KMS as
// the service: build makes that serve command around a RunFunc
// (servecmd.NewWith for cmkd, 'cmk serve”s own for cmk).
func PlatformKeyCommand(path string, build func(path string, run RunFunc) *cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "platform-key",
		Short: "Show, rotate or move to the platform key that protects system-managed data keys",
		Long: `The system key wraps the data keys of orgs without a customer-managed key. With
--platform-key (CMK_PLATFORM_KEY) it is a set of generations, each wrapped by that key
in the platform's own Azure Key Vault or AWS KMS; without it, a key file (--system-key).

Each subcommand takes the service's settings (the same flags, CMK_* variables and
--config file) to reach the same database and KMS. See docs/operations.md,
"The platform key".`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	var asJSON bool
	var fromFile string
	sub := func(use, short, long, example string, run RunFunc, flags func(c *cobra.Command)) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Long: long, Example: example,
			DisableFlagParsing: true, SilenceUsage: true, SilenceErrors: true,
			RunE: func(c *cobra.Command, args []string) error {
				inner := build(path+" platform-key "+use, run)
				inner.Use, inner.Short, inner.Long, inner.Example = path+" platform-key "+use, short, long, example
				flags(inner)
				inner.SetArgs(args)
				inner.SetOut(c.OutOrStdout())
				inner.SetErr(c.ErrOrStderr())
				return inner.ExecuteContext(c.Context())
			},
		}
	}
	cmd.AddCommand(
		sub("status", "Show the system key's generations and the data keys under each",
			`Show the platform key, the system key's generations (root: the one secrets are
derived from; current: the one new data keys are wrapped under), the KMS key version
each is wrapped under, and how many system-managed data keys each wraps. Data keys
not under the current generation are waiting for the service's background re-wrap.`,
			"  "+path+" platform-key status --platform-key https://<vault>.vault.azure.net/keys/<name> --database <dsn>",
			func(ctx context.Context, c *cobra.Command, cfg service.Config) error {
				return withRing(ctx, cfg, func(t *service.PlatformKeyTool, r *platformkey.Ring) error {
					st, err := r.Status(ctx, t.Store)
					if err != nil {
						return err
					}
					if asJSON {
						enc := json.NewEncoder(c.OutOrStdout())
						enc.SetIndent("", "  ")
						return enc.Encode(st)
					}
					printStatus(c, st, cfg)
					return nil
				})
			},
			func(c *cobra.Command) { c.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON") }),
		sub("rotate", "Add a new generation of the system key; the service re-wraps data keys to it",
			`Add a new random generation of the system key, wrapped by the platform key's
newest version, and make it current. Every replica takes it within seconds; the
service then re-wraps the system-managed data keys of the older generations to it in
the background (one replica at a time, resumed after a crash) and marks a generation
left with no data key retired. Generations wrapped under an older version of the
platform key are wrapped under the newest one at the same time.`,
			"  "+path+" platform-key rotate --platform-key https://<vault>.vault.azure.net/keys/<name> --database <dsn>",
			func(ctx context.Context, c *cobra.Command, cfg service.Config) error {
				return withRing(ctx, cfg, func(t *service.PlatformKeyTool, r *platformkey.Ring) error {
					if !r.KMS() {
						return noPlatformKey()
					}
					g, err := r.Rotate(ctx)
					if err != nil {
						return err
					}
					n, err := r.RewrapGenerations(ctx)
					if err != nil {
						return err
					}
					st, err := r.Status(ctx, t.Store)
					if err != nil {
						return err
					}
					fmt.Fprintf(c.OutOrStdout(), "generation %s is current (platform key %s, version %s)\n", g.ID, g.KMSKey, orNone(g.KMSVersion))
					if n > 0 {
						fmt.Fprintf(c.OutOrStdout(), "%d older generations wrapped under the platform key's newest version\n", n)
					}
					fmt.Fprintf(c.OutOrStdout(), "%d data keys to re-wrap: the service does it in the background ('%s platform-key status' shows the progress)\n", st.Pending, path)
					return nil
				})
			},
			func(*cobra.Command) {}),
		sub("migrate", "Move a key-file installation to the platform key",
			`Import the system key file under the platform key (--platform-key) as a
generation, so every data key it wrapped keeps opening, and rotate to a new
generation. Then restart every replica with --platform-key (and without relying on
the file): the service re-wraps the file's data keys in the background. The file's
key stays the root generation, so secrets derived from it (webhook secrets, consent
links) keep working; once 'status' shows no data key under it, delete the file.
Running it again changes nothing.`,
			"  "+path+" platform-key migrate --from-file /etc/cmk/system-key/system.key --platform-key https://<vault>.vault.azure.net/keys/<name> --database <dsn>",
			func(ctx context.Context, c *cobra.Command, cfg service.Config) error {
				if fromFile == "" {
					return WithHint(errors.New("migrate needs --from-file"), "name the system key file the service uses now (--system-key, default <data-dir>/system.key)")
				}
				t, err := service.OpenPlatformKeyTool(ctx, cfg)
				if err != nil {
					return err
				}
				defer t.Close()
				if t.Key.Name == "" {
					return noPlatformKey()
				}
				r, err := t.Migrate(ctx, fromFile)
				if err != nil {
					return err
				}
				st, err := r.Status(ctx, t.Store)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.OutOrStdout(), "the key file %s is generation %s (root) under platform key %s\n", fromFile, r.Root().ID(), t.Key)
				fmt.Fprintf(c.OutOrStdout(), "generation %s is current; %d data keys to re-wrap\n", r.Current().ID(), st.Pending)
				fmt.Fprintf(c.OutOrStdout(), "next: restart every replica with --platform-key %s; the service re-wraps in the background\n", t.Key)
				return nil
			},
			func(c *cobra.Command) {
				c.Flags().StringVar(&fromFile, "from-file", "", "the system key file to import (the service's --system-key)")
			}),
	)
	return cmd
}

func noPlatformKey() error {
	return WithHint(platformkey.ErrNoPlatformKey,
		"set --platform-key (CMK_PLATFORM_KEY) to an Azure Key Vault key identifier without version, https://<vault>.vault.azure.net/keys/<name>, or an AWS KMS key ARN")
}

func withRing(ctx context.Context, cfg service.Config, fn func(*service.PlatformKeyTool, *platformkey.Ring) error) error {
	t, err := service.OpenPlatformKeyTool(ctx, cfg)
	if err != nil {
		return err
	}
	defer t.Close()
	r, err := t.Ring(ctx)
	switch {
	case errors.Is(err, platformkey.ErrNeedsMigration):
		return WithHint(err, "import the key file first: platform-key migrate --from-file <the --system-key file>")
	case errors.Is(err, platformkey.ErrNoGenerations):
		return WithHint(err, "start the service with --platform-key once (it creates the first generation), or run platform-key migrate --from-file on an installation that used a key file")
	case err != nil:
		return err
	}
	return fn(t, r)
}

func printStatus(c *cobra.Command, st platformkey.Status, cfg service.Config) {
	out := c.OutOrStdout()
	if st.KMS {
		fmt.Fprintf(out, "platform key: %s\n", st.Key)
	} else {
		file := cfg.SystemKeyFile
		if file == "" {
			file = "<data-dir>/system.key"
		}
		fmt.Fprintf(out, "system key file: %s (no platform key in a KMS)\n", file)
	}
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "GENERATION\tROOT\tCURRENT\tKMS VERSION\tCREATED\tRETIRED\tDATA KEYS")
	for _, g := range st.Generations {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", g.ID, yes(g.Root), yes(g.Current), orNone(g.KMSVersion), when(g.Created), when(g.Retired), g.DataKeys)
	}
	tw.Flush()
	for ref, n := range st.Unknown {
		fmt.Fprintf(out, "warning: %d data keys under system key %s, which is no stored generation (import its file with platform-key migrate --from-file)\n", n, ref)
	}
	fmt.Fprintf(out, "data keys waiting for the re-wrap: %d\n", st.Pending)
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
