package store

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/keyhealth"
)

func TestReleaseChecks(t *testing.T) { each(t, testReleaseChecks) }

// testReleaseChecks: ReleaseChecks frees the owner's check leases but those
// it keeps, and never another owner's.
func testReleaseChecks(t *testing.T, s *Store) {
	ctx := context.Background()
	now := time.Now()
	for _, org := range []string{"a", "b", "c", "d"} {
		if _, err := s.EnsureOrg(ctx, org); err != nil {
			t.Fatal(err)
		}
		if _, err := s.db.ExecContext(ctx, `INSERT INTO key_health (org_id, state, since, last_ok, next_check, updated_at, changed_at, version) VALUES (?, ?, ?, ?, 0, ?, ?, 1)`,
			org, keyhealth.Healthy, ms(now), ms(now), ms(now), ms(now)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ org, owner string }{{"a", "m1"}, {"b", "m1"}, {"c", "m1"}, {"d", "m2"}} {
		if _, err := s.ClaimCheck(ctx, c.org, c.owner, time.Minute); err != nil {
			t.Fatalf("ClaimCheck(%s, %s) = %v", c.org, c.owner, err)
		}
	}
	if err := s.ReleaseChecks(ctx, "m1", []string{"b"}); err != nil {
		t.Fatalf("ReleaseChecks = %v", err)
	}
	due, err := s.ClaimDueChecks(ctx, "m3", time.Minute, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range due {
		got = append(got, h.OrgID)
	}
	slices.Sort(got)
	if want := []string{"a", "c"}; !slices.Equal(got, want) {
		t.Errorf("claimable after ReleaseChecks(m1, keep b) = %v, want %v", got, want)
	}
	if err := s.ReleaseChecks(ctx, "m2", nil); err != nil {
		t.Fatalf("ReleaseChecks(m2, none kept) = %v", err)
	}
	if _, err := s.ClaimCheck(ctx, "d", "m3", time.Minute); err != nil {
		t.Errorf("ClaimCheck(d) after ReleaseChecks(m2) = %v, want the lease", err)
	}
}
