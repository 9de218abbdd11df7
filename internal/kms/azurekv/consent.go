package azurekv

import (
	"context"
	"crypto/rsa"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/cmk-project/cmk/internal/consent"
	"github.com/cmk-project/cmk/internal/kms"
)

// AuthorizeEndpoint is the authorization endpoint of an authority host for
// work and school accounts of any tenant ("organizations"): where the
// consent link sends the administrator.
func AuthorizeEndpoint(authorityHost string) string {
	return authorityBase(authorityHost) + "organizations/oauth2/v2.0/authorize"
}

func authorityBase(host string) string {
	if host == "" {
		host = "https://login.microsoftonline.com/"
	}
	if !strings.HasSuffix(host, "/") {
		host += "/"
	}
	return host
}

// idTokenSkew is the clock difference tolerated on an ID token's expiry.
const idTokenSkew = 5 * time.Minute

// RedeemConsentCode exchanges the authorization code of an admin-consent
// redirect for the ID token of the administrator who accepted, and returns
// the token's tenant (tid, lowercase). The code is redeemed at the
// configured authority's token endpoint ("organizations"), by the platform's
// app with its own credential, the redirect URI the code was issued for and
// the PKCE verifier of the link's challenge; Entra ID redeems a code once,
// within minutes, and only with the verifier.
//
// The ID token's signature is not checked: the token comes straight from the
// token endpoint over TLS, in answer to the app's own credential, which
// OpenID Connect Core (3.1.3.7) accepts in place of the signature. Its
// audience must be the app, its tid a tenant id, its issuer exactly
// "<authority>/<tid>/v2.0", and its wids must hold a directory role that may
// consent for the whole tenant (consent.CanConsentForTenant; Entra ID adds
// wids when the app registration's groupMembershipClaims includes
// DirectoryRole). prompt=admin_consent in the link is only a request: a
// member of a tenant that consented before gets a code without it.
//
// Errors are *kms.Error (Op "token"): KindTokenAcquisitionFailed when Entra
// ID refuses the code (invalid_grant: made up, reused, expired, for another
// redirect URI) or the app's credential, KindThrottled or KindTransient when
// it gives no answer to act on, KindInvalidRequest when the answer holds
// no usable ID token, and KindIdentityInvalid wrapping
// consent.ErrNotAdministrator when the token is fine but its user may not
// consent for the tenant (the code is spent either way).
func (p *Provider) RedeemConsentCode(ctx context.Context, code, redirectURI, verifier string) (string, error) {
	const op = "token"
	tokenURL := authorityBase(p.authority) + "organizations/oauth2/v2.0/token"
	fail := func(kind kms.Kind, status int, err error) (string, error) {
		return "", &kms.Error{Kind: kind, Op: op, Key: tokenURL, Status: status, Err: err}
	}
	if !consent.PlausibleCode(code) {
		return fail(kms.KindTokenAcquisitionFailed, 0, errors.New("no usable authorization code"))
	}
	if verifier == "" {
		return fail(kms.KindInvalidRequest, 0, errors.New("no PKCE code verifier"))
	}
	now := time.Now()
	form := url.Values{"client_id": {p.clientID}, "grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {redirectURI}, "scope": {consent.Scope}, "code_verifier": {verifier}}
	if p.secret != "" {
		form.Set("client_secret", p.secret)
	} else {
		a, err := p.clientAssertion(tokenURL, now)
		if err != nil {
			return fail(kms.KindTokenAcquisitionFailed, 0, err)
		}
		form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		form.Set("client_assertion", a)
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return fail(kms.KindInvalidRequest, 0, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := p.plain.Do(req)
	if err != nil {
		// An unreachable Entra ID is an outage, not a verdict on the consent.
		return fail(kms.KindTransient, 0, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fail(kms.KindTransient, resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		var ae struct {
			Error string `json:"error"`
			Codes []int  `json:"error_codes"`
		}
		json.Unmarshal(body, &ae)
		e := &kms.Error{Kind: kms.KindTokenAcquisitionFailed, Op: op, Key: tokenURL, Status: resp.StatusCode, Code: ae.Error,
			Err: errors.New("the token endpoint refused the authorization code")}
		if len(ae.Codes) > 0 {
			e.InnerCode = "AADSTS" + strconv.Itoa(ae.Codes[0])
		}
		switch s := resp.StatusCode; {
		case s == http.StatusTooManyRequests:
			e.Kind, e.RetryAfter = kms.KindThrottled, retryAfter(resp.Header, now)
		case s == http.StatusRequestTimeout || s >= 500:
			e.Kind = kms.KindTransient
		}
		return "", e
	}
	var tr struct {
		IDToken string `json:"id_token"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.IDToken == "" {
		return fail(kms.KindInvalidRequest, resp.StatusCode, errors.New("the token endpoint's answer has no ID token"))
	}
	tenant, err := idTokenTenant(tr.IDToken, p.clientID, authorityBase(p.authority), now)
	if errors.Is(err, consent.ErrNotAdministrator) {
		return fail(kms.KindIdentityInvalid, resp.StatusCode, err)
	}
	if err != nil {
		return fail(kms.KindInvalidRequest, resp.StatusCode, err)
	}
	return tenant, nil
}

// idTokenTenant checks an ID token for the app, issued by authority (with
// its trailing slash) to a user who may consent for the whole tenant, and
// returns its tenant. A token whose user holds no such role fails wrapping
// consent.ErrNotAdministrator, after every other check passed.
func idTokenTenant(raw, clientID, authority string, now time.Time) (string, error) {
	var c struct {
		jwt.RegisteredClaims
		TID  string   `json:"tid"`
		WIDs []string `json:"wids"`
	}
	if _, _, err := jwt.NewParser().ParseUnverified(raw, &c); err != nil {
		return "", fmt.Errorf("the ID token does not parse: %w", err)
	}
	if !slices.Contains(c.Audience, clientID) {
		return "", fmt.Errorf("the ID token is for %v, not for the app %s", c.Audience, clientID)
	}
	tenant, ok := consent.TenantID(c.TID)
	if !ok {
		return "", fmt.Errorf("the ID token's tid %q is not a tenant id", c.TID)
	}
	// Entra ID's v2.0 issuer is exactly this, with the tid as the token
	// spells it.
	if want := authority + c.TID + "/v2.0"; c.Issuer != want {
		return "", fmt.Errorf("the ID token's issuer %q is not %q", c.Issuer, want)
	}
	if c.ExpiresAt == nil || !now.Before(c.ExpiresAt.Add(idTokenSkew)) {
		return "", errors.New("the ID token has expired")
	}
	if !consent.CanConsentForTenant(c.WIDs) {
		return "", fmt.Errorf("tenant %s, directory roles %v: %w", tenant, c.WIDs, consent.ErrNotAdministrator)
	}
	return tenant, nil
}

// clientAssertion signs the JWT that proves the app's certificate
// credential to the token endpoint at aud (RS256, with the certificate's
// SHA-1 thumbprint as x5t, as Entra ID asks).
func (p *Provider) clientAssertion(aud string, now time.Time) (string, error) {
	key, ok := p.certKey.(*rsa.PrivateKey)
	if len(p.certs) == 0 || !ok {
		return "", errors.New("the app's certificate credential has no RSA private key")
	}
	thumb := sha1.Sum(p.certs[0].Raw)
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.RegisteredClaims{
		Audience: jwt.ClaimStrings{aud}, Issuer: p.clientID, Subject: p.clientID, ID: uuid.NewString(),
		NotBefore: jwt.NewNumericDate(now), IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(10 * time.Minute)),
	})
	tok.Header["x5t"] = base64.RawURLEncoding.EncodeToString(thumb[:])
	return tok.SignedString(key)
}
