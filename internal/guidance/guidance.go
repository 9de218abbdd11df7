// Package guidance is the one catalog of what cmk tells a person about a
// failure: for each failure code a title, its cause in one sentence, and
// numbered steps that fix it, naming the customer's key and the platform's
// app. The validation checks, the enablement job, the key-health view, the
// alerts, the API and the CLI all take their words from here, so a failure
// reads the same wherever it shows.
//
// # Codes
//
// The catalog is keyed by the stable failure codes: every kms.Kind value;
// the check codes cmkapi.CodeKeyNotBound, CodeKeyInUse,
// CodeKeyTypeUnsupported, CodeKeyTooSmall, CodeSoftDeleteDisabled and
// CodePurgeProtectionDisabled;
// and the health causes cmkapi.CauseFlapping and CauseGraceExhausted. The
// codes are the contract clients branch on; the words may be improved at
// any time, so never branch on them.
//
// # Guarantees
//
// Every code above, and every kind in kms.Kinds, has a title and a cause.
// Every code that is a verdict on the key has steps. The kinds that are no
// verdict — THROTTLED and TRANSIENT (kms.Kind.Transient) and
// INVALID_REQUEST (a bug on our side or a bad value) — and the two health
// causes have no steps of their own: callers fall back to RetrySteps or to
// an alert kind's steps. Every alert kind has a title, probable causes and
// steps. The tests enforce all of this, iterating kms.Kinds, so a new kind
// cannot ship without its words.
//
// The package holds words only: it imports kms and cmkapi, and nothing that
// decides, stores or calls a vault.
package guidance

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cmk-project/cmk/internal/kms"
)

// RequiredRole is the Azure role the platform's app needs on the vault.
const RequiredRole = "Key Vault Crypto Service Encryption User"

// RequiredRoleHSM is the equivalent role on a Managed HSM, where roles are
// granted by the HSM's own local RBAC, on the key.
const RequiredRoleHSM = "Managed HSM Crypto Service Encryption User"

// Role is the role the platform's app needs on the key ref names: the
// Managed HSM role for a key in a Managed HSM, the Key Vault role otherwise.
func Role(ref kms.KeyRef) string {
	if ref.ManagedHSM() {
		return RequiredRoleHSM
	}
	return RequiredRole
}

// HSMRoleCommand is the Azure CLI command that grants the platform's app
// the Managed HSM role on the key ref names (in a Managed HSM), scoped to
// that key alone.
func HSMRoleCommand(env Env, ref kms.KeyRef) string {
	return fmt.Sprintf("az keyvault role assignment create --hsm-name %s --role %q --assignee %s --scope /keys/%s",
		ref.VaultName(), RequiredRoleHSM, orDefault(env.AppID, "<application id of the platform's app>"), ref.Name)
}

// Env is what the steps may name. Empty fields are left out of the steps
// or replaced by a generic phrase ("the platform's app").
type Env struct {
	AppName string // the platform's app, as the customer sees it in their tenant
	AppID   string
	// ConsentURL is a consent link the steps may show. Never an org's own
	// link: its state is the org's credential while it lives, and steps are
	// stored with jobs and alerts. The service leaves it empty.
	ConsentURL string
	// Now is the clock the validation checks read for a key's activation
	// and expiry dates (nil: time.Now). No text here reads it; it travels
	// with Env so that one value configures a validation and its words.
	Now func() time.Time
}

// Title is the short name of a failure code ("" for an unknown code).
func Title(code string) string { return catalog[code].title }

// Cause is what a failure code means, in one sentence ("" for an unknown
// code).
func Cause(code string) string { return catalog[code].cause }

// Steps returns the numbered steps that fix a failure of code for the key
// ref, or nil when the code has none of its own (see the package doc).
// The slice is the caller's to change.
//
// For a key in AWS KMS (kms.KeyRef.AWS) the steps speak of AWS: the
// console, the aws CLI and the org's key-policy statements.
func Steps(code string, env Env, ref kms.KeyRef) []string {
	if ref.AWS() {
		return awsSteps(code, ref)
	}
	if f := catalog[code].steps; f != nil {
		return f(env, ref)
	}
	return nil
}

// RetrySteps are the steps for a check the key vault gave no definite
// answer to (throttled, transient or unexpected): there is no verdict on
// the key, only the advice to try again.
func RetrySteps() []string {
	return []string{
		"The key vault did not give a definite answer; this is usually temporary.",
		"Run the check again in a minute. If it keeps failing, check Azure status for Key Vault incidents in your region.",
	}
}

// Describe turns a key-service error into one sentence for a person: the
// cause of its kind and, when the vault answered, what it answered
// ("The key is disabled (wrap returned HTTP 403 KeyDisabled)."). An error
// that is not a *kms.Error is returned as its Error().
func Describe(err error) string {
	var ke *kms.Error
	if !errors.As(err, &ke) {
		return err.Error()
	}
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
	cause := Cause(string(ke.Kind))
	if strings.HasPrefix(ke.Key, "arn:") {
		cause = AWSCause(string(ke.Kind))
		if ke.Code == "KeyPendingDeletion" {
			cause = AWSCause(CodeKeyPendingDeletion)
		}
	}
	return strings.TrimSuffix(cause, ".") + detail + "."
}
