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
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/api"
	"github.com/cmk-project/cmk/internal/audit"
	"github.com/cmk-project/cmk/internal/auth"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/consent"
	"github.com/cmk-project/cmk/internal/control"
	"github.com/cmk-project/cmk/internal/dekcache"
	"github.com/cmk-project/cmk/internal/enablement"
	"github.com/cmk-project/cmk/internal/guidance"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/keyid"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/kms/azurekv"
	"github.com/cmk-project/cmk/internal/lake"
	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/metrics"
	"github.com/cmk-project/cmk/internal/monitor"
	"github.com/cmk-project/cmk/internal/orgkeys"
	"github.com/cmk-project/cmk/internal/platformkey"
	"github.com/cmk-project/cmk/internal/preflight"
	"github.com/cmk-project/cmk/internal/profile"
	"github.com/cmk-project/cmk/internal/profile/records"
	"github.com/cmk-project/cmk/internal/ratelimit"
	"github.com/cmk-project/cmk/internal/store"
	"github.com/cmk-project/cmk/internal/web"
)

// DevTokenIssuerWarning is logged when the service trusts the development
// token issuer.
const DevTokenIssuerWarning = "development mode: trusting tokens signed with the local development key; anyone who can read that key file can sign in as any org; never run this in production"

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

	// Connection limits, zero for the Default* value of each (limits.go).
	// A request body must arrive, and an answer be taken, at no less than
	// MinTransferBytes per BodyReadTimeout or WriteTimeout of waiting: a
	// body that is slower fails with 408 and nothing is stored; an answer
	// that is slower is cut off.
	ReadHeaderTimeout time.Duration // request line and headers
	IdleTimeout       time.Duration // keep-alive connection with no request
	BodyReadTimeout   time.Duration
	WriteTimeout      time.Duration
	MinTransferBytes  int

	// DatabaseDSN puts the service's state in PostgreSQL instead of SQLite
	// in DataDir; replicas sharing it share the work. Replicas must also
	// share the system key (SystemKeyFile) and token keys.
	DatabaseDSN   string
	SystemKeyFile string // default DataDir/system.key; not used with PlatformKey
	// PlatformKey puts the system key under a key in the platform's own
	// KMS: an Azure Key Vault key identifier without version
	// (https://{vault}.vault.azure.net/keys/{name}, reached with the
	// platform app's credentials) or an AWS KMS key ARN (AWS must be
	// configured). See internal/platformkey.
	PlatformKey string
	// PlatformKeyEvery is the pause between the platform key's re-wrap
	// passes (default platformkey.DefaultEvery); tests shorten it.
	PlatformKeyEvery time.Duration
	TokenKeyFile     string // development issuer key, default DataDir/token-signing.pem

	// Token verification: a JWKS URL for a real issuer, or the development
	// issuer whose key lives in DataDir (TokenKeyFile). One of JWKSURL and
	// DevTokenIssuer must be set: New refuses neither (ErrNoTokenIssuer)
	// and both.
	JWKSURL       string
	TokenIssuer   string // default DevIssuer
	TokenAudience string // default DevAudience
	// DevTokenIssuer trusts tokens signed with the local development key,
	// which anyone who can read TokenKeyFile can mint for any org. For
	// development and tests only; New logs a warning when it is set.
	DevTokenIssuer bool

	// Key Vault events through Event Grid, off unless EventGridIssuer is
	// set: a delivery must carry a Microsoft Entra access token issued by
	// EventGridIssuer (e.g. https://sts.windows.net/{platform tenant}/),
	// signed by a key published at EventGridJWKSURL, for EventGridAudience
	// (the receiving app's id or URI), to EventGridAppID (default Event
	// Grid's own app). An event only asks for an immediate key check.
	EventGridIssuer   string
	EventGridJWKSURL  string
	EventGridAudience string
	EventGridAppID    string

	// The platform's multi-tenant Azure app.
	AppName        string // default "cmk-multitenant-app"
	AppURI         string
	TenantID       string // the app's home tenant
	ClientID       string
	ClientSecret   string
	CertificatePEM []byte
	// ConsentURL is the authorization endpoint each org's consent link
	// points at; default AuthorityHost's organizations/oauth2/v2.0/authorize.
	// cmk adds the query (client id, code response, redirect, prompt,
	// scope, and the org's sealed state).
	ConsentURL    string
	AuthorityHost string // "" = public cloud
	// PublicURL is the base URL browsers reach this service at (behind a
	// gateway, its public address); the consent redirect comes back under
	// it, so it must be a redirect URI registered on the app. Default: the
	// listen address.
	PublicURL  string
	HTTPClient *http.Client
	// ExtraVaultSuffixes allows vault hosts beyond the Azure clouds' (the
	// local emulator's suffix); never set it in production.
	ExtraVaultSuffixes       []string
	DisableInstanceDiscovery bool

	// DevLogin lets the UI sign in as the demo org without an identity
	// provider (cmk dev only).
	DevLogin bool

	// VaultTimeout bounds each Key Vault call (default 10s).
	VaultTimeout time.Duration

	// Provider replaces the Azure provider (tests).
	Provider kms.Provider

	// AWS configures customer keys in AWS KMS (provider type AWS_KMS):
	// nil leaves AWS KMS off. See AWSConfig.
	AWS *AWSConfig

	// RateLimits bounds the API calls that reach a key vault on demand: per
	// org and route class, and per vault across orgs. Zero fields take
	// ratelimit.Defaults; tests that make many such calls raise them.
	RateLimits ratelimit.Policy

	Workers int // enablement workers, default 2; negative = none (tests drive jobs)

	// Key health monitoring.
	Monitor   monitor.Config // zero fields take the monitor's defaults
	NoMonitor bool           // tests that drive checks themselves

	// OperatorAddr, when set, serves the operator's view across orgs
	// (cmkapi.OperatorRoutes) on its own listener, to callers bearing
	// OperatorToken; keep it off the tenants' network (operator.go).
	OperatorAddr, OperatorToken string
	// Data plane backends. Defaults: files under DataDir/lake, profiles in
	// SQLite at DataDir/profiles.db.
	LakeAzure   *blob.AzureConfig // Azure Blob Storage instead of local files
	ProfilesDSN string            // PostgreSQL instead of SQLite
	NoFsync     bool              // local lake without fsync (benchmarks of the raw cost only)
	// LakeMinFreeMiB is what the local-files lake leaves free on its
	// volume, in MiB (blob.FSOptions.MinFree); 0: no floor.
	LakeMinFreeMiB int
	// ProfileLimits bound a profile record's size and nesting, a listing
	// page's bytes, and each org's records and their bytes; zero fields
	// take the profile package's defaults (1 MiB, 64 levels, 4 MiB, a
	// million records, 10 GiB).
	ProfileLimits profile.Limits
	// LakeQuota bounds a lake file and each org's lake files; zero fields
	// take the lake package's defaults (64 GiB, 1 TiB).
	LakeQuota lake.Quota

	// WebhookPolicy says which webhook URLs tenants may register.
	WebhookPolicy  alerts.URLPolicy
	WebhookBackoff time.Duration
	Concurrency    int // vault calls per job, default enablement.DefaultConcurrency
	// Lease is how long a replica's claim on an enablement job lasts
	// without renewal, and the monitor's lease unless Monitor.Lease is
	// set: the time after which a crashed replica's work is resumed
	// (default enablement.DefaultLease).
	Lease time.Duration
	Poll  time.Duration
	// PropagationWait bounds how long validation waits for a role
	// assignment or consent to take effect (enablement.Runner); 0 means
	// enablement.DefaultPropagationWait, negative not at all.
	PropagationWait time.Duration
	Log             *slog.Logger

	// Serving: TLS and proxies, and the drain on shutdown (lifecycle.go).
	Serving
}

