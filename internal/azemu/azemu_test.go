package azemu

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/golang-jwt/jwt/v5"
)

const (
	platformTenant = "11111111-1111-4111-8111-111111111111"
	customerTenant = "22222222-2222-4222-8222-222222222222"
	otherTenant    = "33333333-3333-4333-8333-333333333333"
	appClientID    = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	appSecret      = "s3cret-value"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	t     *testing.T
	emu   *Emulator
	clock *fakeClock
	oid   string // service principal of the app in the customer tenant
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// newFixture starts an emulator with a platform tenant owning the app, a
// customer tenant that consented, vault "v1" (soft delete + purge
// protection) in the customer tenant, the app holding the Crypto Service
// Encryption User role, and a 2048-bit key "cmk".
func newFixture(t *testing.T, opts ...func(*Options)) *fixture {
	t.Helper()
	clock := &fakeClock{t: time.Now().UTC().Truncate(time.Second)}
	o := Options{Now: clock.Now}
	for _, f := range opts {
		f(&o)
	}
	emu, err := Start(o)
	must(t, err)
	t.Cleanup(func() { emu.Close() })
	f := &fixture{t: t, emu: emu, clock: clock}
	if len(emu.State().Tenants) > 0 { // loaded from a state file
		f.oid, _ = emu.ServicePrincipal(customerTenant, appClientID)
		return f
	}
	must(t, emu.CreateTenant(platformTenant))
	must(t, emu.CreateTenant(customerTenant))
	must(t, emu.CreateTenant(otherTenant))
	must(t, emu.RegisterApp(App{HomeTenant: platformTenant, ClientID: appClientID, ClientSecret: appSecret,
		Name: "Data Platform CMK", RedirectURI: "https://platform.example/consent-done"}))
	f.oid, err = emu.GrantConsent(customerTenant, appClientID)
	must(t, err)
	must(t, emu.CreateVault(Vault{Name: "v1", TenantID: customerTenant, SoftDelete: true, PurgeProtection: true}))
	must(t, emu.AssignRole("v1", f.oid, RoleCryptoServiceEncryptionUser))
	_, err = emu.CreateKey("v1", "cmk", KeyOptions{Bits: 2048})
	must(t, err)
	return f
}

func (f *fixture) clientOptions() azcore.ClientOptions {
	return azcore.ClientOptions{
		Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: f.emu.AuthorityHost()},
		Transport: f.emu.HTTPClient(),
		Retry:     policy.RetryOptions{MaxRetries: -1},
	}
}

func (f *fixture) cred(tenant, secret string) *azidentity.ClientSecretCredential {
	f.t.Helper()
	c, err := azidentity.NewClientSecretCredential(tenant, appClientID, secret, &azidentity.ClientSecretCredentialOptions{
		ClientOptions:              f.clientOptions(),
		DisableInstanceDiscovery:   true,
		AdditionallyAllowedTenants: []string{"*"},
	})
	must(f.t, err)
	return c
}

func (f *fixture) keys(vault string) *azkeys.Client {
	f.t.Helper()
	c, err := azkeys.NewClient(f.emu.VaultURL(vault), f.cred(customerTenant, appSecret),
		&azkeys.ClientOptions{ClientOptions: f.clientOptions()})
	must(f.t, err)
	return c
}

var ctx = context.Background()

func oaep256() *azkeys.EncryptionAlgorithm { return to.Ptr(azkeys.EncryptionAlgorithmRSAOAEP256) }

func wrap(c *azkeys.Client, name, version string, v []byte) (azkeys.WrapKeyResponse, error) {
	return c.WrapKey(ctx, name, version, azkeys.KeyOperationParameters{Algorithm: oaep256(), Value: v}, nil)
}

func unwrap(c *azkeys.Client, name, version string, v []byte) (azkeys.UnwrapKeyResponse, error) {
	return c.UnwrapKey(ctx, name, version, azkeys.KeyOperationParameters{Algorithm: oaep256(), Value: v}, nil)
}

// kvFailure extracts status, top-level code, innererror code and message.
func kvFailure(t *testing.T, err error) (status int, code, inner, msg string) {
	t.Helper()
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not an *azcore.ResponseError", err, err)
	}
	body, perr := runtime.Payload(re.RawResponse)
	must(t, perr)
	var env struct {
		Error struct {
			Code       string `json:"code"`
			Message    string `json:"message"`
			InnerError *struct {
				Code string `json:"code"`
			} `json:"innererror"`
		} `json:"error"`
	}
	must(t, json.Unmarshal(body, &env))
	if env.Error.InnerError != nil {
		inner = env.Error.InnerError.Code
	}
	return re.StatusCode, re.ErrorCode, inner, env.Error.Message
}

func dek() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}

func TestRoundTrip(t *testing.T) {
	f := newFixture(t)
	c := f.keys("v1")
	got, err := c.GetKey(ctx, "cmk", "", nil)
	must(t, err)
	ver, _ := f.emu.KeyVersion("v1", "cmk")
	if got, want := got.Key.KID.Version(), ver; got != want {
		t.Errorf("kid version: got %q, want %q", got, want)
	}
	if got, want := string(*got.Key.KID), "https://v1.vault.azure.localhost/keys/cmk/"+ver; got != want {
		t.Errorf("kid: got %q, want %q", got, want)
	}
	if got, want := *got.Attributes.RecoveryLevel, "Recoverable"; got != want {
		t.Errorf("recoveryLevel: got %q, want %q", got, want)
	}
	if got, want := len(got.Key.N)*8, 2048; got != want {
		t.Errorf("modulus bits: got %d, want %d", got, want)
	}
	plain := dek()
	w, err := wrap(c, "cmk", "", plain)
	must(t, err)
	if got, want := w.KID.Version(), ver; got != want {
		t.Errorf("wrap kid version: got %q, want %q", got, want)
	}
	u, err := unwrap(c, "cmk", ver, w.Result)
	must(t, err)
	if !bytes.Equal(u.Result, plain) {
		t.Errorf("unwrap: got %x, want %x", u.Result, plain)
	}
	st := f.emu.Stats().Vaults["v1"]
	if st.Get != 1 || st.Wrap != 1 || st.Unwrap != 1 {
		t.Errorf("stats: got %+v, want get/wrap/unwrap = 1/1/1", st)
	}
	if got := f.emu.Stats().TokensIssued; got != 1 {
		t.Errorf("tokens issued: got %d, want 1 (cached by MSAL)", got)
	}
}

func TestDefaultKeyIs3072(t *testing.T) {
	f := newFixture(t)
	_, err := f.emu.CreateKey("v1", "big", KeyOptions{})
	must(t, err)
	k, err := f.keys("v1").GetKey(ctx, "big", "", nil)
	must(t, err)
	if got, want := len(k.Key.N)*8, 3072; got != want {
		t.Errorf("bits: got %d, want %d", got, want)
	}
	ops := []string{}
	for _, o := range k.Key.KeyOps {
		ops = append(ops, string(*o))
	}
	if got, want := strings.Join(ops, ","), "wrapKey,unwrapKey,encrypt,decrypt,sign,verify"; got != want {
		t.Errorf("key_ops: got %s, want %s", got, want)
	}
}

