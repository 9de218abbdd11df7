package azemu

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
)

// cryptoOp runs one of the six key operations on the newest version of
// "cmk" with material that is valid for it (ciphertexts and signatures are
// made before the key is broken).
type cryptoOp func(c *azkeys.Client) error

// cryptoOps builds the six operations on f's key, preparing their inputs
// while the key still works. The app must hold Key Vault Crypto User.
func cryptoOpsOf(t *testing.T, f *fixture, c *azkeys.Client) map[string]cryptoOp {
	t.Helper()
	plain := dek()
	wrapped, err := wrap(c, "cmk", "", plain)
	must(t, err)
	enc, err := c.Encrypt(ctx, "cmk", "", azkeys.KeyOperationParameters{Algorithm: oaep256(), Value: plain}, nil)
	must(t, err)
	digest := sha256.Sum256([]byte("message"))
	rs256 := to.Ptr(azkeys.SignatureAlgorithmRS256)
	sig, err := c.Sign(ctx, "cmk", "", azkeys.SignParameters{Algorithm: rs256, Value: digest[:]}, nil)
	must(t, err)
	return map[string]cryptoOp{
		"wrapKey": func(c *azkeys.Client) error { _, err := wrap(c, "cmk", "", plain); return err },
		"encrypt": func(c *azkeys.Client) error {
			_, err := c.Encrypt(ctx, "cmk", "", azkeys.KeyOperationParameters{Algorithm: oaep256(), Value: plain}, nil)
			return err
		},
		"verify": func(c *azkeys.Client) error {
			r, err := c.Verify(ctx, "cmk", "", azkeys.VerifyParameters{Algorithm: rs256, Digest: digest[:], Signature: sig.Result}, nil)
			if err == nil && (r.Value == nil || !*r.Value) {
				t.Errorf("verify of a good signature: got false, want true")
			}
			return err
		},
		"unwrapKey": func(c *azkeys.Client) error {
			r, err := unwrap(c, "cmk", "", wrapped.Result)
			if err == nil && !bytes.Equal(r.Result, plain) {
				t.Errorf("unwrap: got %x, want %x", r.Result, plain)
			}
			return err
		},
		"decrypt": func(c *azkeys.Client) error {
			r, err := c.Decrypt(ctx, "cmk", "", azkeys.KeyOperationParameters{Algorithm: oaep256(), Value: enc.Result}, nil)
			if err == nil && !bytes.Equal(r.Result, plain) {
				t.Errorf("decrypt: got %x, want %x", r.Result, plain)
			}
			return err
		},
		"sign": func(c *azkeys.Client) error {
			_, err := c.Sign(ctx, "cmk", "", azkeys.SignParameters{Algorithm: rs256, Value: digest[:]}, nil)
			return err
		},
	}
}

// TestDisabledKey: a disabled key is still returned by GET (newest and by
// version) with enabled false; wrapKey, encrypt and verify succeed, and
// unwrapKey, decrypt and sign answer 403 Forbidden/KeyDisabled
// (azure-errors.md, Key Vault row 1).
func TestDisabledKey(t *testing.T) {
	f := newFixture(t)
	must(t, f.emu.AssignRole("v1", f.oid, RoleCryptoUser))
	c := f.keys("v1")
	ops := cryptoOpsOf(t, f, c)
	no := false
	must(t, f.emu.UpdateKey("v1", "cmk", KeyUpdate{Enabled: &no}))

	ver, _ := f.emu.KeyVersion("v1", "cmk")
	for _, v := range []string{"", ver} {
		k, err := c.GetKey(ctx, "cmk", v, nil)
		if err != nil {
			t.Fatalf("GetKey(version %q) of a disabled key = %v, want 200", v, err)
		}
		if k.Attributes == nil || k.Attributes.Enabled == nil || *k.Attributes.Enabled {
			t.Errorf("GetKey(version %q): attributes.enabled = %v, want false", v, k.Attributes)
		}
	}
	for _, tc := range []struct {
		op      string
		refused bool
	}{
		{"wrapKey", false}, {"encrypt", false}, {"verify", false},
		{"unwrapKey", true}, {"decrypt", true}, {"sign", true},
	} {
		err := ops[tc.op](c)
		if !tc.refused {
			if err != nil {
				t.Errorf("%s on a disabled key = %v, want success", tc.op, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s on a disabled key succeeded, want 403 KeyDisabled", tc.op)
			continue
		}
		status, code, inner, msg := kvFailure(t, err)
		want := "Operation " + tc.op + " is not allowed on a disabled key."
		if status != 403 || code != "Forbidden" || inner != "KeyDisabled" || msg != want {
			t.Errorf("%s on a disabled key = %d %s/%s %q, want 403 Forbidden/KeyDisabled %q", tc.op, status, code, inner, msg, want)
		}
	}
}

// TestValidityWindow: outside nbf/exp, wrapKey, encrypt and sign answer 403
// while unwrapKey, decrypt and verify keep working (azure-errors.md, Key
// Vault row 5).
func TestValidityWindow(t *testing.T) {
	for _, tc := range []struct {
		name  string
		set   func(now time.Time) KeyUpdate
		inner string
	}{
		{"expired", func(now time.Time) KeyUpdate { p := now.Add(-time.Second); return KeyUpdate{Expires: &p} }, "KeyExpired"},
		{"not yet valid", func(now time.Time) KeyUpdate { p := now.Add(time.Hour); return KeyUpdate{NotBefore: &p} }, "KeyNotYetValid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			must(t, f.emu.AssignRole("v1", f.oid, RoleCryptoUser))
			c := f.keys("v1")
			ops := cryptoOpsOf(t, f, c)
			must(t, f.emu.UpdateKey("v1", "cmk", tc.set(f.clock.Now())))
			for _, op := range []string{"unwrapKey", "decrypt", "verify"} {
				if err := ops[op](c); err != nil {
					t.Errorf("%s outside the window = %v, want success", op, err)
				}
			}
			for _, op := range []string{"wrapKey", "encrypt", "sign"} {
				err := ops[op](c)
				if err == nil {
					t.Errorf("%s outside the window succeeded, want 403", op)
					continue
				}
				if status, code, inner, _ := kvFailure(t, err); status != 403 || code != "Forbidden" || inner != tc.inner {
					t.Errorf("%s outside the window = %d %s/%s, want 403 Forbidden/%s", op, status, code, inner, tc.inner)
				}
			}
		})
	}
}

// kvEnvelope decodes a Key Vault error body.
func kvEnvelope(t *testing.T, body string) (code, msg string) {
	t.Helper()
	var env struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatalf("body %q is not a Key Vault error envelope: %v", body, err)
	}
	return env.Error.Code, env.Error.Message
}