// EventGridAppID is the application id of Event Grid's first-party app in
// the Azure public cloud (sovereign clouds have their own): the appid of the
// tokens it presents to a webhook protected by Microsoft Entra
// authentication.
const EventGridAppID = "4962773b-9cdb-44cf-a8bf-237846a00ab7"

// eventSource builds the verifier of Key Vault event deliveries, or nil
// when events are not configured.
func eventSource(cfg Config, policy keyid.Policy) (*api.EventSource, error) {
	if cfg.EventGridIssuer == "" && cfg.EventGridJWKSURL == "" && cfg.EventGridAudience == "" {
		return nil, nil
	}
	for _, f := range []struct{ flag, v string }{{"--eventgrid-issuer", cfg.EventGridIssuer}, {"--eventgrid-jwks-url", cfg.EventGridJWKSURL}, {"--eventgrid-audience", cfg.EventGridAudience}} {
		if f.v == "" {
			return nil, fmt.Errorf("accepting Key Vault events needs %s too: set --eventgrid-issuer, --eventgrid-jwks-url and --eventgrid-audience together, or none of them", f.flag)
		}
	}
	v, err := auth.NewJWKSVerifier(cfg.EventGridJWKSURL, cfg.EventGridIssuer, cfg.EventGridAudience, cfg.HTTPClient)
	if err != nil {
		return nil, fmt.Errorf("accepting Key Vault events: %w", err)
	}
	app := cfg.EventGridAppID
	if app == "" {
		app = EventGridAppID
	}
	return &api.EventSource{Verifier: v, AppID: app, Keys: policy}, nil
}

