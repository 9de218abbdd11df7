package service_test

// Rate-limit tests through the HTTP API of a whole service, with a key
// provider that counts the calls reaching each vault: one org hammering the
// vault-reaching routes is refused with 429, Retry-After and the limit's
// name, while other orgs carry on; and many orgs together never get more
// calls to one vault than its cap.

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/ratelimit"
	"github.com/cmk-project/cmk/internal/service"
)

// vaults is a key provider with one good RSA key per name in any vault. It
// really seals (AES-GCM under a key derived from the key's name), so a data
// key opens only under the key that wrapped it, and it counts the calls
// that reach each vault host.
type vaults struct {
	mu    sync.Mutex
	calls map[string]int
}

func (v *vaults) count(ref kms.KeyRef) {
	u, _ := url.Parse(ref.VaultURL)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls[u.Host]++
}

// Calls returns how many calls reached the vault host.
func (v *vaults) Calls(host string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.calls[host]
}

const keyVersion = "0123456789abcdef0123456789abcdef"

func (v *vaults) aead(ref kms.KeyRef) cipher.AEAD {
	k := sha256.Sum256([]byte(ref.String()))
	b, _ := aes.NewCipher(k[:])
	g, _ := cipher.NewGCM(b)
	return g
}

func (v *vaults) Describe(ctx context.Context, ref kms.KeyRef) (kms.KeyInfo, error) {
	v.count(ref)
	if err := ctx.Err(); err != nil {
		return kms.KeyInfo{}, &kms.Error{Kind: kms.KindTransient, Op: "describe", Key: ref.String(), Err: err}
	}
	return kms.KeyInfo{KID: ref.String() + "/" + keyVersion, Version: keyVersion, KeyType: "RSA", Bits: 3072,
		Ops: []string{"wrapKey", "unwrapKey"}, Enabled: true, RecoveryLevel: "Recoverable"}, nil
}

func (v *vaults) Wrap(ctx context.Context, ref kms.KeyRef, dek []byte) (kms.Wrapped, error) {
	v.count(ref)
	if err := ctx.Err(); err != nil {
		return kms.Wrapped{}, &kms.Error{Kind: kms.KindTransient, Op: "wrap", Key: ref.String(), Err: err}
	}
	g := v.aead(ref)
	nonce := make([]byte, g.NonceSize())
	rand.Read(nonce)
	return kms.Wrapped{KeyVersion: keyVersion, Alg: "RSA-OAEP-256", Ciphertext: g.Seal(nonce, nonce, dek, nil)}, nil
}

func (v *vaults) Unwrap(ctx context.Context, ref kms.KeyRef, w kms.Wrapped) ([]byte, error) {
	v.count(ref)
	g := v.aead(ref)
	if len(w.Ciphertext) < g.NonceSize() {
		return nil, &kms.Error{Kind: kms.KindUnwrapFailed, Op: "unwrap", Key: ref.String(), Err: errors.New("ciphertext too short")}
	}
	dek, err := g.Open(nil, w.Ciphertext[:g.NonceSize()], w.Ciphertext[g.NonceSize():], nil)
	if err != nil {
		return nil, &kms.Error{Kind: kms.KindUnwrapFailed, Op: "unwrap", Key: ref.String(), Err: err}
	}
	return dek, nil
}

// clock is the limits' fake clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type world struct {
	t      *testing.T
	svc    *service.Service
	vaults *vaults
	clock  *clock
}

