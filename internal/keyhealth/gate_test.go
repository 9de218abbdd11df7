package keyhealth

import (
	"errors"
	"testing"
	"time"
)

func TestGateAllow(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	now := t0
	g := &Gate{Grace: 10 * time.Minute, Now: func() time.Time { return now }}
	for _, tc := range []struct {
		name    string
		h       *Health // nil: the org is not in the gate
		at      time.Time
		refused bool
		state   string
	}{
		{"system-managed org (not in the gate)", nil, t0, false, ""},
		{"healthy", &Health{State: Healthy, Since: t0}, t0, false, ""},
		{"degraded: data readable", &Health{State: Degraded, Since: t0}, t0, false, ""},
		{"coasting within the grace", &Health{State: Coasting, Since: t0}, t0.Add(9 * time.Minute), false, ""},
		{"coasting when the grace runs out, before the monitor notices", &Health{State: Coasting, Since: t0}, t0.Add(10 * time.Minute), true, Revoked},
		{"revoked", &Health{State: Revoked, Cause: "KEY_DISABLED", Since: t0}, t0, true, Revoked},
	} {
		org := tc.name
		if tc.h != nil {
			h := *tc.h
			h.OrgID, h.Version = org, 1
			g.Set(&h)
		}
		now = tc.at
		err := g.Allow(org)
		var ref *Refused
		if got := errors.As(err, &ref); got != tc.refused {
			t.Errorf("Allow(%s) = %v, want refused %v", tc.name, err, tc.refused)
			continue
		}
		if tc.refused && (ref.State != tc.state || ref.Org != org) {
			t.Errorf("Allow(%s) = %+v, want state %s for the org", tc.name, ref, tc.state)
		}
	}
}

// TestGateKeepsTheNewest checks that a row older than what the gate holds
// (a replica's poll racing a local check) is not taken, whatever the clock,
// and that a forgotten org starts afresh.
func TestGateKeepsTheNewest(t *testing.T) {
	g := &Gate{}
	if !g.Set(&Health{OrgID: "o", State: Revoked, Version: 5}) {
		t.Fatal("Set(first row) = false, want true")
	}
	if g.Set(&Health{OrgID: "o", State: Healthy, Version: 4, UpdatedAt: time.Now().Add(time.Hour)}) {
		t.Error("Set(older version, later clock) = true, want false")
	}
	if h, _ := g.State("o"); h.State != Revoked {
		t.Errorf("State(o) = %s, want REVOKED (the newer row)", h.State)
	}
	if !g.Set(&Health{OrgID: "o", State: Healthy, Version: 6}) || g.Allow("o") != nil {
		t.Error("a newer healthy row was not taken")
	}
	probe := []byte("ciphertext")
	g.Set(&Health{OrgID: "p", State: Healthy, Version: 1, Probe: probe})
	if h, _ := g.State("p"); h.Probe != nil {
		t.Error("the gate kept the probe ciphertext; it holds state only")
	}
	g.Forget("o")
	if _, ok := g.State("o"); ok {
		t.Error("State(o) after Forget: still known")
	}
}
