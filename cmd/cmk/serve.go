package main

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/monitor"
	"github.com/cmk-project/cmk/internal/service"
)

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func newServeCmd() *cobra.Command {
	var cfg service.Config
	var certFile, emulatorURL, emulatorCA, emulatorSuffix string
	var blobURL, blobAccount, blobContainer string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the cmk service",
		Long: `Run the cmk service: the control-plane API and the enablement workers.

State (SQLite database, system key, development token key) lives in --data-dir.
The platform's Azure app is set with --azure-* flags or CMK_AZURE_* variables;
keep the client secret in CMK_AZURE_CLIENT_SECRET rather than on the command line.`,
		Example: `  # against Azure
  CMK_AZURE_CLIENT_SECRET=... cmk serve --azure-tenant-id <home-tenant> --azure-client-id <app-id>

  # against a local emulator started with 'cmk azure-emulator --state emu.json'
  cmk serve --emulator https://127.0.0.1:8443 --emulator-ca emu.json.ca.pem \
    --azure-tenant-id platform-tenant --azure-client-id <app-id>`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cfg.Log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
			if cfg.ClientSecret == "" {
				cfg.ClientSecret = os.Getenv("CMK_AZURE_CLIENT_SECRET")
			}
			if certFile != "" {
				pem, err := os.ReadFile(certFile)
				if err != nil {
					return withHint(err, "--azure-client-cert takes a PEM file holding the certificate and its private key")
				}
				cfg.CertificatePEM = pem
			}
			if blobURL != "" {
				key := os.Getenv("CMK_LAKE_AZURE_ACCOUNT_KEY")
				if blobAccount == "" || key == "" {
					return withHint(fmt.Errorf("--lake-azure-url needs --lake-azure-account and CMK_LAKE_AZURE_ACCOUNT_KEY"), "set the storage account name and put its key in CMK_LAKE_AZURE_ACCOUNT_KEY")
				}
				cfg.LakeAzure = &blob.AzureConfig{ServiceURL: blobURL, AccountName: blobAccount, AccountKey: key, Container: blobContainer}
			}
			if emulatorURL != "" {
				if err := useEmulator(&cfg, emulatorURL, emulatorCA, emulatorSuffix); err != nil {
					return err
				}
			}
			svc, err := service.New(ctx, cfg)
			if err != nil {
				return err
			}
			if err := svc.Start(ctx); err != nil {
				svc.Close()
				return err
			}
			<-ctx.Done()
			return svc.Close()
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Addr, "addr", envOr("CMK_ADDR", "127.0.0.1:8080"), "listen address")
	f.StringVar(&cfg.DataDir, "data-dir", envOr("CMK_DATA_DIR", "cmk-data"), "directory for the database and local keys")
	f.StringVar(&cfg.JWKSURL, "jwks-url", os.Getenv("CMK_JWKS_URL"), "verify tokens against this JWKS (default: the local development issuer)")
	f.StringVar(&cfg.TokenIssuer, "token-issuer", envOr("CMK_TOKEN_ISSUER", service.DevIssuer), "expected token issuer")
	f.StringVar(&cfg.TokenAudience, "token-audience", envOr("CMK_TOKEN_AUDIENCE", service.DevAudience), "expected token audience")
	f.StringVar(&cfg.TenantID, "azure-tenant-id", os.Getenv("CMK_AZURE_TENANT_ID"), "home tenant of the platform's multi-tenant app")
	f.StringVar(&cfg.ClientID, "azure-client-id", os.Getenv("CMK_AZURE_CLIENT_ID"), "application (client) id of the platform's app")
	f.StringVar(&certFile, "azure-client-cert", os.Getenv("CMK_AZURE_CLIENT_CERT"), "PEM certificate credential (instead of a secret)")
	f.StringVar(&cfg.AuthorityHost, "azure-authority-host", os.Getenv("CMK_AZURE_AUTHORITY_HOST"), "Entra ID authority (default: public cloud)")
	f.StringVar(&cfg.AppName, "app-name", envOr("CMK_APP_NAME", "cmk-multitenant-app"), "the app's display name")
	f.StringVar(&cfg.AppURI, "app-uri", os.Getenv("CMK_APP_URI"), "the app's application URI (also the consent redirect)")
	f.StringVar(&cfg.ConsentURL, "consent-url", os.Getenv("CMK_CONSENT_URL"), "admin-consent URL shown to tenants (default: built from the authority)")
	f.StringVar(&emulatorURL, "emulator", os.Getenv("CMK_EMULATOR_URL"), "use a local Azure emulator at this URL (development only)")
	f.StringVar(&emulatorCA, "emulator-ca", os.Getenv("CMK_EMULATOR_CA"), "CA certificate of the emulator")
	f.StringVar(&emulatorSuffix, "emulator-vault-suffix", envOr("CMK_EMULATOR_VAULT_SUFFIX", "vault.azure.localhost"), "vault host suffix the emulator serves")
	f.StringVar(&blobURL, "lake-azure-url", os.Getenv("CMK_LAKE_AZURE_URL"), "keep the data lake in Azure Blob Storage at this service URL (default: local files)")
	f.StringVar(&blobAccount, "lake-azure-account", os.Getenv("CMK_LAKE_AZURE_ACCOUNT"), "storage account name (its key in CMK_LAKE_AZURE_ACCOUNT_KEY)")
	f.StringVar(&blobContainer, "lake-azure-container", envOr("CMK_LAKE_AZURE_CONTAINER", "cmk-lake"), "blob container for the data lake")
	f.StringVar(&cfg.DatabaseDSN, "database", os.Getenv("CMK_DATABASE_DSN"), "keep the service's state in PostgreSQL at this DSN, shared by replicas (default: SQLite in --data-dir)")
	f.StringVar(&cfg.SystemKeyFile, "system-key", os.Getenv("CMK_SYSTEM_KEY_FILE"), "the system key file, shared by replicas (default: <data-dir>/system.key)")
	f.StringVar(&cfg.ProfilesDSN, "profiles-postgres", os.Getenv("CMK_PROFILES_DSN"), "keep profiles in PostgreSQL at this DSN (default: embedded SQLite)")
	f.DurationVar(&cfg.Monitor.Interval, "check-interval", monitor.DefaultInterval, "how often each org's key is checked")
	f.DurationVar(&cfg.Monitor.Grace, "grace", monitor.DefaultGrace, "how long data stays available while the vault is only unreachable")
	f.BoolVar(&cfg.WebhookPolicy.AllowHTTP, "webhook-allow-http", false, "let tenants register http:// webhooks (development only)")
	f.BoolVar(&cfg.WebhookPolicy.AllowPrivateNetworks, "webhook-allow-private", false, "let webhooks reach loopback and private addresses (development only)")
	f.IntVar(&cfg.Workers, "workers", 2, "enablement workers")
	f.IntVar(&cfg.Concurrency, "vault-concurrency", 4, "concurrent Key Vault calls per enablement job")
	return cmd
}

// useEmulator points the service at a local Azure emulator.
func useEmulator(cfg *service.Config, url, caFile, suffix string) error {
	if caFile == "" {
		return withHint(fmt.Errorf("--emulator needs --emulator-ca"), "the emulator writes its CA next to its state file (<state>.ca.pem)")
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(ca) {
		return fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	tr, err := azemu.NewTransport(url, ca, suffix)
	if err != nil {
		return err
	}
	cfg.HTTPClient = &http.Client{Transport: tr}
	cfg.AuthorityHost = url + "/"
	cfg.DisableInstanceDiscovery = true
	cfg.ExtraVaultSuffixes = []string{suffix}
	return nil
}
