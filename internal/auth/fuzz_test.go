package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzVerify feeds arbitrary strings to the verifier: it must never panic,
// must refuse with a *TokenError that does not quote the token, and must
// accept only tokens whose claims carry an expiry.
func FuzzVerify(f *testing.F) {
	clk := newClock()
	iss := newTestIssuer(f, clk)
	good := mint(f, iss, testClaims(), time.Hour)
	parts := strings.Split(good, ".")
	for _, s := range []string{
		good,
		signRaw(f, jwt.SigningMethodES256, iss.key, iss.kid, mapClaims(t0, map[string]any{"exp": "1772604367"})),
		signHeader(f, iss.key, iss.kid, map[string]any{"crit": []string{"exp"}}, validWire(t0)),
		signRaw(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, iss.kid, validWire(t0)),
		parts[0] + "." + parts[1] + ".",
		parts[0] + ".." + parts[2],
		"", "a.b.c", "..", "e30.e30.e30",
	} {
		f.Add(s)
	}
	v := iss.Verifier()
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(context.Background(), token)
		if err != nil {
			var te *TokenError
			if !errors.As(err, &te) || te.Detail == "" {
				t.Fatalf("Verify(%q) error = %T %v, want a *TokenError with a Detail", token, err, err)
			}
			if len(token) > 16 && strings.Contains(err.Error(), token) {
				t.Fatalf("Verify(%q) error quotes the token: %v", token, err)
			}
			return
		}
		if c == nil || c.ExpiresAt.IsZero() {
			t.Fatalf("Verify(%q) = %+v, nil; want claims with an expiry", token, c)
		}
	})
}

// FuzzSignedToken signs arbitrary header and payload bytes with the
// issuer's own key, so the fuzzer reaches the checks after the signature:
// whatever is accepted has ES256 and the issuer's kid, no crit, and numeric
// exp, nbf and iat (under any capitalisation encoding/json would match).
func FuzzSignedToken(f *testing.F) {
	clk := newClock()
	iss := newTestIssuer(f, clk)
	hdr := func(extra string) string { return `{"alg":"ES256","kid":"` + iss.kid + `","typ":"JWT"` + extra + `}` }
	payload := func(exp string) string {
		return `{"iss":"` + testIss + `","aud":"` + testAud + `","sub":"s","exp":` + exp + `,"orgs":{"` + org1 + `":["` + PermDataRead + `"]}}`
	}
	future := `1772604367`
	for _, s := range [][2]string{
		{hdr(""), payload(future)},
		{hdr(""), payload(`"` + future + `"`)},
		{hdr(""), payload(future + `,"EXP":"` + future + `"`)},
		{hdr(""), payload(future + `,"nbf":null`)},
		{hdr(""), payload(future + `,"iat":1.5e9`)},
		{hdr(`,"crit":["exp"]`), payload(future)},
		{hdr(`,"crit":[]`), payload(future)},
		{`{"alg":"none","kid":"` + iss.kid + `"}`, payload(future)},
		{hdr(""), `[]`},
		{`{}`, `{}`},
	} {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	v := iss.Verifier()
	enc := base64.RawURLEncoding
	f.Fuzz(func(t *testing.T, header, payload []byte) {
		input := enc.EncodeToString(header) + "." + enc.EncodeToString(payload)
		sig, err := jwt.SigningMethodES256.Sign(input, iss.key)
		if err != nil {
			t.Fatal(err)
		}
		token := input + "." + enc.EncodeToString(sig)
		c, err := v.Verify(context.Background(), token)
		if err != nil {
			var te *TokenError
			if !errors.As(err, &te) {
				t.Fatalf("Verify(%s . %s) error = %T %v, want a *TokenError", header, payload, err, err)
			}
			return
		}
		var h map[string]any
		if json.Unmarshal(header, &h) != nil || h["alg"] != "ES256" || h["kid"] != iss.kid {
			t.Fatalf("Verify accepted header %s; want alg ES256 and kid %s", header, iss.kid)
		}
		if _, ok := h["crit"]; ok {
			t.Fatalf("Verify accepted header %s with crit", header)
		}
		var p map[string]json.RawMessage
		if err := json.Unmarshal(payload, &p); err != nil {
			t.Fatalf("Verify accepted payload %s that is not a JSON object: %v", payload, err)
		}
		for k, raw := range p {
			for _, name := range []string{"exp", "nbf", "iat"} {
				if strings.EqualFold(k, name) && !isJSONNumber(raw) {
					t.Fatalf("Verify accepted payload %s: %s is %s", payload, k, raw)
				}
			}
		}
		if c.ExpiresAt.IsZero() || c.ExpiresAt.Before(t0.Add(-Leeway)) {
			t.Fatalf("Verify accepted payload %s with expiry %v at %v", payload, c.ExpiresAt, t0)
		}
	})
}
