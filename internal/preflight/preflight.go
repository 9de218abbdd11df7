// Package preflight runs the validation checks a customer key must pass
// before cmk applies it to an org's data: the same checks for the enablement
// job (status RUNNING), the `cmk doctor` command and the API's "check my key".
//
// Each check has a stable name, a title, and when it fails a stable code, a
// message saying what was found and numbered steps saying what to do (the
// code's steps from package guidance). The checks run in the order a request
// travels (sign-in, network, permission, key state, crypto), so the first
// failure is the one to fix first; checks after it are skipped.
// A throttled or transient failure is reported as such, never as a verdict on
// the key.
//
// # Key ownership
//
// Right after the identifier is parsed, and before anything is asked of the
// vault with the platform's credentials, key_owner checks that the key's
// vault belongs to an Azure tenant bound to the org (docs/security.md). The
// platform's one app can reach every consenting customer's vault, so "the
// app has access" says nothing about which org may use a key. An org bound
// to no tenant is refused without any call; otherwise the vault's tenant is
// read from its unauthenticated 401 challenge. When the tenant is not one of
// the org's, the check fails and every later check is skipped: the org
// learns nothing about the key (whether it exists, its state, whether the
// app may use it), and the failure reads the same whether the key exists or
// not.
package preflight

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/guidance"
	"github.com/cmk-project/cmk/internal/keyid"
	"github.com/cmk-project/cmk/internal/kms"
)

// Status of one check.
type Status string

const (
	Passed  Status = cmkapi.CheckPassed
	Failed  Status = cmkapi.CheckFailed
	Error   Status = cmkapi.CheckError // could not tell: throttled or transient; try again
	Skipped Status = cmkapi.CheckSkipped
)

// Check names, stable for clients.
const (
	CheckKeyIdentifier   = "key_identifier"
	CheckKeyOwner        = "key_owner"
	CheckSignIn          = "app_sign_in"
	CheckVaultReachable  = "vault_reachable"
	CheckRole            = "role_assignment"
	CheckKeyExists       = "key_exists"
	CheckKeyEnabled      = "key_enabled"
	CheckKeyActive       = "key_active"
	CheckKeyType         = "key_type_and_size"
	CheckKeyOps          = "key_operations"
	CheckSoftDelete      = "soft_delete"
	CheckPurgeProtection = "purge_protection"
	CheckRoundTrip       = "wrap_unwrap_round_trip"
)

var titles = map[string]string{
	CheckKeyIdentifier:   "Key identifier is a Key Vault key URI on an allowed host",
	CheckKeyOwner:        "The key's vault is in an Azure tenant bound to this org",
	CheckSignIn:          "The platform's app can sign in to your tenant (admin consent given)",
	CheckVaultReachable:  "The key vault exists and accepts the platform's connections",
	CheckRole:            "The app holds the " + guidance.RequiredRole + " role",
	CheckKeyExists:       "The key exists",
	CheckKeyEnabled:      "The key is enabled",
	CheckKeyActive:       "The key is within its activation and expiry dates",
	CheckKeyType:         fmt.Sprintf("The key is RSA with at least %d bits", kms.MinRSABits),
	CheckKeyOps:          "The key permits wrapKey and unwrapKey",
	CheckSoftDelete:      "The vault has soft-delete enabled",
	CheckPurgeProtection: "The vault has purge protection enabled",
	CheckRoundTrip:       "A wrap/unwrap round trip succeeds",
}

// Order is the order the checks run in.
var Order = []string{CheckKeyIdentifier, CheckKeyOwner, CheckSignIn, CheckVaultReachable, CheckRole, CheckKeyExists, CheckKeyEnabled,
	CheckKeyActive, CheckKeyType, CheckKeyOps, CheckSoftDelete, CheckPurgeProtection, CheckRoundTrip}

// Title returns the human title of a check.
func Title(check string) string { return titles[check] }

// TitleFor returns the title of a check of the key ref: for a key in a
// Managed HSM, the role check names the Managed HSM role.
func TitleFor(check string, ref kms.KeyRef) string {
	if check == CheckRole && ref.ManagedHSM() {
		return "The app holds the " + guidance.RequiredRoleHSM + " role on the key"
	}
	return titles[check]
}

