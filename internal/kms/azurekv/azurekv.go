// Package azurekv is the kms.Provider for customer keys held in Azure Key
// Vault or Managed HSM.
//
// # Whose tenant
//
// The platform signs in as one multi-tenant Entra ID application, but each
// customer's key lives in the customer's own tenant, where the customer has
// added the application's service principal (admin consent) and granted it a
// crypto role on the key. The provider therefore never asks for a tenant:
// the credential is created in the application's home tenant with every
// other tenant additionally allowed, and azkeys' challenge-based
// authentication sends each vault's first request without a token. The
// vault answers 401 with a WWW-Authenticate challenge naming its tenant
// (authorization="https://{authority}/{tenant}") and its resource; azkeys
// checks that the resource belongs to the vault's own domain, then asks the
// credential for a token in that tenant. Only the tenant is taken from the
// challenge; the authority host is always the configured one. One
// credential serves every tenant (tokens are cached per tenant) and one
// azkeys client is kept per vault (it remembers the vault's challenge).
//
// # Which tenant owns a vault, and which tenant consented
//
// Two calls serve key ownership (docs/security.md): VaultTenant reads the
// tenant from the same challenge, with an unauthenticated probe that reads
// no key, so cmk can tell whose vault a key identifier names before it asks
// the vault anything with the platform's credentials; RedeemConsentCode
// exchanges the authorization code of an admin-consent redirect for the ID
// token of the administrator who accepted, whose tid names the tenant.
//
// # Which key
//
// Every reference is checked with package keyid before any request, so the
// provider only ever contacts hosts under an allowed Key Vault suffix, and
// every answer is checked to be about the key that was asked for.
//
// # Failures
//
// Every error is a *kms.Error; Classify maps Key Vault, Entra ID and network
// failures to a kms.Kind (see Classify for the table). Throttling (429) is
// never retried here: it comes back as kms.KindThrottled with the server's
// Retry-After so callers can pace themselves. Other transient failures (408,
// 5xx, dropped connections) are retried a couple of times with short delays.
//
// # What is never logged
//
// The package logs nothing itself. Errors carry the key reference (vault
// URL and key name), HTTP status and service error codes, never data keys,
// wrapped keys, tokens or client secrets. Azure SDK logging, if a caller
// turns it on, is left with request and response bodies excluded.
package azurekv

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/cmk-project/cmk/internal/keyid"
	"github.com/cmk-project/cmk/internal/kms"
)

// AlgRSAOAEP256 is the only wrapping algorithm the provider uses.
const AlgRSAOAEP256 = string(azkeys.EncryptionAlgorithmRSAOAEP256)

// DefaultTimeout bounds one provider call (token acquisition, the request
// and its retries) when Config.Timeout is zero. Key Vault answers in tens of
// milliseconds; ten seconds leaves room for a cold token fetch and two
// retries without letting a stuck vault hold a health check or a data-path
// unwrap for long.
const DefaultTimeout = 10 * time.Second

// Retry policy for the SDK pipelines (vault and token endpoint). Two quick
// retries absorb a dropped connection or a single 5xx; anything longer is the
// caller's business (the health monitor re-checks on its own schedule).
// 429 is deliberately not retried: see package doc.
const (
	maxRetries    = 2
	retryDelay    = 200 * time.Millisecond
	maxRetryDelay = 2 * time.Second
)

