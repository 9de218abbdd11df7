// Package alerts turns key-health findings into the three alert kinds a
// tenant administrator sees — Key access disabled, Key access failure and
// Alert notification — each with the detected cause, its probable causes and
// numbered resolution steps; stores them (one open alert per cause, counted,
// with first and last seen), resolves them when the key recovers, and pushes
// every opened and resolved alert to the org's webhooks, signed and retried.
package alerts

import (
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/preflight"
)

// Alert kinds.
const (
	KindAccessDisabled = cmkapi.AlertKeyAccessDisabled
	KindAccessFailure  = cmkapi.AlertKeyAccessFailure
	KindNotification   = cmkapi.AlertNotification
)

// Causes beyond the key-service failure kinds.
const (
	CauseFlapping       = "FLAPPING"        // the key keeps switching between usable and unusable
	CauseGraceExhausted = "GRACE_EXHAUSTED" // transient failures outlasted the grace: data now refused
)

var kindTitles = map[string]string{
	KindAccessDisabled: "Key access disabled",
	KindAccessFailure:  "Key access failure",
	KindNotification:   "Alert notification",
}

// Title is the display name of an alert kind.
func Title(kind string) string { return kindTitles[kind] }

var probable = map[string][]string{
	KindAccessDisabled: {
		"Someone disabled the key in Azure Key Vault.",
		"A lifecycle policy or automation disabled the key.",
		"A change to the key's settings left it disabled.",
	},
	KindAccessFailure: {
		"The key or the key vault was deleted, or is pending deletion.",
		"The platform's app lost its role on the vault (Key Vault Crypto Service Encryption User), or its get/wrapKey/unwrapKey permissions.",
		"The vault's firewall or network rules block the platform.",
		"The app's service principal was removed from your tenant, or its object id changed.",
		"The key was changed so it no longer permits wrapKey/unwrapKey, or it expired.",
	},
	KindNotification: {
		"A temporary network disruption between the platform and Key Vault.",
		"Key Vault is throttling or returning server errors.",
		"The key's state or permissions are changing back and forth.",
	},
}

var genericSteps = map[string][]string{
	KindAccessDisabled: {
		"Open the key vault in the Azure portal and select the key the platform uses.",
		"Check that the key's current version is Enabled; if not, enable it.",
		"Make sure no automation or lifecycle policy disables the key again.",
		"If soft-delete is on, also confirm the key was not deleted or scheduled for deletion.",
	},
	KindAccessFailure: {
		"Confirm the key vault and the key still exist and are not deleted (recover them if they are).",
		"Confirm the platform's app holds the Key Vault Crypto Service Encryption User role (or get, wrapKey and unwrapKey) on the vault.",
		"Confirm the vault's firewall allows the platform (or trusted Microsoft services).",
		"If the app's service principal was removed or changed, consent again and reassign the role.",
		"Run a re-check from the Encryption page or the API once fixed; access returns within seconds.",
	},
	KindNotification: {
		"Review your Key Vault logs for recent intermittent errors or throttling.",
		"Confirm the key is enabled and not pending deletion.",
		"Look for automation that changes the key, its permissions or the firewall.",
		"Check Azure status for Key Vault incidents in your region.",
	},
}

// KindFor picks the alert kind for a failure cause: disabled keys have their
// own kind; every other definitive failure is a key access failure; anything
// transient is a notification.
func KindFor(cause string) string {
	switch kms.Kind(cause) {
	case kms.KindKeyDisabled:
		return KindAccessDisabled
	case kms.KindThrottled, kms.KindTransient:
		return KindNotification
	}
	if cause == CauseFlapping {
		return KindNotification
	}
	return KindAccessFailure
}

// Describe builds the alert detail for a cause. Steps specific to the cause
// come first, then the kind's general steps.
func Describe(kind, cause, message string, blocked bool, env preflight.Env, ref kms.KeyRef) cmkapi.AlertDetail {
	d := cmkapi.AlertDetail{Title: kindTitles[kind], Cause: cause, Message: message, DataBlocked: blocked, ProbableCauses: probable[kind]}
	switch {
	case cause == CauseFlapping:
		d.Summary = "Access to your key keeps switching between working and failing. Data is refused whenever access fails and served again when it returns."
	case cause == CauseGraceExhausted:
		d.Summary = "The platform could not reach your key for longer than the grace period, so your data is now refused until the key can be reached again."
	case kind == KindNotification:
		d.Summary = "The platform could not reach your key for a transient reason. Data stays available from keys already in memory for the grace period."
	case kind == KindAccessDisabled:
		d.Summary = "Your key is disabled in Azure Key Vault, so the platform can no longer use it. Your data is refused until the key is enabled."
	case blocked:
		d.Summary = "The platform can no longer use your key. Your data is refused until access is restored; nothing is lost."
	default:
		d.Summary = "The platform can read your data, but it cannot wrap new keys with your key."
	}
	if specific := preflight.Remedy(kms.Kind(cause), env, ref); len(specific) > 0 {
		d.Steps = append(specific, "Access is re-checked every few seconds; you can also run a re-check from the Encryption page or the API.")
	} else {
		d.Steps = genericSteps[kind]
	}
	return d
}
