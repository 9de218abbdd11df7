package e2e

import (
	"context"
	"encoding/json"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/cmk-project/cmk/internal/azemu"
	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/store"
)

const preflightPath = "/data/infrastructure/manager/byok/preflight"

// TestKeySquatting is key squatting (a confused deputy): org B sends org
// A's key identifier. The platform's one Azure app holds A's role on A's
// vault, so only the ownership check stands between B and A's key; before
// it, B's job reached COMPLETED with B's data under A's key, and A was
// refused its own key for good with KEY_IN_USE.
//
// A is the demo org, bound to the customer tenant that owns the demo vault.
// B is a customer in its own right, bound to its own tenant; C never
// consented anywhere. Both are refused by key_owner before anything is
// asked of A's vault with the platform's credentials: B's job FAILs on that
// check and touches nothing of A's; A enables normally, also while a job of
// B for the same key is pending and after B failed; B's and C's preflights
// of A's key read exactly as for a key that does not exist, before and
// after A enabled (no KEY_IN_USE); a consent redirect B forges with A's
// tenant binds nothing; and B still enables its own key.
func TestKeySquatting(t *testing.T) {
	env := startEnv(t)
	ctx := context.Background()
	emu := env.Emu
	const (
		orgB    = "SQUATTER@CmkOrg"
		orgC    = "DRIFTER@CmkOrg"
		tenantB = "55555555-5555-4555-8555-555555555555"
	)
	if err := emu.CreateTenant(tenantB); err != nil {
		t.Fatal(err)
	}
	if _, err := env.BindOrgTo(ctx, orgB, tenantB); err != nil {
		t.Fatal(err)
	}
	a := adminClient(t, env, env.Org)
	b := adminClient(t, env, orgB)
	c := adminClient(t, env, orgC)
	c.do("GET", "/data/foundation/sandbox-management/sandboxes", nil) // provisions org C
	keyA := env.KeyIdentifier
	missing := emu.VaultURL(devenv.Vault) + "/keys/no-such-key" // A's vault, a key that does not exist
	aKeys := dataKeysOf(t, env, env.Org)
	vaultOps := func() [4]int {
		s := emu.Stats()
		v := s.Vaults[devenv.Vault]
		return [4]int{v.Get, v.Wrap, v.Unwrap, s.TokensIssued}
	}
	before := vaultOps()

	// Preflight: refused at key_owner, and nothing tells A's key from one
	// that does not exist.
	checkPreflights := func(when string) {
		t.Helper()
		for _, cl := range []*client{b, c} {
			got := squatReport(t, cl, keyA)
			if want := squatReport(t, cl, missing); got != want {
				t.Errorf("%s: %s's preflight of A's key differs from one of a missing key:\n%s\nvs\n%s", when, cl.org, got, want)
			}
			if strings.Contains(got, "cmk-key") {
				t.Errorf("%s: %s's preflight names A's key: %s", when, cl.org, got)
			}
		}
	}
	checkPreflights("before A enabled")
	if got := vaultOps(); got != before {
		t.Errorf("preflights of B and C made vault key operations or got tokens: %v, before %v", got, before)
	}

	// B's job fails on key_owner and touches nothing of A's (nor of B's).
	if code, body := b.do("POST", configPath, configBody(orgB, "Squat", keyA)); code != 201 {
		t.Fatalf("B's POST config = %d %v, want 201 (accepted; its job decides)", code, body)
	}
	st := assertFailed(t, b, "Squat", "key_owner", "KEY_NOT_BOUND")
	if msg := st["failure"].(map[string]any)["message"].(string); strings.Contains(msg, "cmk-key") {
		t.Errorf("B's failure names A's key: %s", msg)
	}
	for _, ch := range st["checks"].([]any) {
		m := ch.(map[string]any)
		if m["check"] != "key_identifier" && m["check"] != "key_owner" && m["status"] != "SKIPPED" {
			t.Errorf("B's check %v = %v, want SKIPPED after key_owner failed", m["check"], m["status"])
		}
	}
	if got := vaultOps(); got != before {
		t.Errorf("B's job made vault key operations or got tokens: %v, before %v", got, before)
	}
	for _, org := range []string{env.Org, orgB} {
		if o, _ := env.Svc.Store.Org(ctx, org); o.KEKMode != store.ModeSystem {
			t.Errorf("org %s mode after B's job = %s, want SYSTEM", org, o.KEKMode)
		}
	}
	if got := dataKeysOf(t, env, env.Org); !sameKeys(got, aKeys) {
		t.Error("B's job changed A's data keys")
	}
	code, audit := b.do("GET", "/data/infrastructure/manager/byok/audit", nil)
	if code != 200 {
		t.Fatalf("B's audit trail = %d %v", code, audit)
	}
	for _, e := range audit["entries"].([]any) {
		// B's own actions (its submission, its tenant binding) are there;
		// no call to the key is.
		if op := e.(map[string]any)["operation"].(string); !strings.Contains(op, ".") {
			t.Errorf("B's audit trail holds a key operation: %v", e)
		}
	}

	// A pending job of B for A's key does not block A, and neither does
	// B's failed one.
	if code, body := b.do("POST", configPath, configBody(orgB, "Squat2", keyA)); code != 201 {
		t.Fatalf("B's second POST config = %d %v", code, body)
	}
	if code, body := a.do("POST", configPath, configBody(env.Org, "Config1", keyA)); code != 201 {
		t.Fatalf("A's POST config = %d %v, want 201: a squatter never blocks the owner", code, body)
	}
	assertFailed(t, b, "Squat2", "key_owner", "KEY_NOT_BOUND")
	if st := waitDone(t, a, "Config1"); st["status"] != "COMPLETED" {
		t.Fatalf("A's job = %v, want COMPLETED", st)
	}
	for _, dk := range dataKeysOf(t, env, env.Org) {
		if dk.KEK != store.KEKCustomer {
			t.Errorf("A's data key %s is under %s, want customer", dk.ID, dk.KEK)
		}
	}
	for _, dk := range dataKeysOf(t, env, orgB) {
		if dk.KEK != store.KEKSystem {
			t.Errorf("B's data key %s is under %s, want system", dk.ID, dk.KEK)
		}
	}

	// Once A's key protects A's data, B and C are still told nothing: no
	// KEY_IN_USE, the same report as for a missing key, a job that fails
	// on key_owner.
	checkPreflights("after A enabled")
	if code, body := b.do("POST", configPath, configBody(orgB, "Squat3", keyA)); code != 201 {
		t.Fatalf("B's POST config after A enabled = %d %v, want 201 (no KEY_IN_USE)", code, body)
	}
	assertFailed(t, b, "Squat3", "key_owner", "KEY_NOT_BOUND")

	// B's obvious next move: the redirect of a naive design, naming A's
	// tenant (which anyone reads from A's vault's 401 challenge) under B's
	// own consent state. Nothing is bound.
	_, app := b.do("GET", appRegistrationPath, nil)
	lu, _ := url.Parse(app["applicationRedirectUrl"].(string))
	forged := url.Values{"state": {lu.Query().Get("state")}, "admin_consent": {"True"}, "tenant": {devenv.CustomerTenant}}
	if a := browserGet(t, env.Svc.ConsentCallbackURL()+"?"+forged.Encode(), "application/json"); a.status != 400 {
		t.Errorf("forged consent redirect = %d %s, want 400", a.status, a.body)
	}
	if got, _ := env.Svc.Store.OrgTenants(ctx, orgB); len(got) != 1 || got[0] != tenantB {
		t.Errorf("B's tenants = %v, want only %s", got, tenantB)
	}

	// A's key is healthy and A sees nothing of B.
	if h := getHealth(a); h.State != "HEALTHY" {
		t.Errorf("A's key health = %s, want HEALTHY", h.State)
	}
	if code, list := a.do("GET", "/data/infrastructure/manager/byok/alerts", nil); code != 200 || len(list["alerts"].([]any)) != 0 {
		t.Errorf("A's alerts = %d %v, want none", code, list)
	}

	// B enables its own key, in its own tenant's vault, normally.
	principal, ok := emu.ServicePrincipal(tenantB, devenv.ClientID)
	if !ok {
		t.Fatal("B's consent gave the app no service principal in B's tenant")
	}
	if err := emu.CreateVault(azemu.Vault{Name: "kv-squatter", TenantID: tenantB, SKU: "standard", SoftDelete: true, PurgeProtection: true, RetentionDays: 90}); err != nil {
		t.Fatal(err)
	}
	v, err := emu.CreateKey("kv-squatter", "own-key", azemu.KeyOptions{Kty: "RSA", Bits: 3072})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.AssignRole("kv-squatter", principal, devenv.Role); err != nil {
		t.Fatal(err)
	}
	if code, body := b.do("POST", configPath, configBody(orgB, "Own", emu.VaultURL("kv-squatter")+"/keys/own-key/"+v)); code != 201 {
		t.Fatalf("B's POST config of its own key = %d %v", code, body)
	}
	if st := waitDone(t, b, "Own"); st["status"] != "COMPLETED" {
		t.Errorf("B's job with its own key = %v, want COMPLETED", st)
	}
}

