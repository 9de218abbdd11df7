package awskms

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/cmk-project/cmk/internal/kms"
)

// AlgSymmetricDefault is the only encryption algorithm the provider uses:
// AES-256-GCM inside AWS KMS.
const AlgSymmetricDefault = string(types.EncryptionAlgorithmSpecSymmetricDefault)

// Encryption context keys. The org key is what the generated key policy
// conditions on (kms:EncryptionContext:cmk:org), so another org's requests
// are refused by AWS even if that org learns the key ARN.
const (
	ContextOrg     = "cmk:org"
	ContextSandbox = "cmk:sandbox"
	ContextStore   = "cmk:store"
)

// DefaultTimeout bounds one provider call (credential retrieval, the
// request and its retries) when Config.Timeout is zero. AWS KMS answers in
// milliseconds; ten seconds leaves room for a cold credential fetch and
// two retries without letting a stuck endpoint hold a health check.
const DefaultTimeout = 10 * time.Second

// maxAttempts is one request and two retries, for 5xx answers and dropped
// connections only (throttling is returned to the caller, see retryer).
const maxAttempts = 3

// Config configures a Client.
type Config struct {
	// Region is the platform's Region, where customers create their keys.
	Region string
	// Regions are the Regions a key may be in; [Region] when empty.
	Regions []string
	// Endpoint replaces AWS's endpoint (the local emulator). Plain http is
	// accepted only for a loopback address.
	Endpoint string
	// Credentials replace the standard chain (environment, shared files,
	// web identity, instance role) when not nil.
	Credentials aws.CredentialsProvider
	// HTTPClient is used for every request when not nil.
	HTTPClient *http.Client
	// Timeout bounds one provider call; DefaultTimeout when zero.
	Timeout time.Duration
}

// Client holds the platform's AWS configuration and one KMS client per
// Region. It is safe for concurrent use. ForOrg gives the kms.Provider of
// one org.
type Client struct {
	cfg     Config
	aws     aws.Config
	mu      sync.Mutex
	clients map[string]*awskms.Client
}

// New loads the credential chain (no request is made yet) and checks cfg.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Region == "" {
		return nil, errors.New("awskms: no Region: set the platform's AWS Region (e.g. eu-west-1)")
	}
	if len(cfg.Regions) == 0 {
		cfg.Regions = []string{cfg.Region}
	}
	if !slices.Contains(cfg.Regions, cfg.Region) {
		return nil, fmt.Errorf("awskms: the Region %s is not among the allowed Regions %v", cfg.Region, cfg.Regions)
	}
	if cfg.Endpoint != "" {
		if err := checkEndpoint(cfg.Endpoint); err != nil {
			return nil, err
		}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	opts := []func(*config.LoadOptions) error{config.WithRegion(cfg.Region)}
	if cfg.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(cfg.Credentials))
	}
	if cfg.HTTPClient != nil {
		opts = append(opts, config.WithHTTPClient(cfg.HTTPClient))
	}
	ac, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("awskms: load the AWS configuration: %w", err)
	}
	return &Client{cfg: cfg, aws: ac, clients: map[string]*awskms.Client{}}, nil
}

// checkEndpoint refuses an endpoint that would send signed requests in the
// clear to another machine.
func checkEndpoint(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("awskms: endpoint %q: want https://host[:port] (or http:// on a loopback address)", s)
	}
	if u.Scheme == "http" {
		host := u.Hostname()
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("awskms: endpoint %q uses plain http to a host that is not loopback; use https", s)
		}
	}
	return nil
}

// retryer retries 5xx answers and dropped connections, never throttling:
// a throttled call comes back as kms.KindThrottled so callers can pace
// themselves (as with Key Vault). No client-side retry quota either, so a
// burst of failures cannot turn into refusals the service never gave.
func retryer() aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = maxAttempts
		o.MaxBackoff = time.Second
		o.RateLimiter = ratelimit.None
		o.Retryables = []retry.IsErrorRetryable{
			retry.NoRetryCanceledError{},
			retry.RetryableConnectionError{},
			retry.RetryableHTTPStatusCode{Codes: retry.DefaultRetryableHTTPStatusCodes},
			retry.RetryableErrorCode{Codes: retry.DefaultRetryableErrorCodes},
		}
	})
}

func (c *Client) client(region string) *awskms.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := c.clients[region]; ok {
		return k
	}
	k := awskms.NewFromConfig(c.aws, func(o *awskms.Options) {
		o.Region = region
		if c.cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.cfg.Endpoint)
		}
		o.Retryer = retryer()
	})
	c.clients[region] = k
	return k
}

// ForOrg returns the provider of one org: every Encrypt and Decrypt it
// makes carries the org in its encryption context.
//
// The org comes from the constructor rather than from the request context
// so that no call can go out without it: cmk builds a provider per org
// binding, and kms.Provider's three methods stay as they are for every
// caller.
func (c *Client) ForOrg(orgID string) (*Provider, error) {
	if orgID == "" {
		return nil, errors.New("awskms: empty org id: every request must be bound to an org")
	}
	return &Provider{c: c, org: orgID}, nil
}

