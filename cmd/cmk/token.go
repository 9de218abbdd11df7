package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/auth"
	"github.com/cmk-project/cmk/internal/servecmd"
	"github.com/cmk-project/cmk/internal/service"
)

func newTokenCmd() *cobra.Command {
	var dataDir, org, subject string
	var perms []string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Mint a development access token signed by the local issuer",
		Long: `Mint an access token for local use, signed by the development issuer whose
key lives in the service's data directory. A service started with
--dev-token-issuer creates that key at start; a token is accepted only by a
service with the same --data-dir. (cmk dev prints a token of its own and the
one line that points the CLI at it; no cmk token is needed there.)`,
		Example: `  cmk serve --dev-token-issuer --data-dir ./cmk-data &
  cmk token --data-dir ./cmk-data --org MYORG@CmkOrg
  cmk token --data-dir ./cmk-data --org MYORG@CmkOrg --perm data_read --ttl 10m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if org == "" {
				return withHint(fmt.Errorf("--org is required"), "pass the org id the token should hold, e.g. --org MYORG@CmkOrg")
			}
			if ttl <= 0 || ttl > 30*24*time.Hour {
				return withHint(fmt.Errorf("--ttl %s is out of range", ttl), "use a duration between 1s and 720h")
			}
			keyFile := filepath.Join(dataDir, "token-signing.pem")
			if _, err := os.Stat(keyFile); errors.Is(err, fs.ErrNotExist) {
				// Creating a key here would mint a token no running service accepts.
				return usageError(fmt.Errorf("no development signing key in %s", dataDir),
					"pass the --data-dir of a service started with --dev-token-issuer (it creates the key); for cmk dev, use the export line it prints instead")
			}
			iss, err := auth.LoadOrCreateIssuer(keyFile, service.DevIssuer, service.DevAudience)
			if err != nil {
				return err
			}
			if len(perms) == 0 {
				perms = service.AllPermissions
			}
			tok, err := iss.Mint(auth.Claims{Subject: subject, ClientID: service.DevAPIKey, Orgs: map[string][]string{org: perms}}, ttl)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", servecmd.EnvOr("CMK_DATA_DIR", "cmk-data"), "the service's data directory (holds the signing key)")
	cmd.Flags().StringVar(&org, "org", "", "org id the token holds (required)")
	cmd.Flags().StringVar(&subject, "subject", "local-admin", "token subject")
	cmd.Flags().StringSliceVar(&perms, "perm", nil, "permission to grant (repeatable; default: all)")
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "token lifetime")
	return cmd
}
