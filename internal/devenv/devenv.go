// Package devenv starts a complete local cmk: the Azure emulator with a
// customer tenant, a vault and a suitable key (consent given, role granted),
// and the service wired to it with a demo org and sandboxes, the demo org
// bound to the customer tenant through its consent link (Env.BindOrg). `cmk
// dev`, the end-to-end tests and the benchmarks all start from here.
package devenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/monitor"
	"github.com/cmk-project/cmk/internal/ratelimit"
	"github.com/cmk-project/cmk/internal/service"
	"github.com/cmk-project/cmk/internal/store"
)

// Fixed names of the demo world, so printed commands are stable.
const (
	HomeTenant     = "11111111-1111-4111-8111-111111111111" // the platform's tenant
	CustomerTenant = "22222222-2222-4222-8222-222222222222" // the tenant admin's tenant
	ClientID       = "33333333-3333-4333-8333-333333333333" // the platform's multi-tenant app
	DemoOrg        = "DEMO0RG1234567890@CmkOrg"
	Vault          = "cmkdemo"
	KeyName        = "cmk-key"
	AppName        = "cmk-multitenant-app"
	AppURI         = "https://cmk.localhost/cmk-multitenant-app"
	Role           = "Key Vault Crypto Service Encryption User"
)

// Options tune the environment.
type Options struct {
	Addr string // service address, default 127.0.0.1:0
	// Operator, when set, also serves the operator's view on a loopback
	// listener with a random token (Env.OperatorToken).
	Operator    bool
	EmulatorAdr string // emulator address, default 127.0.0.1:0
	DataDir     string // required: service state
	Sandboxes   []string
	Log         *slog.Logger
	Workers     int
	Concurrency int
	Lease       time.Duration
	Poll        time.Duration
	// NoKey skips creating the demo key and role (tests that build their own).
	NoKey bool
	// Key health monitoring (default interval 2s here, so a demo shows
	// revocation quickly).
	Monitor   monitor.Config
	NoMonitor bool
	// Data-plane backends other than the embedded defaults.
	LakeAzure   *blob.AzureConfig
	ProfilesDSN string
	DatabaseDSN string
	// VaultTimeout bounds each Key Vault call.
	VaultTimeout time.Duration
	// TokenLifetime of the emulator's access tokens (default one hour).
	TokenLifetime time.Duration
	// WebhookBackoff is the first webhook retry delay.
	WebhookBackoff time.Duration
	// RateLimits of the vault-reaching API calls (zero fields: the
	// production defaults). Tests that make many such calls raise them.
	RateLimits ratelimit.Policy
	// PropagationWait bounds how long validation waits for a role or a
	// consent to take effect; 0 means DevPropagationWait (the local
	// emulator applies grants within seconds, not Azure's minutes),
	// negative not at all.
	PropagationWait time.Duration
	// NoEvents leaves the demo vault without its Event Grid subscription
	// to the service (the service still accepts events).
	NoEvents bool
	// AWS also starts the local AWS KMS and a second demo org whose key is
	// there (Env.AWS); AWSEmulatorAddr is its address (default
	// 127.0.0.1:0).
	AWS             bool
	AWSEmulatorAddr string
}

// DevPropagationWait is the local environment's wait for a role or a
// consent to take effect: long enough for the emulator, short enough that a
// demo's or a test's missing role fails within seconds.
const DevPropagationWait = 3 * time.Second

// Env is a running local cmk.
type Env struct {
	Emu           *azemu.Emulator
	Svc           *service.Service
	Org           string
	Token         string
	APIKey        string
	KeyIdentifier string // full key identifier of the demo key, with version
	PrincipalID   string // the app's service principal in the customer tenant
	Secret        string
	OperatorToken string // the operator listener's token (Options.Operator)
	AWS           *AWS   // the local AWS KMS and its demo org; nil unless Options.AWS
}

