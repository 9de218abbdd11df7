package monitor

import (
	"context"
	"slices"
	"testing"
	"time"
)

func TestNudgesCoalesceAndSpace(t *testing.T) {
	n := newNudges()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	gap := 5 * time.Second
	for range 1000 {
		n.pending["a"] = true
	}
	n.pending["b"] = true
	orgs, _ := n.due(now, gap)
	slices.Sort(orgs)
	if !slices.Equal(orgs, []string{"a", "b"}) {
		t.Fatalf("due() = %v, want [a b] once each", orgs)
	}
	if orgs, _ := n.due(now, gap); len(orgs) != 0 {
		t.Fatalf("due() again with nothing pending = %v", orgs)
	}
	n.pending["a"] = true
	orgs, wait := n.due(now.Add(time.Second), gap)
	if len(orgs) != 0 || wait != 4*time.Second {
		t.Fatalf("due() within the gap = %v, wait %s; want none, wait 4s", orgs, wait)
	}
	if orgs, _ := n.due(now.Add(gap), gap); !slices.Equal(orgs, []string{"a"}) {
		t.Fatalf("due() after the gap = %v, want [a]", orgs)
	}
	if _, ok := n.last["b"]; ok {
		t.Error("an org not nudged for a gap is still remembered")
	}
	if n.checks != 3 {
		t.Errorf("checks = %d, want 3", n.checks)
	}
}

// TestNudgeChecksAndStartsRotation: a nudge checks the org at once; a new
// version found by that check is re-wrapped without waiting for a schedule.
func TestNudgeChecksAndStartsRotation(t *testing.T) {
	e := newCheckEnv(t)
	e.m.Now = time.Now
	e.m.Interval = time.Hour
	e.check(t, "HEALTHY", "")
	e.kms.addVersion(t, "v2")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { e.m.RunNudges(ctx); done <- struct{}{} }()
	go func() { e.m.RunRotations(ctx); done <- struct{}{} }()
	defer func() { cancel(); <-done; <-done }()
	e.m.Nudge(e.org)
	deadline := time.Now().Add(5 * time.Second)
	for {
		h, err := e.st.Health(ctx, e.org)
		if err != nil {
			t.Fatal(err)
		}
		if h.KeyVersion == "v2" && h.RotateTo == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health after a nudge = version %q, rotating to %q; want the rotation to v2 done", h.KeyVersion, h.RotateTo)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n, checks := e.m.Nudged(); n != 1 || checks != 1 {
		t.Errorf("Nudged() = %d, %d; want 1, 1", n, checks)
	}
}
