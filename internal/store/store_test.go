package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/testsvc"
)

// backends opens a fresh store on each backend: embedded SQLite, and a
// real PostgreSQL the test starts itself.
var backends = []struct {
	name string
	open func(t *testing.T) *Store
}{
	{"sqlite", func(t *testing.T) *Store {
		s, err := Open(context.Background(), filepath.Join(t.TempDir(), "cmk.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}},
	{"postgres", func(t *testing.T) *Store {
		s, err := OpenPostgres(context.Background(), testsvc.Postgres(t))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}},
}

// each runs test against every backend.
func each(t *testing.T, test func(t *testing.T, s *Store)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := b.open(t)
			t.Cleanup(func() { s.Close() })
			test(t, s)
		})
	}
}

func TestConfigRules(t *testing.T) { each(t, testConfigRules) }

func testConfigRules(t *testing.T, s *Store) {
	ctx := context.Background()
	if _, err := s.EnsureOrg(ctx, "o1"); err != nil {
		t.Fatal(err)
	}
	newCfg := func(id, name string) *Config {
		return &Config{ID: id, OrgID: "o1", Name: name, Type: "BYOK_CONFIG", ProviderType: "AZURE_KEYVAULT", KeyIdentifier: "k", VaultURL: "v", KeyName: "k"}
	}
	if err := s.CreateConfig(ctx, newCfg("a", "Config1")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateConfig(ctx, newCfg("b", "Config1")); !errors.Is(err, ErrDuplicateName) {
		t.Errorf("same name = %v, want ErrDuplicateName", err)
	}
	if err := s.CreateConfig(ctx, newCfg("c", "config1")); !errors.Is(err, ErrJobActive) {
		t.Errorf("second job while one runs = %v, want ErrJobActive", err)
	}
	if _, err := s.ConfigByName(ctx, "o1", "config1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("lookup with other case = %v, want ErrNotFound (names are case-sensitive)", err)
	}
	if err := s.CreateConfig(ctx, &Config{ID: "x", OrgID: "nope", Name: "n"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("config for unknown org = %v, want ErrNotFound", err)
	}

	// Finish the job as FAILED: a new one may start.
	job, err := s.ClaimJob(ctx, "w1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	failed := StatusFailed
	if err := s.UpdateJob(ctx, job.ID, "w1", JobUpdate{Status: &failed, Release: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateConfig(ctx, newCfg("d", "Config2")); err != nil {
		t.Fatalf("new config after a FAILED one = %v", err)
	}
	// Once the org uses its customer key, no new configuration is accepted.
	job, _ = s.ClaimJob(ctx, "w1", time.Minute)
	done := StatusCompleted
	if err := s.UpdateJob(ctx, job.ID, "w1", JobUpdate{Status: &done}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetCustomerKEK(ctx, "o1", "v", "k"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateConfig(ctx, newCfg("e", "Config3")); !errors.Is(err, ErrAlreadyEnabled) {
		t.Errorf("config after enablement = %v, want ErrAlreadyEnabled", err)
	}
	// The key now belongs to o1, whatever the letter case.
	s.EnsureOrg(ctx, "o2")
	for _, name := range []string{"k", "K"} {
		if taken, err := s.KeyInUseElsewhere(ctx, "o2", "v", name); err != nil || !taken {
			t.Errorf("KeyInUseElsewhere(o2, v, %q) = %v, %v; want true", name, taken, err)
		}
	}
	if taken, _ := s.KeyInUseElsewhere(ctx, "o1", "v", "k"); taken {
		t.Error("an org's own key reported as in use elsewhere")
	}
}

func TestLeases(t *testing.T) { each(t, testLeases) }

func testLeases(t *testing.T, s *Store) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	s.SetClock(func() time.Time { return now })
	s.EnsureOrg(ctx, "o1")
	if err := s.CreateConfig(ctx, &Config{ID: "a", OrgID: "o1", Name: "n"}); err != nil {
		t.Fatal(err)
	}
	j, err := s.ClaimJob(ctx, "w1", 10*time.Second)
	if err != nil || j.ID != "a" || j.Attempts != 1 {
		t.Fatalf("ClaimJob = %+v, %v", j, err)
	}
	if _, err := s.ClaimJob(ctx, "w2", 10*time.Second); !errors.Is(err, ErrNotFound) {
		t.Errorf("claim of a leased job = %v, want ErrNotFound", err)
	}
	now = now.Add(11 * time.Second)
	j2, err := s.ClaimJob(ctx, "w2", 10*time.Second)
	if err != nil || j2.ID != "a" {
		t.Fatalf("claim after lease expiry = %v, %v", j2, err)
	}
	running := StatusRunning
	if err := s.UpdateJob(ctx, "a", "w1", JobUpdate{Status: &running}); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("update by the old owner = %v, want ErrLeaseLost", err)
	}
	later := now.Add(time.Minute)
	if err := s.UpdateJob(ctx, "a", "w2", JobUpdate{NextAttemptAt: &later, Release: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimJob(ctx, "w3", 10*time.Second); !errors.Is(err, ErrNotFound) {
		t.Errorf("claim before next attempt = %v, want ErrNotFound", err)
	}
}

func TestReplaceWrapping(t *testing.T) { each(t, testReplaceWrapping) }

func testReplaceWrapping(t *testing.T, s *Store) {
	ctx := context.Background()
	s.EnsureOrg(ctx, "o1")
	dk := DataKey{ID: "k1", OrgID: "o1", Sandbox: "prod", Store: "lake", KEK: KEKSystem, KEKRef: "sys", KEKVersion: "1", Alg: "A256GCM", Wrapped: []byte{1}}
	if err := s.CreateSandbox(ctx, "o1", "prod", []DataKey{dk}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSandbox(ctx, "o1", "prod", nil); !errors.Is(err, ErrDuplicateName) {
		t.Errorf("duplicate sandbox = %v, want ErrDuplicateName", err)
	}
	to := dk
	to.KEK, to.Wrapped = KEKCustomer, []byte{2}
	if err := s.ReplaceWrapping(ctx, "k1", KEKSystem, to); err != nil {
		t.Fatal(err)
	}
	if err := s.ReplaceWrapping(ctx, "k1", KEKSystem, to); !errors.Is(err, ErrWrappingChanged) {
		t.Errorf("second swap = %v, want ErrWrappingChanged", err)
	}
	total, customer, err := s.CountDataKeys(ctx, "o1")
	if err != nil || total != 1 || customer != 1 {
		t.Errorf("CountDataKeys = %d, %d, %v; want 1, 1", total, customer, err)
	}
}

func TestWebhookSecrets(t *testing.T) { each(t, testWebhookSecrets) }

// testWebhookSecrets: the store keeps a webhook's secret as given, hands it
// to the deliverer with the webhook's org, and swaps it only from the value
// the caller read.
func testWebhookSecrets(t *testing.T, s *Store) {
	ctx := context.Background()
	if _, err := s.EnsureOrg(ctx, "o1"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateWebhook(ctx, &Webhook{ID: "h1", OrgID: "o1", URL: "https://hooks.example.com/", SealedSecret: "old"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.ReplaceWebhookSecret(ctx, "h1", "stale", "x"); ok || err != nil {
		t.Errorf("ReplaceWebhookSecret(from a value no longer stored) = %v, %v; want false, nil", ok, err)
	}
	if ok, err := s.ReplaceWebhookSecret(ctx, "h1", "old", "sealed"); !ok || err != nil {
		t.Errorf("ReplaceWebhookSecret(from the stored value) = %v, %v; want true, nil", ok, err)
	}
	if ok, err := s.ReplaceWebhookSecret(ctx, "gone", "old", "sealed"); ok || err != nil {
		t.Errorf("ReplaceWebhookSecret(no such webhook) = %v, %v; want false, nil", ok, err)
	}
	all, err := s.AllWebhooks(ctx)
	if err != nil || len(all) != 1 || all[0].SealedSecret != "sealed" {
		t.Errorf("AllWebhooks = %+v, %v; want h1 with the new secret", all, err)
	}
	if _, err := s.EnqueueEvent(ctx, "o1", "e1", "{}"); err != nil {
		t.Fatal(err)
	}
	due, err := s.ClaimDeliveries(ctx, time.Minute, 10)
	if err != nil || len(due) != 1 || due[0].OrgID != "o1" || due[0].WebhookID != "h1" || due[0].SealedSecret != "sealed" {
		t.Errorf("ClaimDeliveries = %+v, %v; want h1's delivery with its org and stored secret", due, err)
	}
}

func TestUsedConsentStates(t *testing.T) { each(t, testUsedConsentStates) }

func testUsedConsentStates(t *testing.T, s *Store) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	s.SetClock(func() time.Time { return now })
	if used, err := s.ConsentStateUsed(ctx, "s1"); err != nil || used {
		t.Fatalf("ConsentStateUsed(new) = %v, %v; want false", used, err)
	}
	if fresh, err := s.UseConsentState(ctx, "s1", now.Add(time.Hour)); err != nil || !fresh {
		t.Fatalf("UseConsentState(s1) = %v, %v; want true", fresh, err)
	}
	if fresh, err := s.UseConsentState(ctx, "s1", now.Add(time.Hour)); err != nil || fresh {
		t.Errorf("UseConsentState(s1) again = %v, %v; want false: a state is used once", fresh, err)
	}
	if used, _ := s.ConsentStateUsed(ctx, "s1"); !used {
		t.Error("ConsentStateUsed(s1) = false after use")
	}
	s.UseConsentState(ctx, "s2", now.Add(2*time.Hour))
	// Past its expiry a row is pruned (the state itself is refused as
	// expired by then).
	now = now.Add(90 * time.Minute)
	s.UseConsentState(ctx, "s3", now.Add(time.Hour))
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM used_consent_states`).Scan(&n); err != nil || n != 2 {
		t.Errorf("used_consent_states holds %d rows (%v), want 2: s1 pruned", n, err)
	}
}

func TestTenantBindings(t *testing.T) { each(t, testTenantBindings) }

func testTenantBindings(t *testing.T, s *Store) {
	ctx := context.Background()
	const ta, tb = "22222222-2222-4222-8222-222222222222", "44444444-4444-4444-8444-444444444444"
	if _, err := s.BindTenant(ctx, "nope", ta); !errors.Is(err, ErrNotFound) {
		t.Errorf("BindTenant(unknown org) = %v, want ErrNotFound", err)
	}
	s.EnsureOrg(ctx, "o1")
	s.EnsureOrg(ctx, "o2")
	if got, err := s.OrgTenants(ctx, "o1"); err != nil || len(got) != 0 {
		t.Errorf("OrgTenants(new org) = %v, %v; want none", got, err)
	}
	if created, err := s.BindTenant(ctx, "o1", strings.ToUpper(ta)); err != nil || !created {
		t.Errorf("BindTenant(o1, ta) = %v, %v; want true, nil", created, err)
	}
	if created, err := s.BindTenant(ctx, "o1", ta); err != nil || created {
		t.Errorf("BindTenant(o1, ta) again = %v, %v; want false, nil", created, err)
	}
	s.BindTenant(ctx, "o1", tb)
	if got, _ := s.OrgTenants(ctx, "o1"); strings.Join(got, ",") != ta+","+tb {
		t.Errorf("OrgTenants(o1) = %v, want [%s %s] (lowercase)", got, ta, tb)
	}
	if got, _ := s.OrgTenants(ctx, "o2"); len(got) != 0 {
		t.Errorf("OrgTenants(o2) = %v, want none: bindings are per org", got)
	}

	// A pending job of o2 does not make o1's key taken; a key that passed
	// validation does, with the tenant its vault was found in.
	s.CreateConfig(ctx, &Config{ID: "c2", OrgID: "o2", Name: "n", VaultURL: "https://v", KeyName: "k"})
	if tenant, taken, err := s.KeyHolderTenant(ctx, "o1", "https://v", "k"); err != nil || taken || tenant != "" {
		t.Errorf("KeyHolderTenant while o2's job is pending = %q, %v, %v; want not taken", tenant, taken, err)
	}
	s.CreateConfig(ctx, &Config{ID: "c1", OrgID: "o1", Name: "n", VaultURL: "https://v", KeyName: "k"})
	job, err := s.ClaimJob(ctx, "w", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.BeginCustomerKEK(ctx, job.ID, "w", job, "v1", strings.ToUpper(ta), nil); err != nil {
		t.Fatal(err)
	}
	other := "o1"
	if job.OrgID == "o1" {
		other = "o2"
	}
	if tenant, taken, err := s.KeyHolderTenant(ctx, other, "https://V", "K"); err != nil || !taken || tenant != ta {
		t.Errorf("KeyHolderTenant(%s) = %q, %v, %v; want %q, true", other, tenant, taken, err, ta)
	}
	if _, taken, _ := s.KeyHolderTenant(ctx, job.OrgID, "https://v", "k"); taken {
		t.Error("an org's own key reported as held by another org")
	}

	if err := s.DeleteOrg(ctx, "o1"); err != nil {
		t.Fatal(err)
	}
	s.EnsureOrg(ctx, "o1")
	if got, _ := s.OrgTenants(ctx, "o1"); len(got) != 0 {
		t.Errorf("OrgTenants(o1 deleted and created again) = %v, want none", got)
	}
}

func TestSeedCustomerOrg(t *testing.T) { each(t, testSeedCustomerOrg) }

// testSeedCustomerOrg: a seeded org is on its customer key with a health
// row due at once, takes customer-wrapped data keys only, and cannot be
// seeded twice.
func testSeedCustomerOrg(t *testing.T, s *Store) {
	ctx := context.Background()
	if err := s.SeedCustomerOrg(ctx, "o1", "https://v1.vault.example", "k1", "ver1", "Tenant-1"); err != nil {
		t.Fatal(err)
	}
	o, err := s.Org(ctx, "o1")
	if err != nil {
		t.Fatal(err)
	}
	if o.KEKMode != ModeCustomer || o.VaultURL != "https://v1.vault.example" || o.KeyName != "k1" {
		t.Errorf("Org(o1) = %+v, want on key https://v1.vault.example/k1", o)
	}
	h, err := s.Health(ctx, "o1")
	if err != nil {
		t.Fatal(err)
	}
	if h.KeyVersion != "ver1" || h.State != "HEALTHY" || !h.NextCheck.IsZero() {
		t.Errorf("Health(o1) = version %q, %s, next check %v; want ver1, HEALTHY, due at once", h.KeyVersion, h.State, h.NextCheck)
	}
	sys := DataKey{ID: "d1", OrgID: "o1", Sandbox: "prod", Store: "lake", KEK: KEKSystem, KEKRef: "sys", KEKVersion: "1", Alg: "A256GCM", Wrapped: []byte{1}}
	if err := s.CreateSandbox(ctx, "o1", "prod", []DataKey{sys}); !errors.Is(err, ErrModeChanged) {
		t.Errorf("CreateSandbox with a system-wrapped key = %v, want ErrModeChanged", err)
	}
	if err := s.SeedCustomerOrg(ctx, "o1", "https://v1.vault.example", "k2", "ver2", ""); err == nil {
		t.Errorf("seeding o1 twice succeeded")
	}
}

// TestClaimDueChecksSkipsRowsBeingClaimed: on PostgreSQL, a replica
// claiming checks while another replica's claim holds the first due rows
// takes the next ones at once, instead of waiting for that claim and
// finding nothing left.
func TestClaimDueChecksSkipsRowsBeingClaimed(t *testing.T) {
	ctx := context.Background()
	s := backends[1].open(t)
	t.Cleanup(func() { s.Close() })
	for i := range 4 {
		if err := s.SeedCustomerOrg(ctx, fmt.Sprintf("o%d", i), "https://v.vault.example", fmt.Sprintf("k%d", i), "v1", ""); err != nil {
			t.Fatal(err)
		}
	}
	// Another replica's claim, in the middle of its transaction, holding
	// two due rows.
	other, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback()
	if _, err := other.ExecContext(ctx, `SELECT org_id FROM key_health WHERE org_id IN ('o0', 'o1') FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	due, err := s.ClaimDueChecks(cctx, "replica-b", time.Minute, 10)
	if err != nil {
		t.Fatalf("ClaimDueChecks while another claim holds o0 and o1: %v", err)
	}
	var got []string
	for _, h := range due {
		got = append(got, h.OrgID)
	}
	slices.Sort(got)
	if want := []string{"o2", "o3"}; !slices.Equal(got, want) {
		t.Errorf("ClaimDueChecks() = %v, want %v", got, want)
	}
}

// TestPostgresKeepsConnections: queries run at once by many goroutines
// (the key checks of one replica) leave their connections open for the
// next ones instead of closing all but two.
func TestPostgresKeepsConnections(t *testing.T) {
	ctx := context.Background()
	s := backends[1].open(t)
	t.Cleanup(func() { s.Close() })
	const n = 32
	start := make(chan struct{})
	errs := make(chan error, n)
	for range n {
		go func() {
			<-start
			_, err := s.db.ExecContext(ctx, `SELECT pg_sleep(0.2)`)
			errs <- err
		}()
	}
	close(start)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if st := s.db.Stats(); st.MaxIdleClosed != 0 || st.Idle < n {
		t.Errorf("after %d concurrent queries: %d connections idle, %d closed for want of idle room; want %d idle, 0 closed", n, st.Idle, st.MaxIdleClosed, n)
	}
}