// ErrNoTokenIssuer is returned by New when the configuration names no token
// issuer: neither a JWKS URL nor, explicitly, the development issuer.
var ErrNoTokenIssuer = errors.New("no token issuer is configured")

// Service is a running cmk.
type Service struct {
	cfg     Config
	Store   *store.Store
	Keyring *keyring.Keyring
	// PlatformKey is the system key: its generations under the platform's
	// KMS key, or the key file's one; Rewrapper moves data keys between
	// generations (nil with a key file).
	PlatformKey *platformkey.Ring
	Rewrapper   *platformkey.Rewrapper
	Issuer      *auth.Issuer // nil when a JWKS issuer is configured
	Provider    kms.Provider // the key provider, behind the vault cap of Limits and audited
	Limits      *ratelimit.Limits
	Runners     []*enablement.Runner
	Control     *control.Service
	API         *api.Server
	Metrics     *metrics.Metrics
	Cache       *dekcache.Cache
	Gate        *keyhealth.Gate
	Monitor     *monitor.Monitor
	Notifier    *alerts.Notifier
	Webhooks    *alerts.Deliverer
	Keys        *orgkeys.Resolver
	Lake        *lake.Lake
	Profiles    *profile.Store
	closers     []func() error
	opLn        net.Listener // the operator listener, when configured
	opSrv       *http.Server
	devOrg      string
	Policy      keyid.Policy
	App         cmkapi.App

	ln     net.Listener
	srv    *http.Server
	cancel context.CancelFunc
	wg     sync.WaitGroup
	life   lifecycle
}

