// Package preflight runs the validation checks a customer key must pass
// before cmk applies it to an org's data: the same checks for the enablement
// job (status RUNNING), the `cmk doctor` command and the API's "check my key".
//
// Each check has a stable name, a title, and when it fails a stable code, a
// message saying what was found and numbered steps saying what to do (the
// code's steps from package guidance). The checks are listed in the order a
// request travels (sign-in, network, permission, key state, crypto), and
// every check runs that can: a failure does not stop the checks that do not
// depend on it, so one run shows everything to fix (a 2048-bit key is still
// checked for soft-delete and purge protection). A check that depends on
// one that did not pass is Skipped, its message naming the check it waits
// for: nothing about the key can be read before the identifier parses, the
// key's owner is confirmed and the vault answers describe; the round trip
// needs the key enabled, active, RSA of the right size and permitting the
// operations. A throttled or transient failure is reported as such, never as
// a verdict on the key.
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
	"slices"
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
	CheckedAt     time.Time     `json:"checkedAt"` // when the checks ended (env.Now)
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
	// AsOtherOrg, for a key in AWS KMS, returns ctx acting for an org that
	// is not Org (one that does not exist), to prove the key policy refuses
	// any org but Org (CheckAWSPolicyBindsOrg); nil skips that check.
	AsOtherOrg func(ctx context.Context) context.Context
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
	if IsAWSKey(raw) {
		return runAWS(ctx, provider, raw, env, owner) // aws.go: the key policy, not a tenant binding, says which org
	}
	r := &Report{KeyIdentifier: raw}
	var key kms.KeyRef // once parsed: the titles may name its kind of vault
	set := func(check string, st Status, code, msg string, remedy []string) {
		r.Results = append(r.Results, Result{Check: check, Title: TitleFor(check, key), Status: st, Code: code, Message: msg, Remedy: remedy})
	}
	// finish marks every check not run as waiting for the ones named, and
	// puts the results in Order.
	finish := func(waitsOn ...string) *Report {
		seen := map[string]bool{}
		for _, res := range r.Results {
			seen[res.Check] = true
		}
		for _, c := range Order {
			if !seen[c] {
				set(c, Skipped, "", waitingFor(key, waitsOn...), nil)
			}
		}
		slices.SortStableFunc(r.Results, func(a, b Result) int { return slices.Index(Order, a.Check) - slices.Index(Order, b.Check) })
		r.Passed = r.FirstProblem() == nil
		r.CheckedAt = env.Now().UTC()
		return r
	}

	id, err := policy.Parse(raw)
	if err != nil {
		code := string(kms.KindMalformedKeyURI)
		set(CheckKeyIdentifier, Failed, code, IdentifierMessage(err), guidance.Steps(code, env, kms.KeyRef{}))
		return finish(CheckKeyIdentifier)
	}
	ref := id.Ref()
	key = ref
	r.KeyIdentifier = id.String()
	set(CheckKeyIdentifier, Passed, "", "", nil)
	if !checkOwner(ctx, r, set, owner, env, ref) {
		if p := r.FirstProblem(); p != nil {
			return finish(p.Check)
		}
		return finish(CheckKeyOwner)
	}

	info, err := provider.Describe(ctx, ref)
	if err != nil {
		return finish(fail(r, set, err, env, ref))
	}
	r.Key = &info
	for _, c := range []string{CheckSignIn, CheckVaultReachable, CheckRole, CheckKeyExists} {
		set(c, Passed, "", "", nil)
	}
	// Every check of the key's attributes runs; the round trip waits for
	// those it needs.
	var blocking []string
	failed := func(check, code, msg string) {
		set(check, Failed, code, msg, guidance.Steps(code, env, ref))
		if check != CheckSoftDelete && check != CheckPurgeProtection {
			blocking = append(blocking, check)
		}
	}
	if info.Enabled {
		set(CheckKeyEnabled, Passed, "", "", nil)
	} else {
		failed(CheckKeyEnabled, string(kms.KindKeyDisabled), fmt.Sprintf("Key %s is disabled.", ref.Name))
	}
	now := env.Now()
	switch {
	case info.NotBefore != nil && now.Before(*info.NotBefore):
		failed(CheckKeyActive, string(kms.KindKeyNotActive), fmt.Sprintf("Key %s is not active until %s.", ref.Name, info.NotBefore.UTC().Format(time.RFC3339)))
	case info.Expires != nil && !now.Before(*info.Expires):
		failed(CheckKeyActive, string(kms.KindKeyNotActive), fmt.Sprintf("Key %s expired at %s.", ref.Name, info.Expires.UTC().Format(time.RFC3339)))
	default:
		set(CheckKeyActive, Passed, "", "", nil)
	}
	switch {
	case info.KeyType != "RSA" && info.KeyType != "RSA-HSM":
		failed(CheckKeyType, cmkapi.CodeKeyTypeUnsupported, fmt.Sprintf("Key %s is of type %s; an RSA key is required.", ref.Name, info.KeyType))
	case info.Bits < kms.MinRSABits:
		failed(CheckKeyType, cmkapi.CodeKeyTooSmall, fmt.Sprintf("Key %s is %d bits; at least %d are required.", ref.Name, info.Bits, kms.MinRSABits))
	default:
		set(CheckKeyType, Passed, "", "", nil)
	}
	var missing []string
	for _, op := range []string{"wrapKey", "unwrapKey"} {
		if !info.HasOp(op) {
			missing = append(missing, op)
		}
	}
	if len(missing) > 0 {
		failed(CheckKeyOps, string(kms.KindKeyOperationForbidden), fmt.Sprintf("Key %s does not permit %s (permitted: %s).", ref.Name, strings.Join(missing, " and "), strings.Join(info.Ops, ", ")))
	} else {
		set(CheckKeyOps, Passed, "", "", nil)
	}
	level := info.RecoveryLevel
	switch {
	case !strings.Contains(level, "Recoverable"):
		failed(CheckSoftDelete, cmkapi.CodeSoftDeleteDisabled, fmt.Sprintf("The vault's recovery level is %q: a deleted key would be gone at once.", level))
		// Purge protection exists only with soft-delete.
		set(CheckPurgeProtection, Skipped, "", waitingFor(ref, CheckSoftDelete), nil)
	default:
		set(CheckSoftDelete, Passed, "", "", nil)
		if strings.Contains(level, "Purgeable") {
			failed(CheckPurgeProtection, cmkapi.CodePurgeProtectionDisabled, fmt.Sprintf("The vault's recovery level is %q: anyone with purge rights could destroy the key, and with it all your data on the platform.", level))
		} else {
			set(CheckPurgeProtection, Passed, "", "", nil)
		}
	}
	if len(blocking) > 0 {
		return finish(blocking...)
	}

	probe := make([]byte, 32)
	if _, err := rand.Read(probe); err != nil {
		set(CheckRoundTrip, Error, string(kms.KindTransient), "The platform could not make random bytes for the round trip; try again.", guidance.RetrySteps())
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

// waitingFor is the message of a check not run because the checks named
// did not pass.
func waitingFor(ref kms.KeyRef, checks ...string) string {
	if len(checks) == 0 {
		return "Not run."
	}
	titles := make([]string, len(checks))
	for i, c := range checks {
		titles[i] = "\u201c" + TitleFor(c, ref) + "\u201d"
	}
	return "Not run: it waits for " + strings.Join(titles, " and ") + " to pass."
}

// IdentifierMessage is the sentence a person reads when a key identifier
// does not parse: what is wrong with it, without the error's chain
// ("This is not a Key Vault key identifier: it has no scheme; …").
func IdentifierMessage(err error) string {
	var pe *keyid.ParseError
	if !errors.As(err, &pe) {
		return "This is not a Key Vault key identifier."
	}
	reason := pe.Reason
	if rest, ok := strings.CutPrefix(reason, "the key identifier "); ok {
		reason = "it " + rest
	}
	return "This is not a Key Vault key identifier: " + strings.TrimSuffix(reason, ".") + "."
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
// the checks before it as passed (the request got that far), and returns
// that check.
func fail(r *Report, set func(string, Status, string, string, []string), err error, env guidance.Env, ref kms.KeyRef) string {
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
	return check
}
