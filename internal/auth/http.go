package auth

import (
	"net/http"
	"strings"
)

// BearerToken extracts the token from the request's `Authorization: Bearer
// <token>` header. It returns a *TokenError wrapping ErrMissingToken when
// there is no Authorization header (or it is empty) and ErrMalformed when the
// header is not a single well-formed Bearer credential. The token is not
// verified.
func BearerToken(r *http.Request) (string, error) {
	vals := r.Header.Values("Authorization")
	switch {
	case len(vals) == 0 || (len(vals) == 1 && strings.TrimSpace(vals[0]) == ""):
		return "", tokenErr(ErrMissingToken, "no Authorization header; send `Authorization: Bearer <token>`")
	case len(vals) > 1:
		return "", tokenErr(ErrMalformed, "more than one Authorization header")
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", tokenErr(ErrMalformed, "Authorization header must use the Bearer scheme: `Authorization: Bearer <token>`")
	}
	tok = strings.TrimLeft(tok, " ")
	if tok == "" {
		return "", tokenErr(ErrMissingToken, "Authorization header has the Bearer scheme but no token")
	}
	if len(tok) > maxTokenLen {
		return "", tokenErr(ErrMalformed, "bearer token is too long")
	}
	for i := 0; i < len(tok); i++ {
		if !isToken68(tok[i]) {
			return "", tokenErr(ErrMalformed, "bearer token contains characters not allowed in a token (RFC 6750)")
		}
	}
	return tok, nil
}

// isToken68 reports whether c may appear in an RFC 6750 b64token.
func isToken68(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '='
}
