package enablement_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/enablement"
	"github.com/cmk-project/cmk/internal/guidance"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/keyid"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/preflight"
	"github.com/cmk-project/cmk/internal/store"
	"github.com/cmk-project/cmk/internal/systemkey"
)

// These tests drive the enablement job through Runner.RunOnce against a real
// SQLite store, a real keyring over a real system key, and a fake vault that
// does real cryptography. Time is a fake clock: the job's pauses are recorded
// and move the clock, they never sleep.

const (
	lease = 30 * time.Second // the runners' lease; the lease keeper sleeps lease/3
	org   = "85A1B2C3D4E5F6A7B8C9D0E1@AdobeOrg"
	// vaultTenant owns the fake vault; the org is bound to it.
	vaultTenant = "22222222-2222-4222-8222-222222222222"
)

var (
	t0  = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	ref = kms.KeyRef{VaultURL: "https://contoso.vault.azure.net", Name: "cmk-key"}
	env = guidance.Env{AppName: "Acme Data Platform", AppID: "0b4f2a8e-1c3d-4e5f-8a9b-0c1d2e3f4a5b",
		ConsentURL: "https://login.microsoftonline.com/common/adminconsent?client_id=0b4f2a8e-1c3d-4e5f-8a9b-0c1d2e3f4a5b"}
	errCrash = errors.New("simulated crash")
)

var template struct {
	once sync.Once
	db   []byte
	err  error
}

// emptyDB returns the bytes of a migrated, empty database. Migrating once
// and copying the file saves each test the schema's fsyncs.
func emptyDB(t *testing.T) []byte {
	t.Helper()
	template.once.Do(func() {
		dir, err := os.MkdirTemp("", "enablement-test")
		if err != nil {
			template.err = err
			return
		}
		defer os.RemoveAll(dir)
		path := filepath.Join(dir, "cmk.db")
		st, err := store.Open(context.Background(), path)
		if err != nil {
			template.err = err
			return
		}
		if template.err = st.Close(); template.err == nil {
			template.db, template.err = os.ReadFile(path)
		}
	})
	if template.err != nil {
		t.Fatal(template.err)
	}
	return template.db
}

// fixture is one org with sandboxes and data keys in a fresh database, and
// the vault key it will switch to.
type fixture struct {
	t     *testing.T
	ctx   context.Context
	st    *store.Store
	kr    *keyring.Keyring
	vault *fakeVault
	clock *fakeClock
	job   string            // id of the submitted configuration
	deks  map[string][]byte // every data key's plaintext, by id, as first created
}

// newFixture creates the org with sandboxes (two data keys each, one per
// store kind) and rotations extra data keys in its first sandbox.
func newFixture(t *testing.T, sandboxes, rotations int) *fixture {
	t.Helper()
	ctx := t.Context()
	clock := newFakeClock(t0, lease/3)
	path := filepath.Join(t.TempDir(), "cmk.db")
	if err := os.WriteFile(path, emptyDB(t), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	st.SetClock(clock.Now)
	sys, err := systemkey.New(random(32))
	if err != nil {
		t.Fatal(err)
	}
	vault := newFakeVault(clock.Now)
	vault.create(ref)
	f := &fixture{t: t, ctx: ctx, st: st, kr: &keyring.Keyring{Store: st, System: sys, Customer: vault}, vault: vault, clock: clock, deks: map[string][]byte{}}
	if _, err := st.EnsureOrg(ctx, org); err != nil {
		t.Fatal(err)
	}
	if _, err := st.BindTenant(ctx, org, vaultTenant); err != nil {
		t.Fatal(err)
	}
	for i := range sandboxes {
		if err := f.kr.CreateSandbox(ctx, org, fmt.Sprintf("sb%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for range rotations {
		if _, err := f.kr.RotateStoreKey(ctx, org, "sb000", "lake"); err != nil {
			t.Fatal(err)
		}
	}
	f.remember()
	return f
}

// remember records the plaintext of data keys not seen before.
func (f *fixture) remember() {
	f.t.Helper()
	keys, err := f.st.DataKeys(f.ctx, org)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, dk := range keys {
		if _, ok := f.deks[dk.ID]; ok {
			continue
		}
		dek, err := f.kr.Unwrap(f.ctx, dk)
		if err != nil {
			f.t.Fatalf("Unwrap(%s) = %v", dk.ID, err)
		}
		f.deks[dk.ID] = dek
	}
}

// keyID is the identifier of the vault key's current version.
func (f *fixture) keyID() string { return ref.String() + "/" + f.vault.version(ref) }

// submit creates a NEW configuration for raw, as the API does.
func (f *fixture) submit(raw string) {
	f.t.Helper()
	c := &store.Config{ID: "job-1", OrgID: org, Name: "Config1", Type: "BYOK_CONFIG", ProviderType: "AZURE_KEYVAULT", KeyIdentifier: raw}
	if id, err := keyid.Parse(raw); err == nil {
		c.VaultURL, c.KeyName, c.KeyVersion = id.VaultURL, id.Name, id.Version
	}
	if err := f.st.CreateConfig(f.ctx, c); err != nil {
		f.t.Fatalf("CreateConfig(%s) = %v", raw, err)
	}
	f.job = c.ID
}

func (f *fixture) runner(owner string, concurrency int) *enablement.Runner {
	e := env
	e.Now = f.clock.Now
	return &enablement.Runner{Store: f.st, Keyring: f.kr, Provider: f.vault, Env: e, Owner: owner, Lease: lease,
		Concurrency: concurrency, Log: slog.New(slog.DiscardHandler), Now: f.clock.Now, Sleep: f.clock.Sleep, Tenants: f.vault}
}

// mustRun runs one job with r and fails the test unless it claimed one and
// returned no error.
func (f *fixture) mustRun(r *enablement.Runner) {
	f.t.Helper()
	if ran, err := r.RunOnce(f.ctx); !ran || err != nil {
		f.t.Fatalf("%s.RunOnce() = %v, %v, want true, <nil>", r.Owner, ran, err)
	}
}

// mustIdle fails the test if r finds a job to claim.
func (f *fixture) mustIdle(r *enablement.Runner, when string) {
	f.t.Helper()
	if ran, err := r.RunOnce(f.ctx); ran || err != nil {
		f.t.Fatalf("%s: %s.RunOnce() = %v, %v, want false, <nil>", when, r.Owner, ran, err)
	}
}

func (f *fixture) config() *store.Config {
	f.t.Helper()
	c, err := f.st.Config(f.ctx, f.job)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *fixture) orgRow() store.Org {
	f.t.Helper()
	o, err := f.st.Org(f.ctx, org)
	if err != nil {
		f.t.Fatal(err)
	}
	return o
}

// checkKeys checks that the org has exactly the data keys remembered, that
// every one unwraps to its original plaintext, and that wantCustomer of them
// (any number when negative) are wrapped by the customer key. It returns how
// many are.
func (f *fixture) checkKeys(wantCustomer int) int {
	f.t.Helper()
	keys, err := f.st.DataKeys(f.ctx, org)
	if err != nil {
		f.t.Fatal(err)
	}
	if len(keys) != len(f.deks) {
		f.t.Errorf("len(DataKeys(org)) = %d, want %d", len(keys), len(f.deks))
	}
	customer := 0
	for _, dk := range keys {
		want, ok := f.deks[dk.ID]
		if !ok {
			f.t.Errorf("DataKeys(org) has unknown key %s", dk.ID)
			continue
		}
		switch dk.KEK {
		case store.KEKCustomer:
			customer++
			if got := [3]string{dk.KEKRef, dk.KEKVersion, dk.Alg}; got != [3]string{ref.String(), f.vault.version(ref), "RSA-OAEP-256"} {
				f.t.Errorf("DataKey(%s) wrapping = %q, want %s, its newest version, RSA-OAEP-256", dk.ID, got, ref)
			}
		case store.KEKSystem:
		default:
			f.t.Errorf("DataKey(%s).KEK = %q, want %q or %q", dk.ID, dk.KEK, store.KEKSystem, store.KEKCustomer)
		}
		got, err := f.kr.Unwrap(f.ctx, dk)
		if err != nil || !bytes.Equal(got, want) {
			f.t.Errorf("Unwrap(%s, %s) = %x, %v, want %x", dk.ID, dk.KEK, got, err, want)
		}
	}
	if wantCustomer >= 0 && customer != wantCustomer {
		f.t.Errorf("customer-wrapped data keys = %d, want %d (of %d)", customer, wantCustomer, len(keys))
	}
	return customer
}

// checkCompleted checks a job that finished: COMPLETED, nothing pending,
// every data key under the customer key, the org switched for good.
func (f *fixture) checkCompleted() {
	f.t.Helper()
	c := f.config()
	n := len(f.deks)
	if c.Status != store.StatusCompleted || c.Failure != nil || c.LastError != nil || c.LeaseOwner != "" {
		f.t.Errorf("Config(job) = status %s, failure %+v, lastError %+v, lease owner %q; want COMPLETED, none, none, none", c.Status, c.Failure, c.LastError, c.LeaseOwner)
	}
	if c.ProgressDone != n || c.ProgressTotal != n {
		f.t.Errorf("Config(job).Progress = %d/%d, want %d/%d", c.ProgressDone, c.ProgressTotal, n, n)
	}
	if c.KeyVersion != f.vault.version(ref) {
		f.t.Errorf("Config(job).KeyVersion = %q, want %q", c.KeyVersion, f.vault.version(ref))
	}
	if o := f.orgRow(); o.KEKMode != store.ModeCustomer || o.VaultURL != ref.VaultURL || o.KeyName != ref.Name {
		f.t.Errorf("Org(org) = %s %s %s, want %s %s %s", o.KEKMode, o.VaultURL, o.KeyName, store.ModeCustomer, ref.VaultURL, ref.Name)
	}
	if h, err := f.st.Health(f.ctx, org); err != nil || h.State != keyhealth.Healthy {
		f.t.Errorf("Health(org) = %+v, %v, want a HEALTHY record", h, err)
	}
	f.checkKeys(n)
}

// checkUntouched checks that the org still uses the system key for all its
// data keys: a FAILED job must leave nothing half-done.
func (f *fixture) checkUntouched() {
	f.t.Helper()
	if o := f.orgRow(); o.KEKMode != store.ModeSystem {
		f.t.Errorf("Org(org).KEKMode = %s, want %s", o.KEKMode, store.ModeSystem)
	}
	if _, err := f.st.Health(f.ctx, org); !errors.Is(err, store.ErrNotFound) {
		f.t.Errorf("Health(org) error = %v, want ErrNotFound (no key to monitor)", err)
	}
	f.checkKeys(0)
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// present returns *p, failing the test when the job did not record field.
func present[T any](t *testing.T, field string, p *T) T {
	t.Helper()
	if p == nil {
		t.Fatalf("the job recorded no %s", field)
	}
	return *p
}

// TestCompletes runs jobs that meet no trouble: every data key ends up
// wrapped by the customer key, once, and unwraps to the same data key.
func TestCompletes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                 string
		sandboxes, rotations int
		concurrency          int
	}{
		{"no data keys", 0, 0, 4},
		{"one sandbox, one worker", 1, 0, 1},
		{"sandboxes with rotated keys", 3, 2, 4},
		{"more data keys than a page", 101, 0, 4}, // 202 keys: the job lists them 200 at a time
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tt.sandboxes, tt.rotations)
			f.submit(f.keyID())
			r := f.runner("worker-a", tt.concurrency)
			f.mustRun(r)
			f.checkCompleted()

			c := f.config()
			checks := c.Checks
			if len(checks) != len(preflight.Order) {
				t.Errorf("len(checks) = %d, want %d", len(checks), len(preflight.Order))
			}
			for _, res := range checks {
				if res.Status != preflight.Passed {
					t.Errorf("check %s = %s, want %s", res.Check, res.Status, preflight.Passed)
				}
			}
			if c.Attempts != 1 {
				t.Errorf("Config(job).Attempts = %d, want 1", c.Attempts)
			}
			// The validation's probe, then each data key exactly once.
			if got, want := f.vault.count("wrap"), 1+len(f.deks); got != want {
				t.Errorf("vault wrap calls = %d, want %d", got, want)
			}
			if got := f.clock.Slept(); len(got) != 0 {
				t.Errorf("pauses = %v, want none", got)
			}
			if got := r.Throttled(); got != 0 {
				t.Errorf("Throttled() = %d, want 0", got)
			}
			f.mustIdle(r, "after COMPLETED")
		})
	}
}

