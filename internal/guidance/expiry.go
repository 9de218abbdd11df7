package guidance

import (
	"fmt"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/kms"
)

// expirySteps renew a key before its expiry: a new version (rotation), or a
// later expiration date on the current one.
func expirySteps(_ Env, ref kms.KeyRef) []string {
	return []string{
		"Rotate the key: in the Azure portal open the key vault, select Keys, then " + opt("", ref.Name, " and ") + "New Version. The platform picks up the new version by itself and re-wraps every data key to it; nothing else is needed. With the Azure CLI: " + azKey(ref, "rotate"),
		"Or extend the current version: open it, set a later Expiration date and save. With the Azure CLI (the date in UTC): " + azKey(ref, "set-attributes", "--expires YYYY-MM-DDThh:mm:ssZ"),
		"A key rotation policy in the vault (Rotation policy: rotate some days before expiry) keeps this from happening again.",
	}
}

// ExpiryAlert is the Alert notification raised when the key's newest
// version expires within threshold days (30, 7 or 1): what expires when,
// what happens then, and how to rotate or extend the key.
func ExpiryAlert(expires, now time.Time, threshold int, env Env, ref kms.KeyRef) cmkapi.AlertDetail {
	when := expires.UTC().Format("2006-01-02 15:04 MST")
	var msg string
	if left := expires.Sub(now); left > 0 {
		msg = fmt.Sprintf("The key's current version expires on %s, in less than %s.", when, plural(int64(threshold), "day"))
	} else {
		msg = fmt.Sprintf("The key's current version expired on %s.", when)
	}
	return cmkapi.AlertDetail{
		Title:   alertKinds[cmkapi.AlertNotification].title,
		Summary: Cause(cmkapi.CauseKeyNearExpiry) + " Your data stays readable; rotate or extend the key before the date.",
		Cause:   cmkapi.CauseKeyNearExpiry,
		Message: msg,
		ProbableCauses: []string{
			"The key was created with an expiration date, or a policy of the vault sets one.",
			"No rotation policy rotates the key before it expires.",
		},
		Steps: append(expirySteps(env, ref), "This notification closes by itself once the platform sees the new version or the new date."),
	}
}