// Start brings the environment up.
func Start(ctx context.Context, o Options) (*Env, error) {
	if o.DataDir == "" {
		return nil, errors.New("devenv: DataDir is required")
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Monitor.Interval == 0 {
		o.Monitor.Interval = 2 * time.Second
	}
	if o.Sandboxes == nil {
		o.Sandboxes = []string{"prod", "dev"}
	}
	emu, err := azemu.Start(azemu.Options{Addr: o.EmulatorAdr, TokenLifetime: o.TokenLifetime})
	if err != nil {
		return nil, fmt.Errorf("start Azure emulator: %w", err)
	}
	env := &Env{Emu: emu, Org: DemoOrg, APIKey: service.DevAPIKey}
	fail := func(err error) (*Env, error) { env.Close(); return nil, err }

	b := make([]byte, 16)
	rand.Read(b)
	env.Secret = hex.EncodeToString(b)
	for _, t := range []string{HomeTenant, CustomerTenant} {
		if err := emu.CreateTenant(t); err != nil {
			return fail(err)
		}
	}
	if err := emu.RegisterApp(azemu.App{HomeTenant: HomeTenant, ClientID: ClientID, ClientSecret: env.Secret, Name: AppName, RedirectURI: AppURI}); err != nil {
		return fail(err)
	}
	if !o.NoKey {
		if env.PrincipalID, err = emu.GrantConsent(CustomerTenant, ClientID); err != nil {
			return fail(err)
		}
		if err := emu.CreateVault(azemu.Vault{Name: Vault, TenantID: CustomerTenant, SKU: "standard", SoftDelete: true, PurgeProtection: true, RetentionDays: 90}); err != nil {
			return fail(err)
		}
		version, err := emu.CreateKey(Vault, KeyName, azemu.KeyOptions{Kty: "RSA", Bits: 3072})
		if err != nil {
			return fail(err)
		}
		if err := emu.AssignRole(Vault, env.PrincipalID, Role); err != nil {
			return fail(err)
		}
		env.KeyIdentifier = emu.VaultURL(Vault) + "/keys/" + KeyName + "/" + version
	}

	var opAddr string
	if o.Operator {
		tok := make([]byte, 24)
		rand.Read(tok)
		env.OperatorToken, opAddr = hex.EncodeToString(tok), "127.0.0.1:0"
	}
	var awsCfg *service.AWSConfig
	if o.AWS {
		if env.AWS, awsCfg, err = startAWS(o); err != nil {
			return fail(err)
		}
	}
	env.Svc, err = service.New(ctx, service.Config{
		OperatorAddr: opAddr, OperatorToken: env.OperatorToken,
		AWS:  awsCfg,
		Addr: o.Addr, DataDir: o.DataDir, AppName: AppName, AppURI: AppURI,
		TenantID: HomeTenant, ClientID: ClientID, ClientSecret: env.Secret,
		AuthorityHost: emu.AuthorityHost(), HTTPClient: emu.HTTPClient(), DisableInstanceDiscovery: true,
		ExtraVaultSuffixes: []string{emu.VaultSuffix()},
		Workers:            o.Workers, Concurrency: o.Concurrency, Lease: o.Lease, Poll: o.Poll, Log: o.Log,
		DevLogin: true, DevTokenIssuer: true, LakeAzure: o.LakeAzure, ProfilesDSN: o.ProfilesDSN, DatabaseDSN: o.DatabaseDSN,
		Monitor: o.Monitor, NoMonitor: o.NoMonitor, VaultTimeout: o.VaultTimeout, WebhookBackoff: o.WebhookBackoff,
		RateLimits: o.RateLimits, PropagationWait: orDefaultWait(o.PropagationWait),
		// Key Vault events, as Event Grid delivers them to an endpoint
		// protected by Microsoft Entra: tokens of the platform's tenant
		// for the app's URI, issued to Event Grid.
		EventGridIssuer: "https://sts.windows.net/" + HomeTenant + "/", EventGridJWKSURL: emu.URL() + "/" + HomeTenant + "/discovery/v2.0/keys",
		EventGridAudience: EventsAudience,
		// Local receivers (tests, demos) are on loopback over http.
		WebhookPolicy: alerts.URLPolicy{AllowHTTP: true, AllowPrivateNetworks: true},
	})
	if err != nil {
		return fail(err)
	}
	env.Svc.SetDevOrg(env.Org)
	if _, err := env.Svc.Store.EnsureOrg(ctx, env.Org); err != nil {
		return fail(err)
	}
	have, err := env.Svc.Store.Sandboxes(ctx, env.Org)
	if err != nil {
		return fail(err)
	}
	for _, sb := range o.Sandboxes {
		if contains(have, sb) {
			continue
		}
		if err := env.Svc.Keyring.CreateSandbox(ctx, env.Org, sb); err != nil && !errors.Is(err, store.ErrDuplicateName) {
			return fail(err)
		}
	}
	if env.Token, err = env.Svc.MintDevToken("dev-admin", env.Org, nil, 24*time.Hour); err != nil {
		return fail(err)
	}
	if err := env.Svc.Start(ctx); err != nil {
		return fail(err)
	}
	// The service's address is known now: register its consent callback
	// on the app, as an operator adds a redirect URI to the app registration.
	if err := emu.AddRedirectURI(ClientID, env.Svc.ConsentCallbackURL()); err != nil {
		return fail(err)
	}
	if _, err := env.BindOrg(ctx, env.Org); err != nil {
		return fail(fmt.Errorf("bind the demo org to the customer tenant: %w", err))
	}
	if env.AWS != nil {
		if err := env.setupAWSOrg(ctx, o.Sandboxes); err != nil {
			return fail(fmt.Errorf("set up the AWS demo org: %w", err))
		}
	}
	if !o.NoKey && !o.NoEvents {
		if err := env.SubscribeEvents(Vault); err != nil {
			return fail(err)
		}
	}
	return env, nil
}

// EventsAudience is the audience of the Event Grid delivery tokens the
// service accepts: the platform app's URI.
const EventsAudience = AppURI

// EventSubscription is the name of the demo vault's subscription to the
// service's Key Vault events endpoint.
const EventSubscription = "cmk-key-events"

// SubscribeEvents subscribes the service's Key Vault events endpoint to the
// vault's events, as an operator would create the Event Grid subscription;
// the service answers the validation handshake.
func (e *Env) SubscribeEvents(vault string) error {
	s, err := e.Emu.CreateEventSubscription(vault, azemu.EventSubscription{Name: EventSubscription,
		Endpoint: e.Svc.URL() + cmkapi.KeyVaultEvents.Path, Audience: EventsAudience, TenantID: HomeTenant})
	if err != nil {
		return fmt.Errorf("subscribe to the events of vault %s: %w", vault, err)
	}
	if !s.Validated() {
		return fmt.Errorf("the service did not answer the validation of the event subscription of vault %s", vault)
	}
	return nil
}

// BindOrg binds org to the customer tenant as a tenant administrator would:
// see BindOrgTo.
func (e *Env) BindOrg(ctx context.Context, org string) (*cmkapi.ConsentBinding, error) {
	return e.BindOrgTo(ctx, org, CustomerTenant)
}

// BindOrgTo goes through org's consent link as an administrator of tenant:
// it asks the app-registration API for the org's link (with a token for
// the org), opens the link on the emulator's consent page, signs in to the
// tenant and accepts there, and follows the redirect to the service's
// consent callback, which binds the org. Accepting also gives the app a
// service principal in the tenant.
func (e *Env) BindOrgTo(ctx context.Context, org, tenant string) (*cmkapi.ConsentBinding, error) {
	token, err := e.Svc.MintDevToken("tenant-admin", org, []string{cmkapi.PermManageCMK}, 10*time.Minute)
	if err != nil {
		return nil, err
	}
	c := &cmkapi.Client{BaseURL: e.Svc.URL(), Token: token, OrgID: org, APIKey: e.APIKey}
	app, _, err := c.AppRegistration(ctx)
	if err != nil {
		return nil, fmt.Errorf("app registration of %s: %w", org, err)
	}
	link, err := url.Parse(app.RedirectURL)
	if err != nil || link.Host == "" {
		return nil, fmt.Errorf("the app registration of %s has no consent link (%q)", org, app.RedirectURL)
	}
	// The browser: it trusts the emulator's CA and reaches both the
	// emulator and the service, following redirects.
	browser := e.Emu.HTTPClient()
	page, err := send(ctx, browser, http.MethodGet, link.String(), nil)
	if err != nil {
		return nil, err
	}
	if page.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("consent page %s answered %d: %.300s", link.Path, page.StatusCode, page.body)
	}
	form := link.Query()
	form.Set("tenant", tenant)
	form.Set("action", "accept")
	target := *link
	target.RawQuery = ""
	done, err := send(ctx, browser, http.MethodPost, target.String(), form)
	if err != nil {
		return nil, err
	}
	if done.StatusCode != http.StatusOK {
		var cerr cmkapi.Error
		if json.Unmarshal(done.body, &cerr) == nil && cerr.ErrorCode != "" {
			return nil, &cerr // the service refused the binding
		}
		return nil, fmt.Errorf("consent for %s in tenant %s answered %d: %.300s", org, tenant, done.StatusCode, done.body)
	}
	var b cmkapi.ConsentBinding
	if err := json.Unmarshal(done.body, &b); err != nil || b.IMSOrgID != org {
		return nil, fmt.Errorf("consent callback answered %.300s, want the binding of %s", done.body, org)
	}
	return &b, nil
}