// Config configures a Provider.
type Config struct {
	TenantID     string // home tenant of the platform's multi-tenant app
	ClientID     string // application (client) ID of that app
	ClientSecret string // client secret; or set CertificatePEM

	// CertificatePEM is a certificate credential: PEM with the certificate
	// and its unencrypted private key. Used when ClientSecret is empty.
	CertificatePEM []byte

	// AuthorityHost is the Entra ID authority, "" for the public cloud,
	// e.g. "https://login.microsoftonline.us/" or the emulator's
	// "https://127.0.0.1:PORT/".
	AuthorityHost string

	// HTTPClient carries every request (vault and token endpoint); nil uses
	// the SDK's default client.
	HTTPClient *http.Client

	// DisableInstanceDiscovery skips Entra instance metadata discovery; set
	// it for the emulator and disconnected clouds.
	DisableInstanceDiscovery bool

	// Timeout bounds each Describe, Wrap or Unwrap call; 0 means DefaultTimeout.
	Timeout time.Duration

	// ExtraVaultSuffixes are vault host suffixes allowed in addition to
	// keyid.DefaultSuffixes, e.g. "vault.azure.localhost" for the emulator.
	// Key references on any other host are refused before a request is made.
	ExtraVaultSuffixes []string
}

// Provider is a kms.Provider backed by Azure Key Vault. It is safe for
// concurrent use.
type Provider struct {
	cred    azcore.TokenCredential
	opts    azcore.ClientOptions
	timeout time.Duration
	policy  keyid.Policy
	clients sync.Map // vault URL -> *azkeys.Client

	// What the consent-code exchange and the tenant probe need (consent.go,
	// tenant.go): the app's credential, its authority, and an HTTP client
	// that follows no redirect.
	clientID  string
	secret    string
	certs     []*x509.Certificate
	certKey   crypto.PrivateKey
	authority string
	plain     *http.Client
	tenants   tenantCache
}

var _ kms.Provider = (*Provider)(nil)

// New returns a Provider signing in as the application described by cfg.
// It makes no network call.
func New(cfg Config) (*Provider, error) {
	if cfg.TenantID == "" || cfg.ClientID == "" {
		return nil, errors.New("azurekv: TenantID and ClientID are required")
	}
	opts := azcore.ClientOptions{
		Retry: policy.RetryOptions{
			MaxRetries:    maxRetries,
			RetryDelay:    retryDelay,
			MaxRetryDelay: maxRetryDelay,
			ShouldRetry:   shouldRetry,
		},
		Telemetry: policy.TelemetryOptions{ApplicationID: "cmk"},
	}
	if cfg.HTTPClient != nil {
		opts.Transport = cfg.HTTPClient
	}
	credOpts := opts
	if cfg.AuthorityHost != "" {
		credOpts.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: cfg.AuthorityHost}
	}
	// "*": the vault's challenge names the customer's tenant, which is not
	// known in advance (see package doc).
	allTenants := []string{"*"}

	var cred azcore.TokenCredential
	var err error
	var certs []*x509.Certificate
	var certKey crypto.PrivateKey
	switch {
	case cfg.ClientSecret != "":
		cred, err = azidentity.NewClientSecretCredential(cfg.TenantID, cfg.ClientID, cfg.ClientSecret,
			&azidentity.ClientSecretCredentialOptions{
				ClientOptions:              credOpts,
				AdditionallyAllowedTenants: allTenants,
				DisableInstanceDiscovery:   cfg.DisableInstanceDiscovery,
			})
	case len(cfg.CertificatePEM) > 0:
		var perr error
		certs, certKey, perr = azidentity.ParseCertificates(cfg.CertificatePEM, nil)
		if perr != nil {
			return nil, fmt.Errorf("azurekv: parsing the certificate credential: %w", perr)
		}
		cred, err = azidentity.NewClientCertificateCredential(cfg.TenantID, cfg.ClientID, certs, certKey,
			&azidentity.ClientCertificateCredentialOptions{
				ClientOptions:              credOpts,
				AdditionallyAllowedTenants: allTenants,
				DisableInstanceDiscovery:   cfg.DisableInstanceDiscovery,
			})
	default:
		return nil, errors.New("azurekv: a ClientSecret or a CertificatePEM is required")
	}
	if err != nil {
		return nil, fmt.Errorf("azurekv: creating the credential: %w", err)
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	plain := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if cfg.HTTPClient != nil {
		plain.Transport = cfg.HTTPClient.Transport
	}
	return &Provider{
		cred:    cred,
		opts:    opts,
		timeout: timeout,
		policy:  keyid.Policy{ExtraSuffixes: cfg.ExtraVaultSuffixes},

		clientID:  cfg.ClientID,
		secret:    cfg.ClientSecret,
		certs:     certs,
		certKey:   certKey,
		authority: cfg.AuthorityHost,
		plain:     plain,
	}, nil
}