// TestAlreadySwitchedSkipsValidation: a job whose org already uses this key
// only re-wraps; validating again could fail it and strand data keys under
// the system key.
func TestAlreadySwitchedSkipsValidation(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, 0)
	f.submit(f.keyID())
	if err := f.st.SetCustomerKEK(f.ctx, org, ref.VaultURL, ref.Name); err != nil {
		t.Fatal(err)
	}
	f.vault.setFault(failCalls("tenant", 1, 0, kerr(kms.KindTransient)))
	f.mustRun(f.runner("worker-a", 1))
	c := f.config()
	if c.Status != store.StatusCompleted || c.ProgressDone != len(f.deks) {
		t.Errorf("Config(job) = %s %d/%d, want COMPLETED %d/%d", c.Status, c.ProgressDone, c.ProgressTotal, len(f.deks), len(f.deks))
	}
	// No validation: no tenant lookup and no probe wrap; only the
	// re-wrap's own read of the key.
	if got := [3]int{f.vault.count("tenant"), f.vault.count("wrap"), f.vault.count("describe")}; got != [3]int{0, len(f.deks), 1} {
		t.Errorf("vault tenant, wrap, describe calls = %v, want [0 %d 1]", got, len(f.deks))
	}
	f.checkKeys(len(f.deks))
}

