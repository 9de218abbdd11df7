// Package consent carries an org through the admin consent that binds it to
// the Azure tenant owning its keys (docs/security.md, "Key ownership").
//
// The platform's consent link is made for one org: it carries a state,
// sealed by the service, that names the org and expires. Microsoft Entra ID
// returns the state unchanged with the consent redirect, so the service
// knows which org the administrator consented for. The tenant is not taken
// from the redirect (anyone can type a tenant id into a URL): the redirect's
// authorization code is exchanged by the service for an ID token, and the
// token's tid names the tenant.
//
// This package seals and opens the state, checks the shape of tenant ids and
// builds the link. It makes no network call and imports nothing of cmk.
//
// # State format
//
//	"v1." base64url(payload) "." base64url(mac)
//	payload = expiry (uint64 Unix seconds, big-endian) || nonce (8 bytes) || org (1 to 128 bytes)
//	mac     = HMAC-SHA256(key, "cmk consent state v1" || 0x00 || payload)
//
// base64url is unpadded and decoded strictly, so a state has exactly one
// spelling: Open accepts what Seal produces and nothing else.
//
// # PKCE
//
// The link carries a PKCE challenge (RFC 7636, S256) whose verifier is
// derived from its state, so nothing needs storing between the link and the
// callback:
//
//	verifier  = base64url(HMAC-SHA256(key, "pkce" || 0x00 || state))  (43 characters)
//	challenge = base64url(SHA-256(verifier))
//
// Entra ID binds the authorization code to the challenge and redeems it only
// with the verifier, which only the service can compute, and only from the
// state of the same link: a code issued for one org's link is useless with
// another org's state.
package consent

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultTTL is how long a consent link stays valid. An administrator may
// open the link hours after an admin of the org fetched it, so it lasts a
// working day and a night; it is short enough that a link copied into a
// ticket or a mailbox is dead by the time anyone finds it there. The
// app-registration API hands out a fresh link on every call.
const DefaultTTL = 24 * time.Hour

// MaxStateLen bounds a state before it is decoded: the longest state Seal
// makes (a 128-byte org) is 239 characters.
const MaxStateLen = 512

// MaxOrgLen is the longest org id a state can name, as the API allows.
const MaxOrgLen = 128

const (
	version   = "v1."
	macDomain = "cmk consent state v1\x00"
	// pkceDomain separates the PKCE verifier's MAC from the state's: the
	// two messages never share a prefix.
	pkceDomain = "pkce\x00"
	nonceLen   = 8
	headerLen  = 8 + nonceLen // expiry + nonce
	macLen     = sha256.Size
)

// Errors Open returns.
var (
	ErrMalformed = errors.New("consent state is malformed")
	ErrForged    = errors.New("consent state was not issued by this service")
	ErrExpired   = errors.New("consent state has expired")
)

// ErrNotAdministrator is wrapped by an ID token's check when the user who
// signed in holds no directory role that may consent for the whole tenant
// (CanConsentForTenant): the code was redeemed, and binds nothing.
var ErrNotAdministrator = errors.New("the user who signed in is not an administrator who may consent for the tenant")

var b64 = base64.RawURLEncoding.Strict()

// Signer seals and opens consent states with one secret. Replicas that share
// the secret (derived from the shared system key) open each other's states.
type Signer struct {
	key []byte
	// TTL is how long a sealed state is valid (DefaultTTL when zero).
	TTL time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Rand is the source of nonces (crypto/rand when nil).
	Rand io.Reader
}

// NewSigner returns a Signer keyed with secret, which must be at least 32
// bytes.
func NewSigner(secret []byte) (*Signer, error) {
	if len(secret) < 32 {
		return nil, fmt.Errorf("consent: the state secret is %d bytes; at least 32 are required", len(secret))
	}
	return &Signer{key: bytes.Clone(secret)}, nil
}

func (s *Signer) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

