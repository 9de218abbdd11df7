package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/auth"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/service"
	"github.com/cmk-project/cmk/internal/store"
)

// TestBadRequests sends every kind of bad request and checks each gets a
// clear 4xx with a stable code, makes no call to the vault, and changes
// nothing.
func TestBadRequests(t *testing.T) {
	env := startEnv(t)
	org := env.Org
	good := adminClient(t, env, org)
	kid := env.KeyIdentifier

	// A FAILED config named "Taken" (key identifier on an unknown vault), so
	// the duplicate-name case can be exercised without an active job.
	if code, body := good.do("POST", configPath, configBody(org, "Taken", env.Emu.VaultURL("nosuchvault")+"/keys/k")); code != 201 {
		t.Fatalf("setup POST = %d %v", code, body)
	}
	waitDone(t, good, "Taken")

	otherOrgTok, _ := env.Svc.MintDevToken("x", "OTHER@CmkOrg", nil, time.Hour)
	noPermTok, _ := env.Svc.MintDevToken("x", org, []string{auth.PermDataRead}, time.Hour)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forged, _ := auth.NewIssuer(key, service.DevIssuer, service.DevAudience).Mint(auth.Claims{Subject: "x", ClientID: env.APIKey, Orgs: map[string][]string{org: service.AllPermissions}}, time.Hour)
	iss := env.Svc.Issuer
	iss.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	expired, _ := env.Svc.MintDevToken("x", org, nil, time.Hour)
	iss.Now = nil
	noSubject, _ := env.Svc.MintDevToken("", org, nil, time.Hour)
	escSubject, _ := env.Svc.MintDevToken("admin\x1b[2Ksystem", org, nil, time.Hour)

	with := func(mod func(c *client)) *client {
		c := *good
		mod(&c)
		return &c
	}
	body := func(mod func(m map[string]any)) map[string]any {
		m := configBody(org, "New", kid)
		mod(m)
		return m
	}
	setKID := func(v string) func(m map[string]any) {
		return func(m map[string]any) { m["configData"].(map[string]any)["keyVaultKeyIdentifier"] = v }
	}
	suffix := env.Emu.VaultSuffix()
	cases := []struct {
		name   string
		c      *client
		method string
		path   string
		body   any
		status int
		code   string
	}{
		{"http scheme", good, "POST", configPath, body(setKID("http://cmkdemo." + suffix + "/keys/cmk-key")), 400, "INVALID_KEY_IDENTIFIER"},
		{"host not allowed", good, "POST", configPath, body(setKID("https://cmkdemo.evil.example/keys/cmk-key")), 400, "INVALID_KEY_IDENTIFIER"},
		{"ip literal", good, "POST", configPath, body(setKID("https://127.0.0.1/keys/cmk-key")), 400, "INVALID_KEY_IDENTIFIER"},
		{"userinfo", good, "POST", configPath, body(setKID("https://user@cmkdemo." + suffix + "/keys/cmk-key")), 400, "INVALID_KEY_IDENTIFIER"},
		{"odd port", good, "POST", configPath, body(setKID("https://cmkdemo." + suffix + ":8443/keys/cmk-key")), 400, "INVALID_KEY_IDENTIFIER"},
		{"extra path", good, "POST", configPath, body(setKID(kid + "/extra")), 400, "INVALID_KEY_IDENTIFIER"},
		{"secrets not keys", good, "POST", configPath, body(setKID("https://cmkdemo." + suffix + "/secrets/cmk-key")), 400, "INVALID_KEY_IDENTIFIER"},
		{"empty identifier", good, "POST", configPath, body(setKID("")), 400, "INVALID_KEY_IDENTIFIER"},
		{"wrong type", good, "POST", configPath, body(func(m map[string]any) { m["type"] = "BYOK" }), 400, "INVALID_CONFIG_TYPE"},
		{"wrong provider", good, "POST", configPath, body(func(m map[string]any) { m["configData"].(map[string]any)["providerType"] = "GCP_KMS" }), 400, "UNSUPPORTED_PROVIDER_TYPE"},
		{"org mismatch", good, "POST", configPath, body(func(m map[string]any) { m["imsOrgId"] = "OTHER@CmkOrg" }), 400, "ORG_MISMATCH"},
		{"empty name", good, "POST", configPath, body(func(m map[string]any) { m["name"] = "" }), 400, "INVALID_FIELD"},
		{"name with a terminal escape", good, "POST", configPath, body(func(m map[string]any) { m["name"] = "New\x1b[2J" }), 400, "INVALID_FIELD"},
		{"name with a line break", good, "POST", configPath, body(func(m map[string]any) { m["name"] = "New\nCOMPLETED" }), 400, "INVALID_FIELD"},
		{"name with a right-to-left override", good, "POST", configPath, body(func(m map[string]any) { m["name"] = "New\u202e" }), 400, "INVALID_FIELD"},
		{"identifier padded with 50 KB of spaces", good, "POST", configPath, body(setKID(kid + strings.Repeat(" ", 50<<10))), 400, "INVALID_KEY_IDENTIFIER"},
		{"unknown field", good, "POST", configPath, body(func(m map[string]any) { m["keyVersion"] = "x" }), 400, "MALFORMED_REQUEST_BODY"},
		{"not json", good, "POST", configPath, "{name: Config1", 400, "MALFORMED_REQUEST_BODY"},
		{"duplicate name", good, "POST", configPath, configBody(org, "Taken", kid), 409, "CONFIG_NAME_TAKEN"},
		{"token for another org", with(func(c *client) { c.token = otherOrgTok }), "POST", configPath, configBody(org, "New", kid), 403, "ORG_NOT_IN_TOKEN"},
		{"missing permission", with(func(c *client) { c.token = noPermTok }), "POST", configPath, configBody(org, "New", kid), 403, "PERMISSION_REQUIRED"},
		{"missing permission (status)", with(func(c *client) { c.token = noPermTok }), "GET", configPath + "/Taken?configType=BYOK_CONFIG", nil, 403, "PERMISSION_REQUIRED"},
		{"expired token", with(func(c *client) { c.token = expired }), "POST", configPath, configBody(org, "New", kid), 401, "TOKEN_EXPIRED"},
		{"token without a subject", with(func(c *client) { c.token = noSubject }), "POST", configPath, configBody(org, "New", kid), 401, "INVALID_TOKEN"},
		{"token subject with a terminal escape", with(func(c *client) { c.token = escSubject }), "POST", configPath, configBody(org, "New", kid), 401, "INVALID_TOKEN"},
		{"forged token", with(func(c *client) { c.token = forged }), "POST", configPath, configBody(org, "New", kid), 401, "INVALID_TOKEN"},
		{"garbage token", with(func(c *client) { c.token = "abc.def.ghi" }), "POST", configPath, configBody(org, "New", kid), 401, "INVALID_TOKEN"},
		{"no token", with(func(c *client) { c.token = "" }), "POST", configPath, configBody(org, "New", kid), 401, "MISSING_TOKEN"},
		{"no api key", with(func(c *client) { c.key = "" }), "POST", configPath, configBody(org, "New", kid), 401, "INVALID_API_KEY"},
		{"wrong api key", with(func(c *client) { c.key = "someone_else" }), "POST", configPath, configBody(org, "New", kid), 401, "INVALID_API_KEY"},
		{"no org header", with(func(c *client) { c.org = "" }), "POST", configPath, configBody(org, "New", kid), 400, "MISSING_ORG_HEADER"},
		{"unknown name", good, "GET", configPath + "/Nope?configType=BYOK_CONFIG", nil, 404, "NOT_FOUND"},
		{"name is case-sensitive", good, "GET", configPath + "/taken?configType=BYOK_CONFIG", nil, 404, "NOT_FOUND"},
		{"missing configType", good, "GET", configPath + "/Taken", nil, 400, "INVALID_CONFIG_TYPE"},
	}
	before := env.Emu.Stats()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, resp := tc.c.do(tc.method, tc.path, tc.body)
			if code != tc.status || resp["errorCode"] != tc.code {
				t.Errorf("%s %s = %d %v, want %d %s", tc.method, tc.path, code, resp["errorCode"], tc.status, tc.code)
			}
			for _, field := range []string{"title", "detail"} {
				if s, _ := resp[field].(string); s == "" {
					t.Errorf("error body has no %s: %v", field, resp)
				}
			}
		})
	}
	after := env.Emu.Stats()
	if after.VaultRequests != before.VaultRequests || after.TokensIssued != before.TokensIssued {
		t.Errorf("bad requests reached the vault: %d vault requests, %d tokens issued", after.VaultRequests-before.VaultRequests, after.TokensIssued-before.TokensIssued)
	}
	_, resp := good.do("GET", configPath+"/taken?configType=BYOK_CONFIG", nil)
	if hint, _ := resp["hint"].(string); hint == "" || !contains(hint, `"Taken"`) {
		t.Errorf("case-mismatch hint = %q, want it to name \"Taken\"", hint)
	}
	// Nothing changed: only the setup config exists and the org is on system keys.
	cfgs, _ := env.Svc.Store.Configs(context.Background(), org)
	if len(cfgs) != 1 {
		t.Errorf("configs after bad requests = %d, want 1", len(cfgs))
	}
	if o, _ := env.Svc.Store.Org(context.Background(), org); o.KEKMode != store.ModeSystem {
		t.Errorf("org mode = %s, want SYSTEM", o.KEKMode)
	}
	if _, err := env.Svc.Store.Org(context.Background(), "OTHER@CmkOrg"); err == nil {
		t.Errorf("a request with a token for another org created that org")
	}
}

