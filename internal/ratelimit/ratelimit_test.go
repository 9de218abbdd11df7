package ratelimit

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/kms"
)

func TestEveryRouteClassIsInThePolicy(t *testing.T) {
	l := New(Policy{})
	for _, rt := range cmkapi.Routes {
		if rt.Limit == "" {
			continue
		}
		if l.perOrg[rt.Limit] == nil {
			t.Errorf("route %s has limit class %q, which the policy does not know", rt.ID, rt.Limit)
		}
	}
	if err := l.Org("no such class", "org1"); err == nil || errors.Is(err, ErrOrgLimit) {
		t.Errorf("Org(unknown class) = %v, want an error that is not a rate limit", err)
	}
}

func TestPolicyDefaults(t *testing.T) {
	d := Defaults()
	p := Policy{Recheck: Limit{N: 100, Per: time.Second}}.withDefaults()
	if p.Preflight != d.Preflight || p.Vault != d.Vault || p.MaxKeys != d.MaxKeys || p.Now == nil {
		t.Errorf("withDefaults left zero fields unset: %+v", p)
	}
	if p.Recheck != (Limit{N: 100, Per: time.Second}) {
		t.Errorf("withDefaults changed a set limit: Recheck = %v", p.Recheck)
	}
	if p := (Policy{Config: Limit{N: 5}}).withDefaults(); p.Config != d.Config {
		t.Errorf("a limit without Per = %v, want the default %v", p.Config, d.Config)
	}
}

func TestOrgLimit(t *testing.T) {
	c := newClock()
	l := New(Policy{Now: c.Now})
	for i := range 3 {
		if err := l.Org(cmkapi.LimitPreflight, "org1"); err != nil {
			t.Fatalf("preflight %d of the burst: %v", i+1, err)
		}
	}
	err := l.Org(cmkapi.LimitPreflight, "org1")
	var ex *Exceeded
	if !errors.As(err, &ex) || !errors.Is(err, ErrOrgLimit) || errors.Is(err, ErrVaultLimit) {
		t.Fatalf("fourth preflight = %v, want an *Exceeded wrapping ErrOrgLimit", err)
	}
	if ex.Scope != "preflight per org" || ex.RetryAfter != 10*time.Second {
		t.Errorf("refusal = %q, retry after %s; want %q, 10s", ex.Scope, ex.RetryAfter, "preflight per org")
	}
	if want := "rate limit of preflight per org exceeded: 6 per minute (burst 3); retry after 10s"; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}
	// Classes and orgs have separate allowances.
	if err := l.Org(cmkapi.LimitRecheck, "org1"); err != nil {
		t.Errorf("re-check after the preflights: %v", err)
	}
	if err := l.Org(cmkapi.LimitPreflight, "org2"); err != nil {
		t.Errorf("another org's preflight: %v", err)
	}
}

// fakeVault counts the calls that reach it, per vault URL.
type fakeVault struct {
	mu    sync.Mutex
	calls map[string]int
}

func (f *fakeVault) count(ref kms.KeyRef) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[ref.VaultURL]++
}

func (f *fakeVault) Describe(_ context.Context, ref kms.KeyRef) (kms.KeyInfo, error) {
	f.count(ref)
	return kms.KeyInfo{KID: ref.String() + "/v1", Version: "v1", Enabled: true}, nil
}

func (f *fakeVault) Wrap(_ context.Context, ref kms.KeyRef, dek []byte) (kms.Wrapped, error) {
	f.count(ref)
	return kms.Wrapped{KeyVersion: "v1", Alg: "RSA-OAEP-256", Ciphertext: append([]byte(nil), dek...)}, nil
}

func (f *fakeVault) Unwrap(_ context.Context, ref kms.KeyRef, w kms.Wrapped) ([]byte, error) {
	f.count(ref)
	return append([]byte(nil), w.Ciphertext...), nil
}

func TestVaultCap(t *testing.T) {
	c := newClock()
	inner := &fakeVault{}
	l := New(Policy{Vault: Limit{N: 6, Per: time.Minute, Burst: 6}, Now: c.Now})
	p := l.Vaults(inner)
	v1 := kms.KeyRef{VaultURL: "https://kv1.vault.azure.net", Name: "k"}
	v1Other := kms.KeyRef{VaultURL: "https://KV1.vault.azure.net", Name: "other-orgs-key"} // same vault, any case
	v2 := kms.KeyRef{VaultURL: "https://kv2.vault.azure.net", Name: "k"}

	// Two requests (two orgs) of three calls each spend the vault's burst.
	for _, ref := range []kms.KeyRef{v1, v1Other} {
		ctx := Metered(context.Background())
		if _, err := p.Describe(ctx, ref); err != nil {
			t.Fatal(err)
		}
		w, _ := p.Wrap(ctx, ref, []byte("dek"))
		p.Unwrap(ctx, ref, w)
		if err := Refused(ctx); err != nil {
			t.Fatalf("request within the cap refused: %v", err)
		}
	}
	// A third is refused before its first call reaches the vault.
	ctx := Metered(context.Background())
	_, err := p.Describe(ctx, v1)
	var ke *kms.Error
	var ex *Exceeded
	if !errors.As(err, &ke) || ke.Kind != kms.KindThrottled || !errors.As(err, &ex) || !errors.Is(err, ErrVaultLimit) {
		t.Fatalf("call over the cap = %v, want a throttled *kms.Error wrapping an *Exceeded of ErrVaultLimit", err)
	}
	if ex.RetryAfter != 30*time.Second || ke.RetryAfter != 0 {
		// 0 held, 3 needed to start, one every 10 s. The kms error carries
		// no Retry-After: that would be the vault's, and put off the
		// monitor's next check.
		t.Errorf("retry after %s (limit) and %s (kms), want 30s and 0", ex.RetryAfter, ke.RetryAfter)
	}
	if want := "calls to vault kv1.vault.azure.net across orgs"; ex.Scope != want {
		t.Errorf("Scope = %q, want %q", ex.Scope, want)
	}
	if !errors.Is(Refused(ctx), ErrVaultLimit) {
		t.Errorf("Refused(ctx) = %v, want the refusal", Refused(ctx))
	}
	// The refused request's later calls are refused too, and cost nothing:
	// after 10 s one token is back and a single call could have it.
	c.Advance(10 * time.Second)
	if _, err := p.Wrap(ctx, v1, []byte("dek")); kms.KindOf(err) != kms.KindThrottled {
		t.Errorf("later call of a refused request = %v, want throttled", err)
	}
	if got := inner.calls["https://kv1.vault.azure.net"] + inner.calls["https://KV1.vault.azure.net"]; got != 6 {
		t.Errorf("calls that reached kv1 = %d, want 6 (the burst)", got)
	}

	// Another vault has its own cap; unmetered calls (the monitor, the
	// enablement jobs) pass straight through.
	if _, err := p.Describe(Metered(context.Background()), v2); err != nil {
		t.Errorf("metered call to another vault: %v", err)
	}
	for range 20 {
		if _, err := p.Describe(context.Background(), v1); err != nil {
			t.Fatalf("unmetered call: %v", err)
		}
	}
	if Refused(context.Background()) != nil {
		t.Error("Refused(unmetered ctx) != nil")
	}
}

