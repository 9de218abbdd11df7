package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/keyhealth"
)

func TestEpisodes(t *testing.T) { each(t, testEpisodes) }

// testEpisodes walks one org through HEALTHY → COASTING → REVOKED →
// HEALTHY with two replicas' refusal counts, and checks the episode, the
// lease rule and that another org sees none of it.
func testEpisodes(t *testing.T, s *Store) {
	ctx := context.Background()
	t0 := time.Unix(1_800_000_000, 0).UTC()
	now := t0
	s.SetClock(func() time.Time { return now })
	for _, org := range []string{"o1", "o2"} {
		s.EnsureOrg(ctx, org)
		if _, err := s.db.ExecContext(ctx, `INSERT INTO key_health (org_id, state, since, last_ok, next_check, updated_at, changed_at, version) VALUES (?, ?, ?, ?, 0, ?, ?, 1)`,
			org, keyhealth.Healthy, ms(now), ms(now), ms(now), ms(now)); err != nil {
			t.Fatal(err)
		}
	}
	const grace = 10 * time.Minute
	prev := keyhealth.Health{OrgID: "o1", State: keyhealth.Healthy}
	step := func(owner string, next keyhealth.Health) error {
		h, err := s.ClaimCheck(ctx, "o1", owner, time.Minute)
		if err != nil {
			return err
		}
		st := keyhealth.StepOf(prev, next, now, grace, "https://v.vault.azure.net/keys/k")
		next.OrgID = "o1"
		next.Version = h.Version
		if err := s.SaveHealthStep(ctx, &next, owner, st); err != nil {
			return err
		}
		prev = next
		return nil
	}
	coast := keyhealth.Health{State: keyhealth.Coasting, Cause: "TRANSIENT", Since: now}
	if err := step("a", coast); err != nil {
		t.Fatal(err)
	}
	// A replica that lost the lease writes nothing.
	if _, err := s.ClaimCheck(ctx, "o1", "a", time.Minute); err != nil {
		t.Fatal(err)
	}
	stale := keyhealth.StepOf(keyhealth.Health{State: keyhealth.Healthy}, coast, now, grace, "k")
	if err := s.SaveHealthStep(ctx, &keyhealth.Health{OrgID: "o1", State: keyhealth.Coasting}, "b", stale); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("SaveHealthStep without the lease = %v, want ErrLeaseLost", err)
	}
	s.db.ExecContext(ctx, `UPDATE key_health SET lease_owner = '' WHERE org_id = 'o1'`)

	now = t0.Add(2 * time.Minute)
	revokedAt := now
	if err := step("a", keyhealth.Health{State: keyhealth.Revoked, Cause: "KEY_DISABLED", Message: "disabled", Since: now}); err != nil {
		t.Fatal(err)
	}
	// Two replicas flush their counts, one twice.
	r1 := []keyhealth.StoreUse{{Org: "o1", Store: keyhealth.StoreLake, FirstRefused: now.Add(time.Second), LastRefused: now.Add(5 * time.Second), Refused: 3}}
	r2 := []keyhealth.StoreUse{{Org: "o1", Store: keyhealth.StoreLake, FirstRefused: now.Add(500 * time.Millisecond), LastRefused: now.Add(7 * time.Second), Refused: 2},
		{Org: "o1", Store: keyhealth.StoreProfile, FirstRefused: now.Add(2 * time.Second), LastRefused: now.Add(2 * time.Second), Refused: 1}}
	for _, f := range []struct {
		replica string
		uses    []keyhealth.StoreUse
	}{{"r1", r1}, {"r2", r2}, {"r1", r1}} {
		if err := s.AddStoreUses(ctx, f.replica, f.uses); err != nil {
			t.Fatal(err)
		}
	}
	now = t0.Add(5 * time.Minute)
	if err := step("a", keyhealth.Health{State: keyhealth.Healthy, Since: now}); err != nil {
		t.Fatal(err)
	}
	// The resumes come after the episode closed: they land in it.
	s.AddStoreUses(ctx, "r1", []keyhealth.StoreUse{{Org: "o1", Store: keyhealth.StoreLake, Resumed: now.Add(time.Second)}})
	s.AddStoreUses(ctx, "r2", []keyhealth.StoreUse{{Org: "o1", Store: keyhealth.StoreLake, Resumed: now.Add(3 * time.Second)}})

	eps, err := s.Episodes(ctx, "o1", t0.Add(-time.Hour), time.Time{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 1 {
		t.Fatalf("Episodes = %d episodes, want 1", len(eps))
	}
	e := eps[0]
	if !e.Start.Equal(t0) || !e.End.Equal(now) || e.Worst != keyhealth.Revoked {
		t.Errorf("episode = start %v end %v worst %s, want %v, %v, REVOKED", e.Start, e.End, e.Worst, t0, now)
	}
	if len(e.Causes) != 2 || e.Causes[0].State != keyhealth.Coasting || e.Causes[1].Cause != "KEY_DISABLED" {
		t.Errorf("causes = %+v, want COASTING then REVOKED/KEY_DISABLED", e.Causes)
	}
	if !e.BlockedFrom.Equal(revokedAt) || !e.BlockedUntil.Equal(now) || e.Blocked != 3*time.Minute || !e.BlockedAt.IsZero() {
		t.Errorf("blocked = from %v until %v for %v (open at %v), want %v, %v, 3m", e.BlockedFrom, e.BlockedUntil, e.Blocked, e.BlockedAt, revokedAt, now)
	}
	if len(e.Stores) != 2 {
		t.Fatalf("stores = %+v, want lake and profile", e.Stores)
	}
	lake := e.Stores[0]
	if lake.Store != keyhealth.StoreLake || lake.Refused != 8 || !lake.FirstRefused.Equal(revokedAt.Add(500*time.Millisecond)) ||
		!lake.LastRefused.Equal(revokedAt.Add(7*time.Second)) || !lake.Resumed.Equal(now.Add(time.Second)) {
		t.Errorf("lake = %+v, want 8 refusals from +0.5s to +7s, resumed at %v", lake, now.Add(time.Second))
	}
	if p := e.Stores[1]; p.Store != keyhealth.StoreProfile || p.Refused != 1 || !p.Resumed.IsZero() {
		t.Errorf("profile = %+v, want 1 refusal, not resumed", p)
	}
	// The period bounds, and another org's history.
	if eps, _ := s.Episodes(ctx, "o1", now.Add(time.Minute), time.Time{}, 10); len(eps) != 0 {
		t.Errorf("episodes after the end = %d, want 0", len(eps))
	}
	if eps, _ := s.Episodes(ctx, "o1", time.Time{}, t0, 10); len(eps) != 0 {
		t.Errorf("episodes before the start = %d, want 0", len(eps))
	}
	if eps, _ := s.Episodes(ctx, "o2", time.Time{}, time.Time{}, 10); len(eps) != 0 {
		t.Errorf("o2's episodes = %d, want 0", len(eps))
	}
	// A second episode; counts flushed late land in the episode that had
	// started when they were counted, not the newest.
	now = t0.Add(10 * time.Minute)
	if err := step("a", keyhealth.Health{State: keyhealth.Revoked, Cause: "KEY_DISABLED", Since: now}); err != nil {
		t.Fatal(err)
	}
	late := []keyhealth.StoreUse{{Org: "o1", Store: keyhealth.StoreLake, FirstRefused: revokedAt.Add(8 * time.Second), LastRefused: revokedAt.Add(8 * time.Second), Refused: 1}}
	if err := s.AddStoreUses(ctx, "r3", late); err != nil {
		t.Fatal(err)
	}
	eps, err = s.Episodes(ctx, "o1", time.Time{}, time.Time{}, 10)
	if err != nil || len(eps) != 2 {
		t.Fatalf("Episodes = %d, %v; want 2", len(eps), err)
	}
	if len(eps[0].Stores) != 0 || !eps[0].End.IsZero() {
		t.Errorf("newest episode = %+v, want open without stores", eps[0])
	}
	if l := eps[1].Stores[0]; l.Refused != 9 || !l.LastRefused.Equal(revokedAt.Add(8*time.Second)) || !l.Resumed.Equal(t0.Add(5*time.Minute+time.Second)) {
		t.Errorf("older episode's lake = %+v, want 9 refusals, the last at +8s, still resumed at +5m1s", l)
	}

	// Deleting the org deletes its history.
	if err := s.DeleteOrg(ctx, "o1"); err != nil {
		t.Fatal(err)
	}
	if eps, _ := s.Episodes(ctx, "o1", time.Time{}, time.Time{}, 10); len(eps) != 0 {
		t.Errorf("episodes of a deleted org = %d, want 0", len(eps))
	}
}