// TestValidationFails: each definite verdict on the key fails the job with
// the check that failed and what to do, and leaves the org's data as it was.
func TestValidationFails(t *testing.T) {
	t.Parallel()
	disable := func(k *kms.KeyInfo) { k.Enabled = false }
	tests := []struct {
		name   string
		raw    func(f *fixture) string // the key identifier submitted; nil: the vault key's
		setup  func(f *fixture)
		check  string
		code   string
		status preflight.Status // of the check in the stored report
		remedy string           // text one of the remedy steps must contain
		probe  bool             // the verdict is the vault's answer to the round trip's wrap
	}{
		{name: "identifier not a vault key URI", raw: func(*fixture) string { return "https://contoso.vault.azure.net.evil.com/keys/cmk-key" },
			check: preflight.CheckKeyIdentifier, code: string(kms.KindMalformedKeyURI), status: preflight.Failed, remedy: "Key Identifier"},
		{name: "vault in a tenant not bound to the org", setup: func(f *fixture) { f.vault.setTenant("44444444-4444-4444-8444-444444444444") },
			check: preflight.CheckKeyOwner, code: "KEY_NOT_BOUND", status: preflight.Failed, remedy: env.ConsentURL},
		{name: "admin consent missing", setup: func(f *fixture) { f.vault.setFault(failCalls("describe", 1, 0, kerr(kms.KindIdentityInvalid))) },
			check: preflight.CheckSignIn, code: string(kms.KindIdentityInvalid), status: preflight.Failed, remedy: env.ConsentURL},
		{name: "token refused", setup: func(f *fixture) { f.vault.setFault(failCalls("describe", 1, 0, kerr(kms.KindTokenAcquisitionFailed))) },
			check: preflight.CheckSignIn, code: string(kms.KindTokenAcquisitionFailed), status: preflight.Failed, remedy: "tenant"},
		{name: "vault does not resolve", setup: func(f *fixture) { f.vault.setFault(failCalls("describe", 1, 0, kerr(kms.KindVaultDNSUnresolvable))) },
			check: preflight.CheckVaultReachable, code: string(kms.KindVaultDNSUnresolvable), status: preflight.Failed, remedy: ref.VaultURL},
		{name: "vault firewall", setup: func(f *fixture) { f.vault.setFault(failCalls("describe", 1, 0, kerr(kms.KindNetworkDenied))) },
			check: preflight.CheckVaultReachable, code: string(kms.KindNetworkDenied), status: preflight.Failed, remedy: "Networking"},
		{name: "role missing", setup: func(f *fixture) { f.vault.setFault(failCalls("describe", 1, 0, kerr(kms.KindIdentityUnauthorized))) },
			check: preflight.CheckRole, code: string(kms.KindIdentityUnauthorized), status: preflight.Failed, remedy: env.AppID},
		{name: "key not in the vault", raw: func(*fixture) string { return ref.VaultURL + "/keys/other-key" },
			check: preflight.CheckKeyExists, code: string(kms.KindKeyNotFound), status: preflight.Failed, remedy: "other-key"},
		{name: "key disabled", setup: func(f *fixture) { f.vault.edit(ref, disable) },
			check: preflight.CheckKeyEnabled, code: string(kms.KindKeyDisabled), status: preflight.Failed, remedy: "Enabled"},
		{name: "key not active yet", setup: func(f *fixture) {
			f.vault.edit(ref, func(k *kms.KeyInfo) { nbf := t0.Add(time.Hour); k.NotBefore = &nbf })
		}, check: preflight.CheckKeyActive, code: string(kms.KindKeyNotActive), status: preflight.Failed, remedy: "activation"},
		{name: "key expired", setup: func(f *fixture) {
			f.vault.edit(ref, func(k *kms.KeyInfo) { exp := t0; k.Expires = &exp })
		}, check: preflight.CheckKeyActive, code: string(kms.KindKeyNotActive), status: preflight.Failed, remedy: "expiration"},
		{name: "EC key", setup: func(f *fixture) { f.vault.edit(ref, func(k *kms.KeyInfo) { k.KeyType, k.Bits = "EC", 0 }) },
			check: preflight.CheckKeyType, code: "KEY_TYPE_UNSUPPORTED", status: preflight.Failed, remedy: "3072"},
		{name: "RSA key too small", setup: func(f *fixture) { f.vault.edit(ref, func(k *kms.KeyInfo) { k.Bits = 2048 }) },
			check: preflight.CheckKeyType, code: "KEY_TOO_SMALL", status: preflight.Failed, remedy: "3072"},
		{name: "unwrapKey not permitted", setup: func(f *fixture) { f.vault.edit(ref, func(k *kms.KeyInfo) { k.Ops = []string{"wrapKey"} }) },
			check: preflight.CheckKeyOps, code: string(kms.KindKeyOperationForbidden), status: preflight.Failed, remedy: "Unwrap Key"},
		{name: "soft-delete off", setup: func(f *fixture) { f.vault.edit(ref, func(k *kms.KeyInfo) { k.RecoveryLevel = "Purgeable" }) },
			check: preflight.CheckSoftDelete, code: "SOFT_DELETE_DISABLED", status: preflight.Failed, remedy: "soft-delete"},
		{name: "purge protection off", setup: func(f *fixture) {
			f.vault.edit(ref, func(k *kms.KeyInfo) { k.RecoveryLevel = "Recoverable+Purgeable" })
		},
			check: preflight.CheckPurgeProtection, code: "PURGE_PROTECTION_DISABLED", status: preflight.Failed, remedy: "Purge protection"},
		{name: "vault refuses wrap", setup: func(f *fixture) { f.vault.setFault(failCalls("wrap", 1, 0, kerr(kms.KindKeyOperationForbidden))) },
			check: preflight.CheckKeyOps, code: string(kms.KindKeyOperationForbidden), status: preflight.Failed, remedy: "Wrap Key", probe: true},
		{name: "key disabled at wrap", setup: func(f *fixture) { f.vault.setFault(failCalls("wrap", 1, 0, kerr(kms.KindKeyDisabled))) },
			check: preflight.CheckKeyEnabled, code: string(kms.KindKeyDisabled), status: preflight.Failed, remedy: "Enabled", probe: true},
		{name: "unwrap fails", setup: func(f *fixture) { f.vault.setFault(failCalls("unwrap", 1, 0, kerr(kms.KindUnwrapFailed))) },
			check: preflight.CheckRoundTrip, code: string(kms.KindUnwrapFailed), status: preflight.Failed, remedy: "recover"},
		{name: "unwrap returns another key", setup: func(f *fixture) { f.vault.setLie(true) },
			check: preflight.CheckRoundTrip, code: string(kms.KindUnwrapFailed), status: preflight.Failed, remedy: "recover"},
		{name: "vault rejects the request", setup: func(f *fixture) { f.vault.setFault(failCalls("describe", 1, 0, kerr(kms.KindInvalidRequest))) },
			check: preflight.CheckSignIn, code: string(kms.KindInvalidRequest), status: preflight.Error, remedy: "again"},
		{name: "key protects another org", setup: func(f *fixture) {
			if _, err := f.st.EnsureOrg(f.ctx, "other@AdobeOrg"); err != nil {
				f.t.Fatal(err)
			}
			if err := f.st.SetCustomerKEK(f.ctx, "other@AdobeOrg", ref.VaultURL, ref.Name); err != nil {
				f.t.Fatal(err)
			}
		}, check: preflight.CheckKeyIdentifier, code: "KEY_IN_USE", status: preflight.Passed, remedy: "dedicated key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 2, 1)
			raw := f.keyID()
			if tt.raw != nil {
				raw = tt.raw(f)
			}
			f.submit(raw)
			if tt.setup != nil {
				tt.setup(f)
			}
			r := f.runner("worker-a", 4)
			r.PropagationWait = -1 // the wait is TestValidationWaitsForPropagation's
			f.mustRun(r)

			c := f.config()
			if c.Status != store.StatusFailed || c.LeaseOwner != "" || c.LastError != nil {
				t.Errorf("Config(job) = status %s, lease owner %q, lastError %+v; want FAILED, none, none", c.Status, c.LeaseOwner, c.LastError)
			}
			fl := present(t, "failure", c.Failure)
			if fl.Check != tt.check || fl.Code != tt.code || fl.Title != preflight.Title(tt.check) || fl.Message == "" {
				t.Errorf("Failure = %+v, want check %s, code %s, its title and a message", fl, tt.check, tt.code)
			}
			if !slices.ContainsFunc(fl.Remedy, func(s string) bool { return strings.Contains(s, tt.remedy) }) {
				t.Errorf("Failure.Remedy = %q, want a step mentioning %q", fl.Remedy, tt.remedy)
			}

			if tt.code == "KEY_IN_USE" {
				// The switch was refused as a whole.
				if o := f.orgRow(); o.KEKMode != store.ModeSystem {
					t.Errorf("Org(org).KEKMode = %s, want %s", o.KEKMode, store.ModeSystem)
				}
				f.checkKeys(0)
			} else {
				f.checkUntouched()
			}
			if got := f.vault.count("wrap"); got > 1 {
				t.Errorf("vault wrap calls = %d, want at most 1 (the validation's probe)", got)
			}
			f.clock.Advance(time.Hour)
			f.mustIdle(r, "an hour after FAILED")

			// The stored report names the failing check as its first problem.
			checks := c.Checks
			first := slices.IndexFunc(checks, func(r preflight.Result) bool { return r.Status == preflight.Failed || r.Status == preflight.Error })
			switch {
			case tt.status == preflight.Passed:
				if first >= 0 {
					t.Errorf("first problem = %+v, want none", checks[first])
				}
			case first < 0:
				t.Errorf("first problem = none, want %s %s %s", tt.check, tt.status, tt.code)
			case checks[first].Check != tt.check || checks[first].Status != tt.status || checks[first].Code != tt.code:
				t.Errorf("first problem = %s %s %s, want %s %s %s", checks[first].Check, checks[first].Status, checks[first].Code, tt.check, tt.status, tt.code)
			}
			if tt.probe {
				// preflight.Run lists this check twice: PASSED from the key's
				// attributes, then FAILED from the vault's answer to the probe.
				return
			}
			// Every check once, in order: passed before the failing one;
			// after it, the checks of the key's attributes still run when
			// the failure is one of them (purge protection waits for
			// soft-delete), the round trip runs after a vault setting's
			// failure, and the rest wait for it.
			var got []string
			for _, res := range checks {
				got = append(got, res.Check)
			}
			if !slices.Equal(got, preflight.Order) {
				t.Errorf("checks = %v, want %v", got, preflight.Order)
			}
			attrs := []string{preflight.CheckKeyEnabled, preflight.CheckKeyActive, preflight.CheckKeyType, preflight.CheckKeyOps, preflight.CheckSoftDelete, preflight.CheckPurgeProtection}
			after := false
			for _, res := range checks {
				want := preflight.Passed
				if after {
					want = preflight.Skipped
					if slices.Contains(attrs, tt.check) && slices.Contains(attrs, res.Check) &&
						(tt.check != preflight.CheckSoftDelete || res.Check != preflight.CheckPurgeProtection) {
						want = preflight.Passed
					}
					if res.Check == preflight.CheckRoundTrip && (tt.check == preflight.CheckSoftDelete || tt.check == preflight.CheckPurgeProtection) {
						want = preflight.Passed
					}
				}
				switch {
				case res.Check == tt.check:
					after = tt.status != preflight.Passed
				case res.Status != want:
					t.Errorf("check %s = %s, want %s", res.Check, res.Status, want)
				}
			}
		})
	}
}