// Org is one more org of the environment, bound to the customer tenant,
// with its own key in the demo vault (one key serves one org) and an
// administrator's token.
type Org struct {
	ID            string
	Token         string // an administrator's token, valid for a day
	KeyIdentifier string // its key, with version, in the demo vault
}

// AddOrg adds an org with sandboxes, binds it to the customer tenant
// through its consent link (BindOrg) and creates its key, keyName, in the
// demo vault, where the app's service principal already holds the role. It
// needs the service running; several may run at once (an RSA key takes a
// while to make).
func (e *Env) AddOrg(ctx context.Context, org, keyName string, sandboxes []string) (*Org, error) {
	if _, err := e.Svc.Store.EnsureOrg(ctx, org); err != nil {
		return nil, fmt.Errorf("add org %s: %w", org, err)
	}
	have, err := e.Svc.Store.Sandboxes(ctx, org)
	if err != nil {
		return nil, err
	}
	for _, sb := range sandboxes {
		if contains(have, sb) {
			continue
		}
		if err := e.Svc.Keyring.CreateSandbox(ctx, org, sb); err != nil && !errors.Is(err, store.ErrDuplicateName) {
			return nil, fmt.Errorf("add sandbox %s of %s: %w", sb, org, err)
		}
	}
	if _, err := e.BindOrg(ctx, org); err != nil {
		return nil, fmt.Errorf("bind %s to the customer tenant: %w", org, err)
	}
	version, err := e.Emu.CreateKey(Vault, keyName, azemu.KeyOptions{Kty: "RSA", Bits: 3072})
	if err != nil {
		return nil, fmt.Errorf("create key %s for %s: %w", keyName, org, err)
	}
	token, err := e.Svc.MintDevToken("dev-admin", org, nil, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	return &Org{ID: org, Token: token, KeyIdentifier: e.Emu.VaultURL(Vault) + "/keys/" + keyName + "/" + version}, nil
}

type answer struct {
	StatusCode int
	body       []byte
}

// send makes one browser request (a form post when form is not nil),
// asking for JSON where the service can answer it.
func send(ctx context.Context, c *http.Client, method, u string, form url.Values) (*answer, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", "application/json, text/html;q=0.9")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return &answer{StatusCode: resp.StatusCode, body: b}, err
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Info returns the connection details.
func (e *Env) Info() cmkapi.Info {
	return cmkapi.Info{
		BaseURL: e.Svc.URL(), OrgID: e.Org, APIKey: e.APIKey, Token: e.Token, KeyIdentifier: e.KeyIdentifier,
		EmulatorURL: e.Emu.URL(), EmulatorCA: string(e.Emu.CAPEM()), VaultURL: e.Emu.VaultURL(Vault),
		ConsentURL: e.consentLink(), CustomerTenant: CustomerTenant, ServicePrincipal: e.PrincipalID,
		AWS: e.awsInfo(),
	}
}

// ServeFlags are the command line and environment with which a 'cmk serve'
// process reaches this environment's emulator as the platform's app: the
// emulator's address and CA (written to dir), its vault suffix, the home
// tenant and client id, and the client secret in the environment (never on
// the command line). The caller adds the address, the state and the rest.
func (e *Env) ServeFlags(dir string) (args, env []string, err error) {
	ca := filepath.Join(dir, "emulator-ca.pem")
	if err := os.WriteFile(ca, e.Emu.CAPEM(), 0o600); err != nil {
		return nil, nil, fmt.Errorf("write the emulator's CA: %w", err)
	}
	args = []string{"--emulator", e.Emu.URL(), "--emulator-ca", ca, "--emulator-vault-suffix", e.Emu.VaultSuffix(),
		"--azure-tenant-id", HomeTenant, "--azure-client-id", ClientID}
	return args, []string{"CMK_AZURE_CLIENT_SECRET=" + e.Secret}, nil
}

// consentLink is the demo org's consent link ("" if it cannot be made).
func (e *Env) consentLink() string {
	link, _ := e.Svc.Control.ConsentLink(e.Org)
	return link
}

// Close stops the service and the emulator.
func (e *Env) Close() {
	if e.Svc != nil {
		e.Svc.Close()
	}
	if e.Emu != nil {
		e.Emu.Close()
	}
	if e.AWS != nil {
		e.AWS.Server.Close()
	}
}

func orDefaultWait(d time.Duration) time.Duration {
	if d == 0 {
		return DevPropagationWait
	}
	return d
}
