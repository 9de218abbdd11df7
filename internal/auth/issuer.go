package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Issuer signs tokens locally with an ES256 (P-256) key. It backs `cmk dev`,
// `cmk token` and tests; production verifies tokens from a real identity
// provider with a JWKSVerifier.
type Issuer struct {
	// Now is the clock used by Mint and by Verifier(); nil means time.Now.
	// Set it before use; it is read, not synchronised.
	Now func() time.Time

	key      *ecdsa.PrivateKey
	kid      string
	issuer   string
	audience string
}

// NewIssuer returns an issuer signing with key. It panics if key is not a
// P-256 key (a programming error; LoadOrCreateIssuer reports it as an error).
func NewIssuer(key *ecdsa.PrivateKey, issuer, audience string) *Issuer {
	if key == nil || key.Curve != elliptic.P256() {
		panic("auth: NewIssuer needs a P-256 ECDSA key")
	}
	kid, err := KeyID(&key.PublicKey)
	if err != nil {
		panic("auth: NewIssuer: " + err.Error())
	}
	return &Issuer{key: key, kid: kid, issuer: issuer, audience: audience}
}

// KeyID returns the kid of the issuer's key.
func (i *Issuer) KeyID() string { return i.kid }

func (i *Issuer) now() time.Time {
	if i.Now != nil {
		return i.Now()
	}
	return time.Now()
}

// Mint signs a token for c, valid for ttl from now. It sets iss, aud, iat,
// nbf and exp (c's values for those are ignored) and the kid header; Subject,
// Orgs and ClientID are taken from c.
func (i *Issuer) Mint(c Claims, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("auth: mint: ttl must be positive, got %s", ttl)
	}
	now := i.now().Truncate(time.Second)
	wc := wireClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    i.issuer,
			Subject:   c.Subject,
			Audience:  jwt.ClaimStrings{i.audience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Orgs:     c.Orgs,
		ClientID: c.ClientID,
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, wc)
	t.Header["kid"] = i.kid
	s, err := t.SignedString(i.key)
	if err != nil {
		return "", fmt.Errorf("auth: mint: %w", err)
	}
	return s, nil
}

// Verifier returns a verifier for tokens minted by this issuer: ES256 only,
// this issuer's key id only, this issuer's iss and aud, the issuer's clock.
func (i *Issuer) Verifier() Verifier {
	pub := &i.key.PublicKey
	return &issuerVerifier{cfg: verifyConfig{
		algs:     []string{"ES256"},
		issuer:   i.issuer,
		audience: i.audience,
		now:      i.now,
		lookup: func(_ context.Context, kid, _ string) (crypto.PublicKey, error) {
			if kid != i.kid {
				return nil, tokenErr(ErrUnknownKey, fmt.Sprintf("no key with kid %q (this issuer signs with %q)", clip(kid), i.kid))
			}
			return pub, nil
		},
	}}
}

type issuerVerifier struct{ cfg verifyConfig }

func (v *issuerVerifier) Verify(ctx context.Context, token string) (*Claims, error) {
	return v.cfg.verify(ctx, token)
}

// JWKS returns a JSON Web Key Set (RFC 7517) holding the issuer's public key.
func (i *Issuer) JWKS() []byte {
	k, err := publicJWK(&i.key.PublicKey, i.kid)
	if err != nil {
		panic("auth: JWKS: " + err.Error()) // unreachable: NewIssuer checked the key
	}
	b, _ := json.Marshal(jwkSet{Keys: []jwk{k}})
	return b
}

// jwk is the subset of RFC 7517/7518 fields this package reads and writes.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid,omitempty"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

type jwkSet struct {
	Keys []jwk `json:"keys"`
}

var b64 = base64.RawURLEncoding

func publicJWK(pub crypto.PublicKey, kid string) (jwk, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return jwk{}, errors.New("only P-256 EC keys are supported")
		}
		pt, err := k.Bytes() // 0x04 || X || Y, fixed width
		if err != nil {
			return jwk{}, err
		}
		return jwk{Kty: "EC", Kid: kid, Use: "sig", Alg: "ES256", Crv: "P-256",
			X: b64.EncodeToString(pt[1:33]), Y: b64.EncodeToString(pt[33:])}, nil
	case *rsa.PublicKey:
		return jwk{Kty: "RSA", Kid: kid, Use: "sig", Alg: "RS256",
			N: b64.EncodeToString(k.N.Bytes()), E: b64.EncodeToString(big.NewInt(int64(k.E)).Bytes())}, nil
	default:
		return jwk{}, fmt.Errorf("unsupported public key type %T", pub)
	}
}

// KeyID returns the RFC 7638 JWK thumbprint (base64url SHA-256) of a P-256
// ECDSA or RSA public key; it is the kid this package uses for its keys.
func KeyID(pub crypto.PublicKey) (string, error) {
	k, err := publicJWK(pub, "")
	if err != nil {
		return "", err
	}
	// Required members only, lexicographic order, no whitespace (RFC 7638 §3).
	var canon string
	switch k.Kty {
	case "EC":
		canon = fmt.Sprintf(`{"crv":%q,"kty":"EC","x":%q,"y":%q}`, k.Crv, k.X, k.Y)
	case "RSA":
		canon = fmt.Sprintf(`{"e":%q,"kty":"RSA","n":%q}`, k.E, k.N)
	}
	sum := sha256.Sum256([]byte(canon))
	return b64.EncodeToString(sum[:]), nil
}

// generateKey makes a fresh P-256 key.
func generateKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}
