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
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/cmkapi"
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
	var cfg service.Config
	var certFile, blobURL, blobAccount, blobContainer, operatorTokenFile string
	words := strings.Fields(path)
	cmd := &cobra.Command{
		Use:   words[len(words)-1],
		Short: "Run the cmk service",
		Long: `Run the cmk service: the control-plane API and the enablement workers.

State (SQLite database, system key, development token key) lives in --data-dir.
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
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cfg.Log = slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), nil))
			if cfg.ClientSecret == "" {
				cfg.ClientSecret = os.Getenv("CMK_AZURE_CLIENT_SECRET")
			}
			if certFile != "" {
				pem, err := os.ReadFile(certFile)
				if err != nil {
					return WithHint(err, "--azure-client-cert takes a PEM file holding the certificate and its private key")
				}
				cfg.CertificatePEM = pem
			}
			if cfg.OperatorAddr != "" {
				tok, err := secretFrom("CMK_OPERATOR_TOKEN", operatorTokenFile)
				if err != nil {
					return WithHint(err, "put the operator token in CMK_OPERATOR_TOKEN or a file named by --operator-token-file (mode 0600), at least 32 random characters, e.g. openssl rand -hex 32")
				}
				cfg.OperatorToken = tok
			}
			if blobURL != "" {
				key := os.Getenv("CMK_LAKE_AZURE_ACCOUNT_KEY")
				if blobAccount == "" || key == "" {
					return WithHint(fmt.Errorf("--lake-azure-url needs --lake-azure-account and CMK_LAKE_AZURE_ACCOUNT_KEY"), "set the storage account name and put its key in CMK_LAKE_AZURE_ACCOUNT_KEY")
				}
				cfg.LakeAzure = &blob.AzureConfig{ServiceURL: blobURL, AccountName: blobAccount, AccountKey: key, Container: blobContainer}
			}
			for _, h := range hooks {
				if err := h(cmd, &cfg); err != nil {
					return err
				}
			}
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
			if err := svc.Start(ctx); err != nil {
				svc.Close()
				return err
			}
			<-ctx.Done()
			return svc.Close()
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Addr, "addr", EnvOr("CMK_ADDR", "127.0.0.1:8080"), "listen address")
	f.StringVar(&cfg.DataDir, "data-dir", EnvOr("CMK_DATA_DIR", "cmk-data"), "directory for the database and local keys")
	f.StringVar(&cfg.JWKSURL, "jwks-url", os.Getenv("CMK_JWKS_URL"), "verify tokens against this JWKS (required unless --dev-token-issuer)")
	f.BoolVar(&cfg.DevTokenIssuer, "dev-token-issuer", false, "trust tokens signed with the development key in --data-dir instead of a JWKS (development only; warns at start; no environment variable)")
	f.StringVar(&cfg.TokenIssuer, "token-issuer", EnvOr("CMK_TOKEN_ISSUER", service.DevIssuer), "expected token issuer")
	f.StringVar(&cfg.TokenAudience, "token-audience", EnvOr("CMK_TOKEN_AUDIENCE", service.DevAudience), "expected token audience")
	f.StringVar(&cfg.TenantID, "azure-tenant-id", os.Getenv("CMK_AZURE_TENANT_ID"), "home tenant of the platform's multi-tenant app")
	f.StringVar(&cfg.ClientID, "azure-client-id", os.Getenv("CMK_AZURE_CLIENT_ID"), "application (client) id of the platform's app")
	f.StringVar(&certFile, "azure-client-cert", os.Getenv("CMK_AZURE_CLIENT_CERT"), "PEM certificate credential (instead of a secret)")
	f.StringVar(&cfg.AuthorityHost, "azure-authority-host", os.Getenv("CMK_AZURE_AUTHORITY_HOST"), "Entra ID authority (default: public cloud)")
	f.StringVar(&cfg.AppName, "app-name", EnvOr("CMK_APP_NAME", "cmk-multitenant-app"), "the app's display name")
	f.StringVar(&cfg.AppURI, "app-uri", os.Getenv("CMK_APP_URI"), "the app's application URI")
	f.StringVar(&cfg.ConsentURL, "consent-url", os.Getenv("CMK_CONSENT_URL"), "authorization endpoint of the orgs' consent links (default: <authority>/organizations/oauth2/v2.0/authorize)")
	f.StringVar(&cfg.PublicURL, "public-url", os.Getenv("CMK_PUBLIC_URL"), "base URL browsers reach cmk at; register <public-url>"+cmkapi.ConsentCallback.Path+" as the app's redirect URI (default: http://<addr>)")
	f.StringVar(&blobURL, "lake-azure-url", os.Getenv("CMK_LAKE_AZURE_URL"), "keep the data lake in Azure Blob Storage at this service URL (default: local files)")
	f.StringVar(&blobAccount, "lake-azure-account", os.Getenv("CMK_LAKE_AZURE_ACCOUNT"), "storage account name (its key in CMK_LAKE_AZURE_ACCOUNT_KEY)")
	f.StringVar(&blobContainer, "lake-azure-container", EnvOr("CMK_LAKE_AZURE_CONTAINER", "cmk-lake"), "blob container for the data lake")
	f.StringVar(&cfg.OperatorAddr, "operator-addr", os.Getenv("CMK_OPERATOR_ADDR"), "serve the operator's view across orgs (GET /operator/v1/orgs, cmk orgs) on this address, apart from the API; keep it off the tenants' network (default: off)")
	f.StringVar(&operatorTokenFile, "operator-token-file", os.Getenv("CMK_OPERATOR_TOKEN_FILE"), "file holding the operator listener's bearer token (or set CMK_OPERATOR_TOKEN)")
	f.StringVar(&cfg.DatabaseDSN, "database", os.Getenv("CMK_DATABASE_DSN"), "keep the service's state in PostgreSQL at this DSN, shared by replicas (default: SQLite in --data-dir)")
	f.StringVar(&cfg.SystemKeyFile, "system-key", os.Getenv("CMK_SYSTEM_KEY_FILE"), "the system key file, shared by replicas (default: <data-dir>/system.key)")
	f.StringVar(&cfg.ProfilesDSN, "profiles-postgres", os.Getenv("CMK_PROFILES_DSN"), "keep profiles in PostgreSQL at this DSN (default: embedded SQLite)")
	f.DurationVar(&cfg.Monitor.Interval, "check-interval", monitor.DefaultInterval, "how often each org's key is checked")
	f.DurationVar(&cfg.Monitor.Grace, "grace", monitor.DefaultGrace, "how long data stays available while the vault is only unreachable")
	f.BoolVar(&cfg.WebhookPolicy.AllowHTTP, "webhook-allow-http", false, "let tenants register http:// webhooks (development only)")
	f.BoolVar(&cfg.WebhookPolicy.AllowPrivateNetworks, "webhook-allow-private", false, "let webhooks reach loopback and private addresses (development only)")
	f.DurationVar(&cfg.ReadHeaderTimeout, "read-header-timeout", service.DefaultReadHeaderTimeout, "how long a client has to send a request's line and headers")
	f.DurationVar(&cfg.IdleTimeout, "idle-timeout", service.DefaultIdleTimeout, "how long a keep-alive connection stays open with no request")
	f.DurationVar(&cfg.BodyReadTimeout, "body-read-timeout", service.DefaultBodyReadTimeout, "a request body must bring --min-transfer-bytes within each such wait, or the request fails with 408 and nothing is stored")
	f.DurationVar(&cfg.WriteTimeout, "write-timeout", service.DefaultWriteTimeout, "a client must take --min-transfer-bytes of an answer within each such wait, or the answer is cut off")
	f.IntVar(&cfg.MinTransferBytes, "min-transfer-bytes", service.DefaultMinTransferBytes, "the minimum transfer per --body-read-timeout or --write-timeout")
	f.StringVar(&cfg.EventGridIssuer, "eventgrid-issuer", os.Getenv("CMK_EVENTGRID_ISSUER"), "accept Key Vault events from Event Grid with Microsoft Entra tokens of this issuer, e.g. https://sts.windows.net/<platform-tenant>/ (off unless set, with --eventgrid-jwks-url and --eventgrid-audience)")
	f.StringVar(&cfg.EventGridJWKSURL, "eventgrid-jwks-url", os.Getenv("CMK_EVENTGRID_JWKS_URL"), "the issuer's signing keys, e.g. https://login.microsoftonline.com/<platform-tenant>/discovery/v2.0/keys")
	f.StringVar(&cfg.EventGridAudience, "eventgrid-audience", os.Getenv("CMK_EVENTGRID_AUDIENCE"), "the audience the Event Grid subscription requests tokens for (the receiving app's id or URI)")
	f.StringVar(&cfg.EventGridAppID, "eventgrid-app-id", EnvOr("CMK_EVENTGRID_APP_ID", service.EventGridAppID), "the app id (appid claim) of the only caller accepted: Event Grid's (the default is the public cloud's; sovereign clouds differ)")
	f.IntVar(&cfg.Workers, "workers", 2, "enablement workers")
	f.IntVar(&cfg.Concurrency, "vault-concurrency", 4, "concurrent Key Vault calls per enablement job")
	return cmd
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

// secretFrom reads a secret from the environment variable env, or from
// file when it is set (trailing newlines dropped). Secrets are never flags.
func secretFrom(env, file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read %s: %w", file, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	if v := os.Getenv(env); v != "" {
		return v, nil
	}
	return "", fmt.Errorf("no operator token: neither %s nor a token file is set", env)
}