// TestAPIVersion: the data plane answers 400 BadParameter, naming the
// version, to an api-version it does not know or to none; the accepted set
// is the vault's, so a vault can stand for a cloud that lags behind.
func TestAPIVersion(t *testing.T) {
	f := newFixture(t)
	tok := f.token(customerTenant)
	get := func(query string) rawResp {
		return f.raw(http.MethodGet, f.emu.VaultURL("v1")+"/keys/cmk"+query, tok, "")
	}
	for _, tc := range []struct {
		query      string
		wantStatus int
		wantMsg    string
	}{
		{"?api-version=7.0", 200, ""},
		{"?api-version=7.6-preview.2", 200, ""},
		{"?api-version=2025-07-01", 200, ""},
		{"?api-version=7.9", 400, "The specified version (7.9) is not recognized. Consider using the latest supported version (2025-07-01)."},
		{"?api-version=2099-01-01", 400, "(2099-01-01) is not recognized"},
		{"?api-version=latest", 400, "(latest) is not recognized"},
		{"", 400, "missing 'api-version'"},
		{"?api-version=", 400, "missing 'api-version'"},
	} {
		r := get(tc.query)
		if r.status != tc.wantStatus {
			t.Errorf("GET %s = %d %s, want %d", tc.query, r.status, r.body, tc.wantStatus)
			continue
		}
		if tc.wantStatus == 400 {
			if code, msg := kvEnvelope(t, r.body); code != "BadParameter" || !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("GET %s = %s %q, want BadParameter containing %q", tc.query, code, msg, tc.wantMsg)
			}
		}
	}

	// A vault that accepts up to 7.2 refuses the SDK's version.
	must(t, f.emu.SetAPIVersions("v1", "7.0", "7.1", "7.2"))
	_, err := f.keys("v1").GetKey(ctx, "cmk", "", nil)
	if err == nil {
		t.Fatal("SDK call to a vault that accepts up to 7.2: got success, want 400")
	}
	status, code, _, msg := kvFailure(t, err)
	if want := "The specified version (2025-07-01) is not recognized. Consider using the latest supported version (7.2)."; status != 400 || code != "BadParameter" || msg != want {
		t.Errorf("SDK call to a lagging vault = %d %s %q, want 400 BadParameter %q", status, code, msg, want)
	}
	if r := get("?api-version=7.2"); r.status != 200 {
		t.Errorf("GET with 7.2 on a vault that accepts it = %d %s, want 200", r.status, r.body)
	}
	if r := get("?api-version=7.5"); r.status != 400 {
		t.Errorf("GET with 7.5 on a vault that accepts up to 7.2 = %d, want 400", r.status)
	}
	if err := f.emu.SetAPIVersions("v1", "7.2", "seven"); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetAPIVersions with a malformed version = %v, want ErrInvalid", err)
	}

	// Over the admin API, and back to the default set.
	ac, err := NewAdminClientCA(f.emu.URL(), f.emu.CAPEM())
	must(t, err)
	must(t, ac.SetAPIVersions("v1", "7.3"))
	if vi, _ := ac.GetVault("v1"); !slices.Equal(vi.APIVersions, []string{"7.3"}) {
		t.Errorf("GetVault: APIVersions = %v, want [7.3]", vi.APIVersions)
	}
	if r := get("?api-version=7.2"); r.status != 400 {
		t.Errorf("GET with 7.2 after the admin API set [7.3] = %d, want 400", r.status)
	}
	must(t, ac.SetAPIVersions("v1"))
	if _, err := f.keys("v1").GetKey(ctx, "cmk", "", nil); err != nil {
		t.Errorf("SDK call after restoring the default versions = %v, want success", err)
	}
}

