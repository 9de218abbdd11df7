package auth

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Leeway is the clock-skew tolerance applied to exp, nbf and iat. It is
// policy: a token is accepted up to 30s after it expires and up to 30s before
// it becomes valid.
const Leeway = 30 * time.Second

// maxTokenLen bounds the work done on attacker-supplied input.
const maxTokenLen = 16 << 10

// Verifier verifies a bearer token and returns its claims. Errors are
// *TokenError values wrapping one of the package's sentinel errors.
type Verifier interface {
	Verify(ctx context.Context, token string) (*Claims, error)
}

// wireClaims is the JSON payload of a token.
type wireClaims struct {
	jwt.RegisteredClaims
	Orgs     map[string][]string `json:"orgs,omitempty"`
	ClientID string              `json:"client_id,omitempty"`
	// Microsoft Entra access tokens name the calling app in appid (v1.0)
	// or azp (v2.0) and the issuing tenant in tid.
	AppID    string `json:"appid,omitempty"`
	AZP      string `json:"azp,omitempty"`
	TenantID string `json:"tid,omitempty"`
}

// UnmarshalJSON decodes the payload after checking that exp, nbf and iat,
// when present, are JSON numbers as RFC 7519 requires (NumericDate). The jwt
// library alone would also take a string such as "1700000000".
func (w *wireClaims) UnmarshalJSON(b []byte) error {
	// The same field matching as the decode below (including encoding/json's
	// case-insensitive keys and last-duplicate-wins), so what is checked is
	// what is used.
	var times struct {
		Exp json.RawMessage `json:"exp"`
		Nbf json.RawMessage `json:"nbf"`
		Iat json.RawMessage `json:"iat"`
	}
	if err := json.Unmarshal(b, &times); err != nil {
		return err
	}
	for _, c := range []struct {
		name string
		raw  json.RawMessage
	}{{"exp", times.Exp}, {"nbf", times.Nbf}, {"iat", times.Iat}} {
		if c.raw != nil && !isJSONNumber(c.raw) {
			return tokenErr(ErrMalformed, fmt.Sprintf("token claim %q is %s; exp, nbf and iat must be JSON numbers (seconds since 1970-01-01 UTC)", c.name, jsonKind(c.raw)))
		}
	}
	type plain wireClaims // without this method
	return json.Unmarshal(b, (*plain)(w))
}

// isJSONNumber reports whether raw (a valid JSON value) is a number.
func isJSONNumber(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9')
}

// jsonKind names the type of a JSON value for an error detail.
func jsonKind(raw json.RawMessage) string {
	switch raw = bytes.TrimSpace(raw); {
	case len(raw) == 0:
		return "empty"
	case raw[0] == '"':
		return "a string"
	case raw[0] == '{':
		return "an object"
	case raw[0] == '[':
		return "an array"
	case raw[0] == 't' || raw[0] == 'f':
		return "a boolean"
	case raw[0] == 'n':
		return "null"
	}
	return "not a number"
}

// keyLookup resolves the verification key for a kid and the token's (already
// allow-listed) algorithm. It returns a *TokenError on failure.
type keyLookup func(ctx context.Context, kid, alg string) (crypto.PublicKey, error)

// verifyConfig is what every verifier in this package has in common.
type verifyConfig struct {
	algs     []string
	issuer   string
	audience string
	now      func() time.Time
	lookup   keyLookup
}