func TestVaultCapOverTime(t *testing.T) {
	// Many orgs calling one vault together get N per minute, plus the burst
	// once.
	c := newClock()
	inner := &fakeVault{}
	p := New(Policy{Vault: Limit{N: 30, Per: time.Minute, Burst: 10}, Now: c.Now}).Vaults(inner)
	ref := kms.KeyRef{VaultURL: "https://shared.vault.azure.net", Name: "k"}
	for range 5 * 60 { // five minutes, a request a second from some org
		ctx := Metered(context.Background())
		for range 3 {
			p.Describe(ctx, ref)
		}
		c.Advance(time.Second)
	}
	if got, limit := inner.calls[ref.VaultURL], 10+5*30; got > limit || got < limit-3 {
		t.Errorf("calls to the vault in five minutes = %d, want at most %d and close to it", got, limit)
	}
}

func TestExceededMessageNamesTheLimit(t *testing.T) {
	ex := &Exceeded{Scope: "calls to vault kv1.vault.azure.net across orgs", Limit: Limit{N: 60, Per: time.Minute, Burst: 30}, RetryAfter: 2 * time.Second, err: ErrVaultLimit}
	if !strings.Contains(ex.Error(), "kv1.vault.azure.net across orgs exceeded: 60 per minute (burst 30)") {
		t.Errorf("Error() = %q", ex.Error())
	}
}

func TestConsentLimits(t *testing.T) {
	c := newClock()
	l := New(Policy{Now: c.Now, ConsentPerOrg: Limit{N: 10, Per: time.Hour, Burst: 3}, ConsentPerClient: Limit{N: 60, Per: time.Minute, Burst: 5}, ConsentConcurrency: 2})
	// Two redemptions in flight take both slots; a third waits its turn.
	r1, err1 := l.Consent("org1", "192.0.2.1")
	r2, err2 := l.Consent("org2", "192.0.2.1")
	if err1 != nil || err2 != nil {
		t.Fatalf("first two callbacks: %v, %v", err1, err2)
	}
	_, err := l.Consent("org3", "192.0.2.1")
	var ex *Exceeded
	if !errors.As(err, &ex) || !errors.Is(err, ErrConsentLimit) || ex.Scope != "consent redemptions in flight" || ex.RetryAfter <= 0 {
		t.Fatalf("third callback in flight = %v, want ErrConsentLimit for redemptions in flight", err)
	}
	r1()
	r1() // releasing twice frees one slot only
	r3, err := l.Consent("org1", "192.0.2.2")
	if err != nil {
		t.Fatalf("callback after a slot was freed: %v", err)
	}
	if _, err := l.Consent("org4", "192.0.2.3"); !errors.Is(err, ErrConsentLimit) {
		t.Fatalf("callback with both slots taken = %v, want ErrConsentLimit", err)
	}
	r2()
	r3()
	// Per org: the burst of 3, whatever the address.
	if _, err := l.Consent("org1", "192.0.2.4"); err != nil {
		t.Fatalf("org1's third callback: %v", err)
	}
	_, err = l.Consent("org1", "192.0.2.5")
	if !errors.As(err, &ex) || ex.Scope != "consent callbacks per org" || ex.RetryAfter != 6*time.Minute {
		t.Fatalf("org1's fourth callback = %v, want the per-org limit, retry after 6m", err)
	}
	// Per client: 5 at once from one address, whatever the org (the
	// refused ones count: org1 was over its limit above).
	for i := range 2 {
		r, err := l.Consent("org-c"+strings.Repeat("x", i), "192.0.2.9")
		if err != nil {
			t.Fatalf("client callback %d: %v", i, err)
		}
		r()
	}
	n := 0
	for i := range 10 {
		r, err := l.Consent("org-d"+strings.Repeat("x", i), "192.0.2.1")
		if err != nil {
			if !errors.As(err, &ex) || ex.Scope != "consent callbacks per client address" {
				t.Fatalf("client callback = %v, want the per-client limit", err)
			}
			break
		}
		n++
		r()
	}
	// 192.0.2.1 made three callbacks above (one refused for want of a
	// slot, and charged all the same).
	if n != 2 {
		t.Errorf("192.0.2.1 was admitted %d more callbacks, want 2 (burst 5)", n)
	}
}
