// Package servecmd is the command that runs the cmk service: its flags (each
// with a CMK_* environment variable as default), the configuration they build,
// and the run loop that stops on SIGINT or SIGTERM.
//
// The production server, cmd/cmkd, is this command alone. The development
// CLI's 'cmk serve' is the same command with the local-emulator flags added
// by cmd/cmk, through a Hook. So this package must not link the emulator, the
// benchmarks or the development world (cmd/cmkd's deps_test.go checks).
package servecmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/config"
	"github.com/cmk-project/cmk/internal/enablement"
	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/monitor"
	"github.com/cmk-project/cmk/internal/service"
)

// A Hook runs once the flags are parsed and the configuration is built from
// them, before the service is created; it may change cfg (cfg.Log is set).
// An error stops the command before anything starts.
type Hook func(cmd *cobra.Command, cfg *service.Config) error

// New returns the command that runs the service. path is how a person
// invokes it ("cmkd", "cmk serve"): its last word is the command's name and
// the examples use all of it. The hooks run in order before the service starts;
// flags they need are added to the returned command's Flags by the caller.
//
// Errors that come with advice for the person at the terminal carry it in a
// Hint method (see HintOf).
func New(path string, hooks ...Hook) *cobra.Command {
	return NewWith(path, runService, hooks...)
}

// A RunFunc runs with the configuration the serve command's flags built,
// once the hooks have run: the service itself, or a command that works on
// its state (platform-key).
type RunFunc func(ctx context.Context, cmd *cobra.Command, cfg service.Config) error