// New opens state and builds the service without starting it.
func New(ctx context.Context, cfg Config) (_ *Service, err error) {
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
	if err := cfg.checkOperator(); err != nil {
		return nil, err
	}
	if cfg.AppName == "" {
		cfg.AppName = "cmk-multitenant-app"
	}
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	cfg.ReadHeaderTimeout = orDefault(cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	cfg.IdleTimeout = orDefault(cfg.IdleTimeout, DefaultIdleTimeout)
	cfg.BodyReadTimeout = orDefault(cfg.BodyReadTimeout, DefaultBodyReadTimeout)
	cfg.WriteTimeout = orDefault(cfg.WriteTimeout, DefaultWriteTimeout)
	if cfg.MinTransferBytes == 0 {
		cfg.MinTransferBytes = DefaultMinTransferBytes
	}
	for _, l := range []struct {
		name string
		v    time.Duration
	}{{"read header timeout", cfg.ReadHeaderTimeout}, {"idle timeout", cfg.IdleTimeout}, {"body read timeout", cfg.BodyReadTimeout}, {"write timeout", cfg.WriteTimeout}} {
		if l.v < 0 {
			return nil, fmt.Errorf("the %s is %s; it must be positive", l.name, l.v)
		}
	}
	if cfg.MinTransferBytes < 0 {
		return nil, fmt.Errorf("the minimum transfer is %d bytes; it must be positive", cfg.MinTransferBytes)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	switch {
	case cfg.JWKSURL == "" && !cfg.DevTokenIssuer:
		return nil, ErrNoTokenIssuer
	case cfg.JWKSURL != "" && cfg.DevTokenIssuer:
		return nil, errors.New("a JWKS URL and the development token issuer are both configured; choose one")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", cfg.DataDir, err)
	}
	if err := checkDataDir(cfg.DataDir, cfg.Log); err != nil {
		return nil, err // refused, not repaired: see checkDataDir
	}
	s := &Service{cfg: cfg, Policy: keyid.Policy{ExtraSuffixes: cfg.ExtraVaultSuffixes}}

	if cfg.TokenKeyFile == "" {
		cfg.TokenKeyFile = filepath.Join(cfg.DataDir, "token-signing.pem")
	}
	var verifier auth.Verifier
	if cfg.JWKSURL != "" {
		verifier, err = auth.NewJWKSVerifier(cfg.JWKSURL, cfg.TokenIssuer, cfg.TokenAudience, cfg.HTTPClient)
	} else {
		s.Issuer, err = auth.LoadOrCreateIssuer(cfg.TokenKeyFile, cfg.TokenIssuer, cfg.TokenAudience)
		if s.Issuer != nil {
			verifier = s.Issuer.Verifier()
			cfg.Log.Warn(DevTokenIssuerWarning, "token_key_file", cfg.TokenKeyFile, "issuer", cfg.TokenIssuer)
		}
	}
	if err != nil {
		return nil, err
	}
	platformRef, err := PlatformKeyRef(cfg)
	if err != nil {
		return nil, err
	}
	rt, azure, err := buildProviders(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var raw kms.Provider = rt
	if s.Store, err = openStore(ctx, cfg); err != nil {
		return nil, err
	}
	if s.PlatformKey, err = openRing(ctx, cfg, s.Store, rt, platformRef, false); err != nil {
		s.Store.Close()
		return nil, err
	}
	sys := s.PlatformKey.Root() // secrets derived from the system key stay as they were across rotations
	defer func() {
		if err != nil { // what was opened so far, or its goroutines and files stay behind
			for _, c := range s.closers {
				c()
			}
			s.Store.Close()
		}
	}()
	s.Metrics = metrics.New()
	recorder := &audit.Recorder{Store: s.Store, Log: cfg.Log, OnCall: func(c audit.Call) {
		s.Metrics.VaultCalls.WithLabelValues(c.Op, c.Outcome).Inc()
		s.Metrics.VaultCallSeconds.WithLabelValues(c.Provider, c.Op).Observe(c.Took.Seconds())
	}}
	// The vault cap sits in front of the audit: a call it refuses never
	// reached the vault, so there is nothing to record. It charges only the
	// calls of rate-limited API requests; the monitor and the enablement
	// jobs pass through.
	s.Limits = ratelimit.New(cfg.RateLimits)
	s.Provider = s.Limits.Vaults(&audit.Provider{Inner: raw, Recorder: recorder})
	s.Keyring = &keyring.Keyring{Store: s.Store, System: s.PlatformKey, Customer: s.Provider}
	s.App = cmkapi.App{ID: "byok", Name: cfg.AppName, ApplicationURI: cfg.AppURI, ApplicationID: cfg.ClientID}
	// Each org has its own consent link (the API and the checks give it per
	// org), so the words shared by every org name none.
	env := guidance.Env{AppName: cfg.AppName, AppID: cfg.ClientID}
	signer, err := consent.NewSigner(sys.Derive(consentStatePurpose))
	if err != nil {
		return nil, err
	}
	authorize := cfg.ConsentURL
	if authorize == "" {
		authorize = azurekv.AuthorizeEndpoint(cfg.AuthorityHost)
	}
	ownership := control.Ownership{Signer: signer, AuthorizeURL: authorize, ClientID: cfg.ClientID, CallbackURL: s.ConsentCallbackURL, Limits: s.Limits}
	if r, ok := azure.(control.CodeRedeemer); ok {
		ownership.Redeemer = r
	}
	if f, ok := azure.(preflight.TenantFinder); ok {
		ownership.Tenants = f
	}
	host, _ := os.Hostname()
	for i := range cfg.Workers {
		b := make([]byte, 4)
		rand.Read(b)
		s.Runners = append(s.Runners, &enablement.Runner{
			Store: s.Store, Keyring: s.Keyring, Provider: s.Provider, Policy: s.Policy, Env: env,
			Owner: fmt.Sprintf("%s/%d/%d/%s", host, os.Getpid(), i, hex.EncodeToString(b)), Lease: cfg.Lease, Poll: cfg.Poll,
			Concurrency: cfg.Concurrency, Log: cfg.Log, Tenants: ownership.Tenants, PropagationWait: cfg.PropagationWait,
		})
	}
	s.Cache = dekcache.New()
	s.Metrics.ObserveDEKCache(s.Cache.Hits, s.Cache.Loads)
	s.Gate = &keyhealth.Gate{}
	s.Notifier = &alerts.Notifier{Store: s.Store, Log: cfg.Log, OnEvent: func(ev, kind string) { s.Metrics.Alerts.WithLabelValues(ev, kind).Inc() }}
	s.Monitor = &monitor.Monitor{
		Config: cfg.Monitor,
		Store:  s.Store, Provider: s.Provider, Keyring: s.Keyring, Cache: s.Cache, Gate: s.Gate, Notifier: s.Notifier, Audit: recorder,
		Env: env, Metrics: s.Metrics, Log: cfg.Log, Owner: fmt.Sprintf("%s/%d/monitor/%s", host, os.Getpid(), uuid.NewString()[:8]),
	}
	if s.PlatformKey.KMS() {
		s.Rewrapper = &platformkey.Rewrapper{Ring: s.PlatformKey, Owner: fmt.Sprintf("%s/%d/platform-key/%s", host, os.Getpid(), uuid.NewString()[:8]),
			Every: cfg.PlatformKeyEvery, OnCounts: s.countGenerations}
	}
	s.Monitor.Config.Interval, s.Monitor.Config.Grace = orDefault(cfg.Monitor.Interval, monitor.DefaultInterval), orDefault(cfg.Monitor.Grace, monitor.DefaultGrace)
	if s.Monitor.Config.Lease == 0 {
		s.Monitor.Config.Lease = cfg.Lease // zero: the monitor's default
	}
	s.Gate.Grace = s.Monitor.Grace
	webhookSecrets, err := alerts.NewSecretBox(sys)
	if err != nil {
		return nil, err
	}
	s.Webhooks = &alerts.Deliverer{Store: s.Store, Secrets: webhookSecrets, Client: cfg.WebhookPolicy.Client(10 * time.Second), Log: cfg.Log, Backoff: cfg.WebhookBackoff,
		OnResult: func(outcome string) { s.Metrics.Webhooks.WithLabelValues(outcome).Inc() }}
	s.Keys = &orgkeys.Resolver{Store: s.Store, Keyring: s.Keyring, Cache: s.Cache, Gate: s.Gate, Metrics: s.Metrics}
	var lakeBackend blob.Backend
	if cfg.LakeAzure != nil {
		lakeBackend, err = blob.NewAzure(ctx, *cfg.LakeAzure)
	} else {
		var fs *blob.FS
		fs, err = blob.NewFS(filepath.Join(cfg.DataDir, "lake"), blob.FSOptions{Fsync: !cfg.NoFsync, MinFree: int64(cfg.LakeMinFreeMiB) << 20})
		if fs != nil {
			s.closers = append(s.closers, fs.Close)
		}
		lakeBackend = fs
	}
	if err != nil {
		return nil, fmt.Errorf("open data lake: %w", err)
	}
	var recs records.Backend
	if cfg.ProfilesDSN != "" {
		recs, err = records.OpenPostgres(ctx, cfg.ProfilesDSN)
	} else {
		recs, err = records.OpenSQLite(ctx, filepath.Join(cfg.DataDir, "profiles.db"))
	}
	if err != nil {
		return nil, fmt.Errorf("open profile store: %w", err)
	}
	s.closers = append(s.closers, recs.Close)
	s.Lake = &lake.Lake{Backend: lakeBackend, Keys: s.Keys, Quota: cfg.LakeQuota}
	s.Profiles = &profile.Store{Backend: recs, Keys: s.Keys, Limits: cfg.ProfileLimits}
	if cfg.ProfilesDSN == "" {
		// The read cache lives in this process; with a shared profile store
		// other replicas' writes would not reach it, so it is only used with
		// the embedded one.
		readCache := profile.NewReadCache(0, 0)
		s.Cache.OnWipe = append(s.Cache.OnWipe, readCache.WipeOrg)
		s.Profiles.Cache = readCache
	}
	s.Control = &control.Service{
		Store: s.Store, Keyring: s.Keyring, Provider: s.Provider, Policy: s.Policy, Env: env, Gate: s.Gate, Monitor: s.Monitor,
		WebhookPolicy: cfg.WebhookPolicy, WebhookSecrets: webhookSecrets, Log: cfg.Log, Keys: s.Keys, Lake: s.Lake, Profiles: s.Profiles, Ownership: ownership, AuditLog: recorder, WebhookTester: s.Webhooks,
		AWS: controlAWS(cfg.AWS), PlatformKey: platformRef,
	}
	if rt.aws != nil {
		s.Control.AWSKeys = awsKeys{r: rt, recorder: recorder}
	}
	s.API = &api.Server{Control: s.Control, Lake: s.Lake, Profiles: s.Profiles, Keys: s.Keys, Verifier: verifier, App: s.App, Log: cfg.Log, Metrics: s.Metrics, MetricsOnOperator: cfg.OperatorAddr != "", Limits: s.Limits}
	if s.API.Events, err = eventSource(cfg, s.Policy); err != nil {
		return nil, err
	}
	if s.API.Events != nil {
		cfg.Log.Info("Key Vault events enabled", "issuer", cfg.EventGridIssuer, "audience", cfg.EventGridAudience, "app_id", s.API.Events.AppID, "path", cmkapi.KeyVaultEvents.Path)
	}
	uiOpts := web.Options{}
	if cfg.DevLogin {
		uiOpts.DevLogin = s.devLogin
	}
	s.API.UI = web.Handler(uiOpts)
	if err := s.prepareServing(lakeBackend, recs); err != nil {
		return nil, err
	}
	return s, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// consentStatePurpose names the secret, derived from the system key, that
// seals the state of consent links; replicas sharing the system key open
// each other's links.
const consentStatePurpose = "cmk consent state v1"

// ConsentCallbackURL is where the consent redirect comes back: the public
// URL (or, by default, the listen address) and the callback route. It is
// the redirect URI to register on the platform's app.
func (s *Service) ConsentCallbackURL() string {
	base := strings.TrimSuffix(s.cfg.PublicURL, "/")
	if base == "" && s.ln != nil {
		base = s.URL()
	}
	return base + cmkapi.ConsentCallback.Path
}

// Start listens and starts the workers.
func (s *Service) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	since, err := s.Gate.Load(ctx, s.Store)
	if err != nil {
		ln.Close()
		return fmt.Errorf("load key health: %w", err)
	}
	ctx, s.cancel = context.WithCancel(ctx)
	loops := []func(context.Context){
		s.Webhooks.Run,
		s.housekeeping,
		func(ctx context.Context) {
			s.Gate.Sync(ctx, s.Store, since, 250*time.Millisecond, s.cfg.Log, keyhealth.SyncHooks{
				Revoked: func(org string) { s.Cache.WipeOrg(org) },
				Deleted: func(org string) { s.Cache.WipeOrg(org); s.Keys.ForgetOrg(org) },
			})
		},
		s.countStates,
		func(ctx context.Context) {
			s.Gate.FlushUses(ctx, s.flushUses, HistoryFlushEvery, s.cfg.Log)
		},
	}
	if s.Rewrapper != nil {
		loops = append(loops, s.Rewrapper.Run)
	}
	if !s.cfg.NoMonitor {
		loops = append(loops, s.Monitor.RunRotations, s.Monitor.RunNudges)
		s.life.drained = append(s.life.drained, s.Monitor.Run)
	}
	for _, r := range s.Runners {
		s.life.drained = append(s.life.drained, r.Run)
	}
	for _, loop := range loops {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); loop(ctx) }()
	}
	s.startDrained(ctx)
	limits := transferLimits{read: s.cfg.BodyReadTimeout, write: s.cfg.WriteTimeout, min: s.cfg.MinTransferBytes}
	s.srv = &http.Server{Handler: limits.wrap(s.withProxies(s.API.Handler())), ReadHeaderTimeout: s.cfg.ReadHeaderTimeout, IdleTimeout: s.cfg.IdleTimeout}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Log.Error("http server stopped", "err", err)
		}
	}()
	s.cfg.Log.Info("cmk listening", "url", s.URL())
	return s.startOperator()
}

