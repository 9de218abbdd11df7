package control

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/keyid"
	"github.com/cmk-project/cmk/internal/keyring"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/monitor"
	"github.com/cmk-project/cmk/internal/preflight"
	"github.com/cmk-project/cmk/internal/store"
	"github.com/cmk-project/cmk/internal/systemkey"
)

// noVault is a provider that must not be reached by the operations under
// test: each of them decides before any vault call.
type noVault struct{ t *testing.T }

func (v noVault) Describe(context.Context, kms.KeyRef) (kms.KeyInfo, error) {
	v.t.Error("unexpected vault call: describe")
	return kms.KeyInfo{}, &kms.Error{Kind: kms.KindTransient, Op: "describe"}
}
func (v noVault) Wrap(context.Context, kms.KeyRef, []byte) (kms.Wrapped, error) {
	v.t.Error("unexpected vault call: wrap")
	return kms.Wrapped{}, &kms.Error{Kind: kms.KindTransient, Op: "wrap"}
}
func (v noVault) Unwrap(context.Context, kms.KeyRef, kms.Wrapped) ([]byte, error) {
	v.t.Error("unexpected vault call: unwrap")
	return nil, &kms.Error{Kind: kms.KindTransient, Op: "unwrap"}
}

const (
	orgA    = "ORGA@CmkOrg"
	orgB    = "ORGB@CmkOrg"
	orgC    = "ORGC@CmkOrg"
	orgD    = "ORGD@CmkOrg"
	tenantA = "22222222-2222-4222-8222-222222222222"
	tenantD = "44444444-4444-4444-8444-444444444444"
	keyA    = "https://vault-a.vault.azure.net/keys/cmk/0123456789abcdef0123456789abcdef"
	keyA2   = "https://VAULT-A.vault.azure.net/keys/CMK"
	keyB    = "https://vault-b.vault.azure.net/keys/cmk"
	badKey  = "https://vault-a.example.com/keys/cmk"
)

func newService(t *testing.T) (*Service, *store.Store) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, filepath.Join(dir, "cmk.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sys, err := systemkey.LoadOrCreate(filepath.Join(dir, "system.key"))
	if err != nil {
		t.Fatal(err)
	}
	box, err := alerts.NewSecretBox(sys)
	if err != nil {
		t.Fatal(err)
	}
	gate := &keyhealth.Gate{}
	s := &Service{
		Store: st, Keyring: &keyring.Keyring{Store: st, System: sys, Customer: noVault{t}}, Provider: noVault{t},
		Policy: keyid.Policy{}, Gate: gate, WebhookSecrets: box,
		Monitor: &monitor.Monitor{Config: monitor.Config{Interval: 30 * time.Second, Grace: 10 * time.Minute}, Store: st, Gate: gate, Owner: "test"},
	}
	for _, org := range []string{orgA, orgB} {
		if err := s.EnsureOrg(ctx, org); err != nil {
			t.Fatal(err)
		}
	}
	return s, st
}

// vaultIn is a TenantFinder that puts every vault in one tenant.
type vaultIn string

func (v vaultIn) VaultTenant(context.Context, string) (string, error) { return string(v), nil }

func valid(org, key string) ConfigInput {
	return ConfigInput{Name: "Config1", Type: ConfigTypeBYOK, OrgID: org, ProviderType: ProviderAzure, KeyIdentifier: key}
}

// wantProblem checks that err is a *Problem for rule, with text for a person.
func wantProblem(t *testing.T, what string, err, rule error) {
	t.Helper()
	var p *Problem
	if !errors.As(err, &p) || !errors.Is(err, rule) {
		t.Errorf("%s = %v, want a *Problem for %v", what, err, rule)
		return
	}
	if p.Title == "" || p.Detail == "" {
		t.Errorf("%s = %+v, want a title and a detail", what, p)
	}
}

