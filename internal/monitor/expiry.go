package monitor

import (
	"context"
	"time"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/guidance"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/kms"
	"github.com/cmk-project/cmk/internal/store"
)

// ExpiryThresholds are the days before a key's expiry at which an Alert
// notification warns of it: a month leaves time for a change process, a
// week and a day are the reminders.
var ExpiryThresholds = []int{30, 7, 1}

// expiryStep is what one check does about the key's expiry date.
type expiryStep struct {
	memo    keyhealth.ExpiryMemo
	resolve bool // close the open expiry warning (first, when raise is set too)
	raise   int  // raise a warning for this many days (0: none)
}

// expiryWarning decides the expiry warnings of a check from the last
// memory, the expiry of the key's newest version (nil: none) and the time.
// It is pure. Each threshold is warned of once per expiry date, the
// smallest one crossed only (a key first seen five days from its expiry
// gets the 7-day warning, not also the 30-day one); a different expiry
// date (a new version, an extended or removed date) closes the warning and
// starts afresh.
func expiryWarning(prev keyhealth.ExpiryMemo, expires *time.Time, now time.Time) expiryStep {
	st := expiryStep{memo: prev}
	if expires == nil || !expires.Equal(prev.Expires) {
		st.resolve = prev.Warned > 0
		st.memo = keyhealth.ExpiryMemo{}
		if expires != nil {
			st.memo.Expires = expires.UTC()
		}
	}
	if expires == nil {
		return st
	}
	left := expires.Sub(now)
	crossed := 0
	for _, days := range ExpiryThresholds {
		if left <= time.Duration(days)*24*time.Hour && (crossed == 0 || days < crossed) {
			crossed = days
		}
	}
	if crossed > 0 && (st.memo.Warned == 0 || crossed < st.memo.Warned) {
		st.resolve = st.resolve || st.memo.Warned > 0 // the warning of the larger threshold gives way
		st.raise = crossed
		st.memo.Warned = crossed
	}
	return st
}

// applyExpiry raises or resolves the expiry warning once the check's
// health (with the step's memo) is saved.
func (m *Monitor) applyExpiry(ctx context.Context, org string, ref kms.KeyRef, st expiryStep, expires *time.Time, now time.Time) {
	if m.Notifier == nil {
		return
	}
	if st.resolve {
		if _, err := m.Notifier.ResolveWhere(ctx, org, store.AlertFilter{Causes: []string{cmkapi.CauseKeyNearExpiry}}); err != nil {
			m.Log.Error("resolve expiry warning", "org", org, "err", err)
		}
	}
	if st.raise > 0 && expires != nil {
		detail := guidance.ExpiryAlert(*expires, now, st.raise, m.Env, ref)
		if _, err := m.Notifier.Raise(ctx, org, alerts.KindNotification, cmkapi.CauseKeyNearExpiry, detail); err != nil {
			m.Log.Error("raise expiry warning", "org", org, "err", err)
		}
	}
}
