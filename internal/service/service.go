// Package service assembles cmk from its parts — database, system key, key
// provider, token verifier, enablement workers and HTTP API — and runs it.
package service

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cmk-project/cmk/internal/api"
	"github.com/cmk-project/cmk/internal/auth"
	"github.com/cmk-project/cmk/internal/enablement"
	"github.com/cmk-project/cmk/internal/keyid"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/kms/azurekv"
	"github.com/cmk-project/cmk/internal/preflight"
	"github.com/cmk-project/cmk/internal/store"
	"github.com/cmk-project/cmk/internal/systemkey"
)

// Token defaults for the built-in development issuer.
const (
	DevIssuer   = "cmk-dev"
	DevAudience = "cmk"
	// DevAPIKey is the static client id the seeds' CMK calls use.
	DevAPIKey = "acp_provisioning"
)

// Config configures the service. Zero values take the defaults noted.
type Config struct {
	Addr    string // listen address, default 127.0.0.1:8080
	DataDir string // default ./cmk-data: database, system key, dev token key

	// Token verification: a JWKS URL for a real issuer, or (when empty) the
	// development issuer whose key lives in DataDir.
	JWKSURL       string
	TokenIssuer   string // default DevIssuer
	TokenAudience string // default DevAudience

	// The platform's multi-tenant Azure app.
	AppName        string // default "cmk-multitenant-app"
	AppURI         string
	TenantID       string // the app's home tenant
	ClientID       string
	ClientSecret   string
	CertificatePEM []byte
	ConsentURL     string // admin-consent URL shown to tenants; default built from AuthorityHost
	AuthorityHost  string // "" = public cloud
	HTTPClient     *http.Client
	// ExtraVaultSuffixes allows vault hosts beyond the Azure clouds' (the
	// local emulator's suffix); never set it in production.
	ExtraVaultSuffixes       []string
	DisableInstanceDiscovery bool

	// Provider replaces the Azure provider (tests).
	Provider kms.Provider

	Workers     int // enablement workers, default 2; negative = none (tests drive jobs)
	Concurrency int // vault calls per job, default enablement.DefaultConcurrency
	Lease       time.Duration
	Poll        time.Duration
	Log         *slog.Logger
}

// Service is a running cmk.
type Service struct {
	cfg      Config
	Store    *store.Store
	Keyring  *keyring.Keyring
	Issuer   *auth.Issuer // nil when a JWKS issuer is configured
	Provider kms.Provider
	Runners  []*enablement.Runner
	API      *api.Server
	Policy   keyid.Policy
	App      api.App

	ln     net.Listener
	srv    *http.Server
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New opens state and builds the service without starting it.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = "cmk-data"
	}
	if cfg.TokenIssuer == "" {
		cfg.TokenIssuer = DevIssuer
	}
	if cfg.TokenAudience == "" {
		cfg.TokenAudience = DevAudience
	}
	if cfg.AppName == "" {
		cfg.AppName = "cmk-multitenant-app"
	}
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", cfg.DataDir, err)
	}
	s := &Service{cfg: cfg, Policy: keyid.Policy{ExtraSuffixes: cfg.ExtraVaultSuffixes}}

	sys, err := systemkey.LoadOrCreate(filepath.Join(cfg.DataDir, "system.key"))
	if err != nil {
		return nil, err
	}
	var verifier auth.Verifier
	if cfg.JWKSURL != "" {
		verifier, err = auth.NewJWKSVerifier(cfg.JWKSURL, cfg.TokenIssuer, cfg.TokenAudience, cfg.HTTPClient)
	} else {
		s.Issuer, err = auth.LoadOrCreateIssuer(filepath.Join(cfg.DataDir, "token-signing.pem"), cfg.TokenIssuer, cfg.TokenAudience)
		if s.Issuer != nil {
			verifier = s.Issuer.Verifier()
		}
	}
	if err != nil {
		return nil, err
	}

	s.Provider = cfg.Provider
	if s.Provider == nil && cfg.ClientID != "" {
		s.Provider, err = azurekv.New(azurekv.Config{
			TenantID: cfg.TenantID, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, CertificatePEM: cfg.CertificatePEM,
			AuthorityHost: cfg.AuthorityHost, HTTPClient: cfg.HTTPClient, DisableInstanceDiscovery: cfg.DisableInstanceDiscovery,
			ExtraVaultSuffixes: cfg.ExtraVaultSuffixes,
		})
		if err != nil {
			return nil, err
		}
	}
	if s.Provider == nil {
		s.Provider = unconfigured{}
	}

	s.Store, err = store.Open(ctx, filepath.Join(cfg.DataDir, "cmk.db"))
	if err != nil {
		return nil, err
	}
	s.Keyring = &keyring.Keyring{Store: s.Store, System: sys, Customer: s.Provider}
	s.App = api.App{ID: "byok", Name: cfg.AppName, ApplicationURI: cfg.AppURI, ApplicationID: cfg.ClientID, RedirectURL: cfg.ConsentURL}
	if s.App.RedirectURL == "" && cfg.ClientID != "" {
		s.App.RedirectURL = DefaultConsentURL(cfg.AuthorityHost, cfg.ClientID, cfg.AppURI)
	}
	env := preflight.Env{AppName: cfg.AppName, AppID: cfg.ClientID, ConsentURL: s.App.RedirectURL}
	host, _ := os.Hostname()
	for i := range cfg.Workers {
		b := make([]byte, 4)
		rand.Read(b)
		s.Runners = append(s.Runners, &enablement.Runner{
			Store: s.Store, Keyring: s.Keyring, Provider: s.Provider, Policy: s.Policy, Env: env,
			Owner: fmt.Sprintf("%s/%d/%d/%s", host, os.Getpid(), i, hex.EncodeToString(b)), Lease: cfg.Lease, Poll: cfg.Poll,
			Concurrency: cfg.Concurrency, Log: cfg.Log,
		})
	}
	s.API = &api.Server{Store: s.Store, Keyring: s.Keyring, Provider: s.Provider, Verifier: verifier, Policy: s.Policy, App: s.App, Env: env, Log: cfg.Log}
	return s, nil
}

