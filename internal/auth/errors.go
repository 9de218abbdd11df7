package auth

import "errors"

// Sentinel reasons. Every error returned by this package's verification
// functions is a *TokenError wrapping exactly one of them.
var (
	// ErrMissingToken: no bearer token was presented (HTTP 401).
	ErrMissingToken = errors.New("missing bearer token")
	// ErrMalformed: the token or Authorization header cannot be parsed (HTTP 401).
	ErrMalformed = errors.New("malformed token")
	// ErrBadSignature: the signature does not verify or the algorithm is not
	// accepted (HTTP 401).
	ErrBadSignature = errors.New("invalid token signature")
	// ErrExpired: the token is past its exp claim plus Leeway (HTTP 401).
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid: the token is before its nbf/iat claim minus Leeway (HTTP 401).
	ErrNotYetValid = errors.New("token not yet valid")
	// ErrWrongIssuer: the iss claim is not the configured issuer (HTTP 401).
	ErrWrongIssuer = errors.New("wrong token issuer")
	// ErrWrongAudience: the aud claim does not contain the configured audience (HTTP 401).
	ErrWrongAudience = errors.New("wrong token audience")
	// ErrUnknownKey: the kid header names no key the verifier knows (HTTP 401).
	ErrUnknownKey = errors.New("unknown signing key")
	// ErrKeysUnavailable: the verifier could not fetch its key set, so the
	// token could not be checked at all (HTTP 503, not the caller's fault).
	ErrKeysUnavailable = errors.New("signing keys unavailable")
	// ErrAPIKeyMismatch: the x-api-key header does not match the token's
	// client_id (HTTP 401/403).
	ErrAPIKeyMismatch = errors.New("api key does not match token")
)

// TokenError is the error type returned by verification. Reason is one of the
// sentinel errors above; Detail is a human explanation that never contains
// the token itself.
type TokenError struct {
	Reason error
	Detail string
}

func (e *TokenError) Error() string {
	if e.Detail == "" {
		return e.Reason.Error()
	}
	return e.Reason.Error() + ": " + e.Detail
}

// Unwrap returns Reason so that errors.Is(err, ErrExpired) etc. work.
func (e *TokenError) Unwrap() error { return e.Reason }

func tokenErr(reason error, detail string) *TokenError {
	return &TokenError{Reason: reason, Detail: detail}
}