func TestKeyVaultFailures(t *testing.T) {
	f0 := false
	cases := []struct {
		name       string
		breakIt    func(f *fixture)
		op         string // get | wrap | unwrap
		wantStatus int
		wantCode   string
		wantInner  string
		wantMsg    string
	}{
		{"disabled key unwrap", func(f *fixture) { must(t, f.emu.UpdateKey("v1", "cmk", KeyUpdate{Enabled: &f0})) },
			"unwrap", 403, "Forbidden", "KeyDisabled", "Operation unwrapKey is not allowed on a disabled key."},
		{"role removed", func(f *fixture) { must(t, f.emu.RemoveRole("v1", f.oid, RoleCryptoServiceEncryptionUser)) },
			"get", 403, "Forbidden", "ForbiddenByRbac", "Action: 'Microsoft.KeyVault/vaults/keys/read'"},
		{"role removed wrap", func(f *fixture) { must(t, f.emu.RemoveRole("v1", f.oid, RoleCryptoServiceEncryptionUser)) },
			"wrap", 403, "Forbidden", "ForbiddenByRbac", "Assignment: (not found)"},
		{"reader cannot wrap", func(f *fixture) {
			must(t, f.emu.RemoveRole("v1", f.oid, RoleCryptoServiceEncryptionUser))
			must(t, f.emu.AssignRole("v1", f.oid, RoleReader))
		}, "wrap", 403, "Forbidden", "ForbiddenByRbac", "keys/wrap/action"},
		{"firewall", func(f *fixture) { must(t, f.emu.SetFirewall("v1", true)) },
			"get", 403, "Forbidden", "ForbiddenByFirewall", "Client address is not authorized and caller is not a trusted service."},
		{"key soft-deleted", func(f *fixture) { must(t, f.emu.DeleteKey("v1", "cmk")) },
			"get", 404, "KeyNotFound", "", "A key with (name/id) cmk was not found in this key vault."},
		{"wrapKey not in key_ops", func(f *fixture) {
			must(t, f.emu.UpdateKey("v1", "cmk", KeyUpdate{Ops: []string{"unwrapKey"}}))
		}, "wrap", 403, "Forbidden", "KeyOperationForbidden", "Operation wrapKey is not permitted on this key."},
		{"expired key wrap", func(f *fixture) {
			past := f.clock.Now().Add(-time.Minute)
			must(t, f.emu.UpdateKey("v1", "cmk", KeyUpdate{Expires: &past}))
		}, "wrap", 403, "Forbidden", "KeyExpired", "expired"},
		{"not yet valid wrap", func(f *fixture) {
			later := f.clock.Now().Add(time.Hour)
			must(t, f.emu.UpdateKey("v1", "cmk", KeyUpdate{NotBefore: &later}))
		}, "wrap", 403, "Forbidden", "KeyNotYetValid", "not yet valid"},
		{"vault fault 503", func(f *fixture) { f.emu.SetVaultFault("v1", 503, 0) },
			"get", 503, "ServiceUnavailable", "", "temporarily unavailable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			c := f.keys("v1")
			tc.breakIt(f)
			var err error
			switch tc.op {
			case "get":
				_, err = c.GetKey(ctx, "cmk", "", nil)
			case "unwrap":
				_, err = unwrap(c, "cmk", "", make([]byte, 256))
			default:
				_, err = wrap(c, "cmk", "", dek())
			}
			if err == nil {
				t.Fatalf("got success, want HTTP %d", tc.wantStatus)
			}
			status, code, inner, msg := kvFailure(t, err)
			if status != tc.wantStatus || code != tc.wantCode || inner != tc.wantInner {
				t.Errorf("got %d %s/%s, want %d %s/%s", status, code, inner, tc.wantStatus, tc.wantCode, tc.wantInner)
			}
			if !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("message: got %q, want it to contain %q", msg, tc.wantMsg)
			}
		})
	}
}

func TestRBACMessageShape(t *testing.T) {
	f := newFixture(t)
	must(t, f.emu.RemoveRole("v1", f.oid, RoleCryptoServiceEncryptionUser))
	_, err := f.keys("v1").GetKey(ctx, "cmk", "", nil)
	_, _, _, msg := kvFailure(t, err)
	lines := strings.Split(msg, "\r\n")
	want := []string{
		"Caller is not authorized to perform action on resource.",
		"If role assignments, deny assignments or role definitions were changed recently, please observe propagation time.",
		"Caller: appid=" + appClientID + ";oid=" + f.oid + ";iss=https://sts.windows.net/" + customerTenant + "/",
		"Action: 'Microsoft.KeyVault/vaults/keys/read'",
		"Resource: '/subscriptions/" + subscriptionID + "/resourcegroups/" + resourceGroup + "/providers/microsoft.keyvault/vaults/v1/keys/cmk'",
		"Assignment: (not found)",
		"DenyAssignmentId: null",
		"DecisionReason: null",
		"Vault: v1;location=eastus",
	}
	for i, w := range want {
		if i >= len(lines) || lines[i] != w {
			got := "<missing>"
			if i < len(lines) {
				got = lines[i]
			}
			t.Errorf("line %d: got %q, want %q", i, got, w)
		}
	}
}

func TestExpiredKeyStillUnwraps(t *testing.T) {
	f := newFixture(t)
	c := f.keys("v1")
	plain := dek()
	w, err := wrap(c, "cmk", "", plain)
	must(t, err)
	past := f.clock.Now().Add(-time.Second)
	must(t, f.emu.UpdateKey("v1", "cmk", KeyUpdate{Expires: &past}))
	if _, err := wrap(c, "cmk", "", plain); err == nil {
		t.Fatal("wrap after expiry: got success, want 403")
	}
	u, err := unwrap(c, "cmk", "", w.Result)
	if err != nil {
		t.Fatalf("unwrap after expiry: got %v, want success", err)
	}
	if !bytes.Equal(u.Result, plain) {
		t.Errorf("unwrap: got %x, want %x", u.Result, plain)
	}
	// and clearing the expiry makes wrap work again
	must(t, f.emu.UpdateKey("v1", "cmk", KeyUpdate{ClearExpires: true}))
	if _, err := wrap(c, "cmk", "", plain); err != nil {
		t.Errorf("wrap after clearing exp: got %v, want success", err)
	}
}