// Seal returns a state naming org that Open accepts until the TTL has passed.
func (s *Signer) Seal(org string) (string, error) {
	if !ValidOrg(org) {
		return "", fmt.Errorf("consent: org id %q cannot be sealed: it must be 1 to %d printable characters without spaces, '/' or '\\'", org, MaxOrgLen)
	}
	ttl := s.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	var nonce [nonceLen]byte
	r := s.Rand
	if r == nil {
		r = rand.Reader
	}
	if _, err := io.ReadFull(r, nonce[:]); err != nil {
		return "", fmt.Errorf("consent: state nonce: %w", err)
	}
	return s.seal(org, uint64(s.now().Add(ttl).Unix()), nonce), nil
}

func (s *Signer) seal(org string, expiry uint64, nonce [nonceLen]byte) string {
	payload := make([]byte, 0, headerLen+len(org))
	payload = binary.BigEndian.AppendUint64(payload, expiry)
	payload = append(payload, nonce[:]...)
	payload = append(payload, org...)
	return version + b64.EncodeToString(payload) + "." + b64.EncodeToString(s.mac(payload))
}

func (s *Signer) mac(payload []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(macDomain))
	m.Write(payload)
	return m.Sum(nil)
}

// Open checks state and returns the org it names and when it expires. The
// error is ErrMalformed, ErrForged or ErrExpired; the signature is checked
// before anything in the payload is believed.
func (s *Signer) Open(state string) (org string, expires time.Time, err error) {
	if len(state) > MaxStateLen {
		return "", time.Time{}, ErrMalformed
	}
	rest, ok := strings.CutPrefix(state, version)
	if !ok {
		return "", time.Time{}, ErrMalformed
	}
	p64, m64, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(m64, ".") {
		return "", time.Time{}, ErrMalformed
	}
	payload, err1 := b64.DecodeString(p64)
	mac, err2 := b64.DecodeString(m64)
	if err1 != nil || err2 != nil || len(mac) != macLen || len(payload) <= headerLen || len(payload) > headerLen+MaxOrgLen {
		return "", time.Time{}, ErrMalformed
	}
	// Only the one spelling Seal writes: the decoder skips CR and LF, so
	// without this a state with one inserted would open too, under another
	// StateID, and a used state could bind again.
	if b64.EncodeToString(payload) != p64 || b64.EncodeToString(mac) != m64 {
		return "", time.Time{}, ErrMalformed
	}
	if !hmac.Equal(mac, s.mac(payload)) {
		return "", time.Time{}, ErrForged
	}
	expiry := binary.BigEndian.Uint64(payload[:8])
	org = string(payload[headerLen:])
	if !ValidOrg(org) || expiry > 1<<62 {
		// Signed by us, so this means a bug in Seal, not an attack.
		return "", time.Time{}, ErrMalformed
	}
	expires = time.Unix(int64(expiry), 0).UTC()
	if !s.now().Before(expires) {
		return "", expires, ErrExpired
	}
	return org, expires, nil
}

// Verifier returns the PKCE code verifier of the link whose state is state
// (see the package doc). It is a secret of the service: it goes only to the
// token endpoint, never into the link.
func (s *Signer) Verifier(state string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(pkceDomain))
	m.Write([]byte(state))
	return b64.EncodeToString(m.Sum(nil))
}

// Challenge returns the S256 PKCE challenge of verifier:
// base64url(SHA-256(verifier)), unpadded (RFC 7636, 4.2).
func Challenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return b64.EncodeToString(sum[:])
}

// StateID names a state for the record of states already used (a state
// opens only in its one spelling, so its hash names it). It is not secret:
// the state cannot be recovered from it.
func StateID(state string) string {
	sum := sha256.Sum256([]byte("cmk consent state id\x00" + state))
	return b64.EncodeToString(sum[:16])
}

// ValidOrg reports whether org can be named by a state: 1 to MaxOrgLen bytes
// of UTF-8 without spaces, control characters, '/' or '\' (the API's rule
// for the x-gw-ims-org-id header).
func ValidOrg(org string) bool {
	if org == "" || len(org) > MaxOrgLen || !utf8.ValidString(org) {
		return false
	}
	for _, c := range org {
		if c <= ' ' || c == '/' || c == '\\' || c == 0x7f {
			return false
		}
	}
	return true
}