// TestKeyIdentifierCanonical checks that a key identifier sent in another
// spelling is stored, answered and shown in its canonical form.
func TestKeyIdentifierCanonical(t *testing.T) {
	env := startEnv(t)
	c := adminClient(t, env, env.Org)
	host := strings.TrimPrefix(env.Emu.VaultURL(devenv.Vault), "https://")
	sent := "  HTTPS://" + strings.ToUpper(host) + ":443" + strings.TrimPrefix(env.KeyIdentifier, env.Emu.VaultURL(devenv.Vault)) + "/ \n"
	code, job := c.do("POST", configPath, configBody(env.Org, "Canon", sent))
	if code != 201 {
		t.Fatalf("POST config with %q = %d %v, want 201", sent, code, job)
	}
	kidOf := func(cfg map[string]any) any { return cfg["configData"].(map[string]any)["keyVaultKeyIdentifier"] }
	if got := kidOf(job["config"].(map[string]any)); got != env.KeyIdentifier {
		t.Errorf("POST config with %q answered keyVaultKeyIdentifier %q, want %q", sent, got, env.KeyIdentifier)
	}
	waitDone(t, c, "Canon")
	code, list := c.do("GET", configPath, nil)
	if code != 200 {
		t.Fatalf("GET configs = %d %v", code, list)
	}
	found := false
	for _, item := range list["configs"].([]any) {
		cfg := item.(map[string]any)
		if cfg["name"] == "Canon" {
			found = true
			if got := kidOf(cfg); got != env.KeyIdentifier {
				t.Errorf("GET configs shows keyVaultKeyIdentifier %q, want %q", got, env.KeyIdentifier)
			}
		}
	}
	if !found {
		t.Errorf("GET configs = %v, want the config Canon", list)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
