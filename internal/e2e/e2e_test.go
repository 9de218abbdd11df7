// Package e2e drives cmk end to end over HTTP against the local Azure
// emulator, with the official Azure SDK clients inside the service.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/ratelimit"
	"github.com/cmk-project/cmk/internal/store"
)

// generousLimits lets a test make vault-reaching calls as fast as it likes
// (the bad-request matrix submits a config per row); the limits themselves
// are tested in internal/ratelimit and internal/service.
var generousLimits = ratelimit.Policy{Preflight: lots, Recheck: lots, Config: lots, Sandbox: lots, Vault: lots}

var lots = ratelimit.Limit{N: 1_000_000, Per: time.Second}

func startEnv(t *testing.T) *devenv.Env {
	t.Helper()
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: t.TempDir(), Poll: 50 * time.Millisecond, RateLimits: generousLimits})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	return env
}

type client struct {
	t     *testing.T
	base  string
	token string
	key   string
	org   string
}

func (c *client) do(method, path string, body any) (int, map[string]any) {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.key != "" {
		req.Header.Set("x-api-key", c.key)
	}
	if c.org != "" {
		req.Header.Set("x-gw-ims-org-id", c.org)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 && json.Unmarshal(raw, &out) != nil {
		c.t.Fatalf("%s %s: response is not JSON: %s", method, path, raw)
	}
	return resp.StatusCode, out
}

func adminClient(t *testing.T, env *devenv.Env, org string) *client {
	t.Helper()
	tok, err := env.Svc.MintDevToken("admin", org, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &client{t: t, base: env.Svc.URL(), token: tok, key: env.APIKey, org: org}
}

func configBody(org, name, kid string) map[string]any {
	return map[string]any{"name": name, "type": "BYOK_CONFIG", "imsOrgId": org,
		"configData": map[string]any{"providerType": "AZURE_KEYVAULT", "keyVaultKeyIdentifier": kid}}
}

const configPath = "/data/infrastructure/manager/customer/config"

// waitDone polls the status until COMPLETED or FAILED.
func waitDone(t *testing.T, c *client, name string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	seen := map[string]bool{}
	for time.Now().Before(deadline) {
		code, st := c.do("GET", configPath+"/"+name+"?configType=BYOK_CONFIG", nil)
		if code != 200 {
			t.Fatalf("status of %s = %d %v", name, code, st)
		}
		s := st["status"].(string)
		seen[s] = true
		if s == "COMPLETED" || s == "FAILED" {
			return st
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, last := c.do("GET", configPath+"/"+name+"?configType=BYOK_CONFIG", nil)
	t.Fatalf("config %s did not finish in time (saw %v; last %v)", name, seen, last)
	return nil
}

func TestEnableEndToEnd(t *testing.T) {
	env := startEnv(t)
	c := adminClient(t, env, env.Org)
	ctx := context.Background()

	code, app := c.do("GET", "/data/infrastructure/manager/byok/app-registration", nil)
	if code != 200 || app["id"] != "byok" || app["applicationId"] != devenv.ClientID || !strings.Contains(app["applicationRedirectUrl"].(string), "prompt=admin_consent") {
		t.Fatalf("app-registration = %d %v", code, app)
	}

	code, job := c.do("POST", configPath, configBody(env.Org, "Config1", env.KeyIdentifier))
	if code != 201 {
		t.Fatalf("POST config = %d %v, want 201", code, job)
	}
	cfg := job["config"].(map[string]any)
	data := cfg["configData"].(map[string]any)
	if job["status"] != "CREATED" || cfg["status"] != "NEW" || cfg["imsOrgId"] != env.Org || data["keyName"] != devenv.KeyName ||
		data["keyVaultUri"] != env.Emu.VaultURL(devenv.Vault) || data["providerType"] != "AZURE_KEYVAULT" {
		t.Errorf("POST config body = %v", job)
	}

	st := waitDone(t, c, "Config1")
	if st["status"] != "COMPLETED" || st["rowType"] != "BYOK_KEY" || st["id"] != job["id"] {
		t.Fatalf("final status = %v", st)
	}
	prog := st["progress"].(map[string]any)
	if prog["dataKeysRewrapped"] != prog["dataKeysTotal"] || prog["dataKeysTotal"].(float64) != 4 {
		t.Errorf("progress = %v, want 4 of 4", prog)
	}

	// Every data key is now wrapped by the customer key: it unwraps through
	// the emulator, and the system key can no longer open it.
	keys, err := env.Svc.Store.DataKeys(ctx, env.Org)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 4 {
		t.Fatalf("data keys = %d, want 4 (2 sandboxes x 2 stores)", len(keys))
	}
	before := env.Emu.Stats()
	for _, dk := range keys {
		if dk.KEK != store.KEKCustomer {
			t.Errorf("data key %s/%s kek = %s, want customer", dk.Sandbox, dk.Store, dk.KEK)
		}
		dek, err := env.Svc.Keyring.Unwrap(ctx, dk)
		if err != nil || len(dek) != 32 {
			t.Errorf("unwrap %s through the vault = %d bytes, %v", dk.ID, len(dek), err)
		}
		if _, err := env.Svc.Keyring.System.Current().Unwrap(dk.Wrapped, keyring.AAD(dk)); err == nil {
			t.Errorf("system key still unwraps data key %s", dk.ID)
		}
	}
	served := env.Emu.Stats().Vaults[devenv.Vault].Unwrap - before.Vaults[devenv.Vault].Unwrap
	if served < len(keys) {
		t.Errorf("emulator served %d unwraps, want >= %d", served, len(keys))
	}

	// A new sandbox created after enablement is born under the customer key.
	code, body := c.do("POST", "/data/foundation/sandbox-management/sandboxes", map[string]string{"name": "stage"})
	if code != 201 {
		t.Fatalf("create sandbox = %d %v", code, body)
	}
	keys, _ = env.Svc.Store.DataKeys(ctx, env.Org)
	for _, dk := range keys {
		if dk.KEK != store.KEKCustomer {
			t.Errorf("data key %s/%s kek = %s after enablement, want customer", dk.Sandbox, dk.Store, dk.KEK)
		}
	}

	// The key now protects this org only: another org cannot use or probe it.
	// (OTHER is a second org of the same customer, bound to the same tenant,
	// so it may be told why; see TestKeySquatting for an org that is not.)
	if _, err := env.BindOrg(ctx, "OTHER@CmkOrg"); err != nil {
		t.Fatal(err)
	}
	other := adminClient(t, env, "OTHER@CmkOrg")
	if code, body := other.do("POST", configPath, configBody("OTHER@CmkOrg", "Steal", env.KeyIdentifier)); code != 409 || body["errorCode"] != "KEY_IN_USE" {
		t.Errorf("another org configuring the same key = %d %v, want 409 KEY_IN_USE", code, body)
	}
	if code, body := other.do("POST", "/data/infrastructure/manager/byok/preflight", map[string]string{"keyVaultKeyIdentifier": env.KeyIdentifier}); code != 409 {
		t.Errorf("another org probing the key = %d %v, want 409", code, body)
	}

	// Enablement cannot be undone or replaced.
	for _, tc := range []struct {
		method, path string
		body         any
	}{
		{"POST", configPath, configBody(env.Org, "Config2", env.KeyIdentifier)},
		{"DELETE", configPath + "/Config1", nil},
		{"POST", configPath, map[string]any{"name": "Back", "type": "BYOK_CONFIG", "imsOrgId": env.Org, "configData": map[string]any{"providerType": "SYSTEM_MANAGED", "keyVaultKeyIdentifier": ""}}},
	} {
		code, body := c.do(tc.method, tc.path, tc.body)
		if code != 409 || body["errorCode"] != "CMK_IRREVERSIBLE" {
			t.Errorf("%s %s = %d %v, want 409 CMK_IRREVERSIBLE", tc.method, tc.path, code, body)
		}
	}
}

// breakage sets up a key that fails exactly one validation check.
type breakage struct {
	name      string
	check     string
	code      string
	configure func(t *testing.T, e *azemu.Emulator, vault, principal string) (kid string)
}

func TestValidationFailures(t *testing.T) {
	env := startEnv(t)
	emu := env.Emu
	past := time.Now().Add(-time.Hour)
	future := time.Now().Add(24 * time.Hour)
	f := false

	healthy := func(t *testing.T, e *azemu.Emulator, vault, principal string, ko azemu.KeyOptions) string {
		t.Helper()
		if err := e.CreateVault(azemu.Vault{Name: vault, TenantID: devenv.CustomerTenant, SKU: "standard", SoftDelete: true, PurgeProtection: true, RetentionDays: 90}); err != nil {
			t.Fatal(err)
		}
		v, err := e.CreateKey(vault, "k", ko)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.AssignRole(vault, principal, devenv.Role); err != nil {
			t.Fatal(err)
		}
		return e.VaultURL(vault) + "/keys/k/" + v
	}
	cases := []breakage{
		{"disabled", "key_enabled", "KEY_DISABLED", func(t *testing.T, e *azemu.Emulator, v, p string) string {
			return healthy(t, e, v, p, azemu.KeyOptions{Enabled: &f})
		}},
		{"expired", "key_active", "KEY_NOT_ACTIVE", func(t *testing.T, e *azemu.Emulator, v, p string) string {
			return healthy(t, e, v, p, azemu.KeyOptions{Expires: &past})
		}},
		{"notyet", "key_active", "KEY_NOT_ACTIVE", func(t *testing.T, e *azemu.Emulator, v, p string) string {
			return healthy(t, e, v, p, azemu.KeyOptions{NotBefore: &future})
		}},
		{"small", "key_type_and_size", "KEY_TOO_SMALL", func(t *testing.T, e *azemu.Emulator, v, p string) string {
			return healthy(t, e, v, p, azemu.KeyOptions{Bits: 2048})
		}},
		{"nowrap", "key_operations", "KEY_OPERATION_FORBIDDEN", func(t *testing.T, e *azemu.Emulator, v, p string) string {
			return healthy(t, e, v, p, azemu.KeyOptions{Ops: []string{"unwrapKey", "encrypt", "decrypt"}})
		}},
		{"nosoftdelete", "soft_delete", "SOFT_DELETE_DISABLED", func(t *testing.T, e *azemu.Emulator, v, p string) string {
			kid := healthy(t, e, v, p, azemu.KeyOptions{})
			if err := e.UpdateVault(v, func(x *azemu.Vault) { x.SoftDelete, x.PurgeProtection = false, false }); err != nil {
				t.Fatal(err)
			}
			return kid
		}},
		{"nopurgeprot", "purge_protection", "PURGE_PROTECTION_DISABLED", func(t *testing.T, e *azemu.Emulator, v, p string) string {
			kid := healthy(t, e, v, p, azemu.KeyOptions{})
			if err := e.UpdateVault(v, func(x *azemu.Vault) { x.PurgeProtection = false }); err != nil {
				t.Fatal(err)
			}
			return kid
		}},
		{"norole", "role_assignment", "IDENTITY_UNAUTHORIZED", func(t *testing.T, e *azemu.Emulator, v, p string) string {
			kid := healthy(t, e, v, p, azemu.KeyOptions{})
			if err := e.RemoveRole(v, p, devenv.Role); err != nil {
				t.Fatal(err)
			}
			return kid
		}},
		{"novault", "vault_reachable", "VAULT_DNS_UNRESOLVABLE", func(t *testing.T, e *azemu.Emulator, v, p string) string {
			return e.VaultURL(v) + "/keys/k/0123456789abcdef0123456789abcdef"
		}},
		{"firewall", "vault_reachable", "NETWORK_DENIED", func(t *testing.T, e *azemu.Emulator, v, p string) string {
			kid := healthy(t, e, v, p, azemu.KeyOptions{})
			if err := e.UpdateVault(v, func(x *azemu.Vault) { x.FirewallDeny = true }); err != nil {
				t.Fatal(err)
			}
			return kid
		}},
		{"nokey", "key_exists", "KEY_NOT_FOUND", func(t *testing.T, e *azemu.Emulator, v, p string) string {
			kid := healthy(t, e, v, p, azemu.KeyOptions{})
			return strings.Replace(kid, "/keys/k/", "/keys/missing/", 1)
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			org := fmt.Sprintf("ORG%02d@CmkOrg", i)
			if _, err := env.BindOrg(context.Background(), org); err != nil {
				t.Fatal(err)
			}
			c := adminClient(t, env, org)
			kid := tc.configure(t, emu, fmt.Sprintf("kv-%s", tc.name), env.PrincipalID)
			if code, body := c.do("POST", configPath, configBody(org, "C", kid)); code != 201 {
				t.Fatalf("POST config = %d %v", code, body)
			}
			assertFailed(t, c, "C", tc.check, tc.code)
			// The org is still on system keys and can try again.
			if o, _ := env.Svc.Store.Org(context.Background(), org); o.KEKMode != store.ModeSystem {
				t.Errorf("org mode after FAILED = %s, want SYSTEM", o.KEKMode)
			}
		})
	}

	t.Run("consent", func(t *testing.T) {
		// A tenant that bound the org, then withdrew its consent: the app
		// has no service principal there.
		const tenant = "44444444-4444-4444-8444-444444444444"
		if err := emu.CreateTenant(tenant); err != nil {
			t.Fatal(err)
		}
		if _, err := env.BindOrgTo(context.Background(), "ORGCONSENT@CmkOrg", tenant); err != nil {
			t.Fatal(err)
		}
		if err := emu.RevokeConsent(tenant, devenv.ClientID); err != nil {
			t.Fatal(err)
		}
		if err := emu.CreateVault(azemu.Vault{Name: "kv-noconsent", TenantID: tenant, SKU: "standard", SoftDelete: true, PurgeProtection: true, RetentionDays: 90}); err != nil {
			t.Fatal(err)
		}
		v, err := emu.CreateKey("kv-noconsent", "k", azemu.KeyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		org := "ORGCONSENT@CmkOrg"
		c := adminClient(t, env, org)
		if code, body := c.do("POST", configPath, configBody(org, "C", emu.VaultURL("kv-noconsent")+"/keys/k/"+v)); code != 201 {
			t.Fatalf("POST config = %d %v", code, body)
		}
		st := assertFailed(t, c, "C", "app_sign_in", string(kms.KindIdentityInvalid))
		steps := st["failure"].(map[string]any)["remedy"].([]any)
		// Stored with the job: it says where the org's consent link is, and
		// does not carry it (its state is the org's credential).
		if s := steps[0].(string); !strings.Contains(s, "applicationRedirectUrl") || strings.Contains(s, "state=") || strings.Contains(s, "/authorize") {
			t.Errorf("consent remedy = %v, want the app-registration API named and no consent link", steps)
		}
	})
}

func assertFailed(t *testing.T, c *client, name, check, code string) map[string]any {
	t.Helper()
	st := waitDone(t, c, name)
	if st["status"] != "FAILED" {
		t.Fatalf("status = %v, want FAILED", st)
	}
	f, ok := st["failure"].(map[string]any)
	if !ok {
		t.Fatalf("FAILED status has no failure reason: %v", st)
	}
	if f["check"] != check || f["code"] != code {
		t.Errorf("failure = check %v code %v, want check %s code %s (message %v)", f["check"], f["code"], check, code, f["message"])
	}
	if msg, _ := f["message"].(string); msg == "" {
		t.Errorf("failure has no message: %v", f)
	}
	if steps, _ := f["remedy"].([]any); len(steps) < 2 {
		t.Errorf("failure has %d remedy steps, want numbered steps: %v", len(steps), f)
	}
	return st
}
