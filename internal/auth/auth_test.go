package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	testIss = "https://ims.example.test"
	testAud = "cmk"
	org1    = "ORG1@AdobeOrg"
	org2    = "ORG2@AdobeOrg"
)

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// fakeClock is a settable clock safe for concurrent reads.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: t0} }
func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}
func (c *fakeClock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newTestIssuer(t testing.TB, clk *fakeClock) *Issuer {
	t.Helper()
	iss := NewIssuer(newKey(t), testIss, testAud)
	iss.Now = clk.Now
	return iss
}

func testClaims() Claims {
	return Claims{
		Subject:  "alice@example.test",
		ClientID: "cmk-cli",
		Orgs: map[string][]string{
			org1: {PermManageCMK, PermDataRead},
			org2: {PermDataRead},
		},
	}
}

func mint(t testing.TB, iss *Issuer, c Claims, ttl time.Duration) string {
	t.Helper()
	tok, err := iss.Mint(c, ttl)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	return tok
}

// signRaw signs arbitrary claims with an arbitrary method/key, for attacks.
func signRaw(t testing.TB, m jwt.SigningMethod, key any, kid string, c jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

// signHeader signs claims with ES256 under kid, adding extra header
// parameters.
func signHeader(t testing.TB, key *ecdsa.PrivateKey, kid string, extra map[string]any, c jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	tok.Header["kid"] = kid
	for k, v := range extra {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

// mapClaims is validWire(now) as a map, so single claims can be given other
// JSON types.
func mapClaims(now time.Time, set map[string]any) jwt.MapClaims {
	m := jwt.MapClaims{
		"iss": testIss, "sub": "mallory", "aud": []string{testAud},
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"orgs": map[string][]string{org1: {PermManageCMK}},
	}
	for k, v := range set {
		if v == nil {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	return m
}

func validWire(now time.Time) wireClaims {
	return wireClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    testIss,
			Subject:   "mallory",
			Audience:  jwt.ClaimStrings{testAud},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
		},
		Orgs: map[string][]string{org1: {PermManageCMK}},
	}
}

func TestMintVerifyRoundTrip(t *testing.T) {
	clk := newClock()
	iss := newTestIssuer(t, clk)
	tok := mint(t, iss, testClaims(), time.Hour)

	got, err := iss.Verifier().Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("Verify: got err %v, want nil", err)
	}
	want := testClaims()
	want.Issuer, want.Audience = testIss, testAud
	want.IssuedAt, want.NotBefore, want.ExpiresAt = t0, t0, t0.Add(time.Hour)
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("Verify claims:\n got  %+v\n want %+v", *got, want)
	}

	// The header carries the pinned alg and the key's thumbprint as kid.
	hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	var h map[string]any
	if err := json.Unmarshal(hdr, &h); err != nil {
		t.Fatal(err)
	}
	if h["alg"] != "ES256" || h["kid"] != iss.KeyID() {
		t.Errorf("header: got alg=%v kid=%v, want alg=ES256 kid=%s", h["alg"], h["kid"], iss.KeyID())
	}
	wantKid, _ := KeyID(&iss.key.PublicKey)
	if got, want := iss.KeyID(), wantKid; got != want || len(got) != 43 {
		t.Errorf("KeyID: got %q, want %q (43 chars)", got, want)
	}

	if _, err := iss.Mint(testClaims(), 0); err == nil {
		t.Errorf("Mint with ttl 0: got nil error, want error")
	}
}

func TestVerifyRejects(t *testing.T) {
	clk := newClock()
	iss := newTestIssuer(t, clk)
	good := mint(t, iss, testClaims(), time.Hour)

	// Same key, different iss/aud.
	otherIss := NewIssuer(iss.key, "https://evil.example.test", testAud)
	otherIss.Now = clk.Now
	otherAud := NewIssuer(iss.key, testIss, "some-other-service")
	otherAud.Now = clk.Now

	// Another key: with its own kid (unknown) and with our kid (forged).
	stranger := newTestIssuer(t, clk)
	forger := newTestIssuer(t, clk)
	forger.kid = iss.kid

	pubDER, err := x509.MarshalPKIXPublicKey(&iss.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	pubRaw, _ := iss.key.PublicKey.Bytes()

	noExp := validWire(t0)
	noExp.ExpiresAt = nil

	// Tamper: swap in a payload granting more, keep the original signature.
	parts := strings.Split(good, ".")
	evil := validWire(t0)
	evil.Orgs = map[string][]string{org1: {PermManageCMK}, "VICTIM@AdobeOrg": {PermManageCMK}}
	evilJSON, _ := json.Marshal(evil)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(evilJSON) + "." + parts[2]

	// Flip one signature byte.
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[10] ^= 1
	badSig := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)

	tests := []struct {
		name  string
		token string
		at    time.Time
		want  error // nil = accepted
	}{
		{"valid", good, t0, nil},
		{"valid just before expiry", good, t0.Add(time.Hour - time.Second), nil},
		{"expired within leeway", good, t0.Add(time.Hour + Leeway - time.Second), nil},
		{"expired", good, t0.Add(time.Hour + Leeway + time.Second), ErrExpired},
		{"not yet valid within leeway", good, t0.Add(-Leeway + time.Second), nil},
		{"not yet valid", good, t0.Add(-Leeway - time.Second), ErrNotYetValid},
		{"wrong issuer", mint(t, otherIss, testClaims(), time.Hour), t0, ErrWrongIssuer},
		{"wrong audience", mint(t, otherAud, testClaims(), time.Hour), t0, ErrWrongAudience},
		{"forged same kid", mint(t, forger, testClaims(), time.Hour), t0, ErrBadSignature},
		{"unknown kid", mint(t, stranger, testClaims(), time.Hour), t0, ErrUnknownKey},
		{"no kid", signRaw(t, jwt.SigningMethodES256, iss.key, "", validWire(t0)), t0, ErrUnknownKey},
		{"alg none", signRaw(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, iss.kid, validWire(t0)), t0, ErrBadSignature},
		{"HS256 with public key PEM", signRaw(t, jwt.SigningMethodHS256, pubPEM, iss.kid, validWire(t0)), t0, ErrBadSignature},
		{"HS256 with public key DER", signRaw(t, jwt.SigningMethodHS256, pubDER, iss.kid, validWire(t0)), t0, ErrBadSignature},
		{"HS256 with raw point", signRaw(t, jwt.SigningMethodHS256, pubRaw, iss.kid, validWire(t0)), t0, ErrBadSignature},
		{"HS256 with JWKS", signRaw(t, jwt.SigningMethodHS256, iss.JWKS(), iss.kid, validWire(t0)), t0, ErrBadSignature},
		{"ES384", signRaw(t, jwt.SigningMethodES384, newP384(t), iss.kid, validWire(t0)), t0, ErrBadSignature},
		{"tampered payload", tampered, t0, ErrBadSignature},
		{"flipped signature bit", badSig, t0, ErrBadSignature},
		{"no exp", signRaw(t, jwt.SigningMethodES256, iss.key, iss.kid, noExp), t0, ErrMalformed},
		{"empty", "", t0, ErrMissingToken},
		{"one segment", "abc", t0, ErrMalformed},
		{"two segments", "abc.def", t0, ErrMalformed},
		{"four segments", good + ".x", t0, ErrMalformed},
		{"garbage segments", "!!!.###.$$$", t0, ErrMalformed},
		{"header not JSON", "bm90IGpzb24." + parts[1] + "." + parts[2], t0, ErrMalformed},
		{"payload not JSON", parts[0] + ".bm90IGpzb24." + parts[2], t0, ErrMalformed},
		{"huge", strings.Repeat("a", maxTokenLen+1), t0, ErrMalformed},

		// Registered times are JSON numbers; fractions are numbers too.
		{"numeric claims as a map", signRaw(t, jwt.SigningMethodES256, iss.key, iss.kid, mapClaims(t0, nil)), t0, nil},
		{"fractional exp", signRaw(t, jwt.SigningMethodES256, iss.key, iss.kid, mapClaims(t0, map[string]any{"exp": float64(t0.Unix()) + 3600.5})), t0, nil},
		{"string exp", signRaw(t, jwt.SigningMethodES256, iss.key, iss.kid, mapClaims(t0, map[string]any{"exp": fmt.Sprint(t0.Add(time.Hour).Unix())})), t0, ErrMalformed},
		{"string exp, upper-case key", signRaw(t, jwt.SigningMethodES256, iss.key, iss.kid, mapClaims(t0, map[string]any{"exp": nil, "EXP": fmt.Sprint(t0.Add(time.Hour).Unix())})), t0, ErrMalformed},
		{"string nbf", signRaw(t, jwt.SigningMethodES256, iss.key, iss.kid, mapClaims(t0, map[string]any{"nbf": fmt.Sprint(t0.Unix())})), t0, ErrMalformed},
		{"string iat", signRaw(t, jwt.SigningMethodES256, iss.key, iss.kid, mapClaims(t0, map[string]any{"iat": fmt.Sprint(t0.Unix())})), t0, ErrMalformed},
		{"null exp", signRaw(t, jwt.SigningMethodES256, iss.key, iss.kid, mapClaims(t0, map[string]any{"exp": json.RawMessage("null")})), t0, ErrMalformed},
		{"boolean iat", signRaw(t, jwt.SigningMethodES256, iss.key, iss.kid, mapClaims(t0, map[string]any{"iat": true})), t0, ErrMalformed},
		{"object nbf", signRaw(t, jwt.SigningMethodES256, iss.key, iss.kid, mapClaims(t0, map[string]any{"nbf": map[string]int{"s": 1}})), t0, ErrMalformed},

		// No critical header extension is understood, so any crit is refused.
		{"crit names a claim", signHeader(t, iss.key, iss.kid, map[string]any{"crit": []string{"exp"}, "exp": t0.Unix()}, validWire(t0)), t0, ErrMalformed},
		{"crit names b64", signHeader(t, iss.key, iss.kid, map[string]any{"crit": []string{"b64"}, "b64": false}, validWire(t0)), t0, ErrMalformed},
		{"crit empty", signHeader(t, iss.key, iss.kid, map[string]any{"crit": []string{}}, validWire(t0)), t0, ErrMalformed},
		{"crit null", signHeader(t, iss.key, iss.kid, map[string]any{"crit": nil}, validWire(t0)), t0, ErrMalformed},
		{"other unknown header", signHeader(t, iss.key, iss.kid, map[string]any{"x5t": "abc"}, validWire(t0)), t0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk.Set(tt.at)
			got, err := iss.Verifier().Verify(context.Background(), tt.token)
			if tt.want == nil {
				if err != nil || got == nil {
					t.Fatalf("Verify: got err %v, want accepted", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify: got err %v, want %v", err, tt.want)
			}
			if got != nil {
				t.Errorf("Verify: got claims %+v alongside error, want nil", got)
			}
			var te *TokenError
			if !errors.As(err, &te) || te.Detail == "" {
				t.Errorf("Verify: got %T %v, want *TokenError with a Detail", err, err)
			}
			if tt.token != "" && len(tt.token) > 8 && strings.Contains(err.Error(), tt.token) {
				t.Errorf("error message contains the token: %v", err)
			}
		})
	}
}

func newP384(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestErrorDetails(t *testing.T) {
	clk := newClock()
	iss := newTestIssuer(t, clk)
	tok := mint(t, iss, testClaims(), time.Hour)
	clk.Advance(2 * time.Hour)
	_, err := iss.Verifier().Verify(context.Background(), tok)
	var te *TokenError
	if !errors.As(err, &te) {
		t.Fatalf("got %T %v, want *TokenError", err, err)
	}
	if got, want := te.Reason, ErrExpired; got != want {
		t.Errorf("Reason: got %v, want %v", got, want)
	}
	for _, want := range []string{"2026-03-04T06:06:07Z", "`cmk token`"} {
		if !strings.Contains(te.Detail, want) {
			t.Errorf("Detail: got %q, want it to mention %q", te.Detail, want)
		}
	}

	clk.Set(t0)
	_, err = iss.Verifier().Verify(context.Background(), signRaw(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, iss.kid, validWire(t0)))
	if got, want := err.Error(), `"none" is not accepted`; !strings.Contains(got, want) {
		t.Errorf("alg none error: got %q, want it to contain %q", got, want)
	}
}

// TestStrictnessDetails checks that the refusals of numeric claims and crit
// say what was wrong.
func TestStrictnessDetails(t *testing.T) {
	clk := newClock()
	iss := newTestIssuer(t, clk)
	for _, c := range []struct {
		token string
		want  string
	}{
		{signRaw(t, jwt.SigningMethodES256, iss.key, iss.kid, mapClaims(t0, map[string]any{"exp": "1772604367"})),
			`token claim "exp" is a string; exp, nbf and iat must be JSON numbers`},
		{signRaw(t, jwt.SigningMethodES256, iss.key, iss.kid, mapClaims(t0, map[string]any{"iat": false})),
			`token claim "iat" is a boolean`},
		{signHeader(t, iss.key, iss.kid, map[string]any{"crit": []string{"b64"}}, validWire(t0)),
			"token header has a crit parameter ([b64]); this service supports no critical header extensions"},
	} {
		_, err := iss.Verifier().Verify(context.Background(), c.token)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Verify() error = %v, want it to contain %q", err, c.want)
		}
	}
}

func TestClaimsCanHoldsOrg(t *testing.T) {
	c := testClaims()
	c.Orgs["EMPTY@AdobeOrg"] = nil
	var nilClaims *Claims
	tests := []struct {
		name      string
		c         *Claims
		org, perm string
		holds     bool
		can       bool
	}{
		{"manage in org1", &c, org1, PermManageCMK, true, true},
		{"read in org1", &c, org1, PermDataRead, true, true},
		{"write not granted", &c, org1, PermDataWrite, true, false},
		{"manage not in org2", &c, org2, PermManageCMK, true, false},
		{"org ids are case-sensitive", &c, strings.ToLower(org1), PermManageCMK, false, false},
		{"org not held", &c, "OTHER@AdobeOrg", PermDataRead, false, false},
		{"held with no perms", &c, "EMPTY@AdobeOrg", PermDataRead, true, false},
		{"empty org", &c, "", PermDataRead, false, false},
		{"empty perm", &c, org1, "", true, false},
		{"nil claims", nilClaims, org1, PermDataRead, false, false},
		{"nil orgs", &Claims{}, org1, PermDataRead, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, want := tt.c.HoldsOrg(tt.org), tt.holds; got != want {
				t.Errorf("HoldsOrg(%q): got %v, want %v", tt.org, got, want)
			}
			if got, want := tt.c.Can(tt.org, tt.perm), tt.can; got != want {
				t.Errorf("Can(%q, %q): got %v, want %v", tt.org, tt.perm, got, want)
			}
		})
	}
}

func TestCheckAPIKey(t *testing.T) {
	c := testClaims()
	tests := []struct {
		name string
		c    *Claims
		key  string
		ok   bool
	}{
		{"match", &c, "cmk-cli", true},
		{"mismatch", &c, "other", false},
		{"missing header", &c, "", false},
		{"token without client_id", &Claims{}, "cmk-cli", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.CheckAPIKey(tt.key)
			if got, want := err == nil, tt.ok; got != want {
				t.Fatalf("CheckAPIKey(%q): got err %v, want ok=%v", tt.key, err, want)
			}
			if err != nil && !errors.Is(err, ErrAPIKeyMismatch) {
				t.Errorf("CheckAPIKey: got %v, want ErrAPIKeyMismatch", err)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		name    string
		headers []string
		want    string
		wantErr error
	}{
		{"ok", []string{"Bearer abc.def.ghi"}, "abc.def.ghi", nil},
		{"scheme case-insensitive", []string{"bearer abc.def.ghi"}, "abc.def.ghi", nil},
		{"extra spaces", []string{"  Bearer   abc.def.ghi  "}, "abc.def.ghi", nil},
		{"none", nil, "", ErrMissingToken},
		{"empty", []string{""}, "", ErrMissingToken},
		{"scheme only", []string{"Bearer"}, "", ErrMalformed},
		{"scheme and space", []string{"Bearer    "}, "", ErrMalformed},
		{"basic", []string{"Basic dXNlcjpwYXNz"}, "", ErrMalformed},
		{"no scheme", []string{"abc.def.ghi"}, "", ErrMalformed},
		{"space in token", []string{"Bearer abc def"}, "", ErrMalformed},
		{"bad chars", []string{"Bearer abc\"def"}, "", ErrMalformed},
		{"two headers", []string{"Bearer a.b.c", "Bearer d.e.f"}, "", ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			for _, h := range tt.headers {
				r.Header.Add("Authorization", h)
			}
			got, err := BearerToken(r)
			if tt.wantErr == nil {
				if err != nil || got != tt.want {
					t.Fatalf("BearerToken: got %q, %v; want %q, nil", got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("BearerToken: got %q, %v; want error %v", got, err, tt.wantErr)
			}
		})
	}
}

// jwksServer serves a swappable key set and counts fetches.
type jwksServer struct {
	*httptest.Server
	body   atomic.Pointer[[]byte]
	status atomic.Int32
	hits   atomic.Int32
}

func newJWKSServer(t *testing.T, body []byte) *jwksServer {
	s := &jwksServer{}
	s.set(body)
	s.status.Store(http.StatusOK)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if st := int(s.status.Load()); st != http.StatusOK {
			w.WriteHeader(st)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(b []byte) { s.body.Store(&b) }

func mergeJWKS(t *testing.T, sets ...[]byte) []byte {
	var all jwkSet
	for _, b := range sets {
		var s jwkSet
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		all.Keys = append(all.Keys, s.Keys...)
	}
	b, _ := json.Marshal(all)
	return b
}

func TestJWKSVerifierRotation(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	a := newTestIssuer(t, clk)
	b := newTestIssuer(t, clk)
	srv := newJWKSServer(t, a.JWKS())
	v, err := NewJWKSVerifier(srv.URL+"/jwks.json", testIss, testAud, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	v.Now = clk.Now
	tokA := mint(t, a, testClaims(), 3*time.Hour)
	tokB := mint(t, b, testClaims(), 3*time.Hour)

	steps := []struct {
		name     string
		advance  time.Duration
		serve    []byte // nil = unchanged
		token    string
		wantErr  error
		wantHits int32
	}{
		{"first use fetches", 0, nil, tokA, nil, 1},
		{"cached", 0, nil, tokA, nil, 1},
		{"rotated to A+B, B unknown but refetch rate-limited", 0, mergeJWKS(t, a.JWKS(), b.JWKS()), tokB, ErrUnknownKey, 1},
		{"still rate-limited after 59s", 59 * time.Second, nil, tokB, ErrUnknownKey, 1},
		{"after a minute unknown kid refetches", 2 * time.Second, nil, tokB, nil, 2},
		{"A still in the set", 0, nil, tokA, nil, 2},
		{"A withdrawn, still cached within max age", 0, b.JWKS(), tokA, nil, 2},
		{"set older than max age is refetched, A gone", JWKSMaxAge, nil, tokA, ErrUnknownKey, 3},
		{"B fine without another fetch", 0, nil, tokB, nil, 3},
		{"forged kid flood is rate-limited", 0, nil, mint(t, newTestIssuer(t, clk), testClaims(), time.Hour), ErrUnknownKey, 3},
	}
	for _, st := range steps {
		clk.Advance(st.advance)
		if st.serve != nil {
			srv.set(st.serve)
		}
		_, err := v.Verify(ctx, st.token)
		if st.wantErr == nil && err != nil || st.wantErr != nil && !errors.Is(err, st.wantErr) {
			t.Fatalf("%s: Verify: got err %v, want %v", st.name, err, st.wantErr)
		}
		if got, want := srv.hits.Load(), st.wantHits; got != want {
			t.Fatalf("%s: JWKS fetches: got %d, want %d", st.name, got, want)
		}
	}
}

func TestJWKSVerifierKeysAndAlgs(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	ec := newTestIssuer(t, clk)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaKid, _ := KeyID(&rsaKey.PublicKey)
	rsaJWK, err := publicJWK(&rsaKey.PublicKey, rsaKid)
	if err != nil {
		t.Fatal(err)
	}
	rsaSet, _ := json.Marshal(jwkSet{Keys: []jwk{rsaJWK}})
	srv := newJWKSServer(t, mergeJWKS(t, ec.JWKS(), rsaSet))
	v, err := NewJWKSVerifier(srv.URL, testIss, testAud, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	v.Now = clk.Now

	rsaPubDER := x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)
	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"ES256", mint(t, ec, testClaims(), time.Hour), nil},
		{"RS256", signRaw(t, jwt.SigningMethodRS256, rsaKey, rsaKid, validWire(t0)), nil},
		{"RS512 refused", signRaw(t, jwt.SigningMethodRS512, rsaKey, rsaKid, validWire(t0)), ErrBadSignature},
		{"PS256 refused", signRaw(t, jwt.SigningMethodPS256, rsaKey, rsaKid, validWire(t0)), ErrBadSignature},
		{"HS256 with RSA public key", signRaw(t, jwt.SigningMethodHS256, rsaPubDER, rsaKid, validWire(t0)), ErrBadSignature},
		{"ES256 naming the RSA kid", signRaw(t, jwt.SigningMethodES256, ec.key, rsaKid, validWire(t0)), ErrBadSignature},
		{"alg none", signRaw(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, rsaKid, validWire(t0)), ErrBadSignature},
		{"expired RS256", signRaw(t, jwt.SigningMethodRS256, rsaKey, rsaKid, validWire(t0.Add(-2*time.Hour))), ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := v.Verify(ctx, tt.token)
			if tt.want == nil {
				if err != nil || got == nil {
					t.Fatalf("Verify: got err %v, want accepted", err)
				}
				if !got.Can(org1, PermManageCMK) {
					t.Errorf("Can(org1, manage): got false, want true")
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify: got err %v, want %v", err, tt.want)
			}
		})
	}
}

func TestJWKSVerifierUnavailable(t *testing.T) {
	clk := newClock()
	iss := newTestIssuer(t, clk)
	srv := newJWKSServer(t, iss.JWKS())
	srv.status.Store(http.StatusInternalServerError)
	v, err := NewJWKSVerifier(srv.URL, testIss, testAud, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	v.Now = clk.Now
	tok := mint(t, iss, testClaims(), 3*time.Hour)
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrKeysUnavailable) {
		t.Fatalf("Verify with JWKS down: got %v, want ErrKeysUnavailable", err)
	}
	// Recovery waits out the rate limit.
	srv.status.Store(http.StatusOK)
	clk.Advance(JWKSMinRefreshInterval)
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("Verify after recovery: got %v, want nil", err)
	}
	// A failed periodic refresh keeps the previous keys.
	srv.status.Store(http.StatusBadGateway)
	clk.Advance(JWKSMaxAge)
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("Verify with stale keys and JWKS down: got %v, want nil", err)
	}
	if got, want := srv.hits.Load(), int32(3); got != want {
		t.Errorf("JWKS fetches: got %d, want %d", got, want)
	}
}

func TestNewJWKSVerifierArgs(t *testing.T) {
	tests := []struct {
		url, iss, aud string
		ok            bool
	}{
		{"https://ims.example.test/keys", testIss, testAud, true},
		{"ftp://ims.example.test/keys", testIss, testAud, false},
		{"/keys", testIss, testAud, false},
		{"https://ims.example.test/keys", "", testAud, false},
		{"https://ims.example.test/keys", testIss, "", false},
	}
	for _, tt := range tests {
		_, err := NewJWKSVerifier(tt.url, tt.iss, tt.aud, nil)
		if got, want := err == nil, tt.ok; got != want {
			t.Errorf("NewJWKSVerifier(%q, %q, %q): got err %v, want ok=%v", tt.url, tt.iss, tt.aud, err, want)
		}
	}
}

func TestParseJWKSSkipsUnusable(t *testing.T) {
	clk := newClock()
	iss := newTestIssuer(t, clk)
	var set jwkSet
	json.Unmarshal(iss.JWKS(), &set)
	good := set.Keys[0]
	enc := good
	enc.Kid, enc.Use = "enc", "enc"
	noKid := good
	noKid.Kid = ""
	badX := good
	badX.Kid, badX.X = "badx", "AAAA"
	weakRSA, _ := rsa.GenerateKey(rand.Reader, 1024)
	weak, _ := publicJWK(&weakRSA.PublicKey, "weak")
	b, _ := json.Marshal(jwkSet{Keys: []jwk{good, enc, noKid, badX, weak}})
	keys, err := parseJWKS(b)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(keys), 1; got != want {
		t.Errorf("usable keys: got %d (%v), want %d", got, keys, want)
	}
	if _, ok := keys[iss.kid]; !ok {
		t.Errorf("key %q: got missing, want present", iss.kid)
	}
	if _, err := parseJWKS([]byte(`{"keys":[]}`)); err == nil {
		t.Errorf("empty set: got nil error, want error")
	}
}

func TestLoadOrCreateIssuer(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "keys")
	path := filepath.Join(dir, "issuer.pem")

	first, err := LoadOrCreateIssuer(path, testIss, testAud)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("key file mode: got %04o, want %04o", got, want)
	}
	dst, _ := os.Stat(dir)
	if got, want := dst.Mode().Perm(), os.FileMode(0o700); got != want {
		t.Errorf("key dir mode: got %04o, want %04o", got, want)
	}

	second, err := LoadOrCreateIssuer(path, testIss, testAud)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if got, want := second.KeyID(), first.KeyID(); got != want {
		t.Errorf("reloaded kid: got %q, want %q", got, want)
	}
	// A token from the first instance verifies with the second.
	tok := mint(t, first, testClaims(), time.Minute)
	if _, err := second.Verifier().Verify(context.Background(), tok); err != nil {
		t.Errorf("verify across reload: got %v, want nil", err)
	}

	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadOrCreateIssuer(path, testIss, testAud)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("load with mode %04o: got %v, want error telling to chmod 600", mode, err)
		}
	}

	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("not a key"), 0o600)
	if _, err := LoadOrCreateIssuer(bad, testIss, testAud); err == nil {
		t.Errorf("load garbage: got nil error, want error")
	}
}
