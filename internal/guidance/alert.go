package guidance

import (
	"slices"
	"strings"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/kms"
)

// alertKind is the text of an alert kind.
type alertKind struct {
	title    string
	probable []string // probable causes
	steps    []string // the steps when the cause has none of its own
}

var alertKinds = map[string]alertKind{
	cmkapi.AlertKeyAccessDisabled: {
		title: "Key access disabled",
		probable: []string{
			"Someone disabled the key in Azure Key Vault.",
			"A lifecycle policy or automation disabled the key.",
			"A change to the key's settings left it disabled.",
		},
		steps: []string{
			"Open the key vault in the Azure portal and select the key the platform uses.",
			"Check that the key's current version is Enabled; if not, enable it.",
			"Make sure no automation or lifecycle policy disables the key again.",
			"If soft-delete is on, also confirm the key was not deleted or scheduled for deletion.",
		},
	},
	cmkapi.AlertKeyAccessFailure: {
		title: "Key access failure",
		probable: []string{
			"The key or the key vault was deleted, or is pending deletion.",
			"The platform's app lost its role on the vault (" + RequiredRole + "), or its get/wrapKey/unwrapKey permissions.",
			"The vault's firewall or network rules block the platform.",
			"The app's service principal was removed from your tenant, or its object id changed.",
			"The key was changed so it no longer permits wrapKey/unwrapKey, or it expired.",
		},
		steps: []string{
			"Confirm the key vault and the key still exist and are not deleted (recover them if they are).",
			"Confirm the platform's app holds the " + RequiredRole + " role (or get, wrapKey and unwrapKey) on the vault.",
			"Confirm the vault's firewall allows the platform (or trusted Microsoft services).",
			"If the app's service principal was removed or changed, consent again and reassign the role.",
			"Run a re-check from the Encryption page or the API once fixed; access returns within seconds.",
		},
	},
	cmkapi.AlertNotification: {
		title: "Alert notification",
		probable: []string{
			"A temporary network disruption between the platform and Key Vault.",
			"Key Vault is throttling or returning server errors.",
			"The key's state or permissions are changing back and forth.",
		},
		steps: []string{
			"Review your Key Vault logs for recent intermittent errors or throttling.",
			"Confirm the key is enabled and not pending deletion.",
			"Look for automation that changes the key, its permissions or the firewall.",
			"Check Azure status for Key Vault incidents in your region.",
		},
	},
}

// AlertTitle is the display name of an alert kind ("" for an unknown kind).
func AlertTitle(kind string) string { return alertKinds[kind].title }

// Alert is the person-facing content of an alert of kind raised for cause
// (a failure code) with message (what the check found): a summary that
// says whether the org's data is refused (blocked), the kind's probable
// causes, and the cause's own steps followed by a line saying access is
// re-checked, or, when the cause has no steps of its own, the kind's.
func Alert(kind, cause, message string, blocked bool, env Env, ref kms.KeyRef) cmkapi.AlertDetail {
	k := alertKinds[kind]
	if aws, ok := awsAlertKinds[kind]; ok && ref.AWS() {
		k.probable, k.steps = aws.probable, aws.steps
	}
	d := cmkapi.AlertDetail{Title: k.title, Cause: cause, Message: message, DataBlocked: blocked, ProbableCauses: forKey(k.probable, ref)}
	switch {
	case cause == cmkapi.CauseFlapping:
		d.Summary = Cause(cause) + " Data is refused whenever access fails and served again when it returns."
	case cause == cmkapi.CauseGraceExhausted:
		d.Summary = Cause(cause)
	case kind == cmkapi.AlertNotification && Steps(cause, env, ref) == nil && !kms.Kind(cause).Transient() && cause != "":
		d.Summary = "The key vault gave an answer the platform does not recognise: " + message + " It is not taken as a loss of access: data stays available from keys already in memory for the grace period, and then is refused until the vault answers as expected."
	case kind == cmkapi.AlertNotification && !kms.Kind(cause).Transient() && cause != "":
		d.Summary = "The key vault gave an answer the platform does not take as a loss of access: " + message + " Data stays available from keys already in memory for the grace period, and then is refused until the vault answers as expected."
	case kind == cmkapi.AlertNotification:
		d.Summary = "The platform could not reach your key for a transient reason. Data stays available from keys already in memory for the grace period."
	case kind == cmkapi.AlertKeyAccessDisabled:
		d.Summary = "Your key is disabled in Azure Key Vault, so the platform can no longer use it. Your data is refused until the key is enabled."
		if ref.AWS() {
			d.Summary = "Your key is disabled in AWS KMS, so the platform can no longer use it. Your data is refused until the key is enabled."
		}
	case blocked:
		d.Summary = "The platform can no longer use your key. Your data is refused until access is restored; nothing is lost."
	default:
		d.Summary = "The platform can read your data, but it cannot wrap new keys with your key."
	}
	if specific := Steps(cause, env, ref); len(specific) > 0 {
		d.Steps = append(specific, "Access is re-checked every few seconds; you can also run a re-check from the Encryption page or the API.")
	} else {
		d.Steps = forKey(k.steps, ref)
	}
	return d
}

// forKey returns a copy of lines that names the role the app needs on ref's
// key: a Managed HSM's role instead of Key Vault's.
func forKey(lines []string, ref kms.KeyRef) []string {
	out := slices.Clone(lines)
	if ref.ManagedHSM() {
		for i, l := range out {
			out[i] = strings.ReplaceAll(l, RequiredRole, RequiredRoleHSM)
		}
	}
	return out
}