// TestPropagationDelay: with a propagation delay, a role assignment or
// removal reaches the data plane, and a consent grant or revocation the
// token endpoint, only once the delay has passed (on the injected clock);
// the admin view shows the change at once.
func TestPropagationDelay(t *testing.T) {
	const delay = 5 * time.Minute
	f := newFixture(t, func(o *Options) { o.PropagationDelay = delay })
	c := f.keys("v1")
	get := func() error { _, err := c.GetKey(ctx, "cmk", "", nil); return err }
	wantRBAC := func(when string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: got success, want 403 ForbiddenByRbac", when)
			return
		}
		if status, _, inner, _ := kvFailure(t, err); status != 403 || inner != "ForbiddenByRbac" {
			t.Errorf("%s: got %d %s, want 403 ForbiddenByRbac", when, status, inner)
		}
	}
	// The fixture's consent and role assignment were made with the delay
	// on: nothing works until it has passed.
	if _, err := f.cred(customerTenant, appSecret).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{f.emu.VaultResource() + "/.default"}}); err == nil {
		t.Error("token right after the fixture's consent: got one, want AADSTS700016 (not yet propagated)")
	}
	f.clock.Advance(delay)
	must(t, get())

	must(t, f.emu.RemoveRole("v1", f.oid, RoleCryptoServiceEncryptionUser))
	if vi, _ := f.emu.GetVault("v1"); len(vi.Roles) != 0 {
		t.Errorf("GetVault right after the removal: roles %v, want none", vi.Roles)
	}
	f.clock.Advance(delay - time.Second)
	if err := get(); err != nil {
		t.Errorf("role removed %s ago (delay %s): got %v, want success", delay-time.Second, delay, err)
	}
	f.clock.Advance(time.Second)
	wantRBAC("role removed a full delay ago", get())

	must(t, f.emu.AssignRole("v1", f.oid, RoleCryptoServiceEncryptionUser))
	wantRBAC("role assigned just now", get())
	f.clock.Advance(delay)
	if err := get(); err != nil {
		t.Errorf("role assigned a full delay ago: got %v, want success", err)
	}

	token := func() error {
		_, err := f.cred(customerTenant, appSecret).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{f.emu.VaultResource() + "/.default"}})
		return err
	}
	must(t, f.emu.RevokeConsent(customerTenant, appClientID))
	if _, ok := f.emu.ServicePrincipal(customerTenant, appClientID); ok {
		t.Error("ServicePrincipal right after the revocation: still there, want gone")
	}
	if err := token(); err != nil {
		t.Errorf("token right after the revocation: got %v, want a token (not yet propagated)", err)
	}
	f.clock.Advance(delay)
	if err := token(); err == nil || !strings.Contains(err.Error(), "AADSTS700016") {
		t.Errorf("token a full delay after the revocation: got %v, want AADSTS700016", err)
	}
	_, err := f.emu.GrantConsent(customerTenant, appClientID)
	must(t, err)
	if err := token(); err == nil || !strings.Contains(err.Error(), "AADSTS700016") {
		t.Errorf("token right after the grant: got %v, want AADSTS700016 (not yet propagated)", err)
	}
	f.clock.Advance(delay)
	if err := token(); err != nil {
		t.Errorf("token a full delay after the grant: got %v, want a token", err)
	}

	// At run time over the admin API; 0 puts changes on their way in
	// effect at once.
	ac, err := NewAdminClientCA(f.emu.URL(), f.emu.CAPEM())
	must(t, err)
	must(t, ac.SetPropagationDelay(time.Hour))
	if d, err := ac.PropagationDelay(); err != nil || d != time.Hour {
		t.Errorf("PropagationDelay = %s, %v, want 1h", d, err)
	}
	must(t, ac.RemoveRole("v1", f.oid, RoleCryptoServiceEncryptionUser))
	if err := get(); err != nil {
		t.Errorf("role removed with a one-hour delay: got %v, want success", err)
	}
	must(t, ac.SetPropagationDelay(0))
	wantRBAC("role removed, delay switched off", get())
	if err := ac.SetPropagationDelay(-time.Second); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative delay: got %v, want ErrInvalid", err)
	}
}

