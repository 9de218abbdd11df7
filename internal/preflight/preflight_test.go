package preflight_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/guidance"
	"github.com/cmk-project/cmk/internal/keyid"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/preflight"
)

const tenant = "22222222-2222-4222-8222-222222222222"

var now = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// vault is one key in memory that does real work: wrap seals under an
// AES-256-GCM key, unwrap opens it. deny, when set, fails every call with
// it (a vault that refuses the app).
type vault struct {
	info kms.KeyInfo
	aead cipher.AEAD
	deny *kms.Error
}

func newVault(t *testing.T, kty string) *vault {
	t.Helper()
	k := make([]byte, 32)
	rand.Read(k)
	block, err := aes.NewCipher(k)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return &vault{aead: aead, info: kms.KeyInfo{Version: "0123456789abcdef0123456789abcdef", KeyType: kty, Bits: 3072,
		Ops: []string{"wrapKey", "unwrapKey"}, Enabled: true, RecoveryLevel: "Recoverable"}}
}

func (v *vault) refuse(op string, ref kms.KeyRef) error {
	if v.deny == nil {
		return nil
	}
	e := *v.deny
	e.Op, e.Key = op, ref.String()
	return &e
}

func (v *vault) Describe(_ context.Context, ref kms.KeyRef) (kms.KeyInfo, error) {
	return v.info, v.refuse("describe", ref)
}

func (v *vault) Wrap(_ context.Context, ref kms.KeyRef, dek []byte) (kms.Wrapped, error) {
	if err := v.refuse("wrap", ref); err != nil {
		return kms.Wrapped{}, err
	}
	nonce := make([]byte, v.aead.NonceSize())
	rand.Read(nonce)
	return kms.Wrapped{KeyVersion: v.info.Version, Alg: "RSA-OAEP-256", Ciphertext: v.aead.Seal(nonce, nonce, dek, nil)}, nil
}

func (v *vault) Unwrap(_ context.Context, ref kms.KeyRef, w kms.Wrapped) ([]byte, error) {
	if err := v.refuse("unwrap", ref); err != nil {
		return nil, err
	}
	n := v.aead.NonceSize()
	if len(w.Ciphertext) < n {
		return nil, &kms.Error{Kind: kms.KindUnwrapFailed, Op: "unwrap", Key: ref.String(), Err: errors.New("short")}
	}
	return v.aead.Open(nil, w.Ciphertext[:n], w.Ciphertext[n:], nil)
}

type finder struct{}

func (finder) VaultTenant(context.Context, string) (string, error) { return tenant, nil }

