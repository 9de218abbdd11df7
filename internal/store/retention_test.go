package store

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func TestFailedConfigRetention(t *testing.T) { each(t, testFailedConfigRetention) }

// testFailedConfigRetention fails more jobs than are kept and checks that
// creating a configuration keeps only the newest KeptFailedConfigs FAILED
// ones of its org, and touches no other org or status.
func testFailedConfigRetention(t *testing.T, s *Store) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	s.SetClock(func() time.Time { return now })
	for _, org := range []string{"o1", "o2"} {
		if _, err := s.EnsureOrg(ctx, org); err != nil {
			t.Fatal(err)
		}
	}
	create := func(org, name string) {
		t.Helper()
		now = now.Add(time.Second)
		if err := s.CreateConfig(ctx, &Config{ID: org + "-" + name, OrgID: org, Name: name}); err != nil {
			t.Fatalf("CreateConfig(%s, %s) = %v", org, name, err)
		}
	}
	fail := func() {
		t.Helper()
		job, err := s.ClaimJob(ctx, "w", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		failed := StatusFailed
		if err := s.UpdateJob(ctx, job.ID, "w", JobUpdate{Status: &failed, Release: true}); err != nil {
			t.Fatal(err)
		}
	}
	// o2 fails a few; o1 fails many more than are kept.
	for i := range 3 {
		create("o2", fmt.Sprint("f", i))
		fail()
	}
	const failures = KeptFailedConfigs + 7
	for i := range failures {
		create("o1", fmt.Sprint("f", i))
		fail()
	}
	// Each creation pruned: the kept ones and the last, failed since.
	all, err := s.Configs(ctx, "o1")
	if err != nil || len(all) != KeptFailedConfigs+1 {
		t.Fatalf("Configs(o1) before the next creation = %d, %v; want %d (pruned on creation only)", len(all), err, KeptFailedConfigs+1)
	}
	create("o1", "new")
	all, err = s.Configs(ctx, "o1")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != KeptFailedConfigs+1 {
		t.Fatalf("Configs(o1) after a creation = %d, want %d FAILED + the new one", len(all), KeptFailedConfigs)
	}
	if all[0].Name != "new" || all[0].Status != StatusNew {
		t.Errorf("newest configuration = %s %s, want new NEW", all[0].Name, all[0].Status)
	}
	for i, c := range all[1:] {
		if want := fmt.Sprint("f", failures-1-i); c.Name != want || c.Status != StatusFailed {
			t.Errorf("configuration %d = %s %s, want %s FAILED (the newest kept)", i+1, c.Name, c.Status, want)
		}
	}
	// A pruned configuration's name is free again; o2 kept all of its own.
	fail()
	create("o1", "f0")
	if got, _ := s.Configs(ctx, "o2"); len(got) != 3 {
		t.Errorf("Configs(o2) = %d, want its 3 FAILED untouched", len(got))
	}
}
