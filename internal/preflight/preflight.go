// Package preflight runs the validation checks a customer key must pass
// before cmk applies it to an org's data: the same checks for the enablement
// job (status RUNNING), the `cmk doctor` command and the API's "check my key".
//
// Each check has a stable name, a title, and when it fails a message saying
// what was found and numbered steps saying what to do. The checks run in the
// order a request travels (sign-in, network, permission, key state, crypto),
// so the first failure is the one to fix first; checks after it are skipped.
// A throttled or transient failure is reported as such, never as a verdict on
// the key.
package preflight

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/keyid"
	"github.com/cmk-project/cmk/internal/kms"
)

// MinRSABits is the smallest RSA key accepted. The platform's profile store
// requires 3072-bit keys, so a smaller key cannot protect every store.
const MinRSABits = 3072

// RequiredRole is the Azure role the platform's app needs on the vault.
const RequiredRole = "Key Vault Crypto Service Encryption User"

// RequiredRoleHSM is the equivalent role on a Managed HSM.
const RequiredRoleHSM = "Managed HSM Crypto Service Encryption User"

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
	CheckSignIn:          "The platform's app can sign in to your tenant (admin consent given)",
	CheckVaultReachable:  "The key vault exists and accepts the platform's connections",
	CheckRole:            "The app holds the " + RequiredRole + " role",
	CheckKeyExists:       "The key exists",
	CheckKeyEnabled:      "The key is enabled",
	CheckKeyActive:       "The key is within its activation and expiry dates",
	CheckKeyType:         fmt.Sprintf("The key is RSA with at least %d bits", MinRSABits),
	CheckKeyOps:          "The key permits wrapKey and unwrapKey",
	CheckSoftDelete:      "The vault has soft-delete enabled",
	CheckPurgeProtection: "The vault has purge protection enabled",
	CheckRoundTrip:       "A wrap/unwrap round trip succeeds",
}

// Order is the order the checks run in.
var Order = []string{CheckKeyIdentifier, CheckSignIn, CheckVaultReachable, CheckRole, CheckKeyExists, CheckKeyEnabled,
	CheckKeyActive, CheckKeyType, CheckKeyOps, CheckSoftDelete, CheckPurgeProtection, CheckRoundTrip}

// Title returns the human title of a check.
func Title(check string) string { return titles[check] }

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
	Results       []Result      `json:"results"`
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

// Env is what the remedies may refer to.
type Env struct {
	AppName    string // the platform's app, as the customer sees it in their tenant
	AppID      string
	ConsentURL string
	Now        func() time.Time
}