// Provider is the kms.Provider for one org's key in AWS KMS.
type Provider struct {
	c   *Client
	org string
}

var _ kms.Provider = (*Provider)(nil)

type scopeKey struct{}

type scope struct{ sandbox, store string }

// WithScope adds the sandbox and store of the data key being wrapped or
// unwrapped to the encryption context. The context is part of the
// ciphertext: a data key wrapped with a scope unwraps only with the same
// scope, so the wrapping and the unwrapping call sites must agree.
func WithScope(ctx context.Context, sandbox, store string) context.Context {
	return context.WithValue(ctx, scopeKey{}, scope{sandbox, store})
}

// EncryptionContext is the context a call with ctx sends.
func (p *Provider) EncryptionContext(ctx context.Context) map[string]string {
	ec := map[string]string{ContextOrg: p.org}
	if s, ok := ctx.Value(scopeKey{}).(scope); ok {
		if s.sandbox != "" {
			ec[ContextSandbox] = s.sandbox
		}
		if s.store != "" {
			ec[ContextStore] = s.store
		}
	}
	return ec
}

// KeyDetails is what DescribeKey (and ListKeyRotations, when the caller
// may use it) says about a key, beyond kms.KeyInfo.
type KeyDetails struct {
	Info                 kms.KeyInfo
	ARN                  KeyARN // the key itself, also when the reference is an alias
	KeyState             string // Enabled, Disabled, PendingDeletion, …
	KeySpec              string
	KeyUsage             string
	MultiRegion          bool
	CurrentKeyMaterialID string     // empty when AWS does not say
	DeletionDate         *time.Time // set while pending deletion
	LastRotation         *time.Time // nil when never rotated or not readable
}

func (p *Provider) parse(op string, ref kms.KeyRef) (KeyARN, error) {
	a, err := ParseRef(ref, p.c.cfg.Regions)
	if err != nil {
		return a, &kms.Error{Kind: kms.KindMalformedKeyURI, Op: op, Key: ref.VaultURL + ":" + ref.Name, Err: err}
	}
	return a, nil
}

// answeredFor checks that an answer names the key asked for: the same key
// ARN, or for an alias a key of the alias's account and Region.
func answeredFor(asked KeyARN, keyID *string) (KeyARN, error) {
	if keyID == nil {
		return KeyARN{}, errors.New("the answer names no key")
	}
	got, err := ParseARN(*keyID, []string{asked.Region})
	if err != nil || got.Alias {
		return KeyARN{}, fmt.Errorf("the answer names %q, not a key ARN", *keyID)
	}
	if asked.Alias && !asked.SameAccount(got) || !asked.Alias && got != asked {
		return KeyARN{}, fmt.Errorf("asked about %s, the answer is about %s", asked, got)
	}
	return got, nil
}

func wrongKey(op string, a KeyARN, err error) error {
	return &kms.Error{Kind: kms.KindInvalidRequest, Op: op, Key: a.String(), Err: err}
}

// Describe returns the key's state. Version is empty: AWS KMS rotation
// keeps the key ARN and old ciphertexts keep decrypting, and Encrypt does
// not say which key material it used, so no data key needs re-wrapping
// after a rotation and there is no version to track (Details has the
// current key material id and the last rotation for display). A key
// pending deletion is KindKeyNotFound.
func (p *Provider) Describe(ctx context.Context, ref kms.KeyRef) (kms.KeyInfo, error) {
	d, err := p.describe(ctx, ref, false)
	return d.Info, err
}

// Details is Describe with the last rotation (from ListKeyRotations, which
// AWS allows only to the key's own account: from another account it stays
// nil).
func (p *Provider) Details(ctx context.Context, ref kms.KeyRef) (KeyDetails, error) {
	return p.describe(ctx, ref, true)
}

