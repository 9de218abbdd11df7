package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"sync"
	"time"
)

const (
	// JWKSMinRefreshInterval is the minimum time between two fetches of the
	// key set triggered by tokens with an unknown kid; it stops a stream of
	// forged kids from turning into a stream of requests to the issuer.
	JWKSMinRefreshInterval = time.Minute
	// JWKSMaxAge is how long a fetched key set is used before it is fetched
	// again, so that keys the issuer withdraws stop being trusted. If that
	// refresh fails the previous set stays in use.
	JWKSMaxAge = time.Hour

	maxJWKSBytes = 1 << 20
	minRSABits   = 2048
)

// JWKSVerifier verifies tokens from an external issuer against the keys it
// publishes at a JWKS URL. Only RS256 and ES256 (P-256) are accepted. Keys
// are cached; the set is refetched when a token names an unknown kid (at most
// once per JWKSMinRefreshInterval) and when it is older than JWKSMaxAge.
// It is safe for concurrent use.
type JWKSVerifier struct {
	// Now is the clock for token validity and refresh scheduling; nil means
	// time.Now. Set it before first use.
	Now func() time.Time

	url      string
	issuer   string
	audience string
	client   *http.Client

	fetchMu sync.Mutex // serialises fetches

	mu        sync.RWMutex
	keys      map[string]jwksKey
	fetchedAt time.Time // last completed fetch attempt (success or failure)
	loadedAt  time.Time // last successful fetch
	lastErr   error     // error of the last attempt, if it failed
}

type jwksKey struct {
	alg string
	pub crypto.PublicKey
}

// NewJWKSVerifier returns a verifier for tokens issued by issuer for
// audience, whose keys are published at jwksURL (http or https). client is
// used for fetches; nil means a client with a 10s timeout. Nothing is fetched
// until the first Verify.
func NewJWKSVerifier(jwksURL, issuer, audience string, client *http.Client) (*JWKSVerifier, error) {
	u, err := url.Parse(jwksURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("auth: JWKS URL %q must be an absolute http(s) URL", jwksURL)
	}
	if issuer == "" || audience == "" {
		return nil, errors.New("auth: JWKS verifier needs a non-empty issuer and audience")
	}
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &JWKSVerifier{url: jwksURL, issuer: issuer, audience: audience, client: client}, nil
}

func (v *JWKSVerifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// Verify checks token and returns its claims; see the package documentation.
func (v *JWKSVerifier) Verify(ctx context.Context, token string) (*Claims, error) {
	return verifyConfig{
		algs:     []string{"RS256", "ES256"},
		issuer:   v.issuer,
		audience: v.audience,
		now:      v.now,
		lookup:   v.lookup,
	}.verify(ctx, token)
}

func (v *JWKSVerifier) cached(kid string) (k jwksKey, found, stale bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	k, found = v.keys[kid]
	stale = v.loadedAt.IsZero() || v.now().Sub(v.loadedAt) >= JWKSMaxAge
	return k, found, stale
}

func (v *JWKSVerifier) lookup(ctx context.Context, kid, alg string) (crypto.PublicKey, error) {
	k, found, stale := v.cached(kid)
	if !found || stale {
		var err error
		k, found, err = v.refresh(ctx, kid)
		if !found {
			if err != nil {
				return nil, tokenErr(ErrKeysUnavailable, fmt.Sprintf("cannot fetch signing keys from %s: %v", v.url, err))
			}
			return nil, tokenErr(ErrUnknownKey, fmt.Sprintf("no key with kid %q in the key set at %s", clip(kid), v.url))
		}
	}
	if k.alg != alg {
		return nil, tokenErr(ErrBadSignature, fmt.Sprintf("key %q is for %s but the token is signed with %s", clip(kid), k.alg, alg))
	}
	return k.pub, nil
}

// refresh fetches the key set unless one was fetched less than
// JWKSMinRefreshInterval ago, and returns the key for kid from the (possibly
// unchanged) cache. err is the error of the latest fetch attempt, if it failed.
// A failed fetch keeps the previous key set.
func (v *JWKSVerifier) refresh(ctx context.Context, kid string) (jwksKey, bool, error) {
	v.fetchMu.Lock()
	defer v.fetchMu.Unlock()

	// Someone may have fetched while we waited.
	k, found, stale := v.cached(kid)
	if found && !stale {
		return k, true, nil
	}
	v.mu.RLock()
	recent := !v.fetchedAt.IsZero() && v.now().Sub(v.fetchedAt) < JWKSMinRefreshInterval
	lastErr := v.lastErr
	v.mu.RUnlock()
	if recent {
		return k, found, lastErr
	}

	keys, err := v.fetch(ctx)
	if err != nil && ctx.Err() != nil {
		// The caller gave up; do not count it as an attempt.
		return k, found, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.fetchedAt = v.now()
	v.lastErr = err
	if err == nil {
		v.keys = keys
		v.loadedAt = v.fetchedAt
	}
	k, found = v.keys[kid]
	return k, found, err
}

func (v *JWKSVerifier) fetch(ctx context.Context) (map[string]jwksKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET returned %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("key set larger than %d bytes", maxJWKSBytes)
	}
	return parseJWKS(body)
}

// parseJWKS decodes a key set, keeping the RS256 and ES256 signing keys that
// have a kid and skipping everything else.
func parseJWKS(data []byte) (map[string]jwksKey, error) {
	var set jwkSet
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("key set is not valid JSON: %w", err)
	}
	keys := make(map[string]jwksKey, len(set.Keys))
	for _, j := range set.Keys {
		if j.Kid == "" || (j.Use != "" && j.Use != "sig") {
			continue
		}
		if _, dup := keys[j.Kid]; dup {
			continue
		}
		k, err := parseJWK(j)
		if err != nil {
			continue
		}
		keys[j.Kid] = k
	}
	if len(keys) == 0 {
		return nil, errors.New("key set has no usable RS256 or ES256 signing keys")
	}
	return keys, nil
}

func parseJWK(j jwk) (jwksKey, error) {
	switch j.Kty {
	case "EC":
		if j.Crv != "P-256" || (j.Alg != "" && j.Alg != "ES256") {
			return jwksKey{}, errors.New("unsupported EC key")
		}
		x, err1 := b64.DecodeString(j.X)
		y, err2 := b64.DecodeString(j.Y)
		if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
			return jwksKey{}, errors.New("bad EC coordinates")
		}
		pt := append(append([]byte{4}, x...), y...)
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pt)
		if err != nil {
			return jwksKey{}, err
		}
		return jwksKey{alg: "ES256", pub: pub}, nil
	case "RSA":
		if j.Alg != "" && j.Alg != "RS256" {
			return jwksKey{}, errors.New("unsupported RSA alg")
		}
		n, err1 := b64.DecodeString(j.N)
		e, err2 := b64.DecodeString(j.E)
		if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
			return jwksKey{}, errors.New("bad RSA parameters")
		}
		N := new(big.Int).SetBytes(n)
		E := new(big.Int).SetBytes(e).Int64()
		if N.BitLen() < minRSABits || E < 3 || E%2 == 0 || E > 1<<31-1 {
			return jwksKey{}, errors.New("weak or invalid RSA key")
		}
		return jwksKey{alg: "RS256", pub: &rsa.PublicKey{N: N, E: int(E)}}, nil
	default:
		return jwksKey{}, errors.New("unsupported key type")
	}
}