// Run parses raw with policy and runs every check against provider.
func Run(ctx context.Context, provider kms.Provider, policy keyid.Policy, raw string, env Env) *Report {
	if env.Now == nil {
		env.Now = time.Now
	}
	r := &Report{KeyIdentifier: raw}
	set := func(check string, st Status, code, msg string, remedy []string) {
		r.Results = append(r.Results, Result{Check: check, Title: titles[check], Status: st, Code: code, Message: msg, Remedy: remedy})
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
		set(CheckKeyIdentifier, Failed, string(kms.KindMalformedURI), err.Error(), []string{
			"In the Azure portal, open your key vault, select Keys, then your key and its current version.",
			"Copy the Key Identifier; it looks like https://<vault-name>.vault.azure.net/keys/<key-name>/<version>.",
			"Send that exact value as configData.keyVaultKeyIdentifier.",
		})
		return finish()
	}
	set(CheckKeyIdentifier, Passed, "", "", nil)
	ref := id.Ref()

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
		set(CheckKeyEnabled, Failed, string(kms.KindKeyDisabled), fmt.Sprintf("Key %s is disabled.", ref.Name), remedies[kms.KindKeyDisabled](env, ref))
		return finish()
	}
	set(CheckKeyEnabled, Passed, "", "", nil)
	now := env.Now()
	switch {
	case info.NotBefore != nil && now.Before(*info.NotBefore):
		set(CheckKeyActive, Failed, string(kms.KindKeyNotActive), fmt.Sprintf("Key %s is not active until %s.", ref.Name, info.NotBefore.UTC().Format(time.RFC3339)), remedies[kms.KindKeyNotActive](env, ref))
		return finish()
	case info.Expires != nil && !now.Before(*info.Expires):
		set(CheckKeyActive, Failed, string(kms.KindKeyNotActive), fmt.Sprintf("Key %s expired at %s.", ref.Name, info.Expires.UTC().Format(time.RFC3339)), remedies[kms.KindKeyNotActive](env, ref))
		return finish()
	}
	set(CheckKeyActive, Passed, "", "", nil)
	if info.KeyType != "RSA" && info.KeyType != "RSA-HSM" {
		set(CheckKeyType, Failed, "KEY_TYPE_UNSUPPORTED", fmt.Sprintf("Key %s is of type %s; an RSA key is required.", ref.Name, info.KeyType), sizeRemedy(ref))
		return finish()
	}
	if info.Bits < MinRSABits {
		set(CheckKeyType, Failed, "KEY_TOO_SMALL", fmt.Sprintf("Key %s is %d bits; at least %d are required.", ref.Name, info.Bits, MinRSABits), sizeRemedy(ref))
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
		set(CheckKeyOps, Failed, string(kms.KindOperationForbidden), fmt.Sprintf("Key %s does not permit %s (permitted: %s).", ref.Name, strings.Join(missing, " and "), strings.Join(info.Ops, ", ")), remedies[kms.KindOperationForbidden](env, ref))
		return finish()
	}
	set(CheckKeyOps, Passed, "", "", nil)
	level := info.RecoveryLevel
	if !strings.Contains(level, "Recoverable") {
		set(CheckSoftDelete, Failed, "SOFT_DELETE_DISABLED", fmt.Sprintf("The vault's recovery level is %q: a deleted key would be gone at once.", level), []string{
			"Soft-delete cannot be turned on for an existing vault without it in every case; create a new key vault with soft-delete and purge protection enabled.",
			"Generate an RSA key of at least 3072 bits in it, grant the role, and submit the new key identifier.",
		})
		return finish()
	}
	set(CheckSoftDelete, Passed, "", "", nil)
	if strings.Contains(level, "Purgeable") {
		set(CheckPurgeProtection, Failed, "PURGE_PROTECTION_DISABLED", fmt.Sprintf("The vault's recovery level is %q: anyone with purge rights could destroy the key, and with it all your data on the platform.", level), []string{
			"In the Azure portal, open the key vault and select Properties.",
			"Under Purge protection, select \"Enable purge protection\" and save (it cannot be turned off again).",
			"Submit the configuration again.",
		})
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
		if err == nil && !bytes.Equal(back, probe) {
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

// checkFor maps a failure kind to the check it fails.
var checkFor = map[kms.Kind]string{
	kms.KindMalformedURI:       CheckKeyIdentifier,
	kms.KindConsentMissing:     CheckSignIn,
	kms.KindTokenFailed:        CheckSignIn,
	kms.KindVaultNotFound:      CheckVaultReachable,
	kms.KindFirewall:           CheckVaultReachable,
	kms.KindUnauthorized:       CheckRole,
	kms.KindKeyNotFound:        CheckKeyExists,
	kms.KindKeyDisabled:        CheckKeyEnabled,
	kms.KindKeyNotActive:       CheckKeyActive,
	kms.KindOperationForbidden: CheckKeyOps,
	kms.KindUnwrapFailed:       CheckRoundTrip,
}

// CheckFor returns the check a failure kind belongs to ("" when it does not
// fail a check, e.g. throttling).
func CheckFor(k kms.Kind) string { return checkFor[k] }

// fail records a provider failure against the check it belongs to, marking
// the checks before it as passed (the request got that far).
func fail(r *Report, set func(string, Status, string, string, []string), err error, env Env, ref kms.KeyRef) {
	kind := kms.KindOf(err)
	check := checkFor[kind]
	status := Failed
	if check == "" {
		// Throttled, transient or unexpected: no verdict on the key.
		status, check = Error, CheckRoundTrip
		if len(r.Results) < 2 {
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
	rem := remedies[kind]
	var steps []string
	if rem != nil {
		steps = rem(env, ref)
	} else {
		steps = []string{"The key vault did not give a definite answer; this is usually temporary.", "Run the check again in a minute. If it keeps failing, check Azure status for Key Vault incidents in your region."}
	}
	set(check, status, code, Describe(err), steps)
}

// Describe turns a provider error into one sentence for a person.
func Describe(err error) string {
	var ke *kms.Error
	if !errors.As(err, &ke) {
		return err.Error()
	}
	what := map[kms.Kind]string{
		kms.KindMalformedURI:       "The key identifier is not a valid Key Vault key URI",
		kms.KindVaultNotFound:      "The key vault's host name does not resolve: the vault does not exist or was deleted",
		kms.KindKeyNotFound:        "The key was not found in the vault (it may have been deleted)",
		kms.KindKeyDisabled:        "The key is disabled",
		kms.KindKeyNotActive:       "The key is outside its activation/expiry dates, so it cannot wrap",
		kms.KindOperationForbidden: "The key does not permit the operation",
		kms.KindUnauthorized:       "The vault refused the platform's app: it does not hold the required role on this vault",
		kms.KindFirewall:           "The vault's firewall refused the platform's connection",
		kms.KindConsentMissing:     "The platform's app is not present in your Azure tenant: admin consent was not given or was removed",
		kms.KindTokenFailed:        "The platform's app could not obtain a token from Microsoft Entra ID",
		kms.KindUnwrapFailed:       "The vault could not unwrap data it had wrapped",
		kms.KindThrottled:          "The key vault is throttling requests",
		kms.KindTransient:          "The key vault did not answer in time or returned a server error",
		kms.KindInvalidRequest:     "The key vault rejected the request",
	}[ke.Kind]
	detail := ""
	if ke.Status != 0 {
		code := ke.Code
		if ke.InnerCode != "" {
			code = ke.InnerCode
		}
		detail = fmt.Sprintf(" (%s returned HTTP %d %s)", ke.Op, ke.Status, code)
	} else if ke.InnerCode != "" {
		detail = fmt.Sprintf(" (%s: %s)", ke.Op, ke.InnerCode)
	}
	return what + detail + "."
}

func sizeRemedy(ref kms.KeyRef) []string {
	return []string{
		"In the Azure portal, open the key vault and select Keys, then Generate/Import.",
		fmt.Sprintf("Create an RSA key with a size of %d or 4096 bits, permitting Wrap Key and Unwrap Key.", MinRSABits),
		"Copy its Key Identifier and submit a new configuration with it (a key's type and size cannot be changed).",
	}
}

// remedies are the numbered steps for each failure kind.
var remedies = map[kms.Kind]func(Env, kms.KeyRef) []string{
	kms.KindConsentMissing: func(e Env, ref kms.KeyRef) []string {
		return []string{
			"Open the consent link (applicationRedirectUrl from the app-registration API" + opt(": ", e.ConsentURL, "") + ") as an administrator of the Azure tenant that owns the key vault.",
			"Select Accept to add the " + orDefault(e.AppName, "platform's") + " app to your tenant.",
			"Grant the app the " + RequiredRole + " role on the vault, then run the check again.",
		}
	},
	kms.KindTokenFailed: func(e Env, ref kms.KeyRef) []string {
		return []string{
			"Confirm the vault belongs to the Azure tenant you consented the app into.",
			"If the consent was given, the platform's app credentials may be invalid or expired: contact the platform operator (this is on the platform's side).",
			"Run the check again.",
		}
	},
	kms.KindVaultNotFound: func(e Env, ref kms.KeyRef) []string {
		return []string{
			"Check the vault name in the key identifier (" + ref.VaultURL + ").",
			"If the vault was deleted, recover it: Azure portal > Key vaults > Manage deleted vaults, or `az keyvault recover --name <vault>`.",
			"Run the check again once the vault resolves.",
		}
	},
	kms.KindFirewall: func(e Env, ref kms.KeyRef) []string {
		return []string{
			"In the Azure portal, open the key vault and select Networking.",
			"Under Firewalls and virtual networks, select \"Allow trusted Microsoft services to bypass this firewall\", or allow the platform's outbound addresses.",
			"Apply, then run the check again.",
		}
	},
	kms.KindUnauthorized: func(e Env, ref kms.KeyRef) []string {
		return []string{
			"In the Azure portal, open the key vault and select Access control (IAM) > Add > Add role assignment.",
			"Choose the " + RequiredRole + " role (on a Managed HSM: " + RequiredRoleHSM + ").",
			"Select members: search for the " + orDefault(e.AppName, "platform's") + " app" + opt(" (application id ", e.AppID, ")") + " and save.",
			"If the vault uses access policies instead of RBAC, grant the app get, wrapKey and unwrapKey on keys.",
			"Role assignments can take a few minutes to apply; run the check again.",
		}
	},
	kms.KindKeyNotFound: func(e Env, ref kms.KeyRef) []string {
		return []string{
			"Check the key name " + ref.Name + " in the vault " + ref.VaultURL + ".",
			"If the key was deleted, recover it: the vault's Keys > Manage deleted keys > Recover, or `az keyvault key recover`.",
			"Run the check again.",
		}
	},
	kms.KindKeyDisabled: func(e Env, ref kms.KeyRef) []string {
		return []string{
			"In the Azure portal, open the key vault, select Keys, then " + ref.Name + " and its current version.",
			"Set Enabled to Yes and save (or `az keyvault key set-attributes --enabled true`).",
			"Make sure no automation or lifecycle policy disables it again, then run the check again.",
		}
	},
	kms.KindKeyNotActive: func(e Env, ref kms.KeyRef) []string {
		return []string{
			"In the Azure portal, open the key " + ref.Name + " and its current version.",
			"Clear or move the expiration date into the future, and clear any activation date in the future (or create a new version of the key).",
			"Run the check again.",
		}
	},
	kms.KindOperationForbidden: func(e Env, ref kms.KeyRef) []string {
		return []string{
			"In the Azure portal, open the key " + ref.Name + " and its current version.",
			"Under Permitted operations, select Wrap Key and Unwrap Key, then save.",
			"Run the check again.",
		}
	},
	kms.KindUnwrapFailed: func(e Env, ref kms.KeyRef) []string {
		return []string{
			"Confirm the key and its versions were not deleted, purged or re-imported.",
			"If the key was deleted, recover it and run the check again.",
		}
	},
}

// Remedy returns the numbered steps for a failure kind, or nil.
func Remedy(kind kms.Kind, env Env, ref kms.KeyRef) []string {
	if f := remedies[kind]; f != nil {
		return f(env, ref)
	}
	return nil
}

// opt returns prefix+v+suffix, or "" when v is empty.
func opt(prefix, v, suffix string) string {
	if v == "" {
		return ""
	}
	return prefix + v + suffix
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