// TestValidationRetries: a vault that cannot give an answer (throttling,
// timeouts) leaves the job RUNNING with the problem and the time of the next
// attempt, 1, 2, 4 ... s later or after the vault's Retry-After; the job goes
// on once the vault answers. Nothing sleeps: the job gives its lease up.
func TestValidationRetries(t *testing.T) {
	t.Parallel()
	s := time.Second
	tests := []struct {
		name  string
		fault func(string, int) error
		code  kms.Kind
		waits []time.Duration // after each inconclusive attempt
	}{
		{"describe throttled, no Retry-After", failCalls("describe", 1, 3, throttled(0)), kms.KindThrottled, []time.Duration{1 * s, 2 * s, 4 * s}},
		{"describe throttled, Retry-After 90 s", failCalls("describe", 1, 2, throttled(90*s)), kms.KindThrottled, []time.Duration{90 * s, 90 * s}},
		{"Retry-After shorter than the backoff", failCalls("describe", 1, 3, throttled(1500*time.Millisecond)), kms.KindThrottled, []time.Duration{1500 * time.Millisecond, 2 * s, 4 * s}},
		{"describe times out", failCalls("describe", 1, 2, kerr(kms.KindTransient)), kms.KindTransient, []time.Duration{1 * s, 2 * s}},
		{"probe wrap throttled, Retry-After 5 s", failCalls("wrap", 1, 1, throttled(5*s)), kms.KindThrottled, []time.Duration{5 * s}},
		{"probe unwrap times out", failCalls("unwrap", 1, 2, kerr(kms.KindTransient)), kms.KindTransient, []time.Duration{1 * s, 2 * s}},
		{"unclassified error", failCalls("describe", 1, 1, errors.New("connection reset by peer")), kms.KindTransient, []time.Duration{1 * s}},
		{"vault's tenant unreadable", failCalls("tenant", 1, 2, kerr(kms.KindTransient)), kms.KindTransient, []time.Duration{1 * s, 2 * s}},
		{"vault throttles the tenant probe", failCalls("tenant", 1, 1, throttled(3*s)), kms.KindThrottled, []time.Duration{3 * s}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 2, 0)
			f.submit(f.keyID())
			f.vault.setFault(tt.fault)
			r := f.runner("worker-a", 4)
			for i, wait := range tt.waits {
				now := f.clock.Now()
				f.mustRun(r)
				c := f.config()
				if c.Status != store.StatusRunning || c.Failure != nil || c.LeaseOwner != "" || c.Attempts != i+1 {
					t.Fatalf("attempt %d: Config(job) = status %s, failure %+v, lease owner %q, attempts %d; want RUNNING, none, none, %d",
						i+1, c.Status, c.Failure, c.LeaseOwner, c.Attempts, i+1)
				}
				p := present(t, "lastError", c.LastError)
				if p.Code != string(tt.code) || p.Message == "" || len(p.Remedy) == 0 {
					t.Errorf("attempt %d: Problem = %+v, want code %s, a message and steps", i+1, p, tt.code)
				}
				if !p.At.Equal(now) || !p.RetryAt.Equal(now.Add(wait)) || !c.NextAttemptAt.Equal(now.Add(wait)) {
					t.Errorf("attempt %d: Problem at %v, retry at %v, next attempt at %v; want %v, %v later, %v later",
						i+1, p.At, p.RetryAt.Sub(now), c.NextAttemptAt.Sub(now), now, wait, wait)
				}
				f.clock.Advance(wait - time.Millisecond)
				f.mustIdle(r, fmt.Sprintf("attempt %d, 1 ms before the retry", i+1))
				f.clock.Advance(time.Millisecond)
			}
			f.mustRun(r)
			f.checkCompleted()
			if got := f.clock.Slept(); len(got) != 0 {
				t.Errorf("pauses = %v, want none (the job waits in the database)", got)
			}
		})
	}
}

// TestVerdictAfterRetry: a job that was retried, then gets a definite
// verdict, fails with it and no longer announces a retry.
func TestVerdictAfterRetry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		brk   func(f *fixture)
		check string
		code  string
	}{
		{"key disabled", func(f *fixture) { f.vault.edit(ref, func(k *kms.KeyInfo) { k.Enabled = false }) }, preflight.CheckKeyEnabled, string(kms.KindKeyDisabled)},
		{"key protects another org", func(f *fixture) {
			if _, err := f.st.EnsureOrg(f.ctx, "other@AdobeOrg"); err != nil {
				f.t.Fatal(err)
			}
			if err := f.st.SetCustomerKEK(f.ctx, "other@AdobeOrg", ref.VaultURL, ref.Name); err != nil {
				f.t.Fatal(err)
			}
		}, preflight.CheckKeyIdentifier, "KEY_IN_USE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 1, 0)
			f.submit(f.keyID())
			f.vault.setFault(failCalls("describe", 1, 1, throttled(0)))
			r := f.runner("worker-a", 1)
			f.mustRun(r)
			if c := f.config(); c.Status != store.StatusRunning || c.LastError == nil {
				t.Fatalf("Config(job) = status %s, lastError %+v; want RUNNING with a problem", c.Status, c.LastError)
			}
			tt.brk(f)
			f.clock.Advance(time.Second)
			f.mustRun(r)
			c := f.config()
			if c.Status != store.StatusFailed || c.LastError != nil {
				t.Errorf("Config(job) = status %s, lastError %+v; want FAILED, none", c.Status, c.LastError)
			}
			if fl := present(t, "failure", c.Failure); fl.Check != tt.check || fl.Code != tt.code {
				t.Errorf("Failure = %s %s, want %s %s", fl.Check, fl.Code, tt.check, tt.code)
			}
			f.checkKeys(0)
		})
	}
}

// TestValidationGivesUp: a vault that throttles for good fails the job after
// 12 attempts, about ten minutes, with backoff capped at a minute.
func TestValidationGivesUp(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1, 0)
	f.submit(f.keyID())
	f.vault.setFault(failCalls("describe", 1, 0, throttled(0)))
	r := f.runner("worker-a", 4)
	var waits []time.Duration
	for {
		now := f.clock.Now()
		f.mustRun(r)
		c := f.config()
		if c.Status != store.StatusRunning {
			break
		}
		if len(waits) > 20 {
			t.Fatalf("Config(job).Status = %s after %d attempts, want FAILED", c.Status, c.Attempts)
		}
		wait := c.NextAttemptAt.Sub(now)
		waits = append(waits, wait)
		f.clock.Advance(wait)
	}
	s := time.Second
	if want := []time.Duration{1 * s, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s, 60 * s, 60 * s, 60 * s, 60 * s, 60 * s}; !slices.Equal(waits, want) {
		t.Errorf("waits between attempts = %v, want %v", waits, want)
	}
	c := f.config()
	if c.Status != store.StatusFailed || c.Attempts != 12 || c.LastError != nil || c.LeaseOwner != "" {
		t.Errorf("Config(job) = status %s, attempts %d, lastError %+v, lease owner %q; want FAILED, 12, none, none", c.Status, c.Attempts, c.LastError, c.LeaseOwner)
	}
	fl := present(t, "failure", c.Failure)
	if fl.Code != string(kms.KindThrottled) || fl.Check != preflight.CheckSignIn || fl.Message == "" || len(fl.Remedy) == 0 {
		t.Errorf("Failure = %+v, want code THROTTLED on %s with a message and steps", fl, preflight.CheckSignIn)
	}
	f.checkUntouched()
	f.clock.Advance(time.Hour)
	f.mustIdle(r, "an hour after FAILED")
}

// TestRewrapThrottled: a 429 while re-wrapping pauses the job for the
// vault's Retry-After, or 1, 2, 4, 8, 16 s when it gave none, and the job
// then completes without failing or giving its lease up.
func TestRewrapThrottled(t *testing.T) {
	t.Parallel()
	s := time.Second
	tests := []struct {
		name   string
		fault  func(string, int) error // wrap call 1 is the validation's probe
		pauses []time.Duration
	}{
		{"Retry-After 3 s", failCalls("wrap", 2, 4, throttled(3*s)), []time.Duration{3 * s, 3 * s, 3 * s}},
		{"Retry-After 45 s", failCalls("wrap", 3, 3, throttled(45*s)), []time.Duration{45 * s}},
		{"no Retry-After: 1, 2, 4, 8, 16 s, then 16 s", failCalls("wrap", 2, 7, throttled(0)), []time.Duration{1 * s, 2 * s, 4 * s, 8 * s, 16 * s, 16 * s}},
		{"backoff starts over after a success", anyFault(failCalls("wrap", 2, 3, throttled(0)), failCalls("wrap", 5, 6, throttled(0))),
			[]time.Duration{1 * s, 2 * s, 1 * s, 2 * s}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 3, 0)
			f.submit(f.keyID())
			f.vault.setFault(tt.fault)
			r := f.runner("worker-a", 1)
			f.mustRun(r)
			if got := f.clock.Slept(); !slices.Equal(got, tt.pauses) {
				t.Errorf("pauses = %v, want %v", got, tt.pauses)
			}
			if got := r.Throttled(); got != int64(len(tt.pauses)) {
				t.Errorf("Throttled() = %d, want %d", got, len(tt.pauses))
			}
			if got, want := f.vault.count("wrap"), 1+len(f.deks)+len(tt.pauses); got != want {
				t.Errorf("vault wrap calls = %d, want %d", got, want)
			}
			f.checkCompleted()
		})
	}

	// With four workers the pauses overlap; each is still one of the
	// backoff steps at most, and the job completes.
	t.Run("four workers", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, 6, 0)
		f.submit(f.keyID())
		f.vault.setFault(failCalls("wrap", 2, 9, throttled(0)))
		r := f.runner("worker-a", 4)
		f.mustRun(r)
		if got := r.Throttled(); got != 8 {
			t.Errorf("Throttled() = %d, want 8", got)
		}
		for _, d := range f.clock.Slept() {
			if d <= 0 || d > 16*s {
				t.Errorf("pause = %v, want within (0, 16s]", d)
			}
		}
		f.checkCompleted()
	})
}