// startWorld runs a service on vaults with the given limits on a fake clock.
// workers > 0 runs enablement jobs.
func startWorld(t *testing.T, limits ratelimit.Policy, workers int) *world {
	t.Helper()
	w := &world{t: t, vaults: &vaults{calls: map[string]int{}}, clock: &clock{t: time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)}}
	if workers == 0 {
		workers = -1
	}
	limits.Now = w.clock.Now
	svc, err := service.New(t.Context(), service.Config{
		Addr: "127.0.0.1:0", DataDir: t.TempDir(), Provider: w.vaults, RateLimits: limits, DevTokenIssuer: true,
		Workers: workers, Poll: 20 * time.Millisecond, NoMonitor: true,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		svc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	w.svc = svc
	return w
}

// testTenant owns every vault of the fake provider; each org of the world
// is bound to it, so the ownership check lets its preflights reach the
// vaults.
const testTenant = "33333333-3333-4333-8333-333333333333"

// VaultTenant makes the fake a preflight.TenantFinder.
func (v *vaults) VaultTenant(context.Context, string) (string, error) { return testTenant, nil }

func (w *world) client(org string) *cmkapi.Client {
	w.t.Helper()
	tok, err := w.svc.MintDevToken("admin", org, nil, time.Hour)
	if err != nil {
		w.t.Fatal(err)
	}
	c := &cmkapi.Client{BaseURL: w.svc.URL(), Token: tok, OrgID: org, APIKey: service.DevAPIKey}
	// The first call creates the org with its sandboxes; then bind it.
	if _, err := c.Call(context.Background(), cmkapi.Request{Route: cmkapi.ListSandboxes}); err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.svc.Store.BindTenant(context.Background(), org, testTenant); err != nil {
		w.t.Fatal(err)
	}
	return c
}

// answer is one HTTP answer: status, Retry-After, and the error body when
// it failed.
type answer struct {
	status     int
	retryAfter string
	err        cmkapi.Error
	body       []byte
}

func call(t *testing.T, c *cmkapi.Client, rt cmkapi.Route, body any) answer {
	t.Helper()
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	resp, err := c.Do(context.Background(), cmkapi.Request{Route: rt, Body: rd})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	a.body, _ = io.ReadAll(resp.Body)
	if a.status >= 400 {
		json.Unmarshal(a.body, &a.err)
	}
	return a
}

func preflight(t *testing.T, c *cmkapi.Client, vault, key string) answer {
	t.Helper()
	return call(t, c, cmkapi.PreflightKey, cmkapi.PreflightRequest{KeyVaultKeyIdentifier: "https://" + vault + "/keys/" + key})
}

// wantLimited checks a 429 of code whose Retry-After is retryAfter and whose
// detail names the limit.
func wantLimited(t *testing.T, what string, a answer, code, retryAfter, limit string) {
	t.Helper()
	if a.status != 429 || a.err.ErrorCode != code || a.retryAfter != retryAfter || !strings.Contains(a.err.Detail, limit) {
		t.Errorf("%s = %d %s, Retry-After %q, detail %q; want 429 %s, Retry-After %q, a detail naming %q",
			what, a.status, a.err.ErrorCode, a.retryAfter, a.err.Detail, code, retryAfter, limit)
	}
}

func wantPassed(t *testing.T, what string, a answer) {
	t.Helper()
	var rep cmkapi.PreflightReport
	if a.status != 200 || json.Unmarshal(a.body, &rep) != nil || !rep.Passed {
		t.Errorf("%s = %d %s, want 200 with every check passed", what, a.status, a.body)
	}
}

func TestOrgHammeringPreflightIsLimited(t *testing.T) {
	w := startWorld(t, ratelimit.Policy{}, 0) // the defaults: preflight 6 per minute, burst 3
	attacker, victim := w.client("ATTACKER@CmkOrg"), w.client("VICTIM@CmkOrg")

	for i := range 3 {
		wantPassed(t, fmt.Sprintf("attacker's preflight %d", i+1), preflight(t, attacker, "kva.vault.azure.net", "a"))
	}
	for i := range 20 {
		a := preflight(t, attacker, "kva.vault.azure.net", "a")
		wantLimited(t, fmt.Sprintf("attacker's preflight %d", i+4), a, cmkapi.CodeRateLimited, "10", "preflight per org: 6 per minute (burst 3)")
	}
	if got := w.vaults.Calls("kva.vault.azure.net"); got != 9 {
		t.Errorf("calls that reached the attacker's vault = %d, want 9 (three preflights; the refused ones reach nothing)", got)
	}
	wantPassed(t, "another org's preflight on another vault", preflight(t, victim, "kvb.vault.azure.net", "b"))

	// Ten seconds later the attacker has one more.
	w.clock.Advance(10 * time.Second)
	wantPassed(t, "attacker's preflight 10 s later", preflight(t, attacker, "kva.vault.azure.net", "a"))
	wantLimited(t, "and the next", preflight(t, attacker, "kva.vault.azure.net", "a"), cmkapi.CodeRateLimited, "10", "preflight per org")
}

// TestEveryVaultRouteIsLimitedPerOrg hammers each route with a limit class
// until the org's burst is spent.
func TestEveryVaultRouteIsLimitedPerOrg(t *testing.T) {
	w := startWorld(t, ratelimit.Policy{}, 0)
	d := ratelimit.Defaults()
	for _, tc := range []struct {
		route      cmkapi.Route
		burst      int
		retryAfter string
		limit      string
		body       func(org string, i int) any
	}{
		{cmkapi.PreflightKey, 3, "10", "preflight per org: " + d.Preflight.String(),
			func(string, int) any {
				return cmkapi.PreflightRequest{KeyVaultKeyIdentifier: "https://kva.vault.azure.net/keys/a"}
			}},
		{cmkapi.RecheckKey, 4, "5", "re-check per org: " + d.Recheck.String(), func(string, int) any { return nil }},
		{cmkapi.CreateConfig, 5, "360", "config submission per org: " + d.Config.String(), func(org string, i int) any {
			return cmkapi.ConfigRequest{Name: fmt.Sprintf("c%d", i), Type: cmkapi.ConfigTypeBYOK, IMSOrgID: org,
				ConfigData: cmkapi.ConfigData{ProviderType: cmkapi.ProviderAzureKeyVault, KeyVaultKeyIdentifier: "https://kva.vault.azure.net/keys/" + org[:3]}}
		}},
		{cmkapi.CreateSandbox, 10, "120", "sandbox creation per org: " + d.Sandbox.String(), func(_ string, i int) any { return cmkapi.Sandbox{Name: fmt.Sprintf("sb%d", i)} }},
	} {
		t.Run(tc.route.ID, func(t *testing.T) {
			org := strings.ToUpper(tc.route.ID[:3]) + "@CmkOrg"
			c := w.client(org)
			for i := range tc.burst {
				if a := call(t, c, tc.route, tc.body(org, i)); a.status == 429 {
					t.Fatalf("call %d of the burst of %d refused: %s", i+1, tc.burst, a.body)
				}
			}
			wantLimited(t, "the call after the burst", call(t, c, tc.route, tc.body(org, tc.burst)), cmkapi.CodeRateLimited, tc.retryAfter, tc.limit)
			// Other orgs, and other routes of the same org, are not charged.
			if a := call(t, w.client("OTHER-"+org), tc.route, tc.body("OTHER-"+org, 0)); a.status == 429 {
				t.Errorf("another org's call refused: %s", a.body)
			}
			if a := call(t, c, cmkapi.GetKeyHealth, nil); a.status != 200 {
				t.Errorf("the org's key health = %d %s, want 200", a.status, a.body)
			}
		})
	}
}

// TestVaultCapAcrossOrgs has many orgs preflight keys of one vault at once,
// for three minutes of the fake clock: together they never get more calls
// to the vault than its cap, while a preflight on another vault goes
// through.
func TestVaultCapAcrossOrgs(t *testing.T) {
	const perMinute, burst = 30, 30
	generous := ratelimit.Limit{N: 1000, Per: time.Minute}
	w := startWorld(t, ratelimit.Policy{Preflight: generous, Vault: ratelimit.Limit{N: perMinute, Per: time.Minute, Burst: burst}}, 0)
	var orgs []*cmkapi.Client
	for i := range 20 {
		orgs = append(orgs, w.client(fmt.Sprintf("ORG%02d@CmkOrg", i)))
	}
	const shared = "shared.vault.azure.net"
	limited := 0
	for minute := range 3 {
		var mu sync.Mutex
		var wg sync.WaitGroup
		answers := map[int]int{}
		var refusal answer
		for i, c := range orgs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 3 {
					a := preflight(t, c, shared, fmt.Sprintf("key-of-org%02d", i))
					mu.Lock()
					answers[a.status]++
					if a.status == 429 {
						refusal = a
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if got, most := w.vaults.Calls(shared), burst+perMinute*minute; got > most {
			t.Errorf("minute %d: %d calls reached the shared vault, want at most %d", minute, got, most)
		}
		if answers[200] == 0 || answers[429] == 0 || answers[200]+answers[429] != 60 {
			t.Errorf("minute %d: answers %v, want some 200 and some 429, nothing else", minute, answers)
		}
		if refusal.err.ErrorCode != cmkapi.CodeVaultRateLimited || refusal.retryAfter == "" ||
			!strings.Contains(refusal.err.Detail, "calls to vault shared.vault.azure.net across orgs: 30 per minute (burst 30)") {
			t.Errorf("minute %d: refusal %s (Retry-After %q), want VAULT_RATE_LIMITED naming the vault's cap", minute, refusal.body, refusal.retryAfter)
		}
		limited += answers[429]
		wantPassed(t, "a preflight on another vault", preflight(t, orgs[0], "kvother.vault.azure.net", "k"))
		w.clock.Advance(time.Minute)
	}
	t.Logf("%d calls reached the shared vault in three minutes; %d preflights refused", w.vaults.Calls(shared), limited)
}

// TestVaultCapRefusalChangesNothing: a re-check or a new sandbox of a CMK
// org whose vault's cap is spent is refused before any call, and leaves the
// key's health and the org's sandboxes as they were.
func TestVaultCapRefusalChangesNothing(t *testing.T) {
	w := startWorld(t, ratelimit.Policy{Vault: ratelimit.Limit{N: 3, Per: time.Hour}}, 1)
	const vault = "kvown.vault.azure.net"
	org := w.client("OWNER@CmkOrg")
	// Enabling runs in the background: its calls are not charged.
	if _, _, err := org.SubmitConfig(context.Background(), "Enable", "https://"+vault+"/keys/owner/"+keyVersion); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		cfg, _, err := org.Config(context.Background(), "Enable")
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Status == cmkapi.StatusCompleted {
			break
		}
		if cfg.Status == cmkapi.StatusFailed || time.Now().After(deadline) {
			t.Fatalf("enablement ended %s (want COMPLETED)", cfg.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Another org's preflight of another key in the vault spends its cap.
	wantPassed(t, "a neighbour's preflight", preflight(t, w.client("NEIGHBOUR@CmkOrg"), vault, "neighbour"))
	before := w.vaults.Calls(vault)

	wantLimited(t, "re-check", call(t, org, cmkapi.RecheckKey, nil), cmkapi.CodeVaultRateLimited, "3600", "calls to vault "+vault+" across orgs: 3 per hour (burst 3)")
	wantLimited(t, "new sandbox", call(t, org, cmkapi.CreateSandbox, cmkapi.Sandbox{Name: "stage"}), cmkapi.CodeVaultRateLimited, "3600", "calls to vault "+vault)
	if got := w.vaults.Calls(vault); got != before {
		t.Errorf("refused requests made %d vault calls, want none", got-before)
	}
	h, _, err := org.Health(context.Background())
	if err != nil || h.State != cmkapi.StateHealthy {
		t.Errorf("health after the refused re-check = %+v, %v; want HEALTHY", h, err)
	}
	var list cmkapi.SandboxList
	if _, err := org.JSON(context.Background(), cmkapi.Request{Route: cmkapi.ListSandboxes}, nil, &list); err != nil {
		t.Fatal(err)
	}
	for _, sb := range list.Sandboxes {
		if sb.Name == "stage" {
			t.Error("the refused sandbox exists")
		}
	}

	// An hour on, the cap admits the re-check.
	w.clock.Advance(time.Hour)
	if a := call(t, org, cmkapi.RecheckKey, nil); a.status != 200 {
		t.Errorf("re-check an hour later = %d %s, want 200", a.status, a.body)
	}
}
