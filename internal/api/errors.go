package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/control"
	"github.com/cmk-project/cmk/internal/orgkeys"
	"github.com/cmk-project/cmk/internal/outage"
	"github.com/cmk-project/cmk/internal/ratelimit"
)

// problemStatus is the one table from the control plane's errors, and the
// rate limits', to HTTP statuses and stable error codes.
var problemStatus = []struct {
	err    error
	status int
	code   string
}{
	{control.ErrMalformed, 400, cmkapi.CodeMalformedRequestBody},
	{control.ErrInvalidField, 400, cmkapi.CodeInvalidField},
	{control.ErrOrgMismatch, 400, cmkapi.CodeOrgMismatch},
	{control.ErrInvalidConfigType, 400, cmkapi.CodeInvalidConfigType},
	{control.ErrUnsupportedProvider, 400, cmkapi.CodeUnsupportedProviderType},
	{control.ErrInvalidKeyID, 400, cmkapi.CodeInvalidKeyIdentifier},
	{control.ErrConfirmation, 400, cmkapi.CodeConfirmationRequired},
	{control.ErrNotFound, 404, cmkapi.CodeNotFound},
	{control.ErrNameTaken, 409, cmkapi.CodeConfigNameTaken},
	{control.ErrJobActive, 409, cmkapi.CodeConfigJobInProgress},
	{control.ErrIrreversible, 409, cmkapi.CodeCMKIrreversible},
	{control.ErrKeyInUse, 409, cmkapi.CodeKeyInUse},
	{control.ErrNotEnabled, 409, cmkapi.CodeCMKNotEnabled},
	{control.ErrSandboxExists, 409, cmkapi.CodeSandboxExists},
	{control.ErrLimitReached, 409, cmkapi.CodeLimitReached},
	{control.ErrKeyUnavailable, 503, cmkapi.CodeServiceUnavailable},
	{ratelimit.ErrOrgLimit, 429, cmkapi.CodeRateLimited},
	{ratelimit.ErrVaultLimit, 429, cmkapi.CodeVaultRateLimited},
	{ratelimit.ErrConsentLimit, 429, cmkapi.CodeRateLimited},
	{control.ErrConsentNotAdmin, 403, cmkapi.CodeConsentInvalid}, // before ErrConsent, which it wraps
	{control.ErrConsent, 400, cmkapi.CodeConsentInvalid},
	{control.ErrIdentityUnavailable, 503, cmkapi.CodeServiceUnavailable},
}

// statusOf finds err in the table.
func statusOf(err error) (status int, code string, ok bool) {
	for _, e := range problemStatus {
		if errors.Is(err, e.err) {
			return e.status, e.code, true
		}
	}
	return 0, "", false
}

// fail answers an operation's error: a *control.Problem or a rate limit's
// *ratelimit.Exceeded by the table, a locked org with the cause and steps,
// anything else as an internal error (logged, never shown).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var p *control.Problem
	if errors.As(err, &p) {
		if status, code, ok := statusOf(p.Err); ok {
			writeError(w, r, status, code, p.Title, p.Detail, p.Hint)
			return
		}
	}
	var ex *ratelimit.Exceeded
	if errors.As(err, &ex) {
		if status, code, ok := statusOf(ex); ok {
			s.tooMany(w, r, status, code, ex)
			return
		}
	}
	if ref, ok := orgkeys.Refused(err); ok {
		s.refused(w, r, ref)
		return
	}
	s.internal(w, r, err)
}

// tooMany answers a call refused by a rate limit: which limit, and (in
// Retry-After, whole seconds rounded up) when to try again.
func (s *Server) tooMany(w http.ResponseWriter, r *http.Request, status int, code string, ex *ratelimit.Exceeded) {
	secs := retryAfterSeconds(ex)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	hint := "Wait for the Retry-After time before trying again. Each org has its own allowance, so that one org cannot use up the request budget of a customer's key vault."
	switch {
	case errors.Is(ex, ratelimit.ErrVaultLimit):
		hint = "Wait for the Retry-After time before trying again. The platform caps the calls it makes to one key vault on request, for all orgs together, so that they cannot get the vault throttled; the scheduled key checks go on as before."
	case errors.Is(ex, ratelimit.ErrConsentLimit):
		hint = "Wait for the Retry-After time, then open the consent link again. Each answer costs a call to Microsoft Entra ID, so the platform limits them per org and per address."
	}
	writeError(w, r, status, code, "Too many requests", fmt.Sprintf("Rate limit reached: %s: %s. Try again in %d s.", ex.Scope, ex.Limit, secs), hint)
}

// retryAfterSeconds is a refusal's Retry-After in whole seconds, rounded up.
func retryAfterSeconds(ex *ratelimit.Exceeded) int {
	return max(1, int(math.Ceil(ex.RetryAfter.Seconds())))
}

// outageRetryAfter is the Retry-After of an answer refused because the
// database is unreachable. A restart or fail-over of PostgreSQL takes
// seconds; clients that wait this long before trying again do not pile
// onto a database coming back, and are not kept waiting much past it.
const outageRetryAfter = 5 * time.Second

// internal answers a failure no table knew: a database or disk outage as
// such (503 with Retry-After, or 507), anything else as a logged 500.
func (s *Server) internal(w http.ResponseWriter, r *http.Request, err error) {
	switch outage.Of(err) {
	case outage.Unavailable:
		s.Log.Warn("request refused: database unreachable", "method", r.Method, "path", r.URL.Path, "request_id", w.Header().Get(cmkapi.HeaderRequestID), "err", err)
		w.Header().Set("Retry-After", strconv.Itoa(int(outageRetryAfter/time.Second)))
		writeError(w, r, 503, cmkapi.CodeServiceUnavailable, "Service unavailable",
			"The service cannot reach its database right now, so the request was not completed.",
			"Send the request again after the Retry-After time.")
		return
	case outage.Full:
		s.Log.Error("request refused: storage full", "method", r.Method, "path", r.URL.Path, "request_id", w.Header().Get(cmkapi.HeaderRequestID), "err", err)
		writeError(w, r, 507, cmkapi.CodeStorageFull, "Storage full",
			"The service's storage has no room left. Nothing was stored by this request.",
			"Try again later. If it persists, give the platform operator the request id: space must be freed or added.")
		return
	}
	// r.RemoteAddr is the client's address as a trusted proxy reports it
	// (service.Serving.TrustedProxies), else the peer's.
	s.Log.Error("request failed", "method", r.Method, "path", r.URL.Path, "client", r.RemoteAddr, "request_id", w.Header().Get(cmkapi.HeaderRequestID), "err", err)
	writeError(w, r, 500, cmkapi.CodeInternalError, "Internal error", "The request failed on the server; nothing was changed.", "Try again; if it persists, give the operator the request id.")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	// Links (the consent link) stay pasteable: & not \u0026. The answer is
	// application/json with nosniff, never rendered as HTML.
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, r *http.Request, status int, code, title, detail, hint string) {
	writeJSON(w, status, cmkapi.Error{
		Type:      cmkapi.ErrorTypeBase + code,
		Status:    status,
		ErrorCode: code,
		Title:     title,
		Detail:    detail,
		Hint:      hint,
		RequestID: w.Header().Get(cmkapi.HeaderRequestID),
	})
}