func TestSubmitConfigRules(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		in   func(ConfigInput) ConfigInput
		rule error
	}{
		{"empty name", func(c ConfigInput) ConfigInput { c.Name = ""; return c }, ErrInvalidField},
		{"name with a slash", func(c ConfigInput) ConfigInput { c.Name = "a/b"; return c }, ErrInvalidField},
		{"name with surrounding space", func(c ConfigInput) ConfigInput { c.Name = " a"; return c }, ErrInvalidField},
		{"name too long", func(c ConfigInput) ConfigInput { c.Name = strings.Repeat("n", MaxConfigNameLen+1); return c }, ErrInvalidField},
		{"name with a newline", func(c ConfigInput) ConfigInput { c.Name = "a\nb"; return c }, ErrInvalidField},
		{"name with a tab", func(c ConfigInput) ConfigInput { c.Name = "a\tb"; return c }, ErrInvalidField},
		{"name with a terminal escape", func(c ConfigInput) ConfigInput { c.Name = "a\x1b[31mred"; return c }, ErrInvalidField},
		{"name with DEL", func(c ConfigInput) ConfigInput { c.Name = "a\x7f"; return c }, ErrInvalidField},
		{"name with a C1 control", func(c ConfigInput) ConfigInput { c.Name = "a\u009bb"; return c }, ErrInvalidField},
		{"name with a right-to-left override", func(c ConfigInput) ConfigInput { c.Name = "cfg\u202egnp.exe"; return c }, ErrInvalidField},
		{"name with a right-to-left isolate", func(c ConfigInput) ConfigInput { c.Name = "cfg\u2067x\u2069"; return c }, ErrInvalidField},
		{"name with a zero-width space", func(c ConfigInput) ConfigInput { c.Name = "Con\u200bfig1"; return c }, ErrInvalidField},
		{"name with a byte-order mark", func(c ConfigInput) ConfigInput { c.Name = "\ufeffConfig1"; return c }, ErrInvalidField},
		{"name not UTF-8", func(c ConfigInput) ConfigInput { c.Name = "a\xffb"; return c }, ErrInvalidField},
		{"wrong type", func(c ConfigInput) ConfigInput { c.Type = "OTHER"; return c }, ErrInvalidConfigType},
		{"body names another org", func(c ConfigInput) ConfigInput { c.OrgID = orgB; return c }, ErrOrgMismatch},
		{"unknown provider", func(c ConfigInput) ConfigInput { c.ProviderType = "GCP_KMS"; return c }, ErrUnsupportedProvider},
		{"revert while on system keys", func(c ConfigInput) ConfigInput { c.ProviderType = "SYSTEM_MANAGED"; return c }, ErrUnsupportedProvider},
		{"key on a host not allowed", func(c ConfigInput) ConfigInput { c.KeyIdentifier = badKey; return c }, ErrInvalidKeyID},
	} {
		s, st := newService(t)
		_, err := s.SubmitConfig(ctx, orgA, tc.in(valid(orgA, keyA)))
		wantProblem(t, "SubmitConfig("+tc.name+")", err, tc.rule)
		if all, _ := st.Configs(ctx, orgA); len(all) != 0 {
			t.Errorf("SubmitConfig(%s) stored %d configurations, want 0", tc.name, len(all))
		}
	}
}

// TestSubmitConfigNames checks which names are taken as they are.
func TestSubmitConfigNames(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"Config1", "prod key 2026", "Schlüssel-Ä", "鍵の設定", "a.b_c-d (e)"} {
		s, _ := newService(t)
		in := valid(orgA, keyA)
		in.Name = name
		if c, err := s.SubmitConfig(ctx, orgA, in); err != nil || c.Name != name {
			t.Errorf("SubmitConfig(name %q) = %+v, %v; want it stored under that name", name, c, err)
		}
	}
	s, _ := newService(t)
	in := valid(orgA, keyA)
	in.Name = "a\nb"
	_, err := s.SubmitConfig(ctx, orgA, in)
	var p *Problem
	if !errors.As(err, &p) || !strings.Contains(p.Detail, "no control or invisible formatting characters") {
		t.Errorf("SubmitConfig(name with a newline) = %v, want a problem that names control characters", err)
	}
}