// TestRewrapInterrupted: a definite vault failure while re-wrapping does not
// fail the job (the org already uses its key): the job records the problem,
// keeps what it re-wrapped, and resumes once the vault answers again.
func TestRewrapInterrupted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		brk    func(f *fixture) // breaks the vault after the first data key is re-wrapped
		mend   func(f *fixture)
		code   string
		remedy bool
	}{
		{"key disabled", func(f *fixture) {
			f.vault.setDuring(func(_ context.Context, op string, n int) {
				if op == "wrap" && n == 3 {
					f.vault.edit(ref, func(k *kms.KeyInfo) { k.Enabled = false })
				}
			})
		}, func(f *fixture) { f.vault.edit(ref, func(k *kms.KeyInfo) { k.Enabled = true }) }, string(kms.KindKeyDisabled), true},
		{"role removed", func(f *fixture) { f.vault.setFault(failCalls("wrap", 3, 0, kerr(kms.KindIdentityUnauthorized))) }, nil, string(kms.KindIdentityUnauthorized), true},
		{"firewall closed", func(f *fixture) { f.vault.setFault(failCalls("wrap", 3, 0, kerr(kms.KindNetworkDenied))) }, nil, string(kms.KindNetworkDenied), true},
		{"key deleted", func(f *fixture) { f.vault.setFault(failCalls("wrap", 3, 0, kerr(kms.KindKeyNotFound))) }, nil, string(kms.KindKeyNotFound), true},
		{"vault times out", func(f *fixture) { f.vault.setFault(failCalls("wrap", 3, 0, kerr(kms.KindTransient))) }, nil, string(kms.KindTransient), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 3, 0)
			f.submit(f.keyID())
			tt.brk(f)
			r := f.runner("worker-a", 1)
			now := f.clock.Now()
			f.mustRun(r)

			c := f.config()
			n := len(f.deks)
			if c.Status != store.StatusUpdating || c.Failure != nil || c.LeaseOwner != "" {
				t.Errorf("Config(job) = status %s, failure %+v, lease owner %q; want %s, none, none", c.Status, c.Failure, c.LeaseOwner, store.StatusUpdating)
			}
			if c.ProgressDone != 1 || c.ProgressTotal != n {
				t.Errorf("Config(job).Progress = %d/%d, want 1/%d", c.ProgressDone, c.ProgressTotal, n)
			}
			p := present(t, "lastError", c.LastError)
			if p.Code != tt.code || p.Message == "" || (len(p.Remedy) > 0) != tt.remedy {
				t.Errorf("Problem = %+v, want code %s, a message, steps %v", p, tt.code, tt.remedy)
			}
			if wait := time.Second; !p.RetryAt.Equal(now.Add(wait)) || !c.NextAttemptAt.Equal(now.Add(wait)) {
				t.Errorf("Problem retry at +%v, next attempt at +%v; want +%v", p.RetryAt.Sub(now), c.NextAttemptAt.Sub(now), wait)
			}
			if o := f.orgRow(); o.KEKMode != store.ModeCustomer {
				t.Errorf("Org(org).KEKMode = %s, want %s", o.KEKMode, store.ModeCustomer)
			}
			f.vault.setFault(nil)
			f.vault.setDuring(nil)
			if tt.mend != nil {
				tt.mend(f)
			}
			f.checkKeys(1)

			f.mustIdle(r, "before the retry")
			f.clock.Advance(time.Second)
			f.mustRun(r)
			f.checkCompleted()
		})
	}
}

// TestRewrapInternalError: a data key the platform cannot unwrap (here: the
// worker holds the wrong system key) is the platform's problem, said so on
// the job; a worker with the right key finishes it.
func TestRewrapInternalError(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, 0)
	f.submit(f.keyID())
	wrong, err := systemkey.New(random(32))
	if err != nil {
		t.Fatal(err)
	}
	a := f.runner("worker-a", 1)
	a.Keyring = &keyring.Keyring{Store: f.st, System: wrong, Customer: f.vault}
	f.mustRun(a)
	c := f.config()
	if c.Status != store.StatusUpdating || c.Failure != nil || c.LeaseOwner != "" || c.ProgressDone != 0 {
		t.Errorf("Config(job) = status %s, failure %+v, lease owner %q, done %d; want %s, none, none, 0", c.Status, c.Failure, c.LeaseOwner, c.ProgressDone, store.StatusUpdating)
	}
	if p := present(t, "lastError", c.LastError); p.Code != "INTERNAL_ERROR" || len(p.Remedy) == 0 {
		t.Errorf("Problem = %+v, want INTERNAL_ERROR with steps", p)
	}
	f.checkKeys(0)
	f.clock.Advance(time.Second)
	f.mustRun(f.runner("worker-b", 1))
	f.checkCompleted()
}

// TestSandboxCreatedDuringRewrap: a sandbox created while the job re-wraps
// gets customer-wrapped keys at once, and the job counts them.
func TestSandboxCreatedDuringRewrap(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, 0)
	f.submit(f.keyID())
	r := f.runner("worker-a", 1)
	r.AfterRewrap = func(n int64) error {
		if n == 1 {
			return f.kr.CreateSandbox(f.ctx, org, "late")
		}
		return nil
	}
	f.mustRun(r)
	f.remember()
	if len(f.deks) != 6 {
		t.Fatalf("len(DataKeys(org)) = %d, want 6", len(f.deks))
	}
	f.checkCompleted()
}

// TestProgressWithinAPage: while a page of data keys is re-wrapped, the
// job's progress is written as it moves, not only at the page's end, so
// that a job on a slow vault (or one taken over from a dead replica) is
// seen moving.
func TestProgressWithinAPage(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 10, 0) // 20 data keys: one page
	f.submit(f.keyID())
	r := f.runner("worker-a", 1)
	r.ProgressEvery = 5 * time.Millisecond
	seen := -1
	r.AfterRewrap = func(n int64) error {
		if n != 10 {
			return nil
		}
		// Half the page is done: its progress must show before the rest is.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if c := f.config(); c.ProgressDone >= 10 {
				seen = c.ProgressDone
				return nil
			}
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	}
	f.mustRun(r)
	if seen < 10 || seen >= 20 {
		t.Errorf("progress written within the page = %d, want from 10 to 19 of 20", seen)
	}
	f.checkCompleted()
}