// DefaultConsentURL is the Entra ID v2 admin-consent URL for the app.
func DefaultConsentURL(authority, clientID, redirect string) string {
	if authority == "" {
		authority = "https://login.microsoftonline.com/"
	}
	q := url.Values{"client_id": {clientID}, "scope": {"https://vault.azure.net/.default"}}
	if redirect != "" {
		q.Set("redirect_uri", redirect)
	}
	return authority + "organizations/v2.0/adminconsent?" + q.Encode()
}

// Start listens and starts the workers.
func (s *Service) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	ctx, s.cancel = context.WithCancel(ctx)
	for _, r := range s.Runners {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); r.Run(ctx) }()
	}
	s.srv = &http.Server{Handler: s.API.Handler(), ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Log.Error("http server stopped", "err", err)
		}
	}()
	s.cfg.Log.Info("cmk listening", "url", s.URL())
	return nil
}

// URL is the base URL the service listens on.
func (s *Service) URL() string { return "http://" + s.ln.Addr().String() }

// Close stops the server and workers and closes the database.
func (s *Service) Close() error {
	if s.cancel != nil {
		s.cancel()
	}
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.srv.Shutdown(ctx)
		cancel()
	}
	s.wg.Wait()
	return s.Store.Close()
}

// MintDevToken mints a development token for org with the given
// permissions (all CMK and data permissions when perms is nil).
func (s *Service) MintDevToken(subject, org string, perms []string, ttl time.Duration) (string, error) {
	if s.Issuer == nil {
		return "", errors.New("this service verifies tokens from an external issuer; it cannot mint tokens")
	}
	if perms == nil {
		perms = AllPermissions
	}
	return s.Issuer.Mint(auth.Claims{Subject: subject, ClientID: DevAPIKey, Orgs: map[string][]string{org: perms}}, ttl)
}

// AllPermissions are every permission a dev token can carry.
var AllPermissions = []string{auth.PermManageCMK, auth.PermDataRead, auth.PermDataWrite, api.PermManageSandboxes}

// unconfigured is the provider when no Azure app is configured: every call
// says so plainly.
type unconfigured struct{}

func (unconfigured) err(op string, ref kms.KeyRef) error {
	return &kms.Error{Kind: kms.KindTokenFailed, Op: op, Key: ref.String(), Err: errors.New("the service has no Azure app configured (set --azure-client-id and its credential)")}
}
func (u unconfigured) Describe(_ context.Context, ref kms.KeyRef) (kms.KeyInfo, error) {
	return kms.KeyInfo{}, u.err("describe", ref)
}
func (u unconfigured) Wrap(_ context.Context, ref kms.KeyRef, _ []byte) (kms.Wrapped, error) {
	return kms.Wrapped{}, u.err("wrap", ref)
}
func (u unconfigured) Unwrap(_ context.Context, ref kms.KeyRef, _ kms.Wrapped) ([]byte, error) {
	return nil, u.err("unwrap", ref)
}
