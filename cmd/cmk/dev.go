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
	var verbose, allowRemote, noAWS bool
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run cmk, a local Azure emulator and a local AWS KMS with a demo org on each, ready to enable CMK",
		Long: `Run the service and a local Azure emulator together, on embedded defaults.

The emulator holds a customer tenant that has consented to the platform's app,
a vault with soft-delete and purge protection, an RSA-3072 key, and the
"Key Vault Crypto Service Encryption User" role granted to the app. The service
has a demo org with two sandboxes, bound to the customer tenant through its
consent link (so it may use the tenant's keys). The exact curl commands of the
enablement flow are printed, with host, token and key identifier filled in.

A local AWS KMS runs too, with a second demo org whose key is there: a
symmetric key in the customer's account whose key policy holds the org's
statements (as its administrator would paste them from the Encryption page).
--no-aws leaves it out.

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
			env, err := devenv.Start(ctx, devenv.Options{Addr: addr, DataDir: dir, Log: slog.New(slog.NewTextHandler(logOut, nil)), AWS: !noAWS})
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
			if info.AWS != nil {
				printAWSWalkthrough(cmd.OutOrStdout(), info)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "\nPress Ctrl-C to stop.")
			<-ctx.Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8080", "where the service listens: a loopback address unless --allow-remote")
	cmd.Flags().BoolVar(&allowRemote, "allow-remote", false, "let --addr be a non-loopback address, reachable from other machines (warns at start)")
	cmd.Flags().StringVar(&infoFile, "info", "", "write the connection details as JSON to this file")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "keep the service's state here instead of a temporary directory")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print the service's logs")
	cmd.Flags().BoolVar(&noAWS, "no-aws", false, "leave out the local AWS KMS and its demo org")
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

// printWalkthrough tells a newcomer what runs and what to do next: the
// page, one export line that points the CLI (and curl) at the service, the
// CLI commands of the enablement flow, and the same over HTTP. The token
// appears once, in the export line; links are printed as they are pasted.
func printWalkthrough(w io.Writer, in cmkapi.Info, caFile string) {
	hdr := `-H "Authorization: Bearer $CMK_TOKEN" -H "x-api-key: $CMK_API_KEY" -H "x-gw-ims-org-id: $CMK_ORG"`
	body := fmt.Sprintf(`{"name": "Config1", "type": "BYOK_CONFIG", "imsOrgId": "%s", "configData": {"providerType": "AZURE_KEYVAULT", "keyVaultKeyIdentifier": "%s"}}`,
		in.OrgID, in.KeyIdentifier)
	fmt.Fprintf(w, `cmk is running at %[1]s, with a local Azure emulator at %[2]s.

Demo org %[3]s (sandboxes prod and dev) is bound to the emulator's customer tenant.
Its vault %[4]s holds key %[5]s (RSA-3072); the platform's app holds the Key Vault
Crypto Service Encryption User role on it. The org's data keys are wrapped by the
system key until you enable customer-managed keys.

Encryption page: %[1]s/ui/  (select "Dev login")

In another terminal, from this directory, point the CLI and curl at it (the token
is valid for 24 hours):

export CMK_URL=%[1]s CMK_ORG=%[3]s CMK_API_KEY=%[6]s CMK_TOKEN=%[7]s CMK_EMULATOR_URL=%[2]s CMK_EMULATOR_CA=%[8]s

Then, with cmk standing for 'go run ./cmd/cmk' (or build it: go build -o cmk ./cmd/cmk):

  cmk doctor %[9]s
  cmk config create --name Config1 --key-id %[9]s --yes --wait
  cmk health
  cmk azure-emulator key disable %[4]s %[5]s      (break the key as a customer could)
  cmk alerts list
  cmk azure-emulator key enable %[4]s %[5]s
  cmk recheck

The same over HTTP:

  curl -s "$CMK_URL/data/infrastructure/manager/byok/app-registration" %[10]s
  curl -s -X POST "$CMK_URL/data/infrastructure/manager/customer/config" %[10]s -H 'Content-Type: application/json' -d '%[11]s'
  curl -s "$CMK_URL/data/infrastructure/manager/customer/config/Config1?configType=BYOK_CONFIG" %[10]s
  curl -s "$CMK_URL/data/infrastructure/manager/byok/health" %[10]s
  curl -s "$CMK_URL/data/infrastructure/manager/byok/alerts?status=OPEN" %[10]s

The vault's events reach cmk through an Event Grid subscription, so a new key
version is picked up at once, not at the next check:

  cmk azure-emulator key rotate %[4]s %[5]s
`, in.BaseURL, in.EmulatorURL, in.OrgID, devenv.Vault, devenv.KeyName, in.APIKey, in.Token, caFile, in.KeyIdentifier, hdr, body)
}

// printAWSWalkthrough tells what the AWS demo org is and how to enable and
// break its key; its token appears once, in its export line.
func printAWSWalkthrough(w io.Writer, in cmkapi.Info) {
	a := in.AWS
	fmt.Fprintf(w, `
A local AWS KMS runs at %[1]s. Demo org %[2]s (sandboxes prod and dev) has
its key there: %[3]s
(symmetric, in customer account %[4]s); the key policy holds the org's statements,
which grant the platform's account %[5]s DescribeKey, and Encrypt and Decrypt only
with the org's encryption context. To work as that org, in another terminal:

export CMK_URL=%[6]s CMK_ORG=%[2]s CMK_API_KEY=%[7]s CMK_TOKEN=%[8]s %[9]s=%[1]s %[10]s=%[11]s %[12]s=%[13]s

  cmk doctor --aws-policy                      (the statements to paste into a key policy)
  cmk doctor %[3]s
  cmk config create --name AwsConfig --key-id %[3]s --yes --wait
  cmk aws-emulator key disable %[3]s
  cmk health
  cmk aws-emulator key enable %[3]s
  cmk recheck
`, a.EmulatorURL, a.OrgID, a.KeyARN, devenv.AWSCustomerAccount, a.PlatformAccount, in.BaseURL, in.APIKey, a.Token,
		envAWSEmulatorURL, envAWSOwnerKeyID, a.OwnerAccessKey, envAWSOwnerSecretKey, a.OwnerSecretKey)
}