// TestSubmitConfigStoresCanonicalKeyID checks that the key identifier is
// stored (and so shown) in its canonical form, whatever spelling was sent.
func TestSubmitConfigStoresCanonicalKeyID(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ sent, want string }{
		{keyA, keyA},
		{"  HTTPS://Vault-A.VAULT.azure.net:443/keys/cmk/0123456789abcdef0123456789abcdef/ \n", keyA},
		{"https://vault-a.vault.azure.net/keys/cmk/" + strings.Repeat(" ", 1500), "https://vault-a.vault.azure.net/keys/cmk"},
	} {
		s, st := newService(t)
		c, err := s.SubmitConfig(ctx, orgA, valid(orgA, tc.sent))
		if err != nil {
			t.Fatalf("SubmitConfig(%q) error = %v", tc.sent, err)
		}
		if c.KeyIdentifier != tc.want {
			t.Errorf("SubmitConfig(%q).KeyIdentifier = %q, want %q", tc.sent, c.KeyIdentifier, tc.want)
		}
		got, err := st.ConfigByName(ctx, orgA, c.Name)
		if err != nil || got.KeyIdentifier != tc.want {
			t.Errorf("stored KeyIdentifier of %q = %q, %v; want %q", tc.sent, got.KeyIdentifier, err, tc.want)
		}
	}
	s, _ := newService(t)
	_, err := s.SubmitConfig(ctx, orgA, valid(orgA, keyA+strings.Repeat(" ", 50<<10)))
	wantProblem(t, "SubmitConfig(key identifier padded with 50 KB of spaces)", err, ErrInvalidKeyID)
}

func TestSubmitConfigConflicts(t *testing.T) {
	ctx := context.Background()
	s, st := newService(t)
	c, err := s.SubmitConfig(ctx, orgA, valid(orgA, keyA))
	if err != nil || c.Status != store.StatusNew || c.KeyName != "cmk" || c.VaultURL != "https://vault-a.vault.azure.net" {
		t.Fatalf("SubmitConfig(valid) = %+v, %v; want a NEW config of vault-a/cmk", c, err)
	}
	again := valid(orgA, keyB)
	_, err = s.SubmitConfig(ctx, orgA, again)
	wantProblem(t, "SubmitConfig(same name)", err, ErrNameTaken)
	again.Name = "Config2"
	_, err = s.SubmitConfig(ctx, orgA, again)
	wantProblem(t, "SubmitConfig(while a job runs)", err, ErrJobActive)

	// A pending submission takes no key: another org may submit the same
	// key (its own job decides), so an org that does not own a key can
	// never block its owner by submitting it first.
	if _, err := s.SubmitConfig(ctx, orgB, valid(orgB, keyA2)); err != nil {
		t.Errorf("SubmitConfig(key of orgA's pending job) = %v, want accepted", err)
	}

	// Once orgA's key passed validation, in a vault of tenantA, an org
	// bound to tenantA asking for the same key, in any spelling, is
	// refused, and so is its preflight of it: the key is not that org's to
	// probe. An org not bound to tenantA is told nothing about the key.
	job, err := st.ClaimJob(ctx, "w", time.Minute)
	if err != nil || job.ID != c.ID {
		t.Fatalf("ClaimJob = %+v, %v; want orgA's job", job, err)
	}
	if err := st.BeginCustomerKEK(ctx, job.ID, "w", job, "v1", tenantA, nil); err != nil {
		t.Fatal(err)
	}
	for _, org := range []string{orgC, orgD} {
		if err := s.EnsureOrg(ctx, org); err != nil {
			t.Fatal(err)
		}
	}
	st.BindTenant(ctx, orgC, tenantA)
	st.BindTenant(ctx, orgD, tenantD)
	_, err = s.SubmitConfig(ctx, orgC, valid(orgC, keyA2))
	wantProblem(t, "SubmitConfig(other org's key, same tenant)", err, ErrKeyInUse)
	_, err = s.Preflight(ctx, orgC, keyA2)
	wantProblem(t, "Preflight(other org's key, same tenant)", err, ErrKeyInUse)
	if _, err := s.SubmitConfig(ctx, orgD, valid(orgD, keyA2)); errors.Is(err, ErrKeyInUse) || err != nil {
		t.Errorf("SubmitConfig(other org's key, another tenant) = %v, want accepted: its job's ownership check refuses it, saying nothing of the key", err)
	}
	// Their preflight stops at the ownership check, before any vault call
	// (noVault fails the test on one).
	s.Ownership.Tenants = vaultIn(tenantA)
	for _, org := range []string{orgB, orgD} {
		rep, err := s.Preflight(ctx, org, keyA2)
		if err != nil {
			t.Errorf("Preflight(%s, other org's key) = %v, want a report", org, err)
			continue
		}
		if p := rep.FirstProblem(); rep.Passed || p == nil || p.Check != preflight.CheckKeyOwner || p.Code != cmkapi.CodeKeyNotBound {
			t.Errorf("Preflight(%s, other org's key) first problem = %+v, want key_owner KEY_NOT_BOUND", org, p)
		}
	}

	// Once enabled, neither a new config nor a revert is accepted.
	if err := st.UpdateJob(ctx, c.ID, "w", store.JobUpdate{Status: ptr(store.StatusCompleted), Release: true}); err != nil {
		t.Fatal(err)
	}
	revert := valid(orgA, keyA)
	revert.Name, revert.ProviderType = "Back", "SYSTEM"
	_, err = s.SubmitConfig(ctx, orgA, revert)
	wantProblem(t, "SubmitConfig(revert after enabling)", err, ErrIrreversible)
	err = s.DeleteConfig(ctx, orgA, "Config1")
	wantProblem(t, "DeleteConfig(enabled)", err, ErrIrreversible)
}