// TestCrashResumes stops a worker at points of the job, as a crash or a
// shutdown would, and has a second worker resume it once the first one's
// lease expires: no data key is lost, none is re-wrapped twice, and the
// counts come out right.
func TestCrashResumes(t *testing.T) {
	t.Parallel()
	// 3 sandboxes and 2 rotations: 8 data keys. Wrap call 1 is the probe,
	// call k+1 re-wraps data key k.
	const n = 8
	crashAfter := func(k int64) func(*fixture, *enablement.Runner, context.CancelFunc) {
		return func(_ *fixture, r *enablement.Runner, _ context.CancelFunc) {
			r.AfterRewrap = func(done int64) error {
				if done >= k {
					return errCrash
				}
				return nil
			}
		}
	}
	cancelDuring := func(op string, call int) func(*fixture, *enablement.Runner, context.CancelFunc) {
		return func(f *fixture, _ *enablement.Runner, cancel context.CancelFunc) {
			f.vault.setDuring(func(_ context.Context, o string, c int) {
				if o == op && c == call {
					cancel()
				}
			})
		}
	}
	tests := []struct {
		name        string
		concurrency int
		stop        func(f *fixture, r *enablement.Runner, cancel context.CancelFunc)
		wantErr     error
		status      string // where the first worker leaves the job
		minDone     int    // data keys the first worker re-wrapped
		maxDone     int
	}{
		{"crash after the first re-wrap", 1, crashAfter(1), errCrash, store.StatusUpdating, 1, 1},
		{"crash halfway", 1, crashAfter(n / 2), errCrash, store.StatusUpdating, n / 2, n / 2},
		{"crash after the last re-wrap, before COMPLETED", 1, crashAfter(n), errCrash, store.StatusUpdating, n, n},
		{"crash halfway, four workers", 4, crashAfter(n / 2), errCrash, store.StatusUpdating, n / 2, n},
		{"cancelled after the first re-wrap", 1, func(_ *fixture, r *enablement.Runner, cancel context.CancelFunc) {
			r.AfterRewrap = func(done int64) error {
				if done == 1 {
					cancel()
				}
				return nil
			}
		}, context.Canceled, store.StatusUpdating, 1, 1},
		{"cancelled while validating", 1, cancelDuring("describe", 1), context.Canceled, store.StatusRunning, 0, 0},
		{"cancelled during the first re-wrap call", 1, cancelDuring("wrap", 2), context.Canceled, store.StatusUpdating, 0, 0},
		{"cancelled during the fourth re-wrap call", 1, cancelDuring("wrap", 5), context.Canceled, store.StatusUpdating, 3, 3},
		{"cancelled mid-call, four workers", 4, cancelDuring("wrap", 5), context.Canceled, store.StatusUpdating, 0, n},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 3, 2)
			if len(f.deks) != n {
				t.Fatalf("len(DataKeys(org)) = %d, want %d", len(f.deks), n)
			}
			f.submit(f.keyID())

			a := f.runner("worker-a", tt.concurrency)
			ctx, cancel := context.WithCancel(f.ctx)
			defer cancel()
			tt.stop(f, a, cancel)
			ran, err := a.RunOnce(ctx)
			if !ran || !errors.Is(err, tt.wantErr) {
				t.Fatalf("worker-a.RunOnce() = %v, %v, want true, %v", ran, err, tt.wantErr)
			}
			f.vault.setDuring(nil)

			// The first worker left the job where it stopped, its lease held.
			c := f.config()
			if c.Status != tt.status || c.Failure != nil || c.LeaseOwner != "worker-a" || !c.LeaseUntil.Equal(t0.Add(lease)) {
				t.Errorf("Config(job) = status %s, failure %+v, lease %q until %v; want %s, none, worker-a until %v",
					c.Status, c.Failure, c.LeaseOwner, c.LeaseUntil, tt.status, t0.Add(lease))
			}
			done := f.checkKeys(-1)
			if done < tt.minDone || done > tt.maxDone {
				t.Errorf("customer-wrapped data keys after the stop = %d, want %d to %d", done, tt.minDone, tt.maxDone)
			}
			if c.ProgressDone > done {
				t.Errorf("Config(job).ProgressDone = %d, want at most the %d re-wrapped", c.ProgressDone, done)
			}

			// A second worker waits out the lease, then finishes the job.
			b := f.runner("worker-b", tt.concurrency)
			f.mustIdle(b, "lease held")
			f.clock.Advance(lease)
			f.mustIdle(b, "lease expiring")
			f.clock.Advance(time.Millisecond)
			wraps := f.vault.count("wrap")
			f.mustRun(b)
			f.checkCompleted()
			if c := f.config(); c.Attempts != 2 {
				t.Errorf("Config(job).Attempts = %d, want 2", c.Attempts)
			}
			want := n - done
			if tt.status == store.StatusRunning {
				want++ // validates again
			}
			if got := f.vault.count("wrap") - wraps; got != want {
				t.Errorf("worker-b wrap calls = %d, want %d", got, want)
			}
		})
	}
}

// TestLeaseNotTakenBeforeExpiry: a job leased by another worker is left to it
// until its lease runs out; then it is taken over, and the former holder can
// no longer write to it.
func TestLeaseNotTakenBeforeExpiry(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, 0)
	f.submit(f.keyID())
	if _, err := f.st.ClaimJob(f.ctx, "worker-other", lease); err != nil {
		t.Fatal(err)
	}
	b := f.runner("worker-b", 1)
	f.mustIdle(b, "lease just taken")
	f.clock.Advance(lease - time.Millisecond)
	f.mustIdle(b, "1 ms before the lease ends")
	f.clock.Advance(time.Millisecond)
	f.mustIdle(b, "as the lease ends")
	if c := f.config(); c.Status != store.StatusNew || c.LeaseOwner != "worker-other" {
		t.Errorf("Config(job) = %s leased by %q, want NEW leased by worker-other", c.Status, c.LeaseOwner)
	}
	f.clock.Advance(time.Millisecond)
	f.mustRun(b)
	f.checkCompleted()
	if err := f.st.UpdateJob(f.ctx, f.job, "worker-other", store.JobUpdate{Release: true}); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("UpdateJob(job, worker-other) = %v, want ErrLeaseLost", err)
	}
}

// blockWrap makes the vault's wrap call number call wait for release (or its
// context); blocked is closed when it starts waiting.
func blockWrap(f *fixture, call int) (blocked, release chan struct{}) {
	blocked, release = make(chan struct{}), make(chan struct{})
	f.vault.setDuring(func(ctx context.Context, op string, n int) {
		if op == "wrap" && n == call {
			close(blocked)
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
	})
	return blocked, release
}

type result struct {
	ran bool
	err error
}

// TestLeaseRenewed: a worker stuck in a slow vault call keeps its job while
// its lease keeper renews the lease.
func TestLeaseRenewed(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, 0)
	f.submit(f.keyID())
	blocked, release := blockWrap(f, 3) // the second data key
	a := f.runner("worker-a", 1)
	done := make(chan result, 1)
	go func() { ran, err := a.RunOnce(f.ctx); done <- result{ran, err} }()
	<-blocked
	<-f.clock.parked // the lease keeper waits for its tick
	f.clock.Advance(20 * time.Second)
	f.clock.tick <- struct{}{}
	<-f.clock.parked // renewed, and waiting again
	if c := f.config(); c.LeaseOwner != "worker-a" || !c.LeaseUntil.Equal(t0.Add(20*time.Second+lease)) {
		t.Errorf("Config(job) lease = %q until %v, want worker-a until %v", c.LeaseOwner, c.LeaseUntil, t0.Add(20*time.Second+lease))
	}
	f.clock.Advance(25 * time.Second) // past the first lease, within the renewed one
	f.mustIdle(f.runner("worker-b", 1), "lease renewed")
	close(release)
	if r := <-done; !r.ran || r.err != nil {
		t.Fatalf("worker-a.RunOnce() = %v, %v, want true, <nil>", r.ran, r.err)
	}
	f.checkCompleted()
}

// TestLeaseLost: a worker stuck in a vault call past its lease loses the job
// to another, which finishes it; the stuck worker, when its call returns,
// neither undoes that work nor writes to the job.
func TestLeaseLost(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, 0)
	f.submit(f.keyID())
	blocked, release := blockWrap(f, 3)
	a := f.runner("worker-a", 1)
	done := make(chan result, 1)
	go func() { ran, err := a.RunOnce(f.ctx); done <- result{ran, err} }()
	<-blocked
	f.clock.Advance(lease + time.Millisecond)
	f.mustRun(f.runner("worker-b", 1))
	f.checkCompleted()
	close(release)
	if r := <-done; !r.ran || !errors.Is(r.err, store.ErrLeaseLost) {
		t.Fatalf("worker-a.RunOnce() = %v, %v, want true, ErrLeaseLost", r.ran, r.err)
	}
	f.checkCompleted()
}