// TestManagedHSM: a key in a Managed HSM (RSA-HSM) passes the same checks
// as a vault's, and a refusal there names the Managed HSM role and the
// command that grants it on the key; a vault's names the vault's role.
func TestManagedHSM(t *testing.T) {
	env := guidance.Env{AppName: "Acme Data Platform", AppID: "0b4f2a8e-1c3d-4e5f-8a9b-0c1d2e3f4a5b", Now: func() time.Time { return now }}
	owner := preflight.Owner{Org: "org", Tenants: []string{tenant}, Finder: finder{}}
	for _, tt := range []struct {
		name, raw, kty string
		role, notRole  string
		remedy         string // in the role check's steps when it fails
	}{
		{"managed hsm", "https://contoso-hsm.managedhsm.azure.net/keys/cmk-key", "RSA-HSM", guidance.RequiredRoleHSM, guidance.RequiredRole,
			"az keyvault role assignment create --hsm-name contoso-hsm --role \"Managed HSM Crypto Service Encryption User\" --assignee 0b4f2a8e-1c3d-4e5f-8a9b-0c1d2e3f4a5b --scope /keys/cmk-key"},
		{"managed hsm, sovereign cloud", "https://gov-hsm.managedhsm.usgovcloudapi.net/keys/cmk-key", "RSA-HSM", guidance.RequiredRoleHSM, guidance.RequiredRole, "--hsm-name gov-hsm"},
		{"vault", "https://contoso.vault.azure.net/keys/cmk-key", "RSA", guidance.RequiredRole, guidance.RequiredRoleHSM, "Access control (IAM)"},
		{"vault, HSM-backed key", "https://contoso.vault.azure.net/keys/cmk-key", "RSA-HSM", guidance.RequiredRole, guidance.RequiredRoleHSM, "Access control (IAM)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := newVault(t, tt.kty)
			rep := preflight.Run(t.Context(), v, keyid.Policy{}, tt.raw, env, owner)
			if !rep.Passed {
				t.Fatalf("Run(%s) = %+v, want passed", tt.raw, rep.FirstProblem())
			}
			i := slices.IndexFunc(rep.Results, func(r preflight.Result) bool { return r.Check == preflight.CheckRole })
			if title := rep.Results[i].Title; !strings.Contains(title, tt.role) || strings.Contains(title, tt.notRole) {
				t.Errorf("role check title = %q, want %q and not %q", title, tt.role, tt.notRole)
			}

			v.deny = &kms.Error{Kind: kms.KindIdentityUnauthorized, Status: 403, Code: "Forbidden", InnerCode: "ForbiddenByRbac"}
			rep = preflight.Run(t.Context(), v, keyid.Policy{}, tt.raw, env, owner)
			p := rep.FirstProblem()
			if p == nil || p.Check != preflight.CheckRole || p.Code != string(kms.KindIdentityUnauthorized) {
				t.Fatalf("Run(%s, role missing) first problem = %+v, want role_assignment IDENTITY_UNAUTHORIZED", tt.raw, p)
			}
			steps := strings.Join(p.Remedy, "\n")
			if !strings.Contains(p.Title, tt.role) || !strings.Contains(steps, tt.role) || strings.Contains(steps, tt.notRole) || !strings.Contains(steps, tt.remedy) {
				t.Errorf("role check = %q, steps %q; want %q named, %q not, and %q", p.Title, steps, tt.role, tt.notRole, tt.remedy)
			}
		})
	}
}

// TestPurgeProtectionOnManagedHSM: the recovery level is read the same way
// for a Managed HSM's key, and the steps say how to turn it on there.
func TestPurgeProtectionOnManagedHSM(t *testing.T) {
	env := guidance.Env{Now: func() time.Time { return now }}
	owner := preflight.Owner{Org: "org", Tenants: []string{tenant}, Finder: finder{}}
	v := newVault(t, "RSA-HSM")
	v.info.RecoveryLevel = "CustomizedRecoverable+Purgeable"
	rep := preflight.Run(t.Context(), v, keyid.Policy{}, "https://contoso-hsm.managedhsm.azure.net/keys/cmk-key", env, owner)
	p := rep.FirstProblem()
	if p == nil || p.Check != preflight.CheckPurgeProtection || !strings.Contains(strings.Join(p.Remedy, "\n"), "az keyvault update-hsm --hsm-name contoso-hsm --enable-purge-protection true") {
		t.Errorf("Run(purgeable Managed HSM key) first problem = %+v, want purge_protection with the update-hsm command", p)
	}
}

