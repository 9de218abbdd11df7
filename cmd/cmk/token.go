package main

import (
	"fmt"
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
key lives in the service's data directory (created on first use). A service
started with the same --data-dir and no --jwks-url accepts it.`,
		Example: `  cmk token --org MYORG@CmkOrg
  cmk token --org MYORG@CmkOrg --perm data_read --ttl 10m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if org == "" {
				return withHint(fmt.Errorf("--org is required"), "pass the org id the token should hold, e.g. --org MYORG@CmkOrg")
			}
			if ttl <= 0 || ttl > 30*24*time.Hour {
				return withHint(fmt.Errorf("--ttl %s is out of range", ttl), "use a duration between 1s and 720h")
			}
			iss, err := auth.LoadOrCreateIssuer(filepath.Join(dataDir, "token-signing.pem"), service.DevIssuer, service.DevAudience)
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