func TestBadCiphertextAndBase64(t *testing.T) {
	f := newFixture(t)
	c := f.keys("v1")
	_, err := unwrap(c, "cmk", "", []byte("not a ciphertext"))
	status, code, _, msg := kvFailure(t, err)
	if status != 400 || code != "BadParameter" || msg != msgUndecryptable {
		t.Errorf("undecryptable: got %d %s %q, want 400 BadParameter %q", status, code, msg, msgUndecryptable)
	}
	// bad base64 needs a raw request: the SDK always encodes correctly.
	tok := f.token(customerTenant)
	resp := f.raw(http.MethodPost, f.emu.VaultURL("v1")+"/keys/cmk//unwrapkey?api-version=7.5", tok, `{"alg":"RSA-OAEP-256","value":"@@@"}`)
	if got, want := resp.status, 400; got != want {
		t.Errorf("bad base64 status: got %d, want %d", got, want)
	}
	if !strings.Contains(resp.body, "is not base64url") {
		t.Errorf("bad base64 body: got %s, want BadParameter 'not base64url'", resp.body)
	}
}

type rawResp struct {
	status int
	header http.Header
	body   string
}

func (f *fixture) raw(method, u, token, body string) rawResp {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	must(f.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	cl := f.emu.HTTPClient()
	cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := cl.Do(req)
	must(f.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return rawResp{resp.StatusCode, resp.Header, string(b)}
}

func (f *fixture) token(tenant string) string {
	f.t.Helper()
	tok, err := f.emu.IssueToken(tenant, appClientID, f.oid, f.emu.VaultResource(), f.clock.Now())
	must(f.t, err)
	return tok
}

func TestChallengeAndTokenValidation(t *testing.T) {
	f := newFixture(t)
	getURL := f.emu.VaultURL("v1") + "/keys/cmk/?api-version=7.5"
	r := f.raw(http.MethodGet, getURL, "", "")
	wantChallenge := `Bearer authorization="` + f.emu.URL() + "/" + customerTenant + `", resource="https://vault.azure.localhost"`
	if got := r.header.Get("WWW-Authenticate"); r.status != 401 || got != wantChallenge {
		t.Errorf("challenge: got %d %q, want 401 %q", r.status, got, wantChallenge)
	}
	if got, want := r.body, `{"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}}`+"\n"; got != want {
		t.Errorf("challenge body: got %s, want %s", got, want)
	}
	wrongAud, _ := f.emu.IssueToken(customerTenant, appClientID, f.oid, "https://management.azure.com/", f.clock.Now())
	old, _ := f.emu.IssueToken(customerTenant, appClientID, f.oid, f.emu.VaultResource(), f.clock.Now().Add(-2*time.Hour))
	cases := []struct {
		name, url, token string
		wantStatus       int
		wantBody         string
	}{
		{"valid", getURL, f.token(customerTenant), 200, `"kid":"https://v1.vault.azure.localhost/keys/cmk/`},
		{"wrong audience", getURL, wrongAud, 401, "AKV10022: Invalid audience. Expected https://vault.azure.localhost, found: https://management.azure.com/."},
		{"wrong tenant", getURL, f.token(otherTenant), 401, "AKV10032: Invalid issuer."},
		{"expired token", getURL, old, 401, "Token expired"},
		{"garbage token", getURL, "abc.def.ghi", 401, "Unauthorized"},
		{"missing api-version", f.emu.VaultURL("v1") + "/keys/cmk/", f.token(customerTenant), 400, "BadParameter"},
		{"new api-version format", f.emu.VaultURL("v1") + "/keys/cmk?api-version=2025-07-01", f.token(customerTenant), 200, `"recoveryLevel":"Recoverable"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := f.raw(http.MethodGet, tc.url, tc.token, "")
			if r.status != tc.wantStatus || !strings.Contains(r.body, tc.wantBody) {
				t.Errorf("got %d %s, want %d containing %q", r.status, r.body, tc.wantStatus, tc.wantBody)
			}
		})
	}
}

func TestAuthorityFailures(t *testing.T) {
	cases := []struct {
		name       string
		breakIt    func(f *fixture)
		tenant     string
		secret     string
		wantStatus int
		wantError  string
		wantCode   int
	}{
		{"consent missing", func(f *fixture) { must(t, f.emu.RevokeConsent(customerTenant, appClientID)) },
			customerTenant, appSecret, 400, "unauthorized_client", 700016},
		{"bad secret", func(*fixture) {}, customerTenant, "wrong", 401, "invalid_client", 7000215},
		{"expired secret", func(f *fixture) {
			must(t, f.emu.RegisterApp(App{HomeTenant: platformTenant, ClientID: appClientID, ClientSecret: appSecret,
				Name: "Data Platform CMK", SecretExpires: f.clock.Now().Add(-time.Hour)}))
		}, customerTenant, appSecret, 401, "invalid_client", 7000222},
		{"token endpoint failing", func(f *fixture) { f.emu.SetTokenEndpointFault(503) },
			customerTenant, appSecret, 503, "temporarily_unavailable", 90033},
		// azure-errors.md section 13: a resource with no principal.
		{"unknown resource", func(*fixture) {}, customerTenant, appSecret, 400, "invalid_resource", 500011},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tc.breakIt(f)
			scope := f.emu.VaultResource() + "/.default"
			if tc.wantCode == 500011 {
				scope = "https://management.azure.com/.default"
			}
			_, err := f.cred(tc.tenant, tc.secret).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
			var afe *azidentity.AuthenticationFailedError
			if !errors.As(err, &afe) {
				t.Fatalf("got %v (%T), want *azidentity.AuthenticationFailedError", err, err)
			}
			if afe.RawResponse == nil {
				t.Fatalf("RawResponse is nil; error: %v", err)
			}
			body, err := runtime.Payload(afe.RawResponse)
			must(t, err)
			var got struct {
				Error     string `json:"error"`
				Desc      string `json:"error_description"`
				Codes     []int  `json:"error_codes"`
				TraceID   string `json:"trace_id"`
				CorrID    string `json:"correlation_id"`
				Timestamp string `json:"timestamp"`
			}
			must(t, json.Unmarshal(body, &got))
			if afe.RawResponse.StatusCode != tc.wantStatus || got.Error != tc.wantError || len(got.Codes) != 1 || got.Codes[0] != tc.wantCode {
				t.Errorf("got %d %s %v, want %d %s [%d]", afe.RawResponse.StatusCode, got.Error, got.Codes, tc.wantStatus, tc.wantError, tc.wantCode)
			}
			if !strings.Contains(got.Desc, "\r\nTrace ID: "+got.TraceID+"\r\nCorrelation ID: "+got.CorrID+"\r\nTimestamp: "+got.Timestamp) {
				t.Errorf("error_description trailer: got %q", got.Desc)
			}
		})
	}
	// Unknown tenant: discovery itself fails with AADSTS90002.
	f := newFixture(t)
	_, err := f.cred("44444444-4444-4444-8444-444444444444", appSecret).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{f.emu.VaultResource() + "/.default"}})
	if err == nil || !strings.Contains(err.Error(), "AADSTS90002") {
		t.Errorf("unknown tenant: got %v, want an error mentioning AADSTS90002", err)
	}
}

func TestConsentMissingThroughKeyVault(t *testing.T) {
	f := newFixture(t)
	must(t, f.emu.RevokeConsent(customerTenant, appClientID))
	_, err := f.keys("v1").GetKey(ctx, "cmk", "", nil)
	var afe *azidentity.AuthenticationFailedError
	if !errors.As(err, &afe) || !strings.Contains(err.Error(), "AADSTS700016") {
		t.Errorf("got %v, want AuthenticationFailedError with AADSTS700016", err)
	}
}

func TestVaultDeletedIsDNSFailure(t *testing.T) {
	f := newFixture(t)
	c := f.keys("v1")
	_, err := c.GetKey(ctx, "cmk", "", nil)
	must(t, err)
	must(t, f.emu.DeleteVault("v1"))
	_, err = c.GetKey(ctx, "cmk", "", nil)
	var dns *net.DNSError
	if !errors.As(err, &dns) || !dns.IsNotFound || dns.Name != "v1.vault.azure.localhost" {
		t.Fatalf("got %v (%T), want *net.DNSError no such host for v1.vault.azure.localhost", err, err)
	}
	if !strings.Contains(err.Error(), "lookup v1.vault.azure.localhost: no such host") {
		t.Errorf("error text: got %q", err.Error())
	}
	must(t, f.emu.RecoverVault("v1"))
	if _, err := c.GetKey(ctx, "cmk", "", nil); err != nil {
		t.Errorf("after recover: got %v, want success", err)
	}
	// A vault that never existed looks the same.
	_, err = f.keys("nosuchvault").GetKey(ctx, "cmk", "", nil)
	if !errors.As(err, &dns) {
		t.Errorf("unknown vault: got %v, want *net.DNSError", err)
	}
}

func TestThrottle(t *testing.T) {
	f := newFixture(t)
	c := f.keys("v1")
	_, err := c.GetKey(ctx, "cmk", "", nil) // warm up: challenge + token
	must(t, err)
	f.emu.SetThrottle("v1", 2, 10*time.Second)
	for i := 0; i < 2; i++ {
		_, err := c.GetKey(ctx, "cmk", "", nil)
		must(t, err)
	}
	_, err = c.GetKey(ctx, "cmk", "", nil)
	status, code, _, msg := kvFailure(t, err)
	if status != 429 || code != "Throttled" || msg != msgThrottled {
		t.Errorf("got %d %s %q, want 429 Throttled %q", status, code, msg, msgThrottled)
	}
	var re *azcore.ResponseError
	errors.As(err, &re)
	if got, ok := re.RawResponse.Header["Retry-After"]; ok {
		t.Errorf("Retry-After by default: got %q, want no header (azure-errors.md, Key Vault row 7)", got)
	}
	// The switch adds Retry-After: the seconds until the window ends.
	must(t, f.emu.SetVaultThrottle("v1", Throttle{Limit: 2, Window: 10 * time.Second, RetryAfter: true}))
	for i := 0; i < 2; i++ {
		_, err := c.GetKey(ctx, "cmk", "", nil)
		must(t, err)
	}
	_, err = c.GetKey(ctx, "cmk", "", nil)
	errors.As(err, &re)
	if got, want := re.RawResponse.Header.Get("Retry-After"), "10"; got != want {
		t.Errorf("Retry-After: got %q, want %q", got, want)
	}
	f.clock.Advance(4 * time.Second)
	_, err = c.GetKey(ctx, "cmk", "", nil)
	errors.As(err, &re)
	if re == nil || re.RawResponse.Header.Get("Retry-After") != "6" {
		t.Errorf("Retry-After after 4s: got %v, want 6", err)
	}
	f.clock.Advance(6 * time.Second)
	if _, err := c.GetKey(ctx, "cmk", "", nil); err != nil {
		t.Errorf("next window: got %v, want success", err)
	}
	if got := f.emu.Stats().Vaults["v1"].Throttled; got != 3 {
		t.Errorf("throttled count: got %d, want 3", got)
	}
}

func TestVaultDelayHonoursContext(t *testing.T) {
	f := newFixture(t)
	f.emu.SetVaultFault("v1", 0, 5*time.Second)
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := f.keys("v1").GetKey(cctx, "cmk", "", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v, want about 200ms", d)
	}
}

// TestVaultReset: with the switch on, a request gets its connection reset
// (no HTTP answer at all), is counted, and other vaults are untouched; off
// again, the vault answers.
func TestVaultReset(t *testing.T) {
	f := newFixture(t)
	must(t, f.emu.CreateVault(Vault{Name: "v9", TenantID: customerTenant}))
	must(t, f.emu.AssignRole("v9", f.oid, RoleCryptoServiceEncryptionUser))
	_, err := f.emu.CreateKey("v9", "cmk", KeyOptions{Bits: 2048})
	must(t, err)
	c := f.keys("v1")
	if _, err := c.GetKey(ctx, "cmk", "", nil); err != nil { // a token first, so the reset meets a key call
		t.Fatal(err)
	}
	f.emu.SetVaultReset("v1", true)
	for range 3 {
		_, err := c.GetKey(ctx, "cmk", "", nil)
		var re *azcore.ResponseError
		if err == nil || errors.As(err, &re) {
			t.Fatalf("GetKey under reset = %v, want a transport error", err)
		}
		if msg := err.Error(); !strings.Contains(msg, "reset") && !strings.Contains(msg, "EOF") {
			t.Errorf("GetKey under reset = %q, want a connection reset or EOF", msg)
		}
	}
	// Go's transport retries an idempotent request once when a reused
	// connection fails before any answer, so 3 calls are 3 to 6 resets.
	if got := f.emu.Stats().Vaults["v1"].Resets; got < 3 || got > 6 {
		t.Errorf("resets counted = %d, want 3 to 6", got)
	}
	if _, err := f.keys("v9").GetKey(ctx, "cmk", "", nil); err != nil {
		t.Errorf("another vault under v1's reset: %v", err)
	}
	f.emu.SetVaultReset("v1", false)
	if _, err := c.GetKey(ctx, "cmk", "", nil); err != nil {
		t.Errorf("GetKey after the reset switch is off: %v", err)
	}
}

func TestRotationAndVersions(t *testing.T) {
	f := newFixture(t)
	c := f.keys("v1")
	v1, _ := f.emu.KeyVersion("v1", "cmk")
	w, err := wrap(c, "cmk", "", []byte("old dek"))
	must(t, err)
	v2, err := f.emu.RotateKey("v1", "cmk")
	must(t, err)
	if v2 == v1 {
		t.Fatal("rotation returned the same version")
	}
	k, err := c.GetKey(ctx, "cmk", "", nil)
	must(t, err)
	if got, want := k.Key.KID.Version(), v2; got != want {
		t.Errorf("newest after rotate: got %s, want %s", got, want)
	}
	// unwrap with the old version still works
	u, err := unwrap(c, "cmk", w.KID.Version(), w.Result)
	must(t, err)
	if string(u.Result) != "old dek" {
		t.Errorf("old-version unwrap: got %q", u.Result)
	}
	// SDK listing (single page)
	pager := c.NewListKeyPropertiesVersionsPager("cmk", nil)
	var seen []string
	for pager.More() {
		pg, err := pager.NextPage(ctx)
		must(t, err)
		for _, it := range pg.Value {
			seen = append(seen, it.KID.Version())
		}
	}
	if got, want := strings.Join(seen, ","), v1+","+v2; got != want {
		t.Errorf("versions: got %s, want %s", got, want)
	}
	// raw paging with maxresults=1 and an opaque nextLink
	tok := f.token(customerTenant)
	next := f.emu.VaultURL("v1") + "/keys/cmk/versions?api-version=7.5&maxresults=1"
	seen = nil
	for next != "" {
		r := f.raw(http.MethodGet, next, tok, "")
		var pg struct {
			Value []struct {
				KID string `json:"kid"`
			} `json:"value"`
			NextLink *string `json:"nextLink"`
		}
		must(t, json.Unmarshal([]byte(r.body), &pg))
		if len(pg.Value) != 1 {
			t.Fatalf("page: got %d items, want 1 (%s)", len(pg.Value), r.body)
		}
		seen = append(seen, pg.Value[0].KID[strings.LastIndex(pg.Value[0].KID, "/")+1:])
		next = ""
		if pg.NextLink != nil {
			next = *pg.NextLink
		}
	}
	if got, want := strings.Join(seen, ","), v1+","+v2; got != want {
		t.Errorf("paged versions: got %s, want %s", got, want)
	}
}

func TestSDKManagementOperations(t *testing.T) {
	f := newFixture(t)
	must(t, f.emu.AssignRole("v1", f.oid, RoleCryptoOfficer))
	c := f.keys("v1")
	cr, err := c.CreateKey(ctx, "demo", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSA), KeySize: to.Ptr[int32](2048),
		KeyOps: []*azkeys.KeyOperation{to.Ptr(azkeys.KeyOperationWrapKey), to.Ptr(azkeys.KeyOperationUnwrapKey)}}, nil)
	must(t, err)
	if got, want := len(cr.Key.KeyOps), 2; got != want {
		t.Errorf("key_ops: got %d, want %d", got, want)
	}
	_, err = c.UpdateKey(ctx, "demo", "", azkeys.UpdateKeyParameters{KeyAttributes: &azkeys.KeyAttributes{Enabled: to.Ptr(false)}}, nil)
	must(t, err)
	info, _ := f.emu.Key("v1", "demo")
	if info.Versions[0].Enabled {
		t.Error("UpdateKey(enabled=false) via SDK did not disable the key")
	}
	rot, err := c.RotateKey(ctx, "demo", nil)
	must(t, err)
	if rot.Key.KID.Version() == cr.Key.KID.Version() {
		t.Error("RotateKey returned the old version")
	}
	del, err := c.DeleteKey(ctx, "demo", nil)
	must(t, err)
	if del.RecoveryID == nil || del.ScheduledPurgeDate == nil {
		t.Errorf("DeleteKey: want recoveryId and scheduledPurgeDate, got %+v", del.DeletedKey)
	}
	_, err = c.CreateKey(ctx, "demo", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSA)}, nil)
	if status, code, inner, _ := kvFailure(t, err); status != 409 || code != "Conflict" || inner != "ObjectIsDeletedButRecoverable" {
		t.Errorf("create over deleted: got %d %s/%s, want 409 Conflict/ObjectIsDeletedButRecoverable", status, code, inner)
	}
	_, err = c.GetDeletedKey(ctx, "demo", nil)
	must(t, err)
	_, err = c.PurgeDeletedKey(ctx, "demo", nil)
	if status, code, _, _ := kvFailure(t, err); status != 403 || code != "Forbidden" {
		t.Errorf("purge with purge protection: got %d %s, want 403 Forbidden", status, code)
	}
	_, err = c.RecoverDeletedKey(ctx, "demo", nil)
	must(t, err)
	if _, err := c.GetKey(ctx, "demo", rot.Key.KID.Version(), nil); err != nil {
		t.Errorf("after recover: %v", err)
	}
	n := 0
	for pg := c.NewListKeyPropertiesPager(nil); pg.More(); {
		p, err := pg.NextPage(ctx)
		must(t, err)
		n += len(p.Value)
	}
	if n != 2 {
		t.Errorf("list keys: got %d, want 2", n)
	}
}

func TestRecoveryLevels(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		vault     Vault
		wantLevel string
		wantDays  int32
	}{
		{Vault{Name: "nosoft"}, "Purgeable", 0},
		{Vault{Name: "soft", SoftDelete: true}, "Recoverable+Purgeable", 90},
		{Vault{Name: "softpp", SoftDelete: true, PurgeProtection: true}, "Recoverable", 90},
		{Vault{Name: "soft7", SoftDelete: true, RetentionDays: 7}, "CustomizedRecoverable+Purgeable", 7},
		{Vault{Name: "soft30pp", SoftDelete: true, PurgeProtection: true, RetentionDays: 30}, "CustomizedRecoverable", 30},
	}
	for _, tc := range cases {
		t.Run(tc.vault.Name, func(t *testing.T) {
			tc.vault.TenantID = customerTenant
			must(t, f.emu.CreateVault(tc.vault))
			must(t, f.emu.AssignRole(tc.vault.Name, f.oid, RoleCryptoServiceEncryptionUser))
			_, err := f.emu.CreateKey(tc.vault.Name, "k", KeyOptions{Bits: 2048})
			must(t, err)
			k, err := f.keys(tc.vault.Name).GetKey(ctx, "k", "", nil)
			must(t, err)
			if got := *k.Attributes.RecoveryLevel; got != tc.wantLevel {
				t.Errorf("recoveryLevel: got %s, want %s", got, tc.wantLevel)
			}
			if got := *k.Attributes.RecoverableDays; got != tc.wantDays {
				t.Errorf("recoverableDays: got %d, want %d", got, tc.wantDays)
			}
		})
	}
	// purge: allowed without purge protection, refused with it; hard delete without soft delete
	must(t, f.emu.DeleteKey("soft", "k"))
	must(t, f.emu.PurgeKey("soft", "k"))
	must(t, f.emu.DeleteKey("softpp", "k"))
	if err := f.emu.PurgeKey("softpp", "k"); !errors.Is(err, ErrForbidden) {
		t.Errorf("purge with protection: got %v, want ErrForbidden", err)
	}
	must(t, f.emu.DeleteKey("nosoft", "k"))
	if err := f.emu.RecoverKey("nosoft", "k"); !errors.Is(err, ErrNotFound) {
		t.Errorf("recover without soft delete: got %v, want ErrNotFound", err)
	}
}

func TestStateFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "azemu.json")
	withFile := func(o *Options) { o.StateFile = file }
	f := newFixture(t, withFile)
	c := f.keys("v1")
	w, err := wrap(c, "cmk", "", []byte("persist me"))
	must(t, err)
	f0 := false
	_, err = f.emu.CreateKey("v1", "off", KeyOptions{Bits: 2048, Enabled: &f0})
	must(t, err)
	ca := f.emu.CAPEM()
	onDisk, err := os.ReadFile(file + ".ca.pem")
	must(t, err)
	if !bytes.Equal(onDisk, ca) {
		t.Error("CA file differs from CAPEM()")
	}
	f.emu.Close()

	g := newFixture(t, withFile)
	if !bytes.Equal(g.emu.CAPEM(), ca) {
		t.Error("CA changed across restart")
	}
	if g.oid != f.oid {
		t.Errorf("service principal: got %s, want %s", g.oid, f.oid)
	}
	u, err := unwrap(g.keys("v1"), "cmk", w.KID.Version(), w.Result)
	must(t, err)
	if got, want := string(u.Result), "persist me"; got != want {
		t.Errorf("unwrap after restart: got %q, want %q", got, want)
	}
	info, err := g.emu.Key("v1", "off")
	must(t, err)
	if info.Versions[0].Enabled {
		t.Error("disabled flag lost across restart")
	}
}

func TestAdminClientOverHTTP(t *testing.T) {
	f := newFixture(t)
	ac, err := NewAdminClientCA(f.emu.URL(), f.emu.CAPEM())
	must(t, err)
	must(t, ac.CreateTenant("55555555-5555-4555-8555-555555555555"))
	if err := ac.CreateTenant("55555555-5555-4555-8555-555555555555"); !errors.Is(err, ErrConflict) {
		t.Errorf("duplicate tenant: got %v, want ErrConflict", err)
	}
	oid, err := ac.GrantConsent("55555555-5555-4555-8555-555555555555", appClientID)
	must(t, err)
	got, ok, err := ac.ServicePrincipal("55555555-5555-4555-8555-555555555555", appClientID)
	if err != nil || !ok || got != oid {
		t.Errorf("ServicePrincipal: got %q %v %v, want %q true nil", got, ok, err, oid)
	}
	must(t, ac.CreateVault(Vault{Name: "v2", TenantID: customerTenant, SoftDelete: true}))
	must(t, ac.AssignRole("v2", f.oid, RoleCryptoServiceEncryptionUser))
	_, err = ac.CreateKey("v2", "k", KeyOptions{Bits: 2048})
	must(t, err)
	c := f.keys("v2")
	_, err = c.GetKey(ctx, "k", "", nil)
	must(t, err)

	f0 := false
	must(t, ac.UpdateKey("v2", "k", KeyUpdate{Enabled: &f0}))
	_, err = unwrap(c, "k", "", make([]byte, 256))
	if _, _, inner, _ := kvFailure(t, err); inner != "KeyDisabled" {
		t.Errorf("after admin disable: got inner %q, want KeyDisabled", inner)
	}
	tr := true
	must(t, ac.UpdateKey("v2", "k", KeyUpdate{Enabled: &tr}))
	must(t, ac.SetFirewall("v2", true))
	_, err = c.GetKey(ctx, "k", "", nil)
	if _, _, inner, _ := kvFailure(t, err); inner != "ForbiddenByFirewall" {
		t.Errorf("after admin firewall: got inner %q, want ForbiddenByFirewall", inner)
	}
	must(t, ac.SetFirewall("v2", false))
	must(t, ac.SetThrottle("v2", 1, time.Minute))
	_, _ = c.GetKey(ctx, "k", "", nil)
	_, err = c.GetKey(ctx, "k", "", nil)
	if status, _, _, _ := kvFailure(t, err); status != 429 {
		t.Errorf("after admin throttle: got %d, want 429", status)
	}
	if re := new(azcore.ResponseError); errors.As(err, &re) && re.RawResponse.Header.Get("Retry-After") != "" {
		t.Errorf("admin throttle: got Retry-After %q, want none", re.RawResponse.Header.Get("Retry-After"))
	}
	must(t, ac.SetVaultThrottle("v2", Throttle{Limit: 1, Window: time.Minute, RetryAfter: true}))
	_, _ = c.GetKey(ctx, "k", "", nil)
	_, err = c.GetKey(ctx, "k", "", nil)
	if re := new(azcore.ResponseError); !errors.As(err, &re) || re.RawResponse.Header.Get("Retry-After") != "60" {
		t.Errorf("admin throttle with retryAfter: got %v, want 429 with Retry-After 60", err)
	}
	if vi, _ := ac.GetVault("v2"); !vi.ThrottleRetryAfter {
		t.Error("GetVault: ThrottleRetryAfter = false after setting it")
	}
	if err := ac.SetVaultThrottle("v2", Throttle{Limit: 1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("throttle without a window: got %v, want ErrInvalid", err)
	}
	must(t, ac.SetThrottle("v2", 0, 0))
	v, err := ac.RotateKey("v2", "k")
	must(t, err)
	ki, err := ac.GetKey("v2", "k")
	must(t, err)
	if got := ki.Versions[len(ki.Versions)-1].Version; got != v {
		t.Errorf("newest after admin rotate: got %s, want %s", got, v)
	}
	must(t, ac.DeleteKey("v2", "k"))
	must(t, ac.RecoverKey("v2", "k"))
	must(t, ac.RemoveRole("v2", f.oid, RoleCryptoServiceEncryptionUser))
	if err := ac.RemoveRole("v2", f.oid, RoleCryptoServiceEncryptionUser); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove missing role: got %v, want ErrNotFound", err)
	}
	if _, err := ac.GetVault("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing vault: got %v, want ErrNotFound", err)
	}
	must(t, ac.SetVaultFault("v2", 500, 0))
	must(t, ac.SetVaultFault("v2", 0, 0))
	must(t, ac.SetVaultReset("v2", true))
	if got := f.emu.resets["v2"]; !got {
		t.Error("reset switch not on after SetVaultReset(v2, true) over HTTP")
	}
	must(t, ac.SetVaultReset("v2", false))
	if err := ac.SetVaultReset("nope", true); !errors.Is(err, ErrNotFound) {
		t.Errorf("reset of a missing vault: got %v, want ErrNotFound", err)
	}
	must(t, ac.SetTokenEndpointFault(0))

	// A transport built for another process resolves through /admin/dns.
	tr2, err := NewTransport(f.emu.URL(), f.emu.CAPEM(), "")
	must(t, err)
	ok2, err := ac.VaultResolves("v2.vault.azure.localhost")
	must(t, err)
	if !ok2 {
		t.Error("v2 should resolve")
	}
	must(t, ac.DeleteVault("v2"))
	_, err = (&http.Client{Transport: tr2}).Get(f.emu.VaultURL("v2") + "/keys/k/?api-version=7.5")
	var dns *net.DNSError
	if !errors.As(err, &dns) || !dns.IsNotFound {
		t.Errorf("deleted vault via NewTransport: got %v, want *net.DNSError", err)
	}
	resp, err := (&http.Client{Transport: tr2}).Get(f.emu.VaultURL("v1") + "/keys/cmk/?api-version=7.5")
	if err != nil || resp.StatusCode != 401 {
		t.Errorf("live vault via NewTransport: got %v %v, want 401 challenge", resp, err)
	}
	must(t, ac.RecoverVault("v2"))

	st, err := ac.State()
	must(t, err)
	if len(st.Vaults) != 2 || len(st.Apps) != 1 || st.Apps[0].ClientSecret != "" {
		t.Errorf("state: got %d vaults, %d apps (secret %q), want 2, 1, no secret", len(st.Vaults), len(st.Apps), st.Apps[0].ClientSecret)
	}
	s, err := ac.Stats()
	must(t, err)
	if s.Vaults["v2"].Get < 1 || s.Throttled != 2 {
		t.Errorf("stats: got %+v", s)
	}
}

func TestAdminAPIOnlyOnEmulatorHost(t *testing.T) {
	f := newFixture(t)
	r := f.raw(http.MethodGet, f.emu.VaultURL("v1")+"/admin/state", "", "")
	if r.status == 200 {
		t.Errorf("admin API on a vault host: got 200, want refusal")
	}
}

func TestConsentPage(t *testing.T) {
	f := newFixture(t)
	must(t, f.emu.RevokeConsent(customerTenant, appClientID))
	redirect := "https://platform.example/consent-done"
	u := f.emu.ConsentURL(customerTenant, appClientID, redirect) + "&state=xyz"
	page := f.raw(http.MethodGet, u, "", "")
	if page.status != 200 || !strings.Contains(page.body, "Data Platform CMK") || !strings.Contains(page.body, ">Accept</button>") {
		t.Fatalf("consent page: got %d %s", page.status, page.body)
	}
	form := url.Values{"client_id": {appClientID}, "redirect_uri": {redirect}, "state": {"xyz"}, "scope": {"https://vault.azure.localhost/.default"}}
	post := func(action string) *url.URL {
		t.Helper()
		form.Set("action", action)
		req, _ := http.NewRequest(http.MethodPost, f.emu.URL()+"/"+customerTenant+"/v2.0/adminconsent", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		cl := f.emu.HTTPClient()
		cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, err := cl.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("consent %s: got %d, want 302", action, resp.StatusCode)
		}
		loc, err := url.Parse(resp.Header.Get("Location"))
		must(t, err)
		return loc
	}
	// azure-errors.md section 14: the failure redirect.
	loc := post("cancel")
	if q := loc.Query(); q.Get("admin_consent") != "True" || q.Get("error") != "consent_required" ||
		!strings.HasPrefix(q.Get("error_description"), "AADSTS65004") || q.Get("state") != "xyz" || q.Has("tenant") {
		t.Errorf("cancel redirect = %s, want admin_consent=True, error=consent_required, AADSTS65004, the state and no tenant", loc)
	}
	if _, ok := f.emu.ServicePrincipal(customerTenant, appClientID); ok {
		t.Error("cancel created a service principal")
	}
	loc = post("accept")
	q := loc.Query()
	if q.Get("admin_consent") != "True" || q.Get("tenant") != customerTenant || q.Get("state") != "xyz" || !strings.HasPrefix(loc.String(), redirect+"?") {
		t.Errorf("accept redirect: got %s", loc)
	}
	if _, ok := f.emu.ServicePrincipal(customerTenant, appClientID); !ok {
		t.Error("accept did not create a service principal")
	}
	// the token endpoint works again
	if _, err := f.cred(customerTenant, appSecret).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{f.emu.VaultResource() + "/.default"}}); err != nil {
		t.Errorf("token after consent: %v", err)
	}
	bad := f.raw(http.MethodGet, f.emu.ConsentURL(customerTenant, appClientID, "https://evil.example/"), "", "")
	if bad.status != 400 || !strings.Contains(bad.body, "AADSTS50011") {
		t.Errorf("mismatched redirect: got %d, want 400 AADSTS50011", bad.status)
	}
}

func TestOpenIDConfigAndJWKS(t *testing.T) {
	f := newFixture(t)
	r := f.raw(http.MethodGet, f.emu.URL()+"/"+customerTenant+"/v2.0/.well-known/openid-configuration", "", "")
	var cfg map[string]any
	must(t, json.Unmarshal([]byte(r.body), &cfg))
	if got, want := cfg["token_endpoint"], f.emu.URL()+"/"+customerTenant+"/oauth2/v2.0/token"; got != want {
		t.Errorf("token_endpoint: got %v, want %v", got, want)
	}
	r = f.raw(http.MethodGet, f.emu.URL()+"/nosuchtenant/v2.0/.well-known/openid-configuration", "", "")
	if r.status != 400 || !strings.Contains(r.body, "AADSTS90002") {
		t.Errorf("unknown tenant discovery: got %d %s", r.status, r.body)
	}
	r = f.raw(http.MethodGet, cfg["jwks_uri"].(string), "", "")
	if r.status != 200 || !strings.Contains(r.body, `"kty":"RSA"`) {
		t.Errorf("jwks: got %d %s", r.status, r.body)
	}
}

func TestClassicAuthorizeAsksForTenant(t *testing.T) {
	f := newFixture(t)
	must(t, f.emu.RevokeConsent(customerTenant, appClientID))
	redirect := "https://platform.example/consent-done"
	page := f.raw(http.MethodGet, f.emu.URL()+"/common/oauth2/authorize?response_type=code&client_id="+appClientID+"&redirect_uri="+url.QueryEscape(redirect), "", "")
	if page.status != 200 || !strings.Contains(page.body, `name="tenant"`) || !strings.Contains(page.body, `<label for="tenant">`) {
		t.Fatalf("classic consent page: got %d, want 200 with a labelled tenant field", page.status)
	}
	form := url.Values{"client_id": {appClientID}, "redirect_uri": {redirect}, "tenant": {customerTenant},
		"response_type": {"code"}, "action": {"accept"}}
	req, _ := http.NewRequest(http.MethodPost, f.emu.URL()+"/common/oauth2/authorize", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	cl := f.emu.HTTPClient()
	cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := cl.Do(req)
	must(t, err)
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != 302 || loc.Query().Get("tenant") != customerTenant || loc.Query().Get("code") == "" {
		t.Errorf("classic accept: got %d %s, want 302 with tenant and code", resp.StatusCode, loc)
	}
	if _, ok := f.emu.ServicePrincipal(customerTenant, appClientID); !ok {
		t.Error("classic accept did not create a service principal")
	}
}

// TestAuthorizationCodeConsent: the v2 authorization endpoint with
// prompt=admin_consent shows the consent page, and Accept redirects with a
// code and the state only (no tenant, as Entra ID). The code is redeemed
// once, by the app with its secret and the same redirect URI, for an ID
// token whose tid is the tenant that accepted.
func TestAuthorizationCodeConsent(t *testing.T) {
	f := newFixture(t)
	must(t, f.emu.RevokeConsent(customerTenant, appClientID))
	redirect := "https://platform.example/byok/consent/callback"
	must(t, f.emu.AddRedirectURI(appClientID, redirect))
	authz := f.emu.URL() + "/organizations/oauth2/v2.0/authorize"
	q := url.Values{"client_id": {appClientID}, "response_type": {"code"}, "redirect_uri": {redirect}, "scope": {"openid profile"},
		"prompt": {"admin_consent"}, "state": {"st-1"}}
	page := f.raw(http.MethodGet, authz+"?"+q.Encode(), "", "")
	if page.status != 200 || !strings.Contains(page.body, `name="tenant"`) || !strings.Contains(page.body, ">Accept</button>") {
		t.Fatalf("authorize page: got %d %s", page.status, page.body)
	}
	noCode := url.Values{"client_id": {appClientID}, "redirect_uri": {redirect}}
	if r := f.raw(http.MethodGet, authz+"?"+noCode.Encode(), "", ""); r.status != 400 || !strings.Contains(r.body, "AADSTS700054") {
		t.Errorf("authorize without response_type=code: got %d, want 400 AADSTS700054", r.status)
	}
	accept := func() (code string) {
		t.Helper()
		form := url.Values{"client_id": {appClientID}, "redirect_uri": {redirect}, "state": {"st-1"}, "scope": {"openid profile"},
			"response_type": {"code"}, "tenant": {customerTenant}, "action": {"accept"}}
		req, _ := http.NewRequest(http.MethodPost, authz, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		cl := f.emu.HTTPClient()
		cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, err := cl.Do(req)
		must(t, err)
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		got := loc.Query()
		if resp.StatusCode != 302 || !strings.HasPrefix(loc.String(), redirect+"?") || got.Get("code") == "" || got.Get("state") != "st-1" ||
			got.Has("tenant") || got.Has("admin_consent") {
			t.Fatalf("accept: got %d %s, want 302 to the redirect with code and state only", resp.StatusCode, loc)
		}
		return got.Get("code")
	}
	code := accept()
	if _, ok := f.emu.ServicePrincipal(customerTenant, appClientID); !ok {
		t.Error("accept did not create a service principal")
	}

	redeem := func(tenant, code, secret, redirectURI string) rawResp {
		t.Helper()
		form := url.Values{"grant_type": {"authorization_code"}, "client_id": {appClientID}, "client_secret": {secret},
			"code": {code}, "redirect_uri": {redirectURI}, "scope": {"openid profile"}}
		req, _ := http.NewRequest(http.MethodPost, f.emu.URL()+"/"+tenant+"/oauth2/v2.0/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := f.emu.HTTPClient().Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return rawResp{resp.StatusCode, resp.Header, string(b)}
	}
	if r := redeem("organizations", code, "wrong", redirect); r.status != 401 || !strings.Contains(r.body, "invalid_client") {
		t.Errorf("redeem with a wrong secret: got %d %s, want 401 invalid_client", r.status, r.body)
	}
	r := redeem("organizations", code, appSecret, redirect)
	if r.status != 200 {
		t.Fatalf("redeem: got %d %s", r.status, r.body)
	}
	var tok struct {
		IDToken string `json:"id_token"`
	}
	must(t, json.Unmarshal([]byte(r.body), &tok))
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(tok.IDToken, claims); err != nil {
		t.Fatalf("id_token does not parse: %v", err)
	}
	if claims["tid"] != customerTenant || claims["aud"] != appClientID || claims["iss"] != f.emu.URL()+"/"+customerTenant+"/v2.0" {
		t.Errorf("id_token claims = %v, want tid %s, aud %s and the tenant's v2.0 issuer", claims, customerTenant, appClientID)
	}
	if r := redeem("organizations", code, appSecret, redirect); r.status != 400 || !strings.Contains(r.body, "invalid_grant") {
		t.Errorf("redeem twice: got %d %s, want 400 invalid_grant", r.status, r.body)
	}
	if r := redeem("organizations", accept(), appSecret, "https://evil.example/cb"); r.status != 400 || !strings.Contains(r.body, "invalid_grant") {
		t.Errorf("redeem with another redirect URI: got %d %s, want 400 invalid_grant", r.status, r.body)
	}
	if r := redeem(otherTenant, accept(), appSecret, redirect); r.status != 400 || !strings.Contains(r.body, "invalid_grant") {
		t.Errorf("redeem in another tenant: got %d %s, want 400 invalid_grant", r.status, r.body)
	}
	if r := redeem(customerTenant, accept(), appSecret, redirect); r.status != 200 {
		t.Errorf("redeem in the tenant that consented: got %d %s, want 200", r.status, r.body)
	}
	c := accept()
	f.clock.Advance(codeLifetime)
	if r := redeem("organizations", c, appSecret, redirect); r.status != 400 || !strings.Contains(r.body, "AADSTS70008") {
		t.Errorf("redeem an expired code: got %d %s, want 400 AADSTS70008", r.status, r.body)
	}
	if r := redeem("organizations", "made-up", appSecret, redirect); r.status != 400 || !strings.Contains(r.body, "invalid_grant") {
		t.Errorf("redeem a made-up code: got %d %s, want 400 invalid_grant", r.status, r.body)
	}
	bad := url.Values{"client_id": {appClientID}, "response_type": {"code"}, "redirect_uri": {"https://evil.example/cb"}}
	if r := f.raw(http.MethodGet, authz+"?"+bad.Encode(), "", ""); r.status != 400 || !strings.Contains(r.body, "AADSTS50011") {
		t.Errorf("authorize with an unregistered redirect: got %d, want 400 AADSTS50011", r.status)
	}
}

// TestImportRSAMaterial: a key created with KeyOptions.RSA has that
// material: what is wrapped locally under its public key unwraps in the
// vault, and material Key Vault would refuse is refused.
func TestImportRSAMaterial(t *testing.T) {
	f := newFixture(t)
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	must(t, err)
	ver, err := f.emu.CreateKey("v1", "imported", KeyOptions{RSA: priv})
	must(t, err)
	c := f.keys("v1")
	k, err := c.GetKey(ctx, "imported", "", nil)
	must(t, err)
	if !bytes.Equal(k.Key.N, priv.N.Bytes()) {
		t.Fatalf("the key's modulus is not the imported key's")
	}
	plain := dek()
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &priv.PublicKey, plain, nil)
	must(t, err)
	u, err := unwrap(c, "imported", ver, ct)
	must(t, err)
	if !bytes.Equal(u.Result, plain) {
		t.Errorf("unwrap of a local wrapping = %x, want %x", u.Result, plain)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	must(t, err)
	if _, err := f.emu.CreateKey("v1", "small", KeyOptions{RSA: small}); !errors.Is(err, ErrInvalid) {
		t.Errorf("CreateKey with a 1024-bit key = %v, want ErrInvalid", err)
	}
	if _, err := f.emu.CreateKey("v1", "ec", KeyOptions{Kty: "EC", RSA: priv}); !errors.Is(err, ErrInvalid) {
		t.Errorf("CreateKey of an EC key with RSA material = %v, want ErrInvalid", err)
	}
}