// HistoryFlushEvery is how often each replica writes the gate's counts of
// refused and resumed requests into the key history: often enough that the
// history reads current within seconds, rarely enough that a storm of
// refused requests costs one small transaction per interval, never a write
// per request.
const HistoryFlushEvery = 2 * time.Second

// flushUses adds counts drained from the gate to the key history as this
// replica's (the monitor's owner id names it).
func (s *Service) flushUses(ctx context.Context, uses []keyhealth.StoreUse) error {
	return s.Store.AddStoreUses(ctx, s.Monitor.Owner, uses)
}

// FlushHistory writes what the gate counted since its last flush now
// (tests, and anything that must read the history current).
func (s *Service) FlushHistory(ctx context.Context) error {
	uses := s.Gate.DrainUses()
	if len(uses) == 0 {
		return nil
	}
	if err := s.flushUses(ctx, uses); err != nil {
		s.Gate.RequeueUses(uses)
		return err
	}
	return nil
}

// AuditRetention is how long audit entries are kept.
const AuditRetention = 400 * 24 * time.Hour

// housekeeping drops expired data keys from memory every minute and prunes
// the audit trail daily.
func (s *Service) housekeeping(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	var lastPrune time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.Cache.Sweep()
			if now.Sub(lastPrune) > 24*time.Hour {
				if n, err := s.Store.PruneAudit(ctx, now.Add(-AuditRetention)); err != nil {
					s.cfg.Log.Error("prune audit trail", "err", err)
				} else if n > 0 {
					s.cfg.Log.Info("pruned audit trail", "entries", n)
				}
				lastPrune = now
			}
		}
	}
}