// TestEveryIndependentCheckRuns: a failure does not stop the checks that do
// not depend on it; the ones that do are not run and say what they wait for.
func TestEveryIndependentCheckRuns(t *testing.T) {
	env := guidance.Env{Now: func() time.Time { return now }}
	owner := preflight.Owner{Org: "org", Tenants: []string{tenant}, Finder: finder{}}
	const raw = "https://contoso.vault.azure.net/keys/cmk-key"
	status := func(rep *preflight.Report) map[string]preflight.Result {
		out := map[string]preflight.Result{}
		for _, r := range rep.Results {
			out[r.Check] = r
		}
		if len(out) != len(preflight.Order) || len(rep.Results) != len(preflight.Order) {
			t.Errorf("results = %d (%d distinct), want each of %d checks once", len(rep.Results), len(out), len(preflight.Order))
		}
		return out
	}

	// A 2048-bit key in a vault without purge protection: both found in one run.
	v := newVault(t, "RSA")
	v.info.Bits = 2048
	v.info.RecoveryLevel = "Recoverable+Purgeable"
	rep := preflight.Run(t.Context(), v, keyid.Policy{}, raw, env, owner)
	got := status(rep)
	for check, want := range map[string]preflight.Status{
		preflight.CheckKeyType: preflight.Failed, preflight.CheckKeyOps: preflight.Passed, preflight.CheckSoftDelete: preflight.Passed,
		preflight.CheckPurgeProtection: preflight.Failed, preflight.CheckRoundTrip: preflight.Skipped,
	} {
		if got[check].Status != want {
			t.Errorf("Run(2048-bit, purgeable) %s = %s, want %s", check, got[check].Status, want)
		}
	}
	if msg := got[preflight.CheckRoundTrip].Message; !strings.Contains(msg, preflight.Title(preflight.CheckKeyType)) {
		t.Errorf("round trip not run: message %q, want it to name %q", msg, preflight.Title(preflight.CheckKeyType))
	}
	if !rep.CheckedAt.Equal(now) || rep.KeyIdentifier != raw {
		t.Errorf("report labelled %q at %v, want %q at %v", rep.KeyIdentifier, rep.CheckedAt, raw, now)
	}

	// A disabled key with soft-delete off: the vault settings are still read.
	v = newVault(t, "RSA")
	v.info.Enabled = false
	v.info.RecoveryLevel = "Purgeable"
	got = status(preflight.Run(t.Context(), v, keyid.Policy{}, raw, env, owner))
	for check, want := range map[string]preflight.Status{
		preflight.CheckKeyEnabled: preflight.Failed, preflight.CheckKeyType: preflight.Passed, preflight.CheckSoftDelete: preflight.Failed,
		preflight.CheckPurgeProtection: preflight.Skipped, preflight.CheckRoundTrip: preflight.Skipped,
	} {
		if got[check].Status != want {
			t.Errorf("Run(disabled, no soft-delete) %s = %s, want %s", check, got[check].Status, want)
		}
	}

	// The vault refusing the app: nothing about the key can be read.
	v = newVault(t, "RSA")
	v.deny = &kms.Error{Kind: kms.KindIdentityUnauthorized, Status: 403, Code: "Forbidden", InnerCode: "ForbiddenByRbac"}
	got = status(preflight.Run(t.Context(), v, keyid.Policy{}, raw, env, owner))
	for _, c := range []string{preflight.CheckKeyExists, preflight.CheckKeyEnabled, preflight.CheckPurgeProtection, preflight.CheckRoundTrip} {
		if r := got[c]; r.Status != preflight.Skipped || !strings.Contains(r.Message, preflight.Title(preflight.CheckRole)) {
			t.Errorf("Run(role missing) %s = %s %q, want SKIPPED waiting for %q", c, r.Status, r.Message, preflight.Title(preflight.CheckRole))
		}
	}
}

// TestIdentifierMessage: a key identifier that does not parse is explained
// in one sentence, without the error's chain.
func TestIdentifierMessage(t *testing.T) {
	env := guidance.Env{Now: func() time.Time { return now }}
	owner := preflight.Owner{Org: "org", Tenants: []string{tenant}, Finder: finder{}}
	for _, raw := range []string{"not-a-url", "http://contoso.vault.azure.net/keys/k", "https://example.com/keys/k", "", "https://contoso.vault.azure.net/secrets/s"} {
		rep := preflight.Run(t.Context(), newVault(t, "RSA"), keyid.Policy{}, raw, env, owner)
		p := rep.FirstProblem()
		if p == nil || p.Check != preflight.CheckKeyIdentifier {
			t.Fatalf("Run(%q) first problem = %+v, want key_identifier", raw, p)
		}
		if !strings.HasPrefix(p.Message, "This is not a Key Vault key identifier: ") || strings.Contains(p.Message, "parse") || strings.Contains(p.Message, "MALFORMED_KEY_URI") {
			t.Errorf("Run(%q) message = %q, want a sentence without the error chain", raw, p.Message)
		}
	}
	if got, want := preflight.IdentifierMessage(func() error { _, err := keyid.Parse("not-a-url"); return err }()),
		"This is not a Key Vault key identifier: it has no scheme; it must start with https://, e.g. https://{vault-name}.vault.azure.net/keys/{key-name}."; got != want {
		t.Errorf("IdentifierMessage(not-a-url) = %q, want %q", got, want)
	}
}
