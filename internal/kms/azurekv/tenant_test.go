package azurekv

import (
	"context"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cmk-project/cmk/internal/consent"
	"github.com/cmk-project/cmk/internal/keyid"
	"github.com/cmk-project/cmk/internal/kms"
)

func TestVaultTenant(t *testing.T) {
	f := newFake(t)
	p := newProvider(t, f, nil)
	ctx := context.Background()
	got, err := p.VaultTenant(ctx, vaultURL)
	if err != nil || got != customerTenant {
		t.Fatalf("VaultTenant(%s) = %q, %v; want %q, nil", vaultURL, got, err, customerTenant)
	}
	if len(f.tokenTenants) != 0 || f.vaultRequests != 0 || f.challenges != 1 {
		t.Errorf("VaultTenant made %d token requests, %d authorised and %d unauthorised vault requests; want 0, 0, 1",
			len(f.tokenTenants), f.vaultRequests, f.challenges)
	}
	// Cached: the vault is not asked again.
	if got, err := p.VaultTenant(ctx, vaultURL); err != nil || got != customerTenant || f.challenges != 1 {
		t.Errorf("VaultTenant again = %q, %v after %d probes; want %q from the cache", got, err, f.challenges, customerTenant)
	}
}

func TestVaultTenantFailures(t *testing.T) {
	tests := []struct {
		name  string
		vault string
		setup func(f *fake)
		kind  kms.Kind
	}{
		{"host not allowed", "https://myvault.vault.example.com", nil, kms.KindMalformedKeyURI},
		{"not a vault URL", vaultURL + "/keys/k", nil, kms.KindMalformedKeyURI},
		{"no such host", "https://gone." + vaultSuffix, nil, kms.KindVaultDNSUnresolvable},
		{"connection refused", "https://" + refusedHost, nil, kms.KindTransient},
		{"vault down", vaultURL, func(f *fake) { f.challengeFail = &canned{status: 503, body: `{}`} }, kms.KindTransient},
		{"throttled", vaultURL, func(f *fake) {
			f.challengeFail = &canned{status: 429, header: map[string]string{"Retry-After": "7"}, body: `{}`}
		}, kms.KindThrottled},
		{"answers without a challenge", vaultURL, func(f *fake) { f.challengeFail = &canned{status: 200, body: `{"value":[]}`} }, kms.KindInvalidRequest},
		{"redirects", vaultURL, func(f *fake) {
			f.challengeFail = &canned{status: 302, header: map[string]string{"Location": "https://elsewhere.example/"}, body: `{}`}
		}, kms.KindInvalidRequest},
		{"challenge for another resource", vaultURL, func(f *fake) { f.challengeResource = "https://evil.example" }, kms.KindInvalidRequest},
		{"challenge names no tenant id", vaultURL, func(f *fake) { f.tenant = "common" }, kms.KindInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t)
			if tt.setup != nil {
				f.set(tt.setup)
			}
			p := newProvider(t, f, nil)
			got, err := p.VaultTenant(context.Background(), tt.vault)
			if err == nil || kms.KindOf(err) != tt.kind {
				t.Fatalf("VaultTenant(%s) = %q, %v; want kind %s", tt.vault, got, err, tt.kind)
			}
			var ke *kms.Error
			if errors.As(err, &ke) && (ke.Op != "tenant" || ke.Key != tt.vault) {
				t.Errorf("error op %q key %q, want tenant %s", ke.Op, ke.Key, tt.vault)
			}
			if tt.kind == kms.KindThrottled && ke.RetryAfter != 7*time.Second {
				t.Errorf("RetryAfter = %v, want 7s", ke.RetryAfter)
			}
			if _, err := p.VaultTenant(context.Background(), tt.vault); err == nil {
				t.Error("a failed probe was cached")
			}
		})
	}
}

func TestChallengeTenant(t *testing.T) {
	id, _ := keyid.Policy{}.Parse("https://contoso.vault.azure.net/keys/k")
	hsm, _ := keyid.Policy{}.Parse("https://contoso.managedhsm.azure.net/keys/k")
	const tid = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	tests := []struct {
		header string
		id     keyid.ID
		want   string // "" = refused
	}{
		{`Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://vault.azure.net"`, id, tid},
		{`Bearer authorization="https://login.windows.net/72F988BF-86F1-41AF-91AB-2D7CD011DB47", resource="https://vault.azure.net"`, id, tid},
		{`Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47" scope="https://vault.azure.net/.default" resource="https://vault.azure.net"`, id, tid},
		{`Bearer authorization_uri="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://vault.azure.net"`, id, tid},
		{`Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://managedhsm.azure.net"`, hsm, tid},
		{`Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://managedhsm.azure.net"`, id, ""},
		{`Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://azure.net.evil.example"`, id, ""},
		{`Bearer authorization="https://login.microsoftonline.com/common", resource="https://vault.azure.net"`, id, ""},
		{`Bearer authorization="https://login.microsoftonline.com/contoso.onmicrosoft.com", resource="https://vault.azure.net"`, id, ""},
		{`Bearer resource="https://vault.azure.net"`, id, ""},
		{`Basic realm="vault"`, id, ""},
		{``, id, ""},
	}
	for _, tt := range tests {
		got, err := challengeTenant(tt.header, tt.id)
		if got != tt.want || (err == nil) != (tt.want != "") {
			t.Errorf("challengeTenant(%q, %s) = %q, %v; want %q", tt.header, tt.id.VaultURL, got, err, tt.want)
		}
	}
}