// shouldRetry retries transport failures other than "no such host" (a
// deleted vault does not come back within a retry) and 408/5xx responses.
// 429 is left to the caller.
func shouldRetry(resp *http.Response, err error) bool {
	if err != nil {
		return !isDNSNotFound(err)
	}
	switch resp.StatusCode {
	case http.StatusRequestTimeout, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// Describe returns the newest version of the key.
func (p *Provider) Describe(ctx context.Context, ref kms.KeyRef) (kms.KeyInfo, error) {
	const op = "describe"
	c, err := p.client(op, ref)
	if err != nil {
		return kms.KeyInfo{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	resp, err := c.GetKey(ctx, ref.Name, "", nil)
	if err != nil {
		return kms.KeyInfo{}, Classify(op, ref, err)
	}
	if resp.Key == nil || resp.Key.KID == nil {
		return kms.KeyInfo{}, p.badAnswer(op, ref, "the answer has no key")
	}
	kid := string(*resp.Key.KID)
	version, err := p.checkKID(op, ref, kid)
	if err != nil {
		return kms.KeyInfo{}, err
	}
	info := kms.KeyInfo{KID: kid, Version: version}
	k := resp.Key
	if k.Kty != nil {
		info.KeyType = string(*k.Kty)
	}
	if len(k.N) > 0 {
		info.Bits = new(big.Int).SetBytes(k.N).BitLen()
	}
	for _, o := range k.KeyOps {
		if o != nil {
			info.Ops = append(info.Ops, string(*o))
		}
	}
	if a := resp.Attributes; a != nil {
		info.Enabled = a.Enabled != nil && *a.Enabled
		info.NotBefore = utc(a.NotBefore)
		info.Expires = utc(a.Expires)
		if a.RecoveryLevel != nil {
			info.RecoveryLevel = string(*a.RecoveryLevel)
		}
	}
	return info, nil
}

// Wrap wraps dek with RSA-OAEP-256 under the newest version of the key and
// records the version the vault used.
func (p *Provider) Wrap(ctx context.Context, ref kms.KeyRef, dek []byte) (kms.Wrapped, error) {
	const op = "wrap"
	c, err := p.client(op, ref)
	if err != nil {
		return kms.Wrapped{}, err
	}
	if len(dek) == 0 {
		return kms.Wrapped{}, &kms.Error{Kind: kms.KindInvalidRequest, Op: op, Key: ref.String(), Err: errors.New("empty data key")}
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	alg := azkeys.EncryptionAlgorithmRSAOAEP256
	resp, err := c.WrapKey(ctx, ref.Name, "", azkeys.KeyOperationParameters{Algorithm: &alg, Value: dek}, nil)
	if err != nil {
		return kms.Wrapped{}, Classify(op, ref, err)
	}
	if resp.KID == nil || len(resp.Result) == 0 {
		return kms.Wrapped{}, p.badAnswer(op, ref, "the answer has no key id or no wrapped key")
	}
	version, err := p.checkKID(op, ref, string(*resp.KID))
	if err != nil {
		return kms.Wrapped{}, err
	}
	if version == "" {
		return kms.Wrapped{}, p.badAnswer(op, ref, "the answer's key id has no version")
	}
	return kms.Wrapped{KeyVersion: version, Alg: AlgRSAOAEP256, Ciphertext: resp.Result}, nil
}

// Unwrap recovers a data key wrapped under w.KeyVersion.
func (p *Provider) Unwrap(ctx context.Context, ref kms.KeyRef, w kms.Wrapped) ([]byte, error) {
	const op = "unwrap"
	c, err := p.client(op, ref)
	if err != nil {
		return nil, err
	}
	if w.Alg != "" && w.Alg != AlgRSAOAEP256 {
		return nil, &kms.Error{Kind: kms.KindInvalidRequest, Op: op, Key: ref.String(),
			Err: fmt.Errorf("unsupported wrapping algorithm %q, want %s", w.Alg, AlgRSAOAEP256)}
	}
	if err := keyid.CheckVersion(w.KeyVersion); err != nil {
		return nil, &kms.Error{Kind: kms.KindInvalidRequest, Op: op, Key: ref.String(), Err: err}
	}
	if len(w.Ciphertext) == 0 {
		return nil, &kms.Error{Kind: kms.KindUnwrapFailed, Op: op, Key: ref.String(), Err: errors.New("empty wrapped key")}
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	alg := azkeys.EncryptionAlgorithmRSAOAEP256
	resp, err := c.UnwrapKey(ctx, ref.Name, w.KeyVersion, azkeys.KeyOperationParameters{Algorithm: &alg, Value: w.Ciphertext}, nil)
	if err != nil {
		return nil, Classify(op, ref, err)
	}
	if resp.KID == nil || len(resp.Result) == 0 {
		return nil, p.badAnswer(op, ref, "the answer has no key id or no data key")
	}
	version, err := p.checkKID(op, ref, string(*resp.KID))
	if err != nil {
		clear(resp.Result)
		return nil, err
	}
	if version != "" && !strings.EqualFold(version, w.KeyVersion) {
		clear(resp.Result)
		return nil, p.badAnswer(op, ref, fmt.Sprintf("asked for version %s, the vault answered for %q", w.KeyVersion, version))
	}
	// The caller clears the key. The answer's JSON (the key in base64),
	// read and decoded inside the SDK, is not ours to clear.
	return resp.Result, nil
}

// client validates ref and returns the cached azkeys client for its vault.
func (p *Provider) client(op string, ref kms.KeyRef) (*azkeys.Client, error) {
	id, err := p.policy.Parse(ref.String())
	if err != nil || id.Version != "" {
		if err == nil {
			err = errors.New("the key reference must not carry a version")
		}
		var ke *kms.Error
		if errors.As(err, &ke) {
			err = ke.Err
		}
		return nil, &kms.Error{Kind: kms.KindMalformedKeyURI, Op: op, Key: ref.String(), Err: err}
	}
	if c, ok := p.clients.Load(id.VaultURL); ok {
		return c.(*azkeys.Client), nil
	}
	c, err := azkeys.NewClient(id.VaultURL, p.cred, &azkeys.ClientOptions{ClientOptions: p.opts})
	if err != nil {
		return nil, &kms.Error{Kind: kms.KindInvalidRequest, Op: op, Key: ref.String(), Err: err}
	}
	actual, _ := p.clients.LoadOrStore(id.VaultURL, c)
	return actual.(*azkeys.Client), nil
}

// checkKID checks that kid names the vault and key of ref and returns its
// version ("" when it has none).
func (p *Provider) checkKID(op string, ref kms.KeyRef, kid string) (string, error) {
	got, err := p.policy.Parse(kid)
	if err != nil {
		return "", p.badAnswer(op, ref, fmt.Sprintf("the answer's key id %q is not a key identifier", kid))
	}
	want, _ := p.policy.Parse(ref.String()) // validated by client()
	if got.VaultURL != want.VaultURL || !strings.EqualFold(got.Name, want.Name) {
		return "", p.badAnswer(op, ref, fmt.Sprintf("the answer is about key %s", got.Ref()))
	}
	return got.Version, nil
}

// badAnswer reports a successful response that is not an answer to the
// question asked (wrong key, missing fields).
func (p *Provider) badAnswer(op string, ref kms.KeyRef, why string) error {
	return &kms.Error{Kind: kms.KindInvalidRequest, Op: op, Key: ref.String(),
		Err: errors.New("unexpected answer from the key vault: " + why)}
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
