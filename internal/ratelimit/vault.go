package ratelimit

import (
	"context"
	"net/url"
	"strings"
	"sync"

	"github.com/cmk-project/cmk/internal/kms"
)

// meter follows the vault calls made for one API request: only calls made
// with a metered context count towards the vault cap.
type meter struct {
	mu      sync.Mutex
	calls   int       // admitted so far
	refused *Exceeded // the cap's refusal, if any
}

type meterKey struct{}

// Metered returns ctx metered for one API request: vault calls made with it
// through a provider from Limits.Vaults are charged to the vault cap.
func Metered(ctx context.Context) context.Context {
	return context.WithValue(ctx, meterKey{}, &meter{})
}

// Refused returns the vault cap's refusal of a call made with ctx's meter
// (an *Exceeded wrapping ErrVaultLimit), or nil. The operation that made the
// call saw it as the vault throttling, so its result tells nothing about the
// key.
func Refused(ctx context.Context) error {
	m, _ := ctx.Value(meterKey{}).(*meter)
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refused == nil {
		return nil
	}
	return m.refused
}

// headroom is how many calls the cap must have left for a request's first
// vault call: the most one preflight or re-check makes. A request the cap
// lets start can then usually finish, rather than be cut off half way with
// its first calls spent.
const headroom = 3

// Vaults returns inner behind the vault cap. A call made with a metered
// context (Metered) is charged to its vault host's bucket, shared by every
// org; over the cap it is refused before it reaches the vault, with a
// *kms.Error of KindThrottled wrapping the *Exceeded, so that callers treat
// it as they treat the vault's own throttling: no verdict on the key. Once
// a request has been refused, its further calls are refused too, without
// being charged. Calls without a meter pass straight through.
func (l *Limits) Vaults(inner kms.Provider) kms.Provider {
	return &capped{inner: inner, limiter: l.vault}
}

type capped struct {
	inner   kms.Provider
	limiter *Limiter
}

func (c *capped) admit(ctx context.Context, op string, ref kms.KeyRef) error {
	m, _ := ctx.Value(meterKey{}).(*meter)
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refused == nil {
		need := 1
		if m.calls == 0 {
			need = headroom
		}
		host := vaultHost(ref)
		wait, ok := c.limiter.Take(host, need)
		if ok {
			m.calls++
			return nil
		}
		m.refused = &Exceeded{Scope: "calls to vault " + host + " across orgs", Limit: c.limiter.Limit(), RetryAfter: wait, err: ErrVaultLimit}
	}
	// No RetryAfter on the kms error: it is the vault's own, and the
	// monitor would put off the org's next scheduled check by it. The
	// vault was not called; the wait is in the *Exceeded.
	return &kms.Error{Kind: kms.KindThrottled, Op: op, Key: ref.String(), Err: m.refused}
}

// vaultHost is the bucket of a key's vault: its host name, in lower case.
func vaultHost(ref kms.KeyRef) string {
	if u, err := url.Parse(ref.VaultURL); err == nil && u.Host != "" {
		return strings.ToLower(u.Host)
	}
	return strings.ToLower(ref.VaultURL)
}

// Describe implements kms.Provider.
func (c *capped) Describe(ctx context.Context, ref kms.KeyRef) (kms.KeyInfo, error) {
	if err := c.admit(ctx, "describe", ref); err != nil {
		return kms.KeyInfo{}, err
	}
	return c.inner.Describe(ctx, ref)
}

// Wrap implements kms.Provider.
func (c *capped) Wrap(ctx context.Context, ref kms.KeyRef, dek []byte) (kms.Wrapped, error) {
	if err := c.admit(ctx, "wrap", ref); err != nil {
		return kms.Wrapped{}, err
	}
	return c.inner.Wrap(ctx, ref, dek)
}

// Unwrap implements kms.Provider.
func (c *capped) Unwrap(ctx context.Context, ref kms.KeyRef, w kms.Wrapped) ([]byte, error) {
	if err := c.admit(ctx, "unwrap", ref); err != nil {
		return nil, err
	}
	return c.inner.Unwrap(ctx, ref, w)
}
