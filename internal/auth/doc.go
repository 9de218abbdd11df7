// Package auth verifies the bearer tokens that authenticate every call to the
// cmk control plane and data plane, and mints tokens for local development.
//
// # What is verified
//
// A token is a JWS-signed JWT. Verification checks, in this order:
//
//   - the token is present and well formed (three base64url segments, JSON
//     header and payload, an "exp" claim; "exp", "nbf" and "iat" are JSON
//     numbers, never strings);
//   - the header has no "crit" parameter: this package implements no
//     critical extensions, so RFC 7515 requires refusing any token that
//     names one;
//   - the signing algorithm is pinned: ES256 for the dev [Issuer], RS256 or
//     ES256 for a [JWKSVerifier]. "none" and every HS* algorithm are always
//     refused, so a public key can never be abused as an HMAC secret;
//   - the "kid" header names a known key, and the key's type matches the
//     algorithm;
//   - the signature;
//   - the issuer ("iss") and audience ("aud") equal the configured values;
//   - the token is inside its validity window ("nbf"/"iat" .. "exp").
//
// The verified [Claims] list the orgs the caller holds and, per org, the
// permissions granted there (the "orgs" claim). Callers still have to check
// that the x-gw-ims-org-id header names an org the token holds
// ([Claims.HoldsOrg]/[Claims.Can]) and that x-api-key equals the token's
// client id ([Claims.CheckAPIKey]).
//
// # Errors
//
// Every failure is a *[TokenError] whose Reason is one of the sentinel errors
// (ErrMissingToken, ErrMalformed, ErrBadSignature, ...), so errors.Is works
// and an HTTP layer can map reasons to status codes, while Detail carries a
// human explanation and, where there is one, the remedy.
//
// # Clock leeway policy
//
// Expiry, not-before and issued-at are compared with a tolerance of [Leeway]
// (30 seconds) to absorb clock skew between the issuer and this service. A
// token is therefore accepted up to 30s after its "exp" and up to 30s before
// its "nbf". The clock is injectable (the Now fields) for tests.
//
// # What is never logged
//
// Tokens are credentials. This package never logs them and never puts a token,
// or any part of one, in an error message; details only name claims (issuer,
// audience, times, key ids) and never signatures or private key material.
package auth