// Result is the outcome of one check.
type Result struct {
	Check   string   `json:"check"`
	Title   string   `json:"title"`
	Status  Status   `json:"status"`
	Code    string   `json:"code,omitempty"`    // stable failure code (a kms.Kind or a check code)
	Message string   `json:"message,omitempty"` // what was found
	Remedy  []string `json:"remedy,omitempty"`  // numbered steps, in order
}

// Report is the outcome of all checks.
type Report struct {
	KeyIdentifier string        `json:"keyIdentifier"`
	Passed        bool          `json:"passed"`
	Retryable     bool          `json:"retryable"` // a check could not run for a transient reason
	RetryAfter    time.Duration `json:"-"`
	Key           *kms.KeyInfo  `json:"-"`
	VaultTenant   string        `json:"-"` // the tenant key_owner found the vault in
	Results       []Result      `json:"results"`
}

// TenantFinder tells which Azure tenant a vault belongs to, without any
// credential (*azurekv.Provider reads the vault's 401 challenge). Errors
// are *kms.Error: KindVaultDNSUnresolvable when the vault's host does not
// resolve, a transient kind when the vault gives no answer to act on.
type TenantFinder interface {
	VaultTenant(ctx context.Context, vaultURL string) (tenant string, err error)
}

// Owner is what key_owner needs: the org, the Azure tenants it is bound to
// (lowercase), and how to find a vault's tenant.
type Owner struct {
	Org     string
	Tenants []string
	Finder  TenantFinder
}

// FirstProblem returns the first failed (or errored) check, or nil.
func (r *Report) FirstProblem() *Result {
	for i := range r.Results {
		if r.Results[i].Status == Failed || r.Results[i].Status == Error {
			return &r.Results[i]
		}
	}
	return nil
}

