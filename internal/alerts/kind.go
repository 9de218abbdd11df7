// Package alerts turns key-health findings into the three alert kinds a
// tenant administrator sees — Key access disabled, Key access failure and
// Alert notification — each with the detected cause, its probable causes and
// numbered resolution steps (their words come from package guidance);
// stores them (one open alert per cause, counted, with first and last seen),
// resolves them when the key recovers, and pushes every opened and resolved
// alert to the org's webhooks, signed and retried.
package alerts

import (
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/kms"
)

// Alert kinds.
const (
	KindAccessDisabled = cmkapi.AlertKeyAccessDisabled
	KindAccessFailure  = cmkapi.AlertKeyAccessFailure
	KindNotification   = cmkapi.AlertNotification
)

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
	if cause == cmkapi.CauseFlapping {
		return KindNotification
	}
	return KindAccessFailure
}
