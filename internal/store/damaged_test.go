package store

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/keyhealth"
)

// One org's damaged JSON column must not stop the scans that read every
// org: the gate's load and sync (revocations by other replicas), the due
// checks, and the job queue. The damaged field comes back empty with its
// error reported.

func TestDamagedMemoStopsNoOrg(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "cmk.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	for _, org := range []string{"victim", "zz-damaged"} {
		if _, err := s.EnsureOrg(ctx, org); err != nil {
			t.Fatal(err)
		}
		if _, err := s.db.ExecContext(ctx, `INSERT INTO key_health (org_id, state, since, last_ok, next_check, updated_at, changed_at, version) VALUES (?, ?, ?, ?, 0, ?, ?, 1)`,
			org, keyhealth.Healthy, ms(now), ms(now), ms(now), ms(now)); err != nil {
			t.Fatal(err)
		}
	}
	gate := &keyhealth.Gate{}
	since, err := gate.Load(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE key_health SET transitions = ? WHERE org_id = ?`, `{"checks":"x"}`, "zz-damaged"); err != nil {
		t.Fatal(err)
	}
	later := now.Add(time.Second) // another replica revokes the victim
	if _, err := s.db.ExecContext(ctx, `UPDATE key_health SET state = ?, cause = 'KEY_DISABLED', since = ?, changed_at = ?, version = 2 WHERE org_id = ?`,
		keyhealth.Revoked, ms(later), ms(later), "victim"); err != nil {
		t.Fatal(err)
	}

	all, err := s.AllHealth(ctx)
	if err != nil || len(all) != 2 {
		t.Fatalf("AllHealth() = %d rows, %v; want both rows", len(all), err)
	}
	for _, h := range all {
		if (h.OrgID == "zz-damaged") != (h.MemoErr != nil) {
			t.Errorf("AllHealth(): %s MemoErr = %v; want an error only for the damaged row", h.OrgID, h.MemoErr)
		}
	}
	if due, err := s.ClaimDueChecks(ctx, "m", time.Minute, 10); err != nil || len(due) != 2 {
		t.Errorf("ClaimDueChecks() = %d, %v; want both orgs due", len(due), err)
	}
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	gate.Sync(sctx, s, since, 20*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)), keyhealth.SyncHooks{})
	if gate.Allow("victim") == nil {
		t.Error("gate.Allow(victim) = nil after another replica revoked it; want refused")
	}
}

func TestDamagedConfigColumnStopsNoJob(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "cmk.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	clock := time.Now()
	s.SetClock(func() time.Time { return clock })
	for _, org := range []string{"a-damaged", "victim"} {
		if _, err := s.EnsureOrg(ctx, org); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateConfig(ctx, &Config{ID: "job-" + org, OrgID: org, Name: "c", Type: "BYOK_CONFIG", ProviderType: "AZURE_KEYVAULT",
			KeyIdentifier: "k", VaultURL: "https://" + org + ".vault.azure.net", KeyName: "k"}); err != nil {
			t.Fatal(err)
		}
		clock = clock.Add(time.Second)
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE configs SET last_error = ? WHERE org_id = ?`, `{"at":"not a time"}`, "a-damaged"); err != nil {
		t.Fatal(err)
	}
	claimed := map[string]bool{}
	for range 2 {
		job, err := s.ClaimJob(ctx, "w", time.Minute)
		if err != nil {
			t.Fatalf("ClaimJob() = %v; want each job claimable", err)
		}
		claimed[job.OrgID] = true
		if (job.OrgID == "a-damaged") != (job.ColumnErr != nil) || job.LastError != nil {
			t.Errorf("ClaimJob() = %s with ColumnErr %v, LastError %+v; want an error only for the damaged row, and no LastError", job.OrgID, job.ColumnErr, job.LastError)
		}
	}
	if !claimed["victim"] || !claimed["a-damaged"] {
		t.Errorf("claimed %v; want both jobs", claimed)
	}
	if all, err := s.Configs(ctx, "a-damaged"); err != nil || len(all) != 1 {
		t.Errorf("Configs(a-damaged) = %d, %v; want the damaged config listed", len(all), err)
	}
}

func TestDamagedAlertDetailStaysListed(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "cmk.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.EnsureOrg(ctx, "org"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a-damaged", "b-fine"} {
		a := &Alert{ID: id, OrgID: "org", Kind: "KEY_ACCESS_FAILURE", Cause: id}
		a.Detail.Title = "Key access failure"
		if _, err := s.RaiseAlert(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE alerts SET detail = ? WHERE id = ?`, `{"steps":"not a list"}`, "a-damaged"); err != nil {
		t.Fatal(err)
	}
	list, err := s.Alerts(ctx, "org", "")
	if err != nil || len(list) != 2 {
		t.Fatalf("Alerts() = %d, %v; want both alerts", len(list), err)
	}
	for _, a := range list {
		damaged := a.ID == "a-damaged"
		if damaged != (a.DetailErr != nil) || damaged != (a.Detail.Title == "") {
			t.Errorf("Alerts(): %s DetailErr %v, title %q; want an error and no text only for the damaged alert", a.ID, a.DetailErr, a.Detail.Title)
		}
	}
}
