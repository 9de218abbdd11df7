package azemu

import (
	"net/http"
	"net/url"
	"strings"
)

// msgDeclined is AADSTS65004's text (the reference lists 65004 as
// UserDeclinedConsent, "User declined to consent to access the app.").
const msgDeclined = "AADSTS65004: User declined to consent to access the app."

// isAdminConsentV2 reports whether r is for the v2 admin-consent endpoint.
func isAdminConsentV2(r *http.Request) bool {
	return strings.HasSuffix(r.URL.Path, "/v2.0/adminconsent")
}

// declined sets the redirect parameters of a declined consent. The v2
// admin-consent endpoint answers admin_consent=True with error
// consent_required (azure-errors.md section 14); the authorization
// endpoints answer access_denied, as OAuth 2.0 has it.
func declined(out url.Values, r *http.Request) {
	if isAdminConsentV2(r) {
		out.Set("admin_consent", "True")
		out.Set("error", "consent_required")
	} else {
		out.Set("error", "access_denied")
	}
	out.Set("error_description", msgDeclined)
}

// refuseCommonAdminConsent answers a v2 admin-consent request under
// "common" with an error page and reports whether it did. The tenant of that
// endpoint may be a GUID, a domain or "organizations", not "common"
// (azure-errors.md section 14). Entra ID's exact answer is unverified; the
// emulator shows AADSTS90130, its code for an endpoint an app cannot use
// under /common, and sends nothing to the redirect URI.
func refuseCommonAdminConsent(e *Emulator, w http.ResponseWriter, r *http.Request, clientID string) bool {
	if !isAdminConsentV2(r) || !strings.EqualFold(r.PathValue("tenant"), "common") {
		return false
	}
	e.renderConsent(w, http.StatusBadRequest, consentView{ClientID: clientID,
		Error: "AADSTS90130: Admin consent is not supported over the /common endpoint. Use the /organizations endpoint or the tenant's own (its ID or a verified domain)."})
	return true
}