// TenantID returns the canonical (lowercase) form of an Entra tenant id and
// whether s has a tenant id's shape: a GUID, 8-4-4-4-12 hexadecimal digits.
// Domain names and the aliases "common" and "organizations" are refused: a
// binding names one directory.
func TenantID(s string) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return "", false
			}
		}
	}
	return strings.ToLower(s), true
}

// Link parameters, as Microsoft Entra ID's authorization endpoint takes them.
const (
	// Scope asks for an ID token (its tid names the tenant); the platform's
	// app needs no delegated permission on the customer's resources, only
	// the service principal the consent creates and the role the customer
	// grants it on the vault.
	Scope = "openid profile"
	// Prompt makes Entra ID show the admin-consent page, which only an
	// administrator who may consent for the whole tenant can accept. It is
	// a request, not a proof: anyone can remove it from the link, so the
	// callback checks the administrator's roles in the ID token
	// (CanConsentForTenant).
	Prompt = "admin_consent"
	// ChallengeMethod is the PKCE method of the link: S256 only.
	ChallengeMethod = "S256"
)

// Directory roles (role template ids, as the ID token's wids claim lists
// them) whose holders may grant tenant-wide admin consent to an app asking
// only for openid and profile. These are the roles Microsoft Entra ID lets
// consent for the whole tenant; a binding made by anyone else proves only
// that some user of the tenant signed in, which is not the tenant's word.
var consentRoles = map[string]string{
	"62e90394-69f5-4237-9190-012177145e10": "Global Administrator",
	"e8611ab8-c189-4e8f-8d9e-9ea3d0b2bbd9": "Privileged Role Administrator",
	"158c047a-c907-4556-b7ef-446551a6b5f7": "Cloud Application Administrator",
	"9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3": "Application Administrator",
}

// CanConsentForTenant reports whether the directory roles of an ID token
// (its wids claim) include one that may grant tenant-wide admin consent.
func CanConsentForTenant(wids []string) bool {
	for _, w := range wids {
		if _, ok := consentRoles[strings.ToLower(w)]; ok {
			return true
		}
	}
	return false
}

// Authorization codes of Entra ID are opaque, but always hundreds of URL-
// safe characters; the emulator's are 64. Bounds on what the callback sends
// to the token endpoint at all.
const (
	minCodeLen = 32
	maxCodeLen = 8 << 10
)

// PlausibleCode reports whether code could be an authorization code of
// Entra ID: minCodeLen to maxCodeLen characters unreserved in a URI
// (A-Z a-z 0-9 - . _ ~). The callback sends nothing else to the token
// endpoint, so junk costs no call out.
func PlausibleCode(code string) bool {
	if len(code) < minCodeLen || len(code) > maxCodeLen {
		return false
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

// Link returns the admin-consent link of an org: the authorization endpoint
// (e.g. https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize)
// with the app's client id, the authorization-code response, the redirect
// back to the service, Scope, Prompt, the org's sealed state and the PKCE
// challenge (S256) of the state's verifier. Query parameters already on
// authorizeURL are kept unless the link sets them.
func Link(authorizeURL, clientID, redirectURI, state, challenge string) (string, error) {
	u, err := url.Parse(authorizeURL)
	if err != nil || u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
		return "", fmt.Errorf("consent: the authorization endpoint %q is not an http(s) URL", authorizeURL)
	}
	q := u.Query()
	q.Set("client_id", clientID)
	q.Set("response_type", "code")
	q.Set("redirect_uri", redirectURI)
	q.Set("response_mode", "query")
	q.Set("scope", Scope)
	q.Set("prompt", Prompt)
	q.Set("state", state)
	q.Set("code_challenge", challenge)
	q.Set("code_challenge_method", ChallengeMethod)
	u.RawQuery = q.Encode()
	return u.String(), nil
}
