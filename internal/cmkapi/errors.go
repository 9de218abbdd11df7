package cmkapi

import "fmt"

// Error is the JSON body of every failed request: a stable code clients
// branch on, a title, what was wrong, and what to do.
type Error struct {
	Type      string `json:"type"`
	Status    int    `json:"status"`
	ErrorCode string `json:"errorCode"`
	Title     string `json:"title"`
	Detail    string `json:"detail"`
	Hint      string `json:"hint,omitempty"`
	RequestID string `json:"requestId,omitempty"`
}

func (e *Error) Error() string {
	msg := e.Title
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return fmt.Sprintf("%s (%s, HTTP %d)", msg, e.ErrorCode, e.Status)
}

// ErrorTypeBase prefixes an error code to make Error.Type.
const ErrorTypeBase = "https://cmk.dev/errors/"

// Error codes, stable for clients. Each name spells its value.
const (
	CodeMissingToken            = "MISSING_TOKEN"
	CodeInvalidToken            = "INVALID_TOKEN"
	CodeTokenExpired            = "TOKEN_EXPIRED"
	CodeInvalidAPIKey           = "INVALID_API_KEY"
	CodeMissingOrgHeader        = "MISSING_ORG_HEADER"
	CodeOrgNotInToken           = "ORG_NOT_IN_TOKEN"
	CodePermissionRequired      = "PERMISSION_REQUIRED"
	CodeMalformedRequestBody    = "MALFORMED_REQUEST_BODY"
	CodeInvalidField            = "INVALID_FIELD"
	CodeOrgMismatch             = "ORG_MISMATCH"
	CodeInvalidConfigType       = "INVALID_CONFIG_TYPE"
	CodeUnsupportedProviderType = "UNSUPPORTED_PROVIDER_TYPE"
	CodeInvalidKeyIdentifier    = "INVALID_KEY_IDENTIFIER"
	CodeConfigNameTaken         = "CONFIG_NAME_TAKEN"
	CodeConfigJobInProgress     = "CONFIG_JOB_IN_PROGRESS"
	CodeCMKIrreversible         = "CMK_IRREVERSIBLE"
	CodeNotFound                = "NOT_FOUND"
	CodeSandboxExists           = "SANDBOX_EXISTS"
	CodeServiceUnavailable      = "SERVICE_UNAVAILABLE" // 503, with Retry-After when the database is unreachable
	CodeInternalError           = "INTERNAL_ERROR"
	CodeCMKNotEnabled           = "CMK_NOT_ENABLED"
	CodeCMKKeyRevoked           = "CMK_KEY_REVOKED"
	CodeCMKKeyUnavailable       = "CMK_KEY_UNAVAILABLE"
	CodeMissingSandboxHeader    = "MISSING_SANDBOX_HEADER"
	CodeSandboxNotFound         = "SANDBOX_NOT_FOUND"
	CodeDataIntegrityFailure    = "DATA_INTEGRITY_FAILURE"
	CodeTooLarge                = "TOO_LARGE" // no longer sent: RECORD_TOO_LARGE replaced it
	CodeKeyInUse                = "KEY_IN_USE"
	CodeLimitReached            = "LIMIT_REACHED"
	CodeConfirmationRequired    = "CONFIRMATION_REQUIRED"
	CodeRequestBodyUnreadable   = "REQUEST_BODY_UNREADABLE"
	// 429s, with Retry-After: the org's own allowance for a route class
	// (Route.Limit), or the cap on on-demand calls to one key vault across
	// every org.
	CodeRateLimited          = "RATE_LIMITED"
	CodeVaultRateLimited     = "VAULT_RATE_LIMITED"
	CodeRecordTooLarge       = "RECORD_TOO_LARGE"       // 413: a profile record over the size limit
	CodeRecordTooDeep        = "RECORD_TOO_DEEP"        // 400: a profile record nested past the depth limit
	CodeProfileQuotaExceeded = "PROFILE_QUOTA_EXCEEDED" // 507: the org's profile records or their bytes
	CodeFileTooLarge         = "FILE_TOO_LARGE"         // 413: a lake file over the size limit
	CodeLakeQuotaExceeded    = "LAKE_QUOTA_EXCEEDED"    // 507: the org's lake files' bytes
	CodeConsentInvalid       = "CONSENT_INVALID"        // a consent redirect that binds nothing
	CodeStorageFull          = "STORAGE_FULL"           // 507: the service's disk or database has no room; nothing was stored
)