// NewWith is New with run in place of running the service: the same flags,
// environment, configuration file and hooks.
func NewWith(path string, run RunFunc, hooks ...Hook) *cobra.Command {
	var cfg service.Config
	var certFile, blobURL, blobAccount, blobContainer, configFile string
	var printConfig bool
	var trustedProxies []string
	aws := &awsFlags{}
	words := strings.Fields(path)
	cmd := &cobra.Command{
		Use:   words[len(words)-1],
		Short: "Run the cmk service",
		Long: `Run the cmk service: the control-plane API and the enablement workers.

State (SQLite database, system key, development token key) lives in --data-dir.
Every flag can also be set by its CMK_* variable or in the JSON file named by
--config (flag > variable > file > default; see --print-config and
docs/operations.md). Secrets come only from variables or *-file settings.
The platform's Azure app is set with --azure-* flags or CMK_AZURE_* variables;
keep the client secret in CMK_AZURE_CLIENT_SECRET rather than on the command line.

Tokens are verified against the identity provider's keys at --jwks-url. Without
it the service refuses to start, unless --dev-token-issuer says to trust the
local development key in --data-dir instead (development only: anyone who can
read that file can sign in as any org).`,
		Example: fmt.Sprintf(`  # against Azure
  CMK_AZURE_CLIENT_SECRET=... %s --azure-tenant-id <home-tenant> --azure-client-id <app-id>`, path),
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			eff, secrets, err := config.Apply(cmd.Flags(), configFile, os.LookupEnv, Secrets)
			if err != nil {
				return err
			}
			if printConfig {
				eff.Print(cmd.OutOrStdout())
				return nil
			}
			if err := validate(&cfg, trustedProxies); err != nil {
				return err
			}
			cfg.Log = slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), nil))
			if cfg.ClientSecret == "" {
				cfg.ClientSecret = secrets["azure-client-secret"]
			}
			if certFile != "" {
				pem, err := os.ReadFile(certFile)
				if err != nil {
					return WithHint(err, "--azure-client-cert takes a PEM file holding the certificate and its private key")
				}
				cfg.CertificatePEM = pem
			}
			if cfg.OperatorAddr != "" {
				cfg.OperatorToken = secrets["operator-token"]
				if cfg.OperatorToken == "" {
					return WithHint(errors.New("--operator-addr is set but there is no operator token"),
						"put the operator token in CMK_OPERATOR_TOKEN or a file named by --operator-token-file (mode 0600), at least 32 random characters, e.g. openssl rand -hex 32")
				}
			}
			if blobURL != "" {
				key := secrets["lake-azure-account-key"]
				if blobAccount == "" || key == "" {
					return WithHint(fmt.Errorf("--lake-azure-url needs --lake-azure-account and CMK_LAKE_AZURE_ACCOUNT_KEY"), "set the storage account name and put its key in CMK_LAKE_AZURE_ACCOUNT_KEY or in a file named by --lake-azure-account-key-file")
				}
				cfg.LakeAzure = &blob.AzureConfig{ServiceURL: blobURL, AccountName: blobAccount, AccountKey: key, Container: blobContainer}
			}
			if err := aws.apply(&cfg); err != nil {
				return err
			}
			for _, h := range hooks {
				if err := h(cmd, &cfg); err != nil {
					return err
				}
			}
			return run(ctx, cmd, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "listen address")
	f.StringVar(&cfg.DataDir, "data-dir", "cmk-data", "directory for the database and local keys")
	f.StringVar(&cfg.JWKSURL, "jwks-url", "", "verify tokens against this JWKS (required unless --dev-token-issuer)")
	f.BoolVar(&cfg.DevTokenIssuer, "dev-token-issuer", false, "trust tokens signed with the development key in --data-dir instead of a JWKS (development only; warns at start; no environment variable)")
	f.StringVar(&cfg.TokenIssuer, "token-issuer", service.DevIssuer, "expected token issuer")
	f.StringVar(&cfg.TokenAudience, "token-audience", service.DevAudience, "expected token audience")
	f.StringVar(&cfg.TenantID, "azure-tenant-id", "", "home tenant of the platform's multi-tenant app")
	f.StringVar(&cfg.ClientID, "azure-client-id", "", "application (client) id of the platform's app")
	f.StringVar(&certFile, "azure-client-cert", "", "PEM certificate credential (instead of a secret)")
	f.StringVar(&cfg.AuthorityHost, "azure-authority-host", "", "Entra ID authority (default: public cloud)")
	f.StringVar(&cfg.AppName, "app-name", "cmk-multitenant-app", "the app's display name")
	f.StringVar(&cfg.AppURI, "app-uri", "", "the app's application URI")
	f.StringVar(&cfg.ConsentURL, "consent-url", "", "authorization endpoint of the orgs' consent links (default: <authority>/organizations/oauth2/v2.0/authorize)")
	f.StringVar(&cfg.PublicURL, "public-url", "", "base URL browsers reach cmk at; register <public-url>"+cmkapi.ConsentCallback.Path+" as the app's redirect URI (default: http://<addr>)")
	f.StringVar(&blobURL, "lake-azure-url", "", "keep the data lake in Azure Blob Storage at this service URL (default: local files)")
	f.StringVar(&blobAccount, "lake-azure-account", "", "storage account name (its key in CMK_LAKE_AZURE_ACCOUNT_KEY)")
	f.StringVar(&blobContainer, "lake-azure-container", "cmk-lake", "blob container for the data lake")
	f.StringVar(&cfg.OperatorAddr, "operator-addr", "", "serve the operator's view across orgs (GET /operator/v1/orgs, cmk orgs) on this address, apart from the API; keep it off the tenants' network (default: off)")
	f.StringVar(&cfg.DatabaseDSN, "database", "", "keep the service's state in PostgreSQL at this DSN, shared by replicas (default: SQLite in --data-dir)")
	f.StringVar(&cfg.SystemKeyFile, "system-key", "", "the system key file, shared by replicas (default: <data-dir>/system.key)")
	f.StringVar(&cfg.PlatformKey, "platform-key", "", "keep the system key under this key of the platform's own KMS: an Azure Key Vault key identifier without version, or an AWS KMS key ARN (see 'platform-key --help'; default: the --system-key file)")
	f.StringVar(&cfg.ProfilesDSN, "profiles-postgres", "", "keep profiles in PostgreSQL at this DSN (default: embedded SQLite)")
	f.DurationVar(&cfg.Monitor.Interval, "check-interval", monitor.DefaultInterval, "how often each org's key is checked")
	f.IntVar(&cfg.Monitor.Concurrency, "check-concurrency", monitor.DefaultConcurrency, "key checks one replica runs at once; with the interval it bounds the orgs a replica can keep on schedule")
	f.DurationVar(&cfg.Monitor.Grace, "grace", monitor.DefaultGrace, "how long data stays available while the vault is only unreachable")
	f.BoolVar(&cfg.WebhookPolicy.AllowHTTP, "webhook-allow-http", false, "let tenants register http:// webhooks (development only)")
	f.BoolVar(&cfg.WebhookPolicy.AllowPrivateNetworks, "webhook-allow-private", false, "let webhooks reach loopback and private addresses (development only)")
	f.DurationVar(&cfg.ReadHeaderTimeout, "read-header-timeout", service.DefaultReadHeaderTimeout, "how long a client has to send a request's line and headers")
	f.DurationVar(&cfg.IdleTimeout, "idle-timeout", service.DefaultIdleTimeout, "how long a keep-alive connection stays open with no request")
	f.DurationVar(&cfg.BodyReadTimeout, "body-read-timeout", service.DefaultBodyReadTimeout, "a request body must bring --min-transfer-bytes within each such wait, or the request fails with 408 and nothing is stored")
	f.DurationVar(&cfg.WriteTimeout, "write-timeout", service.DefaultWriteTimeout, "a client must take --min-transfer-bytes of an answer within each such wait, or the answer is cut off")
	f.IntVar(&cfg.LakeMinFreeMiB, "lake-min-free-mib", service.DefaultLakeMinFreeMiB, "MiB the local-files lake leaves free on its volume: an upload that would go below is refused (507 STORAGE_FULL), so one org cannot take the last of the disk from the databases and the other orgs; 0: no floor")
	f.IntVar(&cfg.MinTransferBytes, "min-transfer-bytes", service.DefaultMinTransferBytes, "the minimum transfer per --body-read-timeout or --write-timeout")
	f.StringVar(&cfg.EventGridIssuer, "eventgrid-issuer", "", "accept Key Vault events from Event Grid with Microsoft Entra tokens of this issuer, e.g. https://sts.windows.net/<platform-tenant>/ (off unless set, with --eventgrid-jwks-url and --eventgrid-audience)")
	f.StringVar(&cfg.EventGridJWKSURL, "eventgrid-jwks-url", "", "the issuer's signing keys, e.g. https://login.microsoftonline.com/<platform-tenant>/discovery/v2.0/keys")
	f.StringVar(&cfg.EventGridAudience, "eventgrid-audience", "", "the audience the Event Grid subscription requests tokens for (the receiving app's id or URI)")
	f.StringVar(&cfg.EventGridAppID, "eventgrid-app-id", service.EventGridAppID, "the app id (appid claim) of the only caller accepted: Event Grid's (the default is the public cloud's; sovereign clouds differ)")
	f.IntVar(&cfg.Workers, "workers", 2, "enablement workers")
	f.IntVar(&cfg.Concurrency, "vault-concurrency", 4, "concurrent Key Vault calls per enablement job")
	f.DurationVar(&cfg.Lease, "lease", enablement.DefaultLease, "how long a replica's claim on an enablement job or a key check lasts unrenewed (renewed every third of it; a key rotation's, twice that): a replica that dies holding one leaves it for this long before another takes it over")
	f.StringVar(&cfg.TLSCertFile, "tls-cert", "", "serve HTTPS with this PEM certificate (chain) file, read again when it changes (with --tls-key)")
	f.StringVar(&cfg.TLSKeyFile, "tls-key", "", "the PEM private key of --tls-cert")
	f.StringSliceVar(&trustedProxies, "trusted-proxies", nil, "comma-separated CIDRs of the proxies whose X-Forwarded-For and X-Forwarded-Proto are believed (default: none)")
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", service.DefaultShutdownTimeout, "on SIGTERM or SIGINT, how long in-flight requests, data keys and checks have to finish before the rest is cancelled")
	f.String("azure-client-secret-file", "", "a file (mode 0600) holding the app's client secret, instead of CMK_AZURE_CLIENT_SECRET")
	f.String("operator-token-file", "", "a file (mode 0600) holding the operator listener's bearer token, instead of CMK_OPERATOR_TOKEN")
	f.String("lake-azure-account-key-file", "", "a file (mode 0600) holding the storage account key, instead of CMK_LAKE_AZURE_ACCOUNT_KEY")
	f.StringVar(&configFile, "config", "", "read settings from this JSON file (flags and CMK_* variables override it; see docs/operations.md)")
	f.BoolVar(&printConfig, "print-config", false, "print the effective settings, where each came from, secrets redacted, and exit")
	config.MarkFlagOnly(f, "dev-token-issuer", "webhook-allow-http", "webhook-allow-private", "config", "print-config")
	config.MarkRedacted(f, "database", "profiles-postgres")
	aws.register(f)
	return cmd
}

