package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestPlatformGenerations(t *testing.T) { each(t, testPlatformGenerations) }

func testPlatformGenerations(t *testing.T, s *Store) {
	ctx := context.Background()
	t0 := time.UnixMilli(1_800_000_000_000).UTC()
	root := PlatformGeneration{ID: "system:aa", Root: true, KMSKey: "https://v.vault.azure.net/keys/k", KMSVersion: "v1", Alg: "RSA-OAEP-256", Wrapped: []byte{1, 2}, CreatedAt: t0}
	if err := s.AddPlatformGeneration(ctx, root); err != nil {
		t.Fatal(err)
	}
	second := root
	second.ID, second.CreatedAt = "system:bb", t0.Add(time.Millisecond)
	if err := s.AddPlatformGeneration(ctx, second); !errors.Is(err, ErrGenerationExists) {
		t.Errorf("a second root = %v, want ErrGenerationExists", err)
	}
	second.Root = false
	if err := s.AddPlatformGeneration(ctx, second); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPlatformGeneration(ctx, second); !errors.Is(err, ErrGenerationExists) {
		t.Errorf("the same id twice = %v, want ErrGenerationExists", err)
	}
	gens, err := s.PlatformGenerations(ctx)
	if err != nil || len(gens) != 2 || gens[0].ID != root.ID || !gens[0].Root || gens[1].Root || !gens[0].CreatedAt.Equal(t0) || string(gens[1].Wrapped) != "\x01\x02" {
		t.Fatalf("PlatformGenerations = %+v, %v", gens, err)
	}
	to := second
	to.KMSVersion, to.Wrapped = "v2", []byte{3}
	if err := s.RewrapPlatformGeneration(ctx, second.ID, second.KMSKey, "v1", to); err != nil {
		t.Fatal(err)
	}
	if err := s.RewrapPlatformGeneration(ctx, second.ID, second.KMSKey, "v1", to); !errors.Is(err, ErrWrappingChanged) {
		t.Errorf("a second re-wrap from v1 = %v, want ErrWrappingChanged", err)
	}
	if err := s.RetirePlatformGeneration(ctx, root.ID, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	gens, _ = s.PlatformGenerations(ctx)
	if !gens[0].RetiredAt.Equal(t0.Add(time.Hour)) || gens[1].KMSVersion != "v2" || !gens[1].RetiredAt.IsZero() {
		t.Errorf("after re-wrap and retire: %+v", gens)
	}

	// System-wrapped data keys by generation, across orgs.
	for _, org := range []string{"o1", "o2"} {
		s.EnsureOrg(ctx, org)
		keys := []DataKey{
			{ID: org + "-a", OrgID: org, Sandbox: "prod", Store: "lake", KEK: KEKSystem, KEKRef: root.ID, KEKVersion: "1", Alg: "A256GCM", Wrapped: []byte{1}},
			{ID: org + "-b", OrgID: org, Sandbox: "prod", Store: "profile", KEK: KEKSystem, KEKRef: second.ID, KEKVersion: "1", Alg: "A256GCM", Wrapped: []byte{1}},
		}
		if err := s.CreateSandbox(ctx, org, "prod", keys); err != nil {
			t.Fatal(err)
		}
	}
	counts, err := s.CountSystemKeys(ctx)
	if err != nil || len(counts) != 2 || counts[root.ID] != 2 || counts[second.ID] != 2 {
		t.Fatalf("CountSystemKeys = %v, %v", counts, err)
	}
	page, err := s.SystemKeysUnder(ctx, root.ID, "", 1)
	if err != nil || len(page) != 1 || page[0].ID != "o1-a" {
		t.Fatalf("SystemKeysUnder page 1 = %+v, %v", page, err)
	}
	if page, _ = s.SystemKeysUnder(ctx, root.ID, "o1-a", 10); len(page) != 1 || page[0].ID != "o2-a" {
		t.Fatalf("SystemKeysUnder page 2 = %+v", page)
	}
	dk := page[0]
	dk.KEKRef, dk.Wrapped = second.ID, []byte{9}
	if err := s.ReplaceSystemWrapping(ctx, dk.ID, root.ID, dk); err != nil {
		t.Fatal(err)
	}
	if err := s.ReplaceSystemWrapping(ctx, dk.ID, root.ID, dk); !errors.Is(err, ErrWrappingChanged) {
		t.Errorf("a second swap from the root = %v, want ErrWrappingChanged", err)
	}
	if counts, _ = s.CountSystemKeys(ctx); counts[root.ID] != 1 || counts[second.ID] != 3 {
		t.Errorf("counts after a swap = %v", counts)
	}
}

func TestPlatformLease(t *testing.T) { each(t, testPlatformLease) }

func testPlatformLease(t *testing.T, s *Store) {
	ctx := context.Background()
	now := time.UnixMilli(1_800_000_000_000)
	s.SetClock(func() time.Time { return now })
	claim := func(owner string) bool {
		t.Helper()
		held, err := s.ClaimPlatformLease(ctx, "rewrap", owner, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return held
	}
	first := claim("a")
	renewed := claim("a")
	other := claim("b")
	if !first || !renewed || other {
		t.Fatalf("a first claim, its renewal, and another owner's claim = %v, %v, %v; want true, true, false", first, renewed, other)
	}
	now = now.Add(2 * time.Minute)
	if !claim("b") || claim("a") {
		t.Fatal("after the lease ran out b takes it and a no longer holds it")
	}
	if err := s.ReleasePlatformLease(ctx, "rewrap", "b"); err != nil {
		t.Fatal(err)
	}
	if !claim("a") {
		t.Fatal("a released lease is free at once")
	}
}