func (p *Provider) describe(ctx context.Context, ref kms.KeyRef, rotations bool) (KeyDetails, error) {
	const op = "describe"
	a, err := p.parse(op, ref)
	if err != nil {
		return KeyDetails{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.c.cfg.Timeout)
	defer cancel()
	cl := p.c.client(a.Region)
	out, err := cl.DescribeKey(ctx, &awskms.DescribeKeyInput{KeyId: aws.String(a.String())})
	if err != nil {
		return KeyDetails{}, Classify(op, a.String(), err)
	}
	md := out.KeyMetadata
	if md == nil {
		return KeyDetails{}, wrongKey(op, a, errors.New("the answer has no KeyMetadata"))
	}
	got, err := answeredFor(a, md.Arn)
	if err != nil {
		return KeyDetails{}, wrongKey(op, a, err)
	}
	d := KeyDetails{
		ARN: got, KeyState: string(md.KeyState), KeySpec: string(md.KeySpec), KeyUsage: string(md.KeyUsage),
		MultiRegion: aws.ToBool(md.MultiRegion), CurrentKeyMaterialID: aws.ToString(md.CurrentKeyMaterialId),
		DeletionDate: md.DeletionDate,
		Info: kms.KeyInfo{
			KID:     got.String(),
			KeyType: string(md.KeySpec),
			Enabled: md.KeyState == types.KeyStateEnabled,
		},
	}
	if md.KeyUsage == types.KeyUsageTypeEncryptDecrypt {
		d.Info.Ops = []string{"encrypt", "decrypt"}
	}
	if md.KeyState == types.KeyStatePendingDeletion || md.KeyState == types.KeyStatePendingReplicaDeletion {
		when := "soon"
		if md.DeletionDate != nil {
			when = "on " + md.DeletionDate.UTC().Format(time.RFC3339)
		}
		return d, &kms.Error{Kind: kms.KindKeyNotFound, Op: op, Key: a.String(), Code: "KeyPendingDeletion",
			Err: fmt.Errorf("the key is scheduled for deletion %s; cancel the deletion (CancelKeyDeletion) and enable the key to restore access", when)}
	}
	if rotations {
		d.LastRotation = p.lastRotation(ctx, cl, got)
	}
	return d, nil
}

// lastRotation reads the newest rotation date, or nil when there is none
// or AWS does not let the caller read it. Bounded to ten pages.
func (p *Provider) lastRotation(ctx context.Context, cl *awskms.Client, a KeyARN) *time.Time {
	var last *time.Time
	var marker *string
	for range 10 {
		out, err := cl.ListKeyRotations(ctx, &awskms.ListKeyRotationsInput{KeyId: aws.String(a.String()), Marker: marker})
		if err != nil {
			return nil
		}
		for _, r := range out.Rotations {
			if r.RotationDate != nil && (last == nil || r.RotationDate.After(*last)) {
				last = r.RotationDate
			}
		}
		if !out.Truncated || out.NextMarker == nil {
			break
		}
		marker = out.NextMarker
	}
	return last
}

// Wrap encrypts dek under the key with the org's encryption context.
// KeyVersion is empty (see Describe); the ciphertext names its key
// material itself.
func (p *Provider) Wrap(ctx context.Context, ref kms.KeyRef, dek []byte) (kms.Wrapped, error) {
	const op = "wrap"
	a, err := p.parse(op, ref)
	if err != nil {
		return kms.Wrapped{}, err
	}
	if n := len(dek); n < 1 || n > 4096 {
		return kms.Wrapped{}, &kms.Error{Kind: kms.KindInvalidRequest, Op: op, Key: a.String(),
			Err: fmt.Errorf("a data key of %d bytes cannot be wrapped: AWS KMS encrypts 1 to 4096 bytes", n)}
	}
	ctx, cancel := context.WithTimeout(ctx, p.c.cfg.Timeout)
	defer cancel()
	out, err := p.c.client(a.Region).Encrypt(ctx, &awskms.EncryptInput{
		KeyId: aws.String(a.String()), Plaintext: dek, EncryptionContext: p.EncryptionContext(ctx),
		EncryptionAlgorithm: types.EncryptionAlgorithmSpecSymmetricDefault,
	})
	if err != nil {
		return kms.Wrapped{}, Classify(op, a.String(), err)
	}
	if _, err := answeredFor(a, out.KeyId); err != nil {
		return kms.Wrapped{}, wrongKey(op, a, err)
	}
	if len(out.CiphertextBlob) == 0 {
		return kms.Wrapped{}, wrongKey(op, a, errors.New("the answer has no ciphertext"))
	}
	return kms.Wrapped{Alg: AlgSymmetricDefault, Ciphertext: out.CiphertextBlob}, nil
}

// Unwrap decrypts a data key wrapped by Wrap, naming the key (so AWS
// refuses a ciphertext of another key with IncorrectKeyException) and
// sending the same encryption context; the answer must name the key.
func (p *Provider) Unwrap(ctx context.Context, ref kms.KeyRef, w kms.Wrapped) ([]byte, error) {
	const op = "unwrap"
	a, err := p.parse(op, ref)
	if err != nil {
		return nil, err
	}
	if w.Alg != "" && w.Alg != AlgSymmetricDefault {
		return nil, &kms.Error{Kind: kms.KindInvalidRequest, Op: op, Key: a.String(),
			Err: fmt.Errorf("wrapped with %q; AWS KMS keys unwrap %s only", w.Alg, AlgSymmetricDefault)}
	}
	if len(w.Ciphertext) == 0 {
		return nil, &kms.Error{Kind: kms.KindUnwrapFailed, Op: op, Key: a.String(), Err: errors.New("empty ciphertext")}
	}
	ctx, cancel := context.WithTimeout(ctx, p.c.cfg.Timeout)
	defer cancel()
	out, err := p.c.client(a.Region).Decrypt(ctx, &awskms.DecryptInput{
		KeyId: aws.String(a.String()), CiphertextBlob: w.Ciphertext, EncryptionContext: p.EncryptionContext(ctx),
		EncryptionAlgorithm: types.EncryptionAlgorithmSpecSymmetricDefault,
	})
	if err != nil {
		return nil, Classify(op, a.String(), err)
	}
	if _, err := answeredFor(a, out.KeyId); err != nil {
		clear(out.Plaintext)
		return nil, wrongKey(op, a, err)
	}
	return out.Plaintext, nil
}