// runService runs the service until SIGINT or SIGTERM, then drains it.
func runService(ctx context.Context, cmd *cobra.Command, cfg service.Config) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.DevTokenIssuer && cfg.JWKSURL == "" {
		fmt.Fprintln(cmd.ErrOrStderr(), "WARNING: "+service.DevTokenIssuerWarning)
	}
	svc, err := service.New(ctx, cfg)
	if errors.Is(err, service.ErrNoTokenIssuer) {
		return WithHint(fmt.Errorf("%w: --jwks-url is not set", err),
			"point --jwks-url (or CMK_JWKS_URL) at your identity provider's JWKS, with --token-issuer and --token-audience; for local development only, --dev-token-issuer trusts tokens signed with the key in --data-dir")
	}
	if err != nil {
		return err
	}
	// The service's loops outlive the signal: Shutdown drains them.
	if err := svc.Start(context.WithoutCancel(ctx)); err != nil {
		svc.Close()
		return err
	}
	<-ctx.Done()
	stop() // a second signal ends the process at once
	if err := svc.Shutdown(); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return WithHint(fmt.Errorf("the drain did not finish within --shutdown-timeout %s; what was still running was cancelled", cfg.ShutdownTimeout),
				"a job cut short resumes once its lease expires; raise --shutdown-timeout (below the orchestrator's grace period) if this happens often")
		}
		return err
	}
	return nil
}

// EnvOr returns the environment variable name, or def when it is unset or empty.
func EnvOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// hintError is an error with a hint for the person at the terminal.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }
func (e *hintError) Hint() string  { return e.hint }

// WithHint returns err with a hint for the person at the terminal.
func WithHint(err error, hint string) error { return &hintError{err: err, hint: hint} }

// HintOf returns the hint of the first error in err's tree that has a Hint
// method, or "".
func HintOf(err error) string {
	var h interface{ Hint() string }
	if errors.As(err, &h) {
		return h.Hint()
	}
	return ""
}