var consentState = regexp.MustCompile(`state=[A-Za-z0-9._-]+`)

// squatReport is cl's preflight report of kid as comparable text: the key
// identifier left out, and the state of the org's consent link (fresh on
// every call) blanked.
func squatReport(t *testing.T, cl *client, kid string) string {
	t.Helper()
	code, rep := cl.do("POST", preflightPath, map[string]string{"keyVaultKeyIdentifier": kid})
	if code != 200 {
		t.Fatalf("%s's preflight of %s = %d %v, want 200 with a report", cl.org, kid, code, rep)
	}
	results := rep["results"].([]any)
	first := results[1].(map[string]any)
	if rep["passed"] != false || first["check"] != "key_owner" || first["status"] != "FAILED" || first["code"] != "KEY_NOT_BOUND" {
		t.Errorf("%s's preflight of %s: second check = %v, want key_owner FAILED KEY_NOT_BOUND", cl.org, kid, first)
	}
	delete(rep, "keyIdentifier")
	delete(rep, "checkedAt") // the time of the checks, the same for either key
	b, _ := json.Marshal(rep)
	return consentState.ReplaceAllString(string(b), "state=…")
}

func dataKeysOf(t *testing.T, env *devenv.Env, org string) []store.DataKey {
	t.Helper()
	keys, err := env.Svc.Store.DataKeys(context.Background(), org)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func sameKeys(a, b []store.DataKey) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID || a[i].KEK != b[i].KEK || a[i].KEKVersion != b[i].KEKVersion || string(a[i].Wrapped) != string(b[i].Wrapped) {
			return false
		}
	}
	return true
}
