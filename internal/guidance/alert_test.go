package guidance_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/guidance"
	"github.com/cmk-project/cmk/internal/kms"
)

var alertKinds = []string{cmkapi.AlertKeyAccessDisabled, cmkapi.AlertKeyAccessFailure, cmkapi.AlertNotification}

const recheck = "Access is re-checked every few seconds; you can also run a re-check from the Encryption page or the API."

// TestEveryAlertKindHasText: a title, probable causes, and steps for a
// cause that has none of its own.
func TestEveryAlertKindHasText(t *testing.T) {
	for _, kind := range alertKinds {
		if got := guidance.AlertTitle(kind); got == "" {
			t.Errorf("AlertTitle(%s) = %q, want a title", kind, got)
		}
		d := guidance.Alert(kind, string(kms.KindTransient), "m", false, env, ref)
		if d.Title != guidance.AlertTitle(kind) || len(d.ProbableCauses) == 0 || len(d.Steps) == 0 || d.Summary == "" {
			t.Errorf("Alert(%s, TRANSIENT) = %+v, want its title, probable causes, steps and a summary", kind, d)
		}
	}
	if got := guidance.AlertTitle("NO_SUCH_KIND"); got != "" {
		t.Errorf(`AlertTitle("NO_SUCH_KIND") = %q, want ""`, got)
	}
}

func TestAlert(t *testing.T) {
	generic := func(kind string) []string {
		return guidance.Alert(kind, string(kms.KindTransient), "", false, env, ref).Steps
	}
	own := func(code string) []string { return append(guidance.Steps(code, env, ref), recheck) }
	for _, tt := range []struct {
		name, kind, cause string
		blocked           bool
		summary           string   // its start
		steps             []string // nil: do not compare
	}{
		{name: "disabled key", kind: cmkapi.AlertKeyAccessDisabled, cause: string(kms.KindKeyDisabled), blocked: true,
			summary: "Your key is disabled in Azure Key Vault", steps: own(string(kms.KindKeyDisabled))},
		{name: "role removed", kind: cmkapi.AlertKeyAccessFailure, cause: string(kms.KindIdentityUnauthorized), blocked: true,
			summary: "The platform can no longer use your key.", steps: own(string(kms.KindIdentityUnauthorized))},
		{name: "wrap refused, unwrap works", kind: cmkapi.AlertKeyAccessFailure, cause: string(kms.KindKeyNotActive),
			summary: "The platform can read your data, but it cannot wrap new keys", steps: own(string(kms.KindKeyNotActive))},
		{name: "malformed identifier", kind: cmkapi.AlertKeyAccessFailure, cause: string(kms.KindMalformedKeyURI), blocked: true,
			summary: "The platform can no longer use your key.", steps: own(string(kms.KindMalformedKeyURI))},
		{name: "transient", kind: cmkapi.AlertNotification, cause: string(kms.KindTransient),
			summary: "The platform could not reach your key for a transient reason.", steps: generic(cmkapi.AlertNotification)},
		{name: "invalid request", kind: cmkapi.AlertKeyAccessFailure, cause: string(kms.KindInvalidRequest), blocked: true,
			summary: "The platform can no longer use your key.", steps: generic(cmkapi.AlertKeyAccessFailure)},
		{name: "unrecognised answer, coasting", kind: cmkapi.AlertNotification, cause: string(kms.KindInvalidRequest),
			summary: "The key vault gave an answer the platform does not recognise: what the check found It is not taken as a loss of access", steps: generic(cmkapi.AlertNotification)},
		{name: "a data key's wrapping does not unwrap, coasting", kind: cmkapi.AlertNotification, cause: string(kms.KindUnwrapFailed),
			summary: "The key vault gave an answer the platform does not take as a loss of access: what the check found", steps: own(string(kms.KindUnwrapFailed))},
		{name: "flapping", kind: cmkapi.AlertNotification, cause: cmkapi.CauseFlapping, blocked: true,
			summary: guidance.Cause(cmkapi.CauseFlapping) + " Data is refused whenever", steps: generic(cmkapi.AlertNotification)},
		{name: "grace exhausted", kind: cmkapi.AlertKeyAccessFailure, cause: cmkapi.CauseGraceExhausted, blocked: true,
			summary: guidance.Cause(cmkapi.CauseGraceExhausted), steps: generic(cmkapi.AlertKeyAccessFailure)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := guidance.Alert(tt.kind, tt.cause, "what the check found", tt.blocked, env, ref)
			if d.Title != guidance.AlertTitle(tt.kind) || d.Cause != tt.cause || d.Message != "what the check found" || d.DataBlocked != tt.blocked {
				t.Errorf("Alert(%s, %s) = %+v, want the kind's title and the cause, message and blocked given", tt.kind, tt.cause, d)
			}
			if !strings.HasPrefix(d.Summary, tt.summary) {
				t.Errorf("Alert(%s, %s).Summary = %q, want it to start %q", tt.kind, tt.cause, d.Summary, tt.summary)
			}
			if !slices.Equal(d.Steps, tt.steps) {
				t.Errorf("Alert(%s, %s).Steps = %q, want %q", tt.kind, tt.cause, d.Steps, tt.steps)
			}
		})
	}
}

// TestAlertIsTheCallers checks that changing one alert's detail changes
// nothing for the next.
func TestAlertIsTheCallers(t *testing.T) {
	for _, kind := range alertKinds {
		d := guidance.Alert(kind, string(kms.KindTransient), "", false, env, ref)
		want := guidance.Alert(kind, string(kms.KindTransient), "", false, env, ref)
		d.Steps[0], d.ProbableCauses[0] = "changed", "changed"
		if got := guidance.Alert(kind, string(kms.KindTransient), "", false, env, ref); !slices.Equal(got.Steps, want.Steps) || !slices.Equal(got.ProbableCauses, want.ProbableCauses) {
			t.Errorf("Alert(%s) after changing an earlier detail = %+v, want %+v", kind, got, want)
		}
	}
}