// TestFakeVault checks the fake the tests rely on: it round-trips, refuses
// other keys' and versions' ciphertexts, and honours its context.
func TestFakeVault(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	v := newFakeVault(func() time.Time { return t0 })
	other := kms.KeyRef{VaultURL: ref.VaultURL, Name: "other-key"}
	v.create(ref)
	v.create(other)
	dek := random(32)
	w, err := v.Wrap(ctx, ref, dek)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := v.Unwrap(ctx, ref, w); err != nil || !bytes.Equal(got, dek) {
		t.Errorf("Unwrap(Wrap(dek)) = %x, %v, want %x", got, err, dek)
	}
	old := w.KeyVersion
	v.rotate(ref)
	if got, err := v.Unwrap(ctx, ref, w); err != nil || !bytes.Equal(got, dek) {
		t.Errorf("Unwrap(old version) after rotate = %x, %v, want %x", got, err, dek)
	}
	tampered := w
	tampered.Ciphertext = bytes.Clone(w.Ciphertext)
	tampered.Ciphertext[len(tampered.Ciphertext)-1] ^= 1
	wrongVersion := w
	wrongVersion.KeyVersion = v.version(ref)
	for name, tc := range map[string]struct {
		ref kms.KeyRef
		w   kms.Wrapped
	}{"another key": {other, w}, "another version": {ref, wrongVersion}, "tampered": {ref, tampered}, "unknown version": {ref, kms.Wrapped{KeyVersion: "x", Ciphertext: w.Ciphertext}}} {
		if _, err := v.Unwrap(ctx, tc.ref, tc.w); kms.KindOf(err) != kms.KindUnwrapFailed {
			t.Errorf("Unwrap(%s) error = %v, want %s", name, err, kms.KindUnwrapFailed)
		}
	}
	if w2, _ := v.Wrap(ctx, ref, dek); w2.KeyVersion == old {
		t.Errorf("Wrap after rotate used version %s, want the new one", w2.KeyVersion)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := v.Wrap(cctx, ref, dek); kms.KindOf(err) != kms.KindTransient || !errors.Is(err, context.Canceled) {
		t.Errorf("Wrap(cancelled ctx) error = %v, want %s wrapping context.Canceled", err, kms.KindTransient)
	}
	// Like Key Vault: a disabled key still wraps, and refuses to unwrap.
	v.edit(ref, func(k *kms.KeyInfo) { k.Enabled = false })
	wd, err := v.Wrap(ctx, ref, dek)
	if err != nil || !v.madeUnusable(wd.Ciphertext) || v.madeUnusable(w.Ciphertext) {
		t.Errorf("Wrap(disabled key) = %v, unusable %v (earlier wrapping: %v), want nil, true (false)", err, v.madeUnusable(wd.Ciphertext), v.madeUnusable(w.Ciphertext))
	}
	if _, err := v.Unwrap(ctx, ref, wd); kms.KindOf(err) != kms.KindKeyDisabled {
		t.Errorf("Unwrap(disabled key) error = %v, want %s", err, kms.KindKeyDisabled)
	}
	v.edit(ref, func(k *kms.KeyInfo) { k.Enabled = true; exp := t0; k.Expires = &exp })
	if _, err := v.Wrap(ctx, ref, dek); kms.KindOf(err) != kms.KindKeyNotActive {
		t.Errorf("Wrap(expired key) error = %v, want %s", err, kms.KindKeyNotActive)
	}
	if got, err := v.Unwrap(ctx, ref, wd); err != nil || !bytes.Equal(got, dek) {
		t.Errorf("Unwrap(expired key) = %x, %v, want %x", got, err, dek)
	}
	if _, err := v.Describe(ctx, kms.KeyRef{VaultURL: ref.VaultURL, Name: "missing"}); kms.KindOf(err) != kms.KindKeyNotFound {
		t.Errorf("Describe(missing key) error = %v, want %s", err, kms.KindKeyNotFound)
	}
}

// noTenants is the store of an org bound to no tenant.
type noTenants struct{ *store.Store }

func (noTenants) OrgTenants(context.Context, string) ([]string, error) { return nil, nil }

// TestOwnershipFailsFirst: a key whose vault is not in a tenant bound to
// the org fails key_owner before anything is asked of the vault with the
// platform's credentials, says nothing about the key, and leaves the org's
// data keys as they were.
func TestOwnershipFailsFirst(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(f *fixture) enablement.Store
		probe int // tenant lookups expected
	}{
		{"org bound to no tenant", func(f *fixture) enablement.Store { return noTenants{f.st} }, 0},
		{"vault in another tenant", func(f *fixture) enablement.Store {
			f.vault.setTenant("44444444-4444-4444-8444-444444444444")
			return f.st
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 2, 0)
			f.submit(f.keyID())
			r := f.runner("worker-a", 4)
			r.Store = tt.setup(f)
			f.mustRun(r)
			c := f.config()
			fl := present(t, "failure", c.Failure)
			if c.Status != store.StatusFailed || fl.Check != preflight.CheckKeyOwner || fl.Code != "KEY_NOT_BOUND" || fl.Title != preflight.Title(preflight.CheckKeyOwner) {
				t.Fatalf("Config(job) = %s, failure %+v; want FAILED on key_owner with KEY_NOT_BOUND", c.Status, fl)
			}
			if strings.Contains(fl.Message, ref.Name) || !slices.ContainsFunc(fl.Remedy, func(s string) bool { return strings.Contains(s, env.ConsentURL) }) {
				t.Errorf("Failure = %q %q, want a message that does not name the key and a step with the consent link", fl.Message, fl.Remedy)
			}
			for _, op := range []string{"describe", "wrap", "unwrap"} {
				if n := f.vault.count(op); n != 0 {
					t.Errorf("vault %s calls = %d, want 0", op, n)
				}
			}
			if n := f.vault.count("tenant"); n != tt.probe {
				t.Errorf("tenant lookups = %d, want %d", n, tt.probe)
			}
			for _, res := range c.Checks {
				if res.Check != preflight.CheckKeyIdentifier && res.Check != preflight.CheckKeyOwner && res.Status != preflight.Skipped {
					t.Errorf("check %s = %s, want SKIPPED after the ownership check failed", res.Check, res.Status)
				}
			}
			f.checkUntouched()
		})
	}
}

// TestVaultGoneAtTheTenantLookup: when the vault's host does not resolve as
// its tenant is looked up, vault_reachable fails (a name's absence from DNS
// is public) and key_owner is reported as not run.
func TestVaultGoneAtTheTenantLookup(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1, 0)
	f.submit(f.keyID())
	f.vault.setFault(failCalls("tenant", 1, 0, kerr(kms.KindVaultDNSUnresolvable)))
	f.mustRun(f.runner("worker-a", 1))
	c := f.config()
	fl := present(t, "failure", c.Failure)
	if c.Status != store.StatusFailed || fl.Check != preflight.CheckVaultReachable || fl.Code != string(kms.KindVaultDNSUnresolvable) {
		t.Fatalf("Config(job) = %s, failure %+v; want FAILED on vault_reachable", c.Status, fl)
	}
	if i := slices.IndexFunc(c.Checks, func(r preflight.Result) bool { return r.Check == preflight.CheckKeyOwner }); i < 0 || c.Checks[i].Status != preflight.Skipped {
		t.Errorf("key_owner = %+v, want SKIPPED", c.Checks)
	}
	if n := f.vault.count("describe"); n != 0 {
		t.Errorf("vault describe calls = %d, want 0", n)
	}
	f.checkUntouched()
}