// TestTokenResource: the token endpoint issues tokens for the vault
// resource and for a registered app (by client id or api:// URI), and
// answers AADSTS500011 to any other resource, naming it and the tenant.
func TestTokenResource(t *testing.T) {
	f := newFixture(t)
	token := func(scope string) (string, error) {
		tok, err := f.cred(customerTenant, appSecret).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
		return tok.Token, err
	}
	for _, scope := range []string{
		f.emu.VaultResource() + "/.default",
		"api://" + appClientID + "/.default",
		appClientID + "/.default",
	} {
		if _, err := token(scope); err != nil {
			t.Errorf("token for %s: got %v, want a token", scope, err)
		}
	}
	for _, resource := range []string{"https://management.azure.com", "https://vault.azure.net", "api://bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"} {
		_, err := token(resource + "/.default")
		want := "AADSTS500011: The resource principal named " + resource + " was not found in the tenant named " + customerTenant + "."
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), `"invalid_resource"`) {
			t.Errorf("token for %s: got %v, want invalid_resource %q", resource, err, want)
		}
	}
	// A trailing slash is a known resource, but the token's audience keeps
	// it and Key Vault refuses it (azure-errors.md section 10).
	tok, err := token(f.emu.VaultResource() + "//.default")
	must(t, err)
	r := f.raw(http.MethodGet, f.emu.VaultURL("v1")+"/keys/cmk?api-version=7.5", tok, "")
	if _, msg := kvEnvelope(t, r.body); r.status != 401 || !strings.Contains(msg, "AKV10022") {
		t.Errorf("vault call with audience %s/: got %d %q, want 401 AKV10022", f.emu.VaultResource(), r.status, msg)
	}
}

// TestAdminConsentUnderCommon: the v2 admin-consent endpoint is refused
// under "common" (GET and POST), without creating a service principal or
// redirecting; "organizations" still asks for the tenant.
func TestAdminConsentUnderCommon(t *testing.T) {
	f := newFixture(t)
	must(t, f.emu.RevokeConsent(customerTenant, appClientID))
	redirect := "https://platform.example/consent-done"
	q := url.Values{"client_id": {appClientID}, "redirect_uri": {redirect}, "state": {"s"}, "scope": {f.emu.VaultResource() + "/.default"}}
	page := f.raw(http.MethodGet, f.emu.URL()+"/common/v2.0/adminconsent?"+q.Encode(), "", "")
	if page.status != 400 || !strings.Contains(page.body, "AADSTS90130") || strings.Contains(page.body, ">Accept</button>") {
		t.Errorf("GET /common/v2.0/adminconsent = %d, want 400 AADSTS90130 without a consent form", page.status)
	}
	form := url.Values{"client_id": {appClientID}, "redirect_uri": {redirect}, "tenant": {customerTenant}, "action": {"accept"}}
	req, _ := http.NewRequest(http.MethodPost, f.emu.URL()+"/common/v2.0/adminconsent", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	cl := f.emu.HTTPClient()
	cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := cl.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("POST /common/v2.0/adminconsent = %d, want 400", resp.StatusCode)
	}
	if _, ok := f.emu.ServicePrincipal(customerTenant, appClientID); ok {
		t.Error("POST /common/v2.0/adminconsent created a service principal")
	}
	org := f.raw(http.MethodGet, f.emu.URL()+"/organizations/v2.0/adminconsent?"+q.Encode(), "", "")
	if org.status != 200 || !strings.Contains(org.body, `name="tenant"`) {
		t.Errorf("GET /organizations/v2.0/adminconsent = %d, want 200 asking for the tenant", org.status)
	}
}

// TestAuthorizeDeclined: Cancel on the authorization endpoint redirects with
// error=access_denied and AADSTS65004, without admin_consent.
func TestAuthorizeDeclined(t *testing.T) {
	f := newFixture(t)
	redirect := "https://platform.example/consent-done"
	form := url.Values{"client_id": {appClientID}, "redirect_uri": {redirect}, "state": {"s1"}, "response_type": {"code"},
		"tenant": {customerTenant}, "action": {"cancel"}}
	req, _ := http.NewRequest(http.MethodPost, f.emu.URL()+"/organizations/oauth2/v2.0/authorize", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	cl := f.emu.HTTPClient()
	cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := cl.Do(req)
	must(t, err)
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if q := loc.Query(); resp.StatusCode != 302 || q.Get("error") != "access_denied" || q.Get("error_description") != msgDeclined ||
		q.Has("admin_consent") || q.Get("state") != "s1" {
		t.Errorf("cancel on the authorization endpoint = %d %s, want 302 with error=access_denied, AADSTS65004 and the state", resp.StatusCode, loc)
	}
}
