package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/devenv"
)

func newDevCmd() *cobra.Command {
	var addr, infoFile, dataDir string
	var verbose, allowRemote bool
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run cmk and a local Azure emulator with a demo org, ready to enable CMK",
		Long: `Run the service and a local Azure emulator together, on embedded defaults.

The emulator holds a customer tenant that has consented to the platform's app,
a vault with soft-delete and purge protection, an RSA-3072 key, and the
"Key Vault Crypto Service Encryption User" role granted to the app. The service
has a demo org with two sandboxes, bound to the customer tenant through its
consent link (so it may use the tenant's keys). The exact curl commands of the
enablement flow are printed, with host, token and key identifier filled in.

State lives in a temporary directory removed on exit unless --data-dir is set.

The service trusts development tokens and signs the Encryption page in as the
demo org, so it listens on a loopback address only (127.0.0.1, localhost or
[::1]) unless --allow-remote says otherwise; the page's dev login answers only
on loopback either way.`,
		Example: `  cmk dev
  cmk dev --addr 127.0.0.1:9090 --info /tmp/cmk-dev.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !loopbackAddr(addr) {
				if !allowRemote {
					return usageError(fmt.Errorf("--addr %s is not a loopback address", addr),
						"cmk dev gives development tokens and the demo org's data to anyone who can reach it; listen on 127.0.0.1, localhost or [::1], or add --allow-remote to expose it on purpose")
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "WARNING: development mode: cmk dev listens on %s, beyond this machine; anyone who can reach it can use development tokens and the demo org; never run this on a shared network\n", addr)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			dir := dataDir
			if dir == "" {
				tmp, err := os.MkdirTemp("", "cmk-dev-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				dir = tmp
			}
			var logOut io.Writer = io.Discard
			if verbose {
				logOut = os.Stderr
			}
			env, err := devenv.Start(ctx, devenv.Options{Addr: addr, DataDir: dir, Log: slog.New(slog.NewTextHandler(logOut, nil))})
			if err != nil {
				return withHint(err, "is --addr free? pick another with --addr 127.0.0.1:<port>")
			}
			defer env.Close()
			info := env.Info()
			caFile := filepath.Join(dir, "emulator-ca.pem")
			if err := os.WriteFile(caFile, env.Emu.CAPEM(), 0o600); err != nil {
				return err
			}
			if infoFile != "" {
				b, _ := json.MarshalIndent(info, "", "  ")
				if err := os.WriteFile(infoFile, b, 0o600); err != nil {
					return err
				}
			}
			printWalkthrough(cmd.OutOrStdout(), info, caFile)
			<-ctx.Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8080", "where the service listens: a loopback address unless --allow-remote")
	cmd.Flags().BoolVar(&allowRemote, "allow-remote", false, "let --addr be a non-loopback address, reachable from other machines (warns at start)")
	cmd.Flags().StringVar(&infoFile, "info", "", "write the connection details as JSON to this file")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "keep the service's state here instead of a temporary directory")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print the service's logs")
	return cmd
}

// loopbackAddr reports whether addr (host:port) listens on loopback only.
// An empty host (":8080") listens on every interface.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func printWalkthrough(w io.Writer, in cmkapi.Info, caFile string) {
	h := fmt.Sprintf("  -H 'Authorization: Bearer %s' \\\n  -H 'x-api-key: %s' \\\n  -H 'x-gw-ims-org-id: %s'", in.Token, in.APIKey, in.OrgID)
	body := fmt.Sprintf(`{
        "name": "Config1",
        "type": "BYOK_CONFIG",
        "imsOrgId": "%s",
        "configData": {
          "providerType": "AZURE_KEYVAULT",
          "keyVaultKeyIdentifier": "%s"
        }
      }`, in.OrgID, in.KeyIdentifier)
	fmt.Fprintf(w, `cmk is running at %s (local Azure emulator at %s)

Demo org %s has sandboxes prod and dev; its data keys are wrapped by the
system key. The emulator's tenant has consented to the platform's app through
the demo org's consent link (which binds the org to that tenant), and the app
holds the Key Vault Crypto Service Encryption User role on the vault.

1. Fetch the app registration (its applicationRedirectUrl is the org's consent
   link, boundTenants the tenants bound to it):

curl -s %s/data/infrastructure/manager/byok/app-registration \
%s

2. Send the key identifier to enable customer-managed keys (irreversible):

curl -s -X POST %s/data/infrastructure/manager/customer/config \
%s \
  -H 'Content-Type: application/json' \
  -d '%s'

3. Watch the job go RUNNING -> UPDATE_EXISTING_RESOURCES -> COMPLETED:

curl -s '%s/data/infrastructure/manager/customer/config/Config1?configType=BYOK_CONFIG' \
%s

4. Store and read data (encrypted under the org's keys; refused while the key is unusable):

curl -s -X PUT %s/data/profiles/ada \
%s \
  -H 'x-sandbox-name: prod' -d '{"name": "Ada"}'
curl -s %s/data/profiles/ada \
%s \
  -H 'x-sandbox-name: prod'

5. Watch the key's health and alerts (the key is checked every 2 s here):

curl -s %s/data/infrastructure/manager/byok/health \
%s

The Encryption page: %s/ui/ (use "Dev login").

Break the key the way a customer could (see cmk azure-emulator --help), e.g.:

  export CMK_EMULATOR_URL=%s CMK_EMULATOR_CA=%s
  go run ./cmd/cmk azure-emulator key disable %s %s

Press Ctrl-C to stop.
`, in.BaseURL, in.EmulatorURL, in.OrgID, in.BaseURL, h, in.BaseURL, h, body, in.BaseURL, h,
		in.BaseURL, h, in.BaseURL, h, in.BaseURL, h, in.BaseURL,
		in.EmulatorURL, caFile, devenv.Vault, devenv.KeyName)
}
