package monitor

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/store"
)

func TestExpiryWarning(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
	memo := func(d time.Duration, warned int) keyhealth.ExpiryMemo {
		return keyhealth.ExpiryMemo{Expires: now.Add(d), Warned: warned}
	}
	for _, tt := range []struct {
		name    string
		prev    keyhealth.ExpiryMemo
		exp     *time.Time
		raise   int
		resolve bool
		warned  int
	}{
		{"no expiry", keyhealth.ExpiryMemo{}, nil, 0, false, 0},
		{"far away", keyhealth.ExpiryMemo{}, at(31 * day), 0, false, 0},
		{"30 days", keyhealth.ExpiryMemo{}, at(30 * day), 30, false, 30},
		{"30 days, warned", memo(29*day, 30), at(29 * day), 0, false, 30},
		{"7 days after 30", memo(7*day, 30), at(7 * day), 7, true, 7},
		{"first seen at 5 days: the 7-day warning only", keyhealth.ExpiryMemo{}, at(5 * day), 7, false, 7},
		{"1 day", memo(23*time.Hour, 7), at(23 * time.Hour), 1, true, 1},
		{"expired, warned of the last day", memo(-time.Hour, 1), at(-time.Hour), 0, false, 1},
		{"first seen expired", keyhealth.ExpiryMemo{}, at(-time.Hour), 1, false, 1},
		{"extended: closes, re-arms", memo(6*day, 7), at(90 * day), 0, true, 0},
		{"extended into a threshold: closes, warns anew", memo(6*day, 7), at(20 * day), 30, true, 30},
		{"removed", memo(6*day, 7), nil, 0, true, 0},
		{"new date never warned", memo(50*day, 0), at(60 * day), 0, false, 0},
	} {
		st := expiryWarning(tt.prev, tt.exp, now)
		if st.raise != tt.raise || st.resolve != tt.resolve || st.memo.Warned != tt.warned {
			t.Errorf("%s: expiryWarning() = raise %d resolve %v warned %d, want %d %v %d", tt.name, st.raise, st.resolve, st.memo.Warned, tt.raise, tt.resolve, tt.warned)
		}
		if tt.exp != nil && !st.memo.Expires.Equal(*tt.exp) {
			t.Errorf("%s: memo expiry = %v, want %v", tt.name, st.memo.Expires, *tt.exp)
		}
	}
}

// expiringKMS is fakeKMS whose newest version expires at exp.
type expiringKMS struct {
	*fakeKMS
	mu  sync.Mutex
	exp *time.Time
}

func (k *expiringKMS) Describe(ctx context.Context, ref kms.KeyRef) (kms.KeyInfo, error) {
	info, err := k.fakeKMS.Describe(ctx, ref)
	k.mu.Lock()
	defer k.mu.Unlock()
	info.Expires = k.exp
	return info, err
}

func (k *expiringKMS) setExp(t time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.exp = &t
}

// TestExpiryWarningsOncePerThreshold: checks on a moving clock raise one
// Alert notification per threshold for one expiry date, however many
// checks see it; healthy checks leave it open; a new date closes it.
func TestExpiryWarningsOncePerThreshold(t *testing.T) {
	e := newCheckEnv(t)
	k := &expiringKMS{fakeKMS: e.kms}
	e.m.Provider = k
	day := 24 * time.Hour
	exp := e.now.Add(40 * day)
	k.setExp(exp)
	ctx := context.Background()
	expiryAlerts := func() (all, open []*store.Alert) {
		as, err := e.st.Alerts(ctx, e.org, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			if a.Cause == cmkapi.CauseKeyNearExpiry {
				all = append(all, a)
				if a.Status == store.AlertOpen {
					open = append(open, a)
				}
			}
		}
		return all, open
	}
	step := func(d time.Duration, checks, wantAll int, wantOpen bool) {
		t.Helper()
		e.now = e.now.Add(d)
		for range checks {
			e.check(t, keyhealth.Healthy, "")
			e.now = e.now.Add(e.m.Interval)
		}
		all, open := expiryAlerts()
		if len(all) != wantAll || (len(open) == 1) != wantOpen || len(open) > 1 {
			t.Fatalf("after %s: %d expiry alerts, %d open; want %d, open %v", d, len(all), len(open), wantAll, wantOpen)
		}
	}
	step(0, 3, 0, false)                 // 40 days left
	step(11*day, 5, 1, true)             // 29 days: the 30-day warning, once
	step(22*day, 5, 2, true)             // 7 days: the 7-day warning replaces it
	step(6*day+12*time.Hour, 3, 3, true) // under a day
	_, open := expiryAlerts()
	if open[0].Kind != cmkapi.AlertNotification || open[0].Detail.Cause != cmkapi.CauseKeyNearExpiry || len(open[0].Detail.Steps) < 3 {
		t.Errorf("open warning = %s %+v", open[0].Kind, open[0].Detail)
	}
	k.setExp(exp.Add(365 * day)) // extended: closes and re-arms
	step(time.Minute, 2, 3, false)
	k.setExp(e.now.Add(20 * day)) // a new date within 30 days warns anew
	step(time.Minute, 2, 4, true)
	// A rotation to a version without expiry closes it.
	k.mu.Lock()
	k.exp = nil
	k.mu.Unlock()
	e.kms.addVersion(t, "v2")
	step(time.Minute, 1, 4, false)
}