func (vc verifyConfig) verify(ctx context.Context, token string) (*Claims, error) {
	if token == "" {
		return nil, tokenErr(ErrMissingToken, "no bearer token presented; send `Authorization: Bearer <token>`")
	}
	if len(token) > maxTokenLen {
		return nil, tokenErr(ErrMalformed, fmt.Sprintf("token is longer than %d bytes", maxTokenLen))
	}
	now := vc.now
	if now == nil {
		now = time.Now
	}
	p := jwt.NewParser(
		jwt.WithValidMethods(vc.algs),
		jwt.WithIssuer(vc.issuer),
		jwt.WithAudience(vc.audience),
		jwt.WithLeeway(Leeway),
		jwt.WithTimeFunc(now),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithStrictDecoding(),
	)
	var wc wireClaims
	var alg string
	_, err := p.ParseWithClaims(token, &wc, func(t *jwt.Token) (any, error) {
		alg = t.Method.Alg()
		if crit, ok := t.Header["crit"]; ok {
			// RFC 7515 4.1.11: a recipient must refuse a token whose crit
			// names an extension it does not understand, and this service
			// understands none.
			return nil, tokenErr(ErrMalformed, fmt.Sprintf("token header has a crit parameter (%s); this service supports no critical header extensions", clip(fmt.Sprint(crit))))
		}
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, tokenErr(ErrUnknownKey, "token header has no kid")
		}
		return vc.lookup(ctx, kid, alg)
	})
	if err != nil {
		return nil, vc.mapError(err, token, &wc, now())
	}
	c := &Claims{
		Subject:  wc.Subject,
		Issuer:   wc.Issuer,
		Audience: vc.audience,
		Orgs:     wc.Orgs,
		ClientID: wc.ClientID,
		AppID:    wc.AppID,
		TenantID: wc.TenantID,
	}
	if c.AppID == "" {
		c.AppID = wc.AZP
	}
	if wc.IssuedAt != nil {
		c.IssuedAt = wc.IssuedAt.UTC()
	}
	if wc.NotBefore != nil {
		c.NotBefore = wc.NotBefore.UTC()
	}
	if wc.ExpiresAt != nil {
		c.ExpiresAt = wc.ExpiresAt.UTC()
	}
	return c, nil
}

// mapError turns a jwt library error into a *TokenError. It never includes
// the token in the detail.
func (vc verifyConfig) mapError(err error, token string, wc *wireClaims, now time.Time) error {
	var te *TokenError
	if errors.As(err, &te) {
		return te
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return tokenErr(ErrMalformed, "token is not a well-formed JWT (header.payload.signature, base64url JSON)")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		if a := headerAlg(token); a != "" && !contains(vc.algs, a) {
			return tokenErr(ErrBadSignature, fmt.Sprintf("signing algorithm %q is not accepted (accepted: %s)",
				clip(a), strings.Join(vc.algs, ", ")))
		}
		return tokenErr(ErrBadSignature, "signature does not verify against the key named by the token's kid")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return tokenErr(ErrMalformed, "token has no exp claim; tokens must expire")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return tokenErr(ErrWrongIssuer, fmt.Sprintf("token issuer is %q, this service accepts %q", clip(wc.Issuer), vc.issuer))
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return tokenErr(ErrWrongAudience, fmt.Sprintf("token audience is %q, this service is %q",
			clip(strings.Join(wc.Audience, ",")), vc.audience))
	case errors.Is(err, jwt.ErrTokenExpired):
		at := "an unknown time"
		if wc.ExpiresAt != nil {
			at = wc.ExpiresAt.UTC().Format(time.RFC3339)
		}
		return tokenErr(ErrExpired, fmt.Sprintf("token expired at %s (now %s, leeway %s); mint a new one with `cmk token`",
			at, now.UTC().Format(time.RFC3339), Leeway))
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		var from time.Time
		if wc.NotBefore != nil {
			from = wc.NotBefore.Time
		}
		if wc.IssuedAt != nil && wc.IssuedAt.After(from) {
			from = wc.IssuedAt.Time
		}
		return tokenErr(ErrNotYetValid, fmt.Sprintf("token is not valid before %s (now %s, leeway %s); check the clocks of the issuer and this host",
			from.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), Leeway))
	default:
		return tokenErr(ErrMalformed, "token claims are invalid")
	}
}

// headerAlg extracts the alg of an (unverified) token, for error details only.
func headerAlg(token string) string {
	t, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
	if err != nil || t == nil {
		return ""
	}
	a, _ := t.Header["alg"].(string)
	return a
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// clip bounds attacker-controlled strings echoed in error details.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