// countStates keeps the per-state gauge of orgs current.
func (s *Service) countStates(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		if all, err := s.Store.AllHealth(ctx); err == nil {
			counts := map[string]int{keyhealth.Healthy: 0, keyhealth.Degraded: 0, keyhealth.Coasting: 0, keyhealth.Revoked: 0}
			for _, h := range all {
				counts[h.State]++
			}
			for st, n := range counts {
				s.Metrics.KeyState.WithLabelValues(st).Set(float64(n))
			}
		}
		if jobs, err := s.Store.UnfinishedJobs(ctx); err == nil {
			s.countJobs(jobs, time.Now())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// countJobs sets the enablement-job gauges from the unfinished jobs.
func (s *Service) countJobs(jobs []*store.Config, now time.Time) {
	byStatus := map[string]int{cmkapi.StatusNew: 0, cmkapi.StatusRunning: 0, cmkapi.StatusUpdating: 0}
	var done, total int
	var oldest time.Duration
	for _, j := range jobs {
		byStatus[j.Status]++
		done += j.ProgressDone
		total += j.ProgressTotal
		oldest = max(oldest, now.Sub(j.CreatedAt))
	}
	for st, n := range byStatus {
		s.Metrics.Jobs.WithLabelValues(st).Set(float64(n))
	}
	s.Metrics.JobDataKeys.WithLabelValues("done").Set(float64(done))
	s.Metrics.JobDataKeys.WithLabelValues("total").Set(float64(total))
	s.Metrics.OldestJobSeconds.Set(oldest.Seconds())
}

// Config returns the configuration the service runs with.
func (s *Service) Config() Config { return s.cfg }

// URL is the base URL the service listens on.
func (s *Service) URL() string { return s.scheme() + "://" + s.ln.Addr().String() }

// Close stops the server and workers and closes the database.
func (s *Service) Close() error {
	if s.cancel != nil {
		s.cancel()
	}
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.srv.Shutdown(ctx)
		cancel()
		// Shutdown leaves a connection that has not sent a request yet
		// (one a client dialed and kept for later) open for its first
		// 5 s, and with it its goroutine; nothing is served after Close.
		s.srv.Close()
	}
	s.closeOperator()
	s.wg.Wait()
	s.life.dwg.Wait()
	// Requests that finished during the shutdown may have been counted
	// after the flush loop's last flush.
	fctx, fcancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := s.FlushHistory(fctx); err != nil {
		s.cfg.Log.Error("flush data refusals to the key history", "err", err)
	}
	fcancel()
	for _, c := range s.closers {
		c()
	}
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

// devLogin mints an eight-hour token for the org set by SetDevOrg.
func (s *Service) devLogin() (org, apiKey, token string, err error) {
	if s.devOrg == "" {
		return "", "", "", errors.New("no demo org is set")
	}
	token, err = s.MintDevToken("dev-admin", s.devOrg, nil, 8*time.Hour)
	return s.devOrg, DevAPIKey, token, err
}

// SetDevOrg names the org the UI's dev login signs in to.
func (s *Service) SetDevOrg(org string) { s.devOrg = org }

// AllPermissions are every permission a dev token can carry.
var AllPermissions = []string{auth.PermManageCMK, auth.PermDataRead, auth.PermDataWrite, cmkapi.PermManageSandboxes}

// unconfigured is the provider when no Azure app is configured: every call
// says so plainly.
type unconfigured struct{}

func (unconfigured) err(op string, ref kms.KeyRef) error {
	return &kms.Error{Kind: kms.KindTokenAcquisitionFailed, Op: op, Key: ref.String(), Err: errors.New("the service has no Azure app configured (set --azure-client-id and its credential)")}
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

// countGenerations sets the gauge of data keys per system key generation.
func (s *Service) countGenerations(counts map[string]int) {
	s.Metrics.PlatformKeyDataKeys.Reset()
	cur := s.PlatformKey.Current().ID()
	for _, g := range s.PlatformKey.Generations() {
		s.Metrics.PlatformKeyDataKeys.WithLabelValues(g.ID, fmt.Sprint(g.ID == cur)).Set(float64(counts[g.ID]))
	}
}