// Run parses raw with policy, checks that the key's vault belongs to a
// tenant owner is bound to, and runs every other check against provider.
func Run(ctx context.Context, provider kms.Provider, policy keyid.Policy, raw string, env guidance.Env, owner Owner) *Report {
	if env.Now == nil {
		env.Now = time.Now
	}
	r := &Report{KeyIdentifier: raw}
	var key kms.KeyRef // once parsed: the titles may name its kind of vault
	set := func(check string, st Status, code, msg string, remedy []string) {
		r.Results = append(r.Results, Result{Check: check, Title: TitleFor(check, key), Status: st, Code: code, Message: msg, Remedy: remedy})
	}
	finish := func() *Report {
		seen := map[string]bool{}
		for _, res := range r.Results {
			seen[res.Check] = true
		}
		for _, c := range Order {
			if !seen[c] {
				set(c, Skipped, "", "Not run: an earlier check did not pass.", nil)
			}
		}
		r.Passed = r.FirstProblem() == nil
		return r
	}

	id, err := policy.Parse(raw)
	if err != nil {
		code := string(kms.KindMalformedKeyURI)
		set(CheckKeyIdentifier, Failed, code, err.Error(), guidance.Steps(code, env, kms.KeyRef{}))
		return finish()
	}
	ref := id.Ref()
	key = ref
	set(CheckKeyIdentifier, Passed, "", "", nil)
	if !checkOwner(ctx, r, set, owner, env, ref) {
		return finish()
	}

	info, err := provider.Describe(ctx, ref)
	if err != nil {
		fail(r, set, err, env, ref)
		return finish()
	}
	r.Key = &info
	for _, c := range []string{CheckSignIn, CheckVaultReachable, CheckRole, CheckKeyExists} {
		set(c, Passed, "", "", nil)
	}
	if !info.Enabled {
		set(CheckKeyEnabled, Failed, string(kms.KindKeyDisabled), fmt.Sprintf("Key %s is disabled.", ref.Name), guidance.Steps(string(kms.KindKeyDisabled), env, ref))
		return finish()
	}
	set(CheckKeyEnabled, Passed, "", "", nil)
	now := env.Now()
	switch {
	case info.NotBefore != nil && now.Before(*info.NotBefore):
		set(CheckKeyActive, Failed, string(kms.KindKeyNotActive), fmt.Sprintf("Key %s is not active until %s.", ref.Name, info.NotBefore.UTC().Format(time.RFC3339)), guidance.Steps(string(kms.KindKeyNotActive), env, ref))
		return finish()
	case info.Expires != nil && !now.Before(*info.Expires):
		set(CheckKeyActive, Failed, string(kms.KindKeyNotActive), fmt.Sprintf("Key %s expired at %s.", ref.Name, info.Expires.UTC().Format(time.RFC3339)), guidance.Steps(string(kms.KindKeyNotActive), env, ref))
		return finish()
	}
	set(CheckKeyActive, Passed, "", "", nil)
	if info.KeyType != "RSA" && info.KeyType != "RSA-HSM" {
		set(CheckKeyType, Failed, cmkapi.CodeKeyTypeUnsupported, fmt.Sprintf("Key %s is of type %s; an RSA key is required.", ref.Name, info.KeyType), guidance.Steps(cmkapi.CodeKeyTypeUnsupported, env, ref))
		return finish()
	}
	if info.Bits < kms.MinRSABits {
		set(CheckKeyType, Failed, cmkapi.CodeKeyTooSmall, fmt.Sprintf("Key %s is %d bits; at least %d are required.", ref.Name, info.Bits, kms.MinRSABits), guidance.Steps(cmkapi.CodeKeyTooSmall, env, ref))
		return finish()
	}
	set(CheckKeyType, Passed, "", "", nil)
	var missing []string
	for _, op := range []string{"wrapKey", "unwrapKey"} {
		if !info.HasOp(op) {
			missing = append(missing, op)
		}
	}
	if len(missing) > 0 {
		set(CheckKeyOps, Failed, string(kms.KindKeyOperationForbidden), fmt.Sprintf("Key %s does not permit %s (permitted: %s).", ref.Name, strings.Join(missing, " and "), strings.Join(info.Ops, ", ")), guidance.Steps(string(kms.KindKeyOperationForbidden), env, ref))
		return finish()
	}
	set(CheckKeyOps, Passed, "", "", nil)
	level := info.RecoveryLevel
	if !strings.Contains(level, "Recoverable") {
		set(CheckSoftDelete, Failed, cmkapi.CodeSoftDeleteDisabled, fmt.Sprintf("The vault's recovery level is %q: a deleted key would be gone at once.", level),
			guidance.Steps(cmkapi.CodeSoftDeleteDisabled, env, ref))
		return finish()
	}
	set(CheckSoftDelete, Passed, "", "", nil)
	if strings.Contains(level, "Purgeable") {
		set(CheckPurgeProtection, Failed, cmkapi.CodePurgeProtectionDisabled, fmt.Sprintf("The vault's recovery level is %q: anyone with purge rights could destroy the key, and with it all your data on the platform.", level),
			guidance.Steps(cmkapi.CodePurgeProtectionDisabled, env, ref))
		return finish()
	}
	set(CheckPurgeProtection, Passed, "", "", nil)

	probe := make([]byte, 32)
	if _, err := rand.Read(probe); err != nil {
		set(CheckRoundTrip, Error, string(kms.KindTransient), err.Error(), nil)
		return finish()
	}
	w, err := provider.Wrap(ctx, ref, probe)
	if err == nil {
		var back []byte
		back, err = provider.Unwrap(ctx, ref, w)
		if err == nil && subtle.ConstantTimeCompare(back, probe) != 1 {
			err = &kms.Error{Kind: kms.KindUnwrapFailed, Op: "unwrap", Key: ref.String(), Err: errors.New("the vault returned a different key than the one wrapped")}
		}
	}
	if err != nil {
		fail(r, set, err, env, ref)
		return finish()
	}
	set(CheckRoundTrip, Passed, "", "", nil)
	return finish()
}

