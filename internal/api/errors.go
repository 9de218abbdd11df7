package api

import (
	"encoding/json"
	"net/http"
)

// apiError is the JSON error body of every failed request: a stable code
// clients branch on, a title, what was wrong, and what to do.
type apiError struct {
	Type      string `json:"type"`
	Status    int    `json:"status"`
	ErrorCode string `json:"errorCode"`
	Title     string `json:"title"`
	Detail    string `json:"detail"`
	Hint      string `json:"hint,omitempty"`
	RequestID string `json:"requestId,omitempty"`
}

// Error codes, stable for clients.
const (
	codeMissingToken     = "MISSING_TOKEN"
	codeInvalidToken     = "INVALID_TOKEN"
	codeTokenExpired     = "TOKEN_EXPIRED"
	codeAPIKey           = "INVALID_API_KEY"
	codeMissingOrg       = "MISSING_ORG_HEADER"
	codeOrgNotInToken    = "ORG_NOT_IN_TOKEN"
	codeForbidden        = "PERMISSION_REQUIRED"
	codeBadJSON          = "MALFORMED_REQUEST_BODY"
	codeBadField         = "INVALID_FIELD"
	codeOrgMismatch      = "ORG_MISMATCH"
	codeBadConfigType    = "INVALID_CONFIG_TYPE"
	codeBadProvider      = "UNSUPPORTED_PROVIDER_TYPE"
	codeBadKeyIdentifier = "INVALID_KEY_IDENTIFIER"
	codeNameTaken        = "CONFIG_NAME_TAKEN"
	codeJobActive        = "CONFIG_JOB_IN_PROGRESS"
	codeIrreversible     = "CMK_IRREVERSIBLE"
	codeNotFound         = "NOT_FOUND"
	codeSandboxExists    = "SANDBOX_EXISTS"
	codeUnavailable      = "SERVICE_UNAVAILABLE"
	codeInternal         = "INTERNAL_ERROR"
	codeNotEnabled       = "CMK_NOT_ENABLED"
	codeKeyRevoked       = "CMK_KEY_REVOKED"
	codeKeyUnavailable   = "CMK_KEY_UNAVAILABLE"
	codeMissingSandbox   = "MISSING_SANDBOX_HEADER"
	codeSandboxNotFound  = "SANDBOX_NOT_FOUND"
	codeCorrupt          = "DATA_INTEGRITY_FAILURE"
	codeTooLarge         = "TOO_LARGE"
	codeKeyInUse         = "KEY_IN_USE"
	codeTooMany          = "LIMIT_REACHED"
	codeConfirm          = "CONFIRMATION_REQUIRED"
	codeBadBody          = "REQUEST_BODY_UNREADABLE"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, r *http.Request, status int, code, title, detail, hint string) {
	writeJSON(w, status, apiError{
		Type:      "https://cmk.dev/errors/" + code,
		Status:    status,
		ErrorCode: code,
		Title:     title,
		Detail:    detail,
		Hint:      hint,
		RequestID: w.Header().Get("x-request-id"),
	})
}