// TestNeverWrapsUnderUnusableKey: an enablement job never leaves a data key
// wrapped only under a key that cannot unwrap it. The vault, like Key Vault,
// lets wrap succeed on a disabled key; the key is made unusable at each
// point of the job in turn. After every run, no stored wrapping is one the
// vault made while it could not unwrap it, every data key opens through its
// current wrapping once the key is mended, and the job is FAILED or paused
// with the reason, never COMPLETED; once the key is usable again, it
// resumes and completes.
func TestNeverWrapsUnderUnusableKey(t *testing.T) {
	t.Parallel()
	// 3 sandboxes and 2 rotations: 8 data keys, in pages of 3. Describe
	// call 1 is the validation's, call k+1 is the check before page k; wrap
	// call 1 is the validation's probe, call k+1 re-wraps data key k.
	const n, page = 8, 3
	disable := func(k *kms.KeyInfo) { k.Enabled = false }
	during := func(op string, call int, edit func(*kms.KeyInfo)) func(*fixture, *enablement.Runner) {
		return func(f *fixture, _ *enablement.Runner) {
			f.vault.setDuring(func(_ context.Context, o string, c int) {
				if o == op && c == call {
					f.vault.edit(ref, edit)
				}
			})
		}
	}
	tests := []struct {
		name      string
		brk       func(f *fixture, r *enablement.Runner)
		crash     int64  // the first worker crashes after this many re-wraps (0: it does not)
		code      string // the problem the job records
		done      int    // data keys under the customer key when it stops
		moreWraps int    // wrap calls after the validation's probe
	}{
		{"disabled after validation, before the first page", during("describe", 2, disable), 0, string(kms.KindKeyDisabled), 0, 0},
		{"disabled mid-page", during("wrap", 3, disable), 0, string(kms.KindKeyDisabled), 1, 2},
		{"unwrapKey removed mid-page", during("wrap", 3, func(k *kms.KeyInfo) { k.Ops = []string{"wrapKey"} }), 0, string(kms.KindKeyOperationForbidden), 1, 2},
		{"the vault answers with another key mid-page", func(f *fixture, _ *enablement.Runner) {
			f.vault.setDuring(func(_ context.Context, o string, c int) {
				if o == "wrap" && c == 3 {
					f.vault.setLie(true)
				}
			})
		}, 0, string(kms.KindUnwrapFailed), 1, 2},
		{"disabled between pages", during("describe", 3, disable), 0, string(kms.KindKeyDisabled), page, page},
		{"expired between pages", during("describe", 3, func(k *kms.KeyInfo) { exp := t0; k.Expires = &exp }), 0, string(kms.KindKeyNotActive), page, page},
		{"a 2048-bit version between pages", during("describe", 3, func(k *kms.KeyInfo) { k.Bits = 2048 }), 0, "KEY_TOO_SMALL", page, page},
		{"disabled at resume after a crash", func(f *fixture, r *enablement.Runner) {}, 2, string(kms.KindKeyDisabled), 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 3, 2)
			if len(f.deks) != n {
				t.Fatalf("len(DataKeys(org)) = %d, want %d", len(f.deks), n)
			}
			f.submit(f.keyID())
			r := f.runner("worker-a", 1)
			r.PageSize = page
			tt.brk(f, r)
			if tt.crash > 0 {
				r.AfterRewrap = func(done int64) error {
					if done >= tt.crash {
						return errCrash
					}
					return nil
				}
				if ran, err := r.RunOnce(f.ctx); !ran || !errors.Is(err, errCrash) {
					t.Fatalf("worker-a.RunOnce() = %v, %v, want true, %v", ran, err, errCrash)
				}
				f.vault.edit(ref, disable)
				f.clock.Advance(lease + time.Millisecond)
				r = f.runner("worker-b", 1)
				r.PageSize = page
			}
			now := f.clock.Now()
			f.mustRun(r)
			f.vault.setDuring(nil)

			c := f.config()
			if c.Status != store.StatusUpdating || c.Failure != nil || c.LeaseOwner != "" {
				t.Errorf("Config(job) = status %s, failure %+v, lease owner %q; want %s (paused), none, none", c.Status, c.Failure, c.LeaseOwner, store.StatusUpdating)
			}
			if p := present(t, "lastError", c.LastError); p.Code != tt.code || p.Message == "" || len(p.Remedy) == 0 || !p.RetryAt.After(now) {
				t.Errorf("Problem = %+v, want code %s with a message, steps and a retry time", p, tt.code)
			}
			if got := f.vault.count("wrap") - 1; got != tt.moreWraps {
				t.Errorf("vault wrap calls after the probe = %d, want %d", got, tt.moreWraps)
			}
			f.checkNoUnusableWrapping()

			// Mended, every data key opens through its current wrapping,
			// and the job finishes on its own.
			f.vault.setLie(false)
			f.vault.edit(ref, func(k *kms.KeyInfo) {
				k.Enabled, k.Expires, k.Bits, k.Ops = true, nil, 3072, []string{"wrapKey", "unwrapKey"}
			})
			f.checkKeys(tt.done)
			f.clock.Advance(time.Minute)
			f.mustRun(r)
			f.checkCompleted()
			f.checkNoUnusableWrapping()
		})
	}

	t.Run("disabled before the job starts", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, 2, 0)
		f.submit(f.keyID())
		f.vault.edit(ref, disable)
		f.mustRun(f.runner("worker-a", 1))
		c := f.config()
		if c.Status != store.StatusFailed || c.Failure == nil || c.Failure.Code != string(kms.KindKeyDisabled) {
			t.Errorf("Config(job) = status %s, failure %+v; want FAILED with KEY_DISABLED", c.Status, c.Failure)
		}
		if got := f.vault.count("wrap"); got != 0 {
			t.Errorf("vault wrap calls = %d, want 0", got)
		}
		f.checkUntouched()
	})
}

// checkNoUnusableWrapping fails the test when a customer-wrapped data key
// holds a wrapping the vault made while it could not unwrap it.
func (f *fixture) checkNoUnusableWrapping() {
	f.t.Helper()
	keys, err := f.st.DataKeys(f.ctx, org)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, dk := range keys {
		if dk.KEK == store.KEKCustomer && f.vault.madeUnusable(dk.Wrapped) {
			f.t.Errorf("DataKey(%s) is wrapped only by a wrapping its key could not unwrap when it was made", dk.ID)
		}
	}
}

// TestKeyCheckAndProofThrottled: the re-wrap's read of the key and its
// proofs are paced like its wraps: Retry-After when given, else 1, 2, 4 s.
func TestKeyCheckAndProofThrottled(t *testing.T) {
	t.Parallel()
	s := time.Second
	for _, tt := range []struct {
		name   string
		fault  func(string, int) error // describe 1 and unwrap 1 are the validation's
		pauses []time.Duration
	}{
		{"key check, no Retry-After", failCalls("describe", 2, 3, throttled(0)), []time.Duration{1 * s, 2 * s}},
		{"key check, Retry-After 5 s", failCalls("describe", 2, 2, throttled(5*s)), []time.Duration{5 * s}},
		{"proof, no Retry-After", failCalls("unwrap", 2, 4, throttled(0)), []time.Duration{1 * s, 2 * s, 4 * s}},
		{"proof, Retry-After 3 s", failCalls("unwrap", 3, 3, throttled(3*s)), []time.Duration{3 * s}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 2, 0)
			f.submit(f.keyID())
			f.vault.setFault(tt.fault)
			f.mustRun(f.runner("worker-a", 1))
			if got := f.clock.Slept(); !slices.Equal(got, tt.pauses) {
				t.Errorf("pauses = %v, want %v", got, tt.pauses)
			}
			f.checkCompleted()
		})
	}
}

// TestValidationWaitsForPropagation: a refusal that may be a grant not yet
// in effect keeps the job RUNNING, saying what it waits for, and re-checks
// with backoff until the bound after submission; a grant that arrives in
// time completes the job, one that never does fails it at the bound.
func TestValidationWaitsForPropagation(t *testing.T) {
	t.Parallel()
	rbac := &kms.Error{Kind: kms.KindIdentityUnauthorized, Status: 403, Code: "Forbidden", InnerCode: "ForbiddenByRbac"}
	consent := &kms.Error{Kind: kms.KindIdentityInvalid, Status: 400, Code: "unauthorized_client", InnerCode: "AADSTS700016"}
	const bound = 5 * time.Minute
	for _, tt := range []struct {
		name    string
		refusal *kms.Error
		says    string
		refused int // describe calls refused; 0: all
		check   string
	}{
		{"role granted within the bound", rbac, "Waiting for the role assignment to take effect: Azure can take up to 5 minutes", 4, preflight.CheckRole},
		{"consent given within the bound", consent, "Waiting for the admin consent to take effect: Microsoft Entra ID can take up to 5 minutes", 2, preflight.CheckSignIn},
		{"role never granted", rbac, "Waiting for the role assignment to take effect", 0, preflight.CheckRole},
		{"consent never given", consent, "Waiting for the admin consent to take effect", 0, preflight.CheckSignIn},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 2, 0)
			f.submit(f.keyID())
			deadline := f.config().CreatedAt.Add(bound)
			f.vault.setFault(failCalls("describe", 1, tt.refused, tt.refusal))
			r := f.runner("worker-a", 1)
			r.PropagationWait = bound
			var waits []time.Duration
			for i := 0; ; i++ {
				if i > 50 {
					t.Fatalf("still RUNNING after %d attempts", i)
				}
				now := f.clock.Now()
				f.mustRun(r)
				c := f.config()
				if c.Status != store.StatusRunning {
					break
				}
				if !now.Before(deadline) {
					t.Fatalf("attempt %d at +%v: RUNNING at or after the bound", i+1, now.Sub(deadline.Add(-bound)))
				}
				// What the API shows while it waits.
				p := present(t, "lastError", c.LastError)
				if p.Code != string(tt.refusal.Kind) || !strings.Contains(p.Message, tt.says) || len(p.Remedy) == 0 || c.Failure != nil {
					t.Fatalf("attempt %d: lastError = %+v, failure %+v; want code %s saying %q with steps, no failure", i+1, p, c.Failure, tt.refusal.Kind, tt.says)
				}
				wait := c.NextAttemptAt.Sub(now)
				waits = append(waits, wait)
				f.clock.Advance(wait)
			}
			c := f.config()
			if tt.refused > 0 {
				if want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}[:tt.refused]; !slices.Equal(waits, want) {
					t.Errorf("waits = %v, want %v", waits, want)
				}
				f.checkCompleted()
				return
			}
			if c.Status != store.StatusFailed || c.Failure == nil || c.Failure.Check != tt.check || c.Failure.Code != string(tt.refusal.Kind) || c.LastError != nil {
				t.Fatalf("Config(job) = %s, failure %+v, lastError %+v; want FAILED on %s with %s", c.Status, c.Failure, c.LastError, tt.check, tt.refusal.Kind)
			}
			if now := f.clock.Now(); !now.Equal(deadline) {
				t.Errorf("FAILED at %v after submission, want at the bound, %v", now.Sub(deadline.Add(-bound)), bound)
			}
			if len(waits) < 5 {
				t.Errorf("waits = %v, want the backoff to run up to the bound", waits)
			}
			f.checkUntouched()
		})
	}
}