// checkOwner runs key_owner and reports whether the checks may go on. The
// failure for a vault outside the org's tenants says nothing about the key:
// it is decided from the org's bindings and the vault's public challenge
// alone, before any call with the platform's credentials.
func checkOwner(ctx context.Context, r *Report, set func(string, Status, string, string, []string), owner Owner, env guidance.Env, ref kms.KeyRef) bool {
	steps := func() []string { return guidance.Steps(cmkapi.CodeKeyNotBound, env, ref) }
	if len(owner.Tenants) == 0 {
		set(CheckKeyOwner, Failed, cmkapi.CodeKeyNotBound, fmt.Sprintf("Org %s is not bound to any Azure tenant yet, so it cannot use a key from any vault.", owner.Org), steps())
		return false
	}
	if owner.Finder == nil {
		set(CheckKeyOwner, Error, string(kms.KindInvalidRequest), "This service cannot tell which Azure tenant a vault belongs to (it has no Azure app configured).", guidance.RetrySteps())
		return false
	}
	tenant, err := owner.Finder.VaultTenant(ctx, ref.VaultURL)
	if err != nil {
		kind := kms.KindOf(err)
		if checkFor[kind] == CheckVaultReachable {
			// The vault's host does not answer at all (public knowledge:
			// anyone can look a name up): say so where it belongs.
			set(CheckKeyOwner, Skipped, "", "Not run: the vault did not answer, so its Azure tenant is unknown.", nil)
			fail(r, set, err, env, ref)
			return false
		}
		code := string(kind)
		if code == "" {
			code = string(kms.KindTransient)
		}
		r.Retryable = kind.Transient() || kind == ""
		var ke *kms.Error
		if errors.As(err, &ke) {
			r.RetryAfter = ke.RetryAfter
		}
		set(CheckKeyOwner, Error, code, "The vault's Azure tenant could not be read: "+guidance.Describe(err), guidance.RetrySteps())
		return false
	}
	for _, t := range owner.Tenants {
		if strings.EqualFold(t, tenant) {
			r.VaultTenant = strings.ToLower(tenant)
			set(CheckKeyOwner, Passed, "", "", nil)
			return true
		}
	}
	set(CheckKeyOwner, Failed, cmkapi.CodeKeyNotBound, fmt.Sprintf("The key's vault is not in an Azure tenant bound to org %s (bound: %s).", owner.Org, strings.Join(owner.Tenants, ", ")), steps())
	return false
}

// checkFor maps a failure kind to the check it fails.
var checkFor = map[kms.Kind]string{
	kms.KindMalformedKeyURI:        CheckKeyIdentifier,
	kms.KindIdentityInvalid:        CheckSignIn,
	kms.KindTokenAcquisitionFailed: CheckSignIn,
	kms.KindVaultDNSUnresolvable:   CheckVaultReachable,
	kms.KindNetworkDenied:          CheckVaultReachable,
	kms.KindIdentityUnauthorized:   CheckRole,
	kms.KindKeyNotFound:            CheckKeyExists,
	kms.KindKeyDisabled:            CheckKeyEnabled,
	kms.KindKeyNotActive:           CheckKeyActive,
	kms.KindKeyOperationForbidden:  CheckKeyOps,
	kms.KindUnwrapFailed:           CheckRoundTrip,
}

// CheckFor returns the check a failure kind belongs to ("" when it does not
// fail a check, e.g. throttling).
func CheckFor(k kms.Kind) string { return checkFor[k] }

// fail records a provider failure against the check it belongs to, marking
// the checks before it as passed (the request got that far).
func fail(r *Report, set func(string, Status, string, string, []string), err error, env guidance.Env, ref kms.KeyRef) {
	kind := kms.KindOf(err)
	check := checkFor[kind]
	status := Failed
	if check == "" {
		// Throttled, transient or unexpected: no verdict on the key.
		// Before the key was described, the first call got no verdict.
		status, check = Error, CheckRoundTrip
		if r.Key == nil {
			check = CheckSignIn
		}
		r.Retryable = kind.Transient() || kind == ""
		var ke *kms.Error
		if errors.As(err, &ke) {
			r.RetryAfter = ke.RetryAfter
		}
	}
	for _, c := range Order {
		if c == check {
			break
		}
		done := false
		for _, res := range r.Results {
			done = done || res.Check == c
		}
		if !done {
			set(c, Passed, "", "", nil)
		}
	}
	code := string(kind)
	if code == "" {
		code = string(kms.KindTransient)
	}
	steps := guidance.Steps(string(kind), env, ref)
	if steps == nil {
		steps = guidance.RetrySteps()
	}
	set(check, status, code, guidance.Describe(err), steps)
}