func ptr[T any](v T) *T { return &v }

func TestConfigLookups(t *testing.T) {
	ctx := context.Background()
	s, _ := newService(t)
	if _, err := s.SubmitConfig(ctx, orgA, valid(orgA, keyA)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ConfigByName(ctx, orgA, "Config1", "OTHER"); !errors.Is(err, ErrInvalidConfigType) {
		t.Errorf("ConfigByName(configType OTHER) = %v, want ErrInvalidConfigType", err)
	}
	_, err := s.ConfigByName(ctx, orgA, "config1", ConfigTypeBYOK)
	wantProblem(t, "ConfigByName(wrong case)", err, ErrNotFound)
	var p *Problem
	if errors.As(err, &p) && !strings.Contains(p.Hint, `"Config1"`) {
		t.Errorf("ConfigByName(wrong case).Hint = %q, want it to name Config1", p.Hint)
	}
	// Another org sees nothing of orgA's configurations.
	_, err = s.ConfigByName(ctx, orgB, "Config1", ConfigTypeBYOK)
	wantProblem(t, "ConfigByName(other org)", err, ErrNotFound)
	if p := new(Problem); errors.As(err, &p) && strings.Contains(p.Hint, "Config1") {
		t.Errorf("ConfigByName(other org).Hint = %q, names another org's configuration", p.Hint)
	}
	if all, err := s.Configs(ctx, orgB); err != nil || len(all) != 0 {
		t.Errorf("Configs(orgB) = %d, %v; want none", len(all), err)
	}
}

func TestSandboxes(t *testing.T) {
	ctx := context.Background()
	s, _ := newService(t)
	wantProblem(t, "CreateSandbox(Bad_Name)", s.CreateSandbox(ctx, orgA, "Bad_Name"), ErrInvalidField)
	wantProblem(t, "CreateSandbox(prod)", s.CreateSandbox(ctx, orgA, "prod"), ErrSandboxExists)
	if err := s.CreateSandbox(ctx, orgA, "dev"); err != nil {
		t.Fatalf("CreateSandbox(dev) = %v", err)
	}
	if got, _ := s.Sandboxes(ctx, orgA); strings.Join(got, ",") != "dev,prod" {
		t.Errorf("Sandboxes(orgA) = %v, want [dev prod]", got)
	}
	if got, _ := s.Sandboxes(ctx, orgB); strings.Join(got, ",") != "prod" {
		t.Errorf("Sandboxes(orgB) = %v, want [prod]", got)
	}
	// A revoked org makes no sandbox: the gate refuses before any key work.
	s.Gate.Set(&keyhealth.Health{OrgID: orgA, State: keyhealth.Revoked, Cause: string(kms.KindKeyDisabled), Version: 1})
	var ref *keyhealth.Refused
	if err := s.CreateSandbox(ctx, orgA, "qa"); !errors.As(err, &ref) {
		t.Errorf("CreateSandbox(revoked org) = %v, want *keyhealth.Refused", err)
	}
	if err := s.CreateSandbox(ctx, orgB, "qa"); err != nil {
		t.Errorf("CreateSandbox(orgB while orgA is revoked) = %v, want nil", err)
	}
}

func TestHealthAndRecheckOnSystemKeys(t *testing.T) {
	ctx := context.Background()
	s, _ := newService(t)
	h, err := s.Health(ctx, orgA)
	if err != nil || h.Health != nil || h.DataBlocked || h.CheckInterval != 30*time.Second {
		t.Errorf("Health(system-managed org) = %+v, %v; want no key health, not blocked, the monitor's interval", h, err)
	}
	_, err = s.Recheck(ctx, orgA)
	wantProblem(t, "Recheck(system-managed org)", err, ErrNotEnabled)
}

func TestAlertsWebhooksAudit(t *testing.T) {
	ctx := context.Background()
	s, st := newService(t)
	_, err := s.Alerts(ctx, orgA, "open")
	wantProblem(t, "Alerts(status open)", err, ErrInvalidField)
	a := &store.Alert{ID: "alert-1", OrgID: orgA, Kind: "KEY_ACCESS_DISABLED", Cause: "KEY_DISABLED"}
	if _, err := st.RaiseAlert(ctx, a); err != nil {
		t.Fatal(err)
	}
	_, err = s.Alert(ctx, orgB, "alert-1")
	wantProblem(t, "Alert(other org's alert)", err, ErrNotFound)
	_, err = s.AcknowledgeAlert(ctx, orgB, "alert-1", "mallory")
	wantProblem(t, "AcknowledgeAlert(other org's alert)", err, ErrNotFound)
	if got, err := s.AcknowledgeAlert(ctx, orgA, "alert-1", "alice"); err != nil || got.AcknowledgedBy != "alice" {
		t.Errorf("AcknowledgeAlert(own alert) = %+v, %v; want acknowledged by alice", got, err)
	}

	_, err = s.CreateWebhook(ctx, orgA, "http://127.0.0.1/hook")
	wantProblem(t, "CreateWebhook(loopback over http)", err, ErrInvalidField)
	s.WebhookPolicy.AllowHTTP, s.WebhookPolicy.AllowPrivateNetworks = true, true
	var first string
	for i := range MaxWebhooksPerOrg {
		h, err := s.CreateWebhook(ctx, orgA, "http://127.0.0.1/hook")
		if err != nil || len(h.Secret) != 64 {
			t.Fatalf("CreateWebhook #%d = %+v, %v; want a webhook with a 32-byte secret", i, h, err)
		}
		if i == 0 {
			first = h.ID
		}
		var stored store.Webhook
		hooks, _ := st.Webhooks(ctx, orgA)
		for _, w := range hooks {
			if w.ID == h.ID {
				stored = w
			}
		}
		if stored.SealedSecret == "" || strings.Contains(stored.SealedSecret, h.Secret) {
			t.Errorf("CreateWebhook #%d stored %+v; want its secret sealed", i, stored)
		} else if got, err := s.WebhookSecrets.Open(orgA, h.ID, stored.SealedSecret); err != nil || got != h.Secret {
			t.Errorf("stored secret of webhook #%d opens to %q, %v; want the secret shown", i, got, err)
		}
	}
	_, err = s.CreateWebhook(ctx, orgA, "http://127.0.0.1/hook")
	wantProblem(t, "CreateWebhook(one too many)", err, ErrLimitReached)
	wantProblem(t, "DeleteWebhook(other org's)", s.DeleteWebhook(ctx, orgB, first), ErrNotFound)
	if err := s.DeleteWebhook(ctx, orgA, first); err != nil {
		t.Errorf("DeleteWebhook(own) = %v", err)
	}

	for _, limit := range []int{0, MaxAuditLimit + 1} {
		_, err := s.Audit(ctx, orgA, AuditQuery{Limit: limit})
		wantProblem(t, "Audit(limit out of range)", err, ErrInvalidField)
	}
	if _, err := s.Audit(ctx, orgA, AuditQuery{Limit: DefaultAuditLimit}); err != nil {
		t.Errorf("Audit(default limit) = %v", err)
	}
}

func TestDeleteOrg(t *testing.T) {
	ctx := context.Background()
	s, st := newService(t)
	wantProblem(t, "DeleteOrg(no confirmation)", s.DeleteOrg(ctx, orgA, ""), ErrConfirmation)
	wantProblem(t, "DeleteOrg(other org confirmed)", s.DeleteOrg(ctx, orgA, orgB), ErrConfirmation)
	if err := s.DeleteOrg(ctx, orgA, orgA); err != nil {
		t.Fatalf("DeleteOrg(confirmed) = %v", err)
	}
	if keys, _ := st.DataKeys(ctx, orgA); len(keys) != 0 {
		t.Errorf("DeleteOrg left %d data keys of the org", len(keys))
	}
	if keys, _ := st.DataKeys(ctx, orgB); len(keys) == 0 {
		t.Errorf("DeleteOrg(orgA) removed orgB's data keys")
	}
}