func TestTenantCacheIsBounded(t *testing.T) {
	var c tenantCache
	now := time.Unix(1_800_000_000, 0)
	for i := range maxCachedVaults + 10 {
		c.put(fmt.Sprintf("https://v%d.vault.azure.net", i), customerTenant, now)
	}
	if len(c.m) > maxCachedVaults {
		t.Errorf("cache holds %d vaults, want at most %d", len(c.m), maxCachedVaults)
	}
	last := fmt.Sprintf("https://v%d.vault.azure.net", maxCachedVaults+9)
	if _, ok := c.get(last, now.Add(vaultTenantTTL-time.Second)); !ok {
		t.Error("the newest entry is not cached")
	}
	if _, ok := c.get(last, now.Add(vaultTenantTTL)); ok {
		t.Error("an entry outlives vaultTenantTTL")
	}
}

// idToken is an ID token as a token endpoint would answer (its signature
// does not matter: it is not checked).
func idToken(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("any key"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// globalAdmin and member are directory roles as wids lists them: Global
// Administrator, and the User role every member holds.
const (
	globalAdmin = "62e90394-69f5-4237-9190-012177145e10"
	memberRole  = "b79fbf4d-3ef9-4689-8143-76b194e85509"
)

// adminIDToken returns the claims of a Global Administrator's ID token
// issued by authority.
func adminIDToken(authority string, now time.Time) jwt.MapClaims {
	return jwt.MapClaims{"aud": testClientID, "tid": strings.ToUpper(customerTenant), "iss": authority + strings.ToUpper(customerTenant) + "/v2.0",
		"exp": now.Add(time.Hour).Unix(), "wids": []string{memberRole, globalAdmin}}
}

func TestRedeemConsentCode(t *testing.T) {
	now := time.Now()
	const code, verifier = "0.AXoA-the-code-of-an-administrator-sign-in", "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	// with returns the administrator's claims with k set to v (deleted
	// when v is nil).
	with := func(f *fake, k string, v any) jwt.MapClaims {
		c := adminIDToken(f.authority(), now)
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	answer := func(tok string) *canned {
		return &canned{status: 200, body: fmt.Sprintf(`{"token_type":"Bearer","access_token":"x","id_token":%q}`, tok)}
	}
	tests := []struct {
		name    string
		answer  func(f *fake) *canned
		want    string
		kind    kms.Kind
		noAdmin bool // fails with consent.ErrNotAdministrator
	}{
		{"tenant of the ID token", func(f *fake) *canned { return answer(idToken(t, with(f, "wids", []string{globalAdmin}))) }, customerTenant, "", false},
		{"Application Administrator", func(f *fake) *canned {
			return answer(idToken(t, with(f, "wids", []string{"9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3"})))
		}, customerTenant, "", false},
		{"code refused", func(*fake) *canned { return nil }, "", kms.KindTokenAcquisitionFailed, false},
		{"Entra ID down", func(*fake) *canned {
			return &canned{status: 503, body: `{"error":"temporarily_unavailable","error_codes":[90033]}`}
		}, "", kms.KindTransient, false},
		{"throttled", func(*fake) *canned { return &canned{status: 429, body: `{}`} }, "", kms.KindThrottled, false},
		{"no ID token", func(*fake) *canned { return &canned{status: 200, body: `{"access_token":"x"}`} }, "", kms.KindInvalidRequest, false},
		{"ID token for another app", func(f *fake) *canned { return answer(idToken(t, with(f, "aud", "other-app"))) }, "", kms.KindInvalidRequest, false},
		{"tid not a tenant id", func(f *fake) *canned { return answer(idToken(t, with(f, "tid", "common"))) }, "", kms.KindInvalidRequest, false},
		{"issuer of another tenant", func(f *fake) *canned {
			return answer(idToken(t, with(f, "iss", f.authority()+"33333333-3333-4333-8333-333333333333/v2.0")))
		}, "", kms.KindInvalidRequest, false},
		// The issuer used to be accepted when it merely contained "/<tid>/".
		{"issuer of another authority", func(f *fake) *canned {
			return answer(idToken(t, with(f, "iss", "https://evil.example/"+strings.ToUpper(customerTenant)+"/v2.0")))
		}, "", kms.KindInvalidRequest, false},
		{"issuer with a suffix", func(f *fake) *canned {
			return answer(idToken(t, with(f, "iss", f.authority()+strings.ToUpper(customerTenant)+"/v2.0/x")))
		}, "", kms.KindInvalidRequest, false},
		{"expired ID token", func(f *fake) *canned { return answer(idToken(t, with(f, "exp", now.Add(-time.Hour).Unix()))) }, "", kms.KindInvalidRequest, false},
		{"not a JWT", func(*fake) *canned { return answer("not-a-jwt") }, "", kms.KindInvalidRequest, false},
		// A plain member: the tenant consented before, so Entra ID gave the
		// member a code without the admin-consent page.
		{"member without wids", func(f *fake) *canned { return answer(idToken(t, with(f, "wids", nil))) }, "", kms.KindIdentityInvalid, true},
		{"member with the User role", func(f *fake) *canned { return answer(idToken(t, with(f, "wids", []string{memberRole}))) }, "", kms.KindIdentityInvalid, true},
		{"User Administrator", func(f *fake) *canned {
			return answer(idToken(t, with(f, "wids", []string{"fe930be7-5e62-47db-91af-98c3a49a38b1"})))
		}, "", kms.KindIdentityInvalid, true},
		{"wids not a list", func(f *fake) *canned { return answer(idToken(t, with(f, "wids", globalAdmin))) }, "", kms.KindInvalidRequest, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t)
			f.set(func(f *fake) { f.codeAnswer = tt.answer(f) })
			p := newProvider(t, f, nil)
			got, err := p.RedeemConsentCode(context.Background(), code, "https://cmk.example/cb", verifier)
			if got != tt.want || kms.KindOf(err) != tt.kind || errors.Is(err, consent.ErrNotAdministrator) != tt.noAdmin {
				t.Fatalf("RedeemConsentCode = %q, %v; want %q, kind %q, not an administrator %v", got, err, tt.want, tt.kind, tt.noAdmin)
			}
			form := f.tokenForms[0]
			if form.Get("grant_type") != "authorization_code" || form.Get("code") != code || form.Get("redirect_uri") != "https://cmk.example/cb" ||
				form.Get("client_id") != testClientID || form.Get("client_secret") != testSecret || form.Get("code_verifier") != verifier {
				t.Errorf("token request form = %v", form)
			}
		})
	}
	f := newFake(t)
	p := newProvider(t, f, nil)
	for _, junk := range []string{"", "the-code", strings.Repeat("a", 40) + "<script>", strings.Repeat("a", 9<<10)} {
		if _, err := p.RedeemConsentCode(context.Background(), junk, "https://cmk.example/cb", verifier); kms.KindOf(err) != kms.KindTokenAcquisitionFailed || len(f.tokenForms) != 0 {
			t.Errorf("RedeemConsentCode(%.20q) = %v after %d requests; want KindTokenAcquisitionFailed and no request", junk, err, len(f.tokenForms))
		}
	}
	if _, err := p.RedeemConsentCode(context.Background(), code, "https://cmk.example/cb", ""); err == nil || len(f.tokenForms) != 0 {
		t.Errorf("RedeemConsentCode(no verifier) = %v after %d requests; want an error and no request", err, len(f.tokenForms))
	}
}

// TestRedeemWithCertificate: with a certificate credential the code is
// redeemed with a client assertion signed by the certificate's key.
func TestRedeemWithCertificate(t *testing.T) {
	f := newFake(t)
	good := adminIDToken(f.authority(), time.Now())
	f.set(func(f *fake) {
		f.codeAnswer = &canned{status: 200, body: fmt.Sprintf(`{"id_token":%q}`, idToken(t, good))}
	})
	certPEM := testCertPEM(t)
	p := newProvider(t, f, func(c *Config) { c.ClientSecret, c.CertificatePEM = "", certPEM })
	if got, err := p.RedeemConsentCode(context.Background(), "0.AXoA-the-code-of-an-administrator-sign-in", "https://cmk.example/cb", "verifier"); err != nil || got != customerTenant {
		t.Fatalf("RedeemConsentCode = %q, %v; want %q", got, err, customerTenant)
	}
	form := f.tokenForms[0]
	if form.Get("client_secret") != "" || form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		t.Fatalf("token request form = %v, want a client assertion and no secret", form)
	}
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var claims jwt.RegisteredClaims
	tok, err := jwt.ParseWithClaims(form.Get("client_assertion"), &claims, func(*jwt.Token) (any, error) { return cert.PublicKey.(*rsa.PublicKey), nil },
		jwt.WithValidMethods([]string{"RS256"}))
	if err != nil {
		t.Fatalf("client assertion does not verify with the certificate: %v", err)
	}
	thumb := sha1.Sum(cert.Raw)
	if tok.Header["x5t"] != base64.RawURLEncoding.EncodeToString(thumb[:]) || claims.Issuer != testClientID || claims.Subject != testClientID ||
		len(claims.Audience) != 1 || claims.Audience[0] != f.authority()+"organizations/oauth2/v2.0/token" || claims.ID == "" {
		t.Errorf("client assertion header %v, claims %+v", tok.Header, claims)
	}
}
