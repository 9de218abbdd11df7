package monitor

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/guidance"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/kms"
)

// t0 is the fixed clock of the decision tests.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// testPolicy has the default durations; nextIn differs from the interval so
// the tests see which one a transition uses.
var testPolicy = policy{
	interval:   DefaultInterval,
	nextIn:     31 * time.Second,
	grace:      DefaultGrace,
	flapWindow: DefaultFlapWindow,
	flapCount:  DefaultFlapCount,
}

const keyRef = "https://contoso.vault.azure.net/keys/cmk"

// failure is the outcome of a probe whose first failure is err, classified
// as probe does it.
func failure(version string, err *kms.Error, wrapOnly bool) outcome {
	return outcome{version: version, kind: err.Kind, message: guidance.Describe(err), retryAfter: err.RetryAfter, wrapOnly: wrapOnly}
}

func kmsErr(kind kms.Kind, op string, status int, code string) *kms.Error {
	return &kms.Error{Kind: kind, Op: op, Key: keyRef, Status: status, Code: code}
}

var (
	ok          = outcome{version: "v1"}
	unavailable = failure("v1", kmsErr(kms.KindTransient, "unwrap", 503, "ServiceUnavailable"), false)
	timedOut    = failure("", &kms.Error{Kind: kms.KindTransient, Op: "describe", Key: keyRef, Err: context.DeadlineExceeded}, false)
	expired     = failure("v1", kmsErr(kms.KindKeyNotActive, "wrap", 403, "Forbidden"), true)
	noWrapOp    = failure("v1", kmsErr(kms.KindKeyOperationForbidden, "wrap", 403, "Forbidden"), true)
	disabled    = failure("v1", &kms.Error{Kind: kms.KindKeyDisabled, Op: "describe", Key: keyRef, Err: errors.New("the key's newest version is disabled")}, false)

	// Answers that are no verdict on the key.
	apiVersion     = failure("v1", &kms.Error{Kind: kms.KindInvalidRequest, Op: "unwrap", Key: keyRef, Status: 400, Code: "BadParameter"}, false)
	unknownWrap400 = failure("v1", kmsErr(kms.KindInvalidRequest, "wrap", 400, "SomethingNew"), false)
	badSecret      = failure("", kmsErr(kms.KindTokenAcquisitionFailed, "token", 401, "invalid_client"), false)
	malformed      = failure("", kmsErr(kms.KindMalformedKeyURI, "describe", 0, ""), false)
	// The vault could not decrypt a data key's stored wrapping (the org
	// had no probe yet): not the monitor's own ciphertext.
	dataKeyUndecryptable = func() outcome {
		o := failure("v1", kmsErr(kms.KindUnwrapFailed, "unwrap", 400, "BadParameter"), false)
		o.dataKey = true
		return o
	}()
)

func throttled(retryAfter time.Duration) outcome {
	e := kmsErr(kms.KindThrottled, "unwrap", 429, "Throttled")
	e.RetryAfter = retryAfter
	return failure("v1", e, false)
}

// healthy is an org whose key has worked for a day.
func healthy() keyhealth.Health {
	return keyhealth.Health{
		OrgID: "org-1", State: keyhealth.Healthy, KeyVersion: "v1",
		Since: t0.Add(-24 * time.Hour), LastCheck: t0.Add(-30 * time.Second), LastOK: t0.Add(-30 * time.Second),
		NextCheck: t0, Probe: []byte("probe"), ProbeVersion: "v1", Version: 7, Memo: keyhealth.Memo{Checks: 41},
	}
}

// failing is an org that entered state with o's failure at since.
func failing(state string, o outcome, since time.Time) keyhealth.Health {
	h := healthy()
	h.State, h.Cause, h.Message, h.Since, h.LastOK = state, string(o.kind), o.message, since, since
	h.Memo.Changes = []time.Time{since}
	return h
}

func withChanges(h keyhealth.Health, changes ...time.Time) keyhealth.Health {
	h.Memo.Changes = changes
	return h
}

func withVersions(h keyhealth.Health, key, rotateTo string) keyhealth.Health {
	h.KeyVersion, h.RotateTo = key, rotateTo
	return h
}

func described(o outcome, version string) outcome {
	o.version = version
	return o
}

// view is what the decision tests compare: the next health's fields a
// transition may change, and the effects.
type view struct {
	State, Cause, Message    string
	Since, NextCheck, LastOK time.Time
	RotateTo                 string
	Changes                  []time.Time
	FailClosed, Wipe         bool
	Audits                   []auditRecord
	Flapping                 bool
	Raise                    []alertRaise
	Resolve                  []openAlert
}

func viewOf(d decision) view {
	v := view{
		State: d.next.State, Cause: d.next.Cause, Message: d.next.Message,
		Since: d.next.Since, NextCheck: d.next.NextCheck, LastOK: d.next.LastOK, RotateTo: d.next.RotateTo,
		Changes:    d.next.Memo.Changes,
		FailClosed: d.failClosed, Wipe: d.wipe, Audits: d.audits, Flapping: d.flapping,
		Raise: d.raise, Resolve: d.resolve,
	}
	if len(v.Changes) == 0 {
		v.Changes = nil
	}
	return v
}

// unchanged is the view of a check that leaves prev's state as it is.
func unchanged(prev keyhealth.Health) view {
	return view{
		State: prev.State, Cause: prev.Cause, Message: prev.Message,
		Since: prev.Since, NextCheck: t0.Add(testPolicy.nextIn), LastOK: prev.LastOK, RotateTo: prev.RotateTo,
		Changes: prev.Memo.Changes, FailClosed: prev.State == keyhealth.Revoked,
	}
}

// becomes is the view of a check that moves prev to state.
func becomes(prev keyhealth.Health, state, cause, message string) view {
	v := unchanged(prev)
	v.State, v.Cause, v.Message, v.Since = state, cause, message, t0
	v.Changes = append(append([]time.Time(nil), prev.Memo.Changes...), t0)
	v.FailClosed = state == keyhealth.Revoked
	return v
}

// healthyAgain is the view of a successful check of prev.
func healthyAgain(prev keyhealth.Health) view {
	v := unchanged(prev)
	if prev.State != keyhealth.Healthy {
		v = becomes(prev, keyhealth.Healthy, "", "")
		v.Audits = []auditRecord{{opRecovery, "v1", "ok", "access restored after " + prev.State + " (" + prev.Cause + ")"}}
	}
	v.LastOK = t0
	return v
}

// revokedBy is the view of a check that revokes a healthy org with o.
func revokedBy(o outcome, alertKind string) view {
	v := becomes(healthy(), keyhealth.Revoked, string(o.kind), o.message)
	v.Wipe = true
	v.Audits = []auditRecord{{opRevocation, o.version, string(o.kind), o.message}}
	v.Raise = []alertRaise{{alertKind, string(o.kind), o.message, true}}
	return v
}

// edit returns v changed by f, for the rows that differ from a helper's view.
func edit(v view, f func(*view)) view {
	f(&v)
	return v
}

func TestDecide(t *testing.T) {
	graceMsg := "The key vault has been unreachable for longer than the grace period: " + unavailable.message
	coastingSince := t0.Add(-5 * time.Minute)
	coasting := failing(keyhealth.Coasting, unavailable, coastingSince)
	coastingLong := failing(keyhealth.Coasting, unavailable, t0.Add(-DefaultGrace))
	degraded := failing(keyhealth.Degraded, expired, t0.Add(-10*time.Minute))
	revoked := failing(keyhealth.Revoked, disabled, t0.Add(-8*time.Minute))
	unrecognisedCoasting := failing(keyhealth.Coasting, apiVersion, t0.Add(-time.Minute))
	unrecognisedLong := failing(keyhealth.Coasting, apiVersion, t0.Add(-DefaultGrace))
	unrecognisedMsg := "The key vault has answered in a way the platform does not recognise for longer than the grace period: " + apiVersion.message
	notice := func(o outcome) []alertRaise {
		return []alertRaise{{alerts.KindNotification, string(o.kind), o.message, false}}
	}
	flapping := func(message string, blocked bool) []alertRaise {
		return []alertRaise{{alerts.KindNotification, cmkapi.CauseFlapping, message, blocked}}
	}
	// Three changes in the last ten minutes: the next is the fourth.
	recent := []time.Time{t0.Add(-10 * time.Minute), t0.Add(-6 * time.Minute), t0.Add(-3 * time.Minute)}

	rows := []struct {
		name string
		prev keyhealth.Health
		o    outcome
		want view
	}{
		{"healthy stays healthy", healthy(), ok, healthyAgain(healthy())},

		// Transient failures coast, then fail closed.
		{"healthy to coasting on a 503", healthy(), unavailable,
			edit(becomes(healthy(), keyhealth.Coasting, "TRANSIENT", unavailable.message), func(v *view) { v.Raise = notice(unavailable) })},
		{"healthy to coasting on a timeout", healthy(), timedOut,
			edit(becomes(healthy(), keyhealth.Coasting, "TRANSIENT", timedOut.message), func(v *view) { v.Raise = notice(timedOut) })},
		{"degraded to coasting", degraded, unavailable,
			edit(becomes(degraded, keyhealth.Coasting, "TRANSIENT", unavailable.message), func(v *view) { v.Raise = notice(unavailable) })},
		{"coasting within the grace stays coasting, since and message kept", coasting, timedOut,
			edit(unchanged(coasting), func(v *view) { v.Raise = notice(unavailable) })},
		{"coasting one second before the grace ends", failing(keyhealth.Coasting, unavailable, t0.Add(-DefaultGrace+time.Second)), unavailable,
			edit(unchanged(failing(keyhealth.Coasting, unavailable, t0.Add(-DefaultGrace+time.Second))), func(v *view) { v.Raise = notice(unavailable) })},
		{"coasting to revoked when the grace runs out", coastingLong, unavailable,
			edit(becomes(coastingLong, keyhealth.Revoked, cmkapi.CauseGraceExhausted, graceMsg), func(v *view) {
				v.Wipe = true
				v.Audits = []auditRecord{{opRevocation, "v1", cmkapi.CauseGraceExhausted, graceMsg}}
				v.Raise = []alertRaise{{alerts.KindAccessFailure, cmkapi.CauseGraceExhausted, graceMsg, true}}
			})},
		{"revoked stays revoked while the vault is unreachable", revoked, unavailable,
			edit(unchanged(revoked), func(v *view) {
				v.Raise = []alertRaise{{alerts.KindAccessDisabled, "KEY_DISABLED", disabled.message, true}}
			})},

		// Answers not recognised as a loss of access coast like an outage,
		// with a notification naming the answer, and revoke only when the
		// grace runs out.
		{"healthy to coasting on an api-version 400", healthy(), apiVersion,
			edit(becomes(healthy(), keyhealth.Coasting, "INVALID_REQUEST", apiVersion.message), func(v *view) { v.Raise = notice(apiVersion) })},
		{"healthy to coasting on an unknown 400 on wrap", healthy(), unknownWrap400,
			edit(becomes(healthy(), keyhealth.Coasting, "INVALID_REQUEST", unknownWrap400.message), func(v *view) { v.Raise = notice(unknownWrap400) })},
		{"healthy to coasting when the platform's own secret is refused", healthy(), badSecret,
			edit(becomes(healthy(), keyhealth.Coasting, "TOKEN_ACQUISITION_FAILED", badSecret.message), func(v *view) { v.Raise = notice(badSecret) })},
		{"healthy to coasting on a malformed stored key reference", healthy(), malformed,
			edit(becomes(healthy(), keyhealth.Coasting, "MALFORMED_KEY_URI", malformed.message), func(v *view) { v.Raise = notice(malformed) })},
		{"healthy to coasting when a data key's stored wrapping does not unwrap", healthy(), dataKeyUndecryptable,
			edit(becomes(healthy(), keyhealth.Coasting, "UNWRAP_FAILED", dataKeyUndecryptable.message), func(v *view) { v.Raise = notice(dataKeyUndecryptable) })},
		{"degraded to coasting on an api-version 400", degraded, apiVersion,
			edit(becomes(degraded, keyhealth.Coasting, "INVALID_REQUEST", apiVersion.message), func(v *view) { v.Raise = notice(apiVersion) })},
		{"coasting on an unrecognised answer within the grace stays coasting", unrecognisedCoasting, apiVersion,
			edit(unchanged(unrecognisedCoasting), func(v *view) { v.Raise = notice(apiVersion) })},
		{"coasting on an unrecognised answer to revoked when the grace runs out", unrecognisedLong, apiVersion,
			edit(becomes(unrecognisedLong, keyhealth.Revoked, cmkapi.CauseGraceExhausted, unrecognisedMsg), func(v *view) {
				v.Wipe = true
				v.Audits = []auditRecord{{opRevocation, "v1", cmkapi.CauseGraceExhausted, unrecognisedMsg}}
				v.Raise = []alertRaise{{alerts.KindAccessFailure, cmkapi.CauseGraceExhausted, unrecognisedMsg, true}}
			})},
		{"an unrecognised answer while revoked changes nothing", revoked, apiVersion,
			edit(unchanged(revoked), func(v *view) {
				v.Raise = []alertRaise{{alerts.KindAccessDisabled, "KEY_DISABLED", disabled.message, true}}
			})},

		// Wrap failing while unwrap works.
		{"healthy to degraded: key expired", healthy(), expired,
			edit(becomes(healthy(), keyhealth.Degraded, "KEY_NOT_ACTIVE", expired.message), func(v *view) {
				v.Raise = []alertRaise{{alerts.KindAccessFailure, "KEY_NOT_ACTIVE", expired.message, false}}
			})},
		{"healthy to degraded: wrapKey removed", healthy(), noWrapOp,
			edit(becomes(healthy(), keyhealth.Degraded, "KEY_OPERATION_FORBIDDEN", noWrapOp.message), func(v *view) {
				v.Raise = []alertRaise{{alerts.KindAccessFailure, "KEY_OPERATION_FORBIDDEN", noWrapOp.message, false}}
			})},
		{"degraded stays degraded, cause updated", degraded, noWrapOp,
			edit(unchanged(degraded), func(v *view) {
				v.Cause, v.Message = "KEY_OPERATION_FORBIDDEN", noWrapOp.message
				v.Raise = []alertRaise{{alerts.KindAccessFailure, "KEY_OPERATION_FORBIDDEN", noWrapOp.message, false}}
			})},
		{"wrap failing with no unwrap proved revokes", healthy(), failure("v1", kmsErr(kms.KindKeyNotActive, "wrap", 403, "Forbidden"), false),
			revokedBy(failure("v1", kmsErr(kms.KindKeyNotActive, "wrap", 403, "Forbidden"), false), alerts.KindAccessFailure)},

		// Throttling: the vault answered; only the next check moves.
		{"throttled: next check at Retry-After", healthy(), throttled(2 * time.Minute),
			edit(unchanged(healthy()), func(v *view) { v.NextCheck = t0.Add(2 * time.Minute) })},
		{"throttled: next check at least the interval", healthy(), throttled(5 * time.Second),
			edit(unchanged(healthy()), func(v *view) { v.NextCheck = t0.Add(DefaultInterval) })},
		{"throttled while coasting", coasting, throttled(0),
			edit(unchanged(coasting), func(v *view) { v.NextCheck = t0.Add(DefaultInterval); v.Raise = notice(unavailable) })},
		{"throttled while revoked", revoked, throttled(0),
			edit(unchanged(revoked), func(v *view) {
				v.NextCheck = t0.Add(DefaultInterval)
				v.Raise = []alertRaise{{alerts.KindAccessDisabled, "KEY_DISABLED", disabled.message, true}}
			})},

		{"revoked with a transient cause (not one decide writes) alerts as an access failure",
			failing(keyhealth.Revoked, unavailable, t0.Add(-time.Minute)), throttled(0),
			edit(unchanged(failing(keyhealth.Revoked, unavailable, t0.Add(-time.Minute))), func(v *view) {
				v.NextCheck = t0.Add(DefaultInterval)
				v.Raise = []alertRaise{{alerts.KindAccessFailure, "TRANSIENT", unavailable.message, true}}
			})},

		// Recovery.
		{"revoked to healthy", revoked, ok, healthyAgain(revoked)},
		{"coasting to healthy", coasting, ok, healthyAgain(coasting)},
		{"degraded to healthy", degraded, ok, healthyAgain(degraded)},

		// Flapping.
		{"fourth change in the window is flapping: the blocking alert and the notification", withChanges(healthy(), recent...), disabled,
			edit(revokedBy(disabled, alerts.KindAccessDisabled), func(v *view) {
				v.Changes = append(recent[:3:3], t0)
				v.Flapping = true
				v.Raise = append(v.Raise, flapping(disabled.message, true)...)
			})},
		{"coasting while flapping raises only the flapping notification", withChanges(healthy(), recent...), unavailable,
			edit(becomes(withChanges(healthy(), recent...), keyhealth.Coasting, "TRANSIENT", unavailable.message), func(v *view) {
				v.Flapping = true
				v.Raise = flapping(unavailable.message, false)
			})},
		{"changes older than the window are pruned; no episode",
			withChanges(healthy(), t0.Add(-20*time.Minute), t0.Add(-DefaultFlapWindow-time.Millisecond), t0.Add(-DefaultFlapWindow), t0.Add(-time.Minute)), ok,
			edit(healthyAgain(healthy()), func(v *view) { v.Changes = []time.Time{t0.Add(-DefaultFlapWindow), t0.Add(-time.Minute)} })},
		{"every change pruned", withChanges(healthy(), t0.Add(-time.Hour)), ok, healthyAgain(healthy())},

		// Rotation.
		{"rotation detected", healthy(), described(ok, "v2"),
			edit(healthyAgain(healthy()), func(v *view) {
				v.RotateTo = "v2"
				v.Audits = []auditRecord{{opRotation, "v2", "started", "new key version detected; re-wrapping data keys from v1"}}
			})},
		{"rotation under way is not detected again", withVersions(healthy(), "v1", "v2"), described(ok, "v2"),
			healthyAgain(withVersions(healthy(), "v1", "v2"))},
		{"rotation finished", withVersions(healthy(), "v2", "v2"), described(ok, "v2"),
			healthyAgain(withVersions(healthy(), "v2", "v2"))},
		{"a newer version during a rotation retargets it", withVersions(healthy(), "v1", "v2"), described(ok, "v3"),
			edit(healthyAgain(withVersions(healthy(), "v1", "v2")), func(v *view) {
				v.RotateTo = "v3"
				v.Audits = []auditRecord{{opRotation, "v3", "started", "new key version detected; re-wrapping data keys from v1"}}
			})},
		{"rotation detected on recovery", revoked, described(ok, "v2"),
			edit(healthyAgain(revoked), func(v *view) {
				v.RotateTo = "v2"
				v.Audits = []auditRecord{
					{opRotation, "v2", "started", "new key version detected; re-wrapping data keys from v1"},
					{opRecovery, "v2", "ok", "access restored after REVOKED (KEY_DISABLED)"},
				}
			})},
	}

	// Every definitive failure revokes at once, with its own cause.
	for _, f := range []struct {
		o         outcome
		alertKind string
	}{
		{disabled, alerts.KindAccessDisabled},
		{failure("", kmsErr(kms.KindKeyNotFound, "describe", 404, "KeyNotFound"), false), alerts.KindAccessFailure},
		{failure("", &kms.Error{Kind: kms.KindVaultDNSUnresolvable, Op: "describe", Key: keyRef, InnerCode: "no such host"}, false), alerts.KindAccessFailure},
		{failure("", kmsErr(kms.KindIdentityUnauthorized, "describe", 403, "Forbidden"), false), alerts.KindAccessFailure},
		{failure("", kmsErr(kms.KindNetworkDenied, "describe", 403, "Forbidden"), false), alerts.KindAccessFailure},
		{failure("", kmsErr(kms.KindIdentityInvalid, "token", 400, "invalid_client"), false), alerts.KindAccessFailure},
		{failure("v1", kmsErr(kms.KindUnwrapFailed, "unwrap", 400, "BadParameter"), false), alerts.KindAccessFailure},
		{failure("v1", kmsErr(kms.KindKeyNotActive, "unwrap", 403, "Forbidden"), false), alerts.KindAccessFailure},
		{failure("v1", kmsErr(kms.KindKeyOperationForbidden, "unwrap", 403, "Forbidden"), false), alerts.KindAccessFailure},
	} {
		rows = append(rows, struct {
			name string
			prev keyhealth.Health
			o    outcome
			want view
		}{"healthy to revoked: " + string(f.o.kind), healthy(), f.o, revokedBy(f.o, f.alertKind)})
	}

	// Rows that depend on the alerts open when the check begins.
	disabledAlert := openAlert{alerts.KindAccessDisabled, string(kms.KindKeyDisabled)}
	flapAlert := openAlert{alerts.KindNotification, cmkapi.CauseFlapping}
	expiryAlert := openAlert{alerts.KindNotification, cmkapi.CauseKeyNearExpiry}
	// Four changes in the window: an episode under way.
	four := append(recent[:3:3], t0.Add(-time.Minute))
	flappingRevoked := withChanges(revoked, four...)
	flappingRevoked.Since = four[3]
	stableRevoked := withChanges(revoked, t0.Add(-DefaultFlapWindow-time.Second))
	withOpen := []struct {
		name string
		open []openAlert
		prev keyhealth.Health
		o    outcome
		want view
	}{
		{"healthy with nothing open resolves nothing", nil, healthy(), ok, healthyAgain(healthy())},
		{"healthy keeps an expiry warning open", []openAlert{expiryAlert}, healthy(), ok, healthyAgain(healthy())},
		{"revoked to healthy resolves the open blocking alert", []openAlert{disabledAlert, expiryAlert}, revoked, ok,
			edit(healthyAgain(revoked), func(v *view) { v.Resolve = []openAlert{disabledAlert} })},
		{"degraded to healthy: recovery audited, access failure resolved",
			[]openAlert{{alerts.KindAccessFailure, "KEY_NOT_ACTIVE"}}, degraded, ok,
			edit(healthyAgain(degraded), func(v *view) {
				v.Audits = []auditRecord{{opRecovery, "v1", "ok", "access restored after DEGRADED (KEY_NOT_ACTIVE)"}}
				v.Resolve = []openAlert{{alerts.KindAccessFailure, "KEY_NOT_ACTIVE"}}
			})},
		{"a stray open alert is resolved by the next healthy check", []openAlert{{alerts.KindNotification, "TRANSIENT"}}, healthy(), ok,
			edit(healthyAgain(healthy()), func(v *view) { v.Resolve = []openAlert{{alerts.KindNotification, "TRANSIENT"}} })},
		{"disabled again while flapping: the blocking alert as well as the notification", []openAlert{flapAlert},
			withChanges(healthy(), four...), disabled,
			edit(revokedBy(disabled, alerts.KindAccessDisabled), func(v *view) {
				v.Changes = append(four[:4:4], t0)
				v.Flapping = true
				v.Raise = append(v.Raise, flapping(disabled.message, true)...)
			})},
		{"revoked while flapping raises the blocking alert at every check, the notification only on a change",
			[]openAlert{flapAlert, disabledAlert}, flappingRevoked, disabled,
			edit(unchanged(flappingRevoked), func(v *view) {
				v.Flapping = true
				v.Raise = []alertRaise{{alerts.KindAccessDisabled, "KEY_DISABLED", disabled.message, true}}
			})},
		{"recovery while flapping counts a change and resolves the blocking alert",
			[]openAlert{flapAlert, disabledAlert}, flappingRevoked, ok,
			edit(healthyAgain(flappingRevoked), func(v *view) {
				v.Flapping = true
				v.Raise = flapping("", false)
				v.Resolve = []openAlert{disabledAlert}
			})},
		{"a healthy check while flapping neither raises nor resolves", []openAlert{flapAlert},
			withChanges(healthy(), four...), ok,
			edit(healthyAgain(withChanges(healthy(), four...)), func(v *view) { v.Flapping = true })},
		{"a healthy check while flapping with the notification missing opens it", nil,
			withChanges(healthy(), four...), ok,
			edit(healthyAgain(withChanges(healthy(), four...)), func(v *view) { v.Flapping = true; v.Raise = flapping("", false) })},
		{"coasting unchanged while flapping raises nothing", []openAlert{flapAlert},
			withChanges(failing(keyhealth.Coasting, unavailable, four[3]), four...), unavailable,
			edit(unchanged(withChanges(failing(keyhealth.Coasting, unavailable, four[3]), four...)), func(v *view) { v.Flapping = true })},
		{"the notification stays open while a change is within the window", []openAlert{flapAlert},
			withChanges(healthy(), t0.Add(-20*time.Minute), t0.Add(-time.Minute)), ok,
			edit(healthyAgain(healthy()), func(v *view) { v.Changes = []time.Time{t0.Add(-time.Minute)}; v.Flapping = true })},
		{"the notification closes after a whole window without a change", []openAlert{flapAlert, expiryAlert},
			withChanges(healthy(), t0.Add(-DefaultFlapWindow-time.Second)), ok,
			edit(healthyAgain(healthy()), func(v *view) { v.Resolve = []openAlert{flapAlert} })},
		{"the notification closes after a stable window while revoked; the blocking alert stays", []openAlert{flapAlert, disabledAlert},
			stableRevoked, disabled,
			edit(unchanged(revoked), func(v *view) {
				v.Changes = nil
				v.Raise = []alertRaise{{alerts.KindAccessDisabled, "KEY_DISABLED", disabled.message, true}}
				v.Resolve = []openAlert{flapAlert}
			})},
	}
	for _, row := range withOpen {
		rows = append(rows, struct {
			name string
			prev keyhealth.Health
			o    outcome
			want view
		}{row.name, row.prev, row.o, row.want})
	}
	opens := map[string][]openAlert{}
	for _, row := range withOpen {
		opens[row.name] = row.open
	}

	for _, row := range rows {
		got, want := viewOf(decide(row.prev, opens[row.name], row.o, t0, testPolicy)), row.want
		gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
		for i := range gv.NumField() {
			if g, w := gv.Field(i).Interface(), wv.Field(i).Interface(); !reflect.DeepEqual(g, w) {
				t.Errorf("%s: decide(%s, %s).%s = %+v, want %+v", row.name, row.prev.State, outcomeName(row.o), gv.Type().Field(i).Name, g, w)
			}
		}
	}
}

func outcomeName(o outcome) string {
	if o.kind == "" {
		return "ok " + o.version
	}
	if o.wrapOnly {
		return string(o.kind) + " on wrap"
	}
	return string(o.kind)
}

// TestDecideBookkeeping checks what every check records, whatever the
// transition, and that decide leaves its inputs alone.
func TestDecideBookkeeping(t *testing.T) {
	prev := healthy()
	changes := make([]time.Time, 1, 4) // room to append in place
	changes[0] = t0.Add(-time.Minute)
	prev.Memo.Changes = changes
	prev.Memo.LastWrap = t0.Add(-time.Hour)
	wrapped := outcome{version: "v2", wrappedAt: t0.Add(-time.Second), probe: []byte("new probe"), probeVer: "v2"}

	for _, row := range []struct {
		name         string
		o            outcome
		wantLastWrap time.Time
		wantProbe    string
		wantProbeVer string
	}{
		{"wrap proved", wrapped, wrapped.wrappedAt, "new probe", "v2"},
		{"wrap not proved", ok, prev.Memo.LastWrap, "probe", "v1"},
		{"failure", disabled, prev.Memo.LastWrap, "probe", "v1"},
	} {
		d := decide(prev, nil, row.o, t0, testPolicy)
		n := d.next
		if n.LastCheck != t0 || n.UpdatedAt != t0 {
			t.Errorf("%s: decide().LastCheck, UpdatedAt = %v, %v, want %v", row.name, n.LastCheck, n.UpdatedAt, t0)
		}
		if n.Version != prev.Version+1 {
			t.Errorf("%s: decide().Version = %d, want %d", row.name, n.Version, prev.Version+1)
		}
		if n.Memo.Checks != prev.Memo.Checks+1 {
			t.Errorf("%s: decide().Memo.Checks = %d, want %d", row.name, n.Memo.Checks, prev.Memo.Checks+1)
		}
		if !n.Memo.LastWrap.Equal(row.wantLastWrap) {
			t.Errorf("%s: decide().Memo.LastWrap = %v, want %v", row.name, n.Memo.LastWrap, row.wantLastWrap)
		}
		if string(n.Probe) != row.wantProbe || n.ProbeVersion != row.wantProbeVer {
			t.Errorf("%s: decide() probe = %q at %s, want %q at %s", row.name, n.Probe, n.ProbeVersion, row.wantProbe, row.wantProbeVer)
		}
		if n.OrgID != prev.OrgID || n.KeyVersion != prev.KeyVersion {
			t.Errorf("%s: decide() org, key version = %s, %s, want %s, %s", row.name, n.OrgID, n.KeyVersion, prev.OrgID, prev.KeyVersion)
		}
		if got := changes[:cap(changes)]; !got[1].IsZero() {
			t.Errorf("%s: decide() wrote %v into the previous health's changes", row.name, got)
		}
	}
}

// TestDecideThrottledBackoff: checks the vault throttles in a row, with no
// Retry-After, are spaced 1, 2, 4, 8, 16 s, then 16 s (never sooner than
// the interval); a Retry-After wins; any other answer starts over.
func TestDecideThrottledBackoff(t *testing.T) {
	s := time.Second
	p := testPolicy
	p.interval, p.nextIn = 500*time.Millisecond, 500*time.Millisecond
	h := healthy()
	var got []time.Duration
	for _, o := range []outcome{throttled(0), throttled(0), throttled(0), throttled(0), throttled(0), throttled(0), throttled(3 * s), ok, throttled(0)} {
		d := decide(h, nil, o, t0, p)
		got = append(got, d.next.NextCheck.Sub(t0))
		h = d.next
	}
	want := []time.Duration{1 * s, 2 * s, 4 * s, 8 * s, 16 * s, 16 * s, 3 * s, 500 * time.Millisecond, 1 * s}
	if !slices.Equal(got, want) {
		t.Errorf("next checks after throttled checks in a row = %v, want %v", got, want)
	}
	// Never sooner than the interval.
	if d := decide(healthy(), nil, throttled(0), t0, testPolicy); d.next.NextCheck.Sub(t0) != DefaultInterval {
		t.Errorf("decide(throttled, 30 s interval).NextCheck = +%v, want +%v", d.next.NextCheck.Sub(t0), DefaultInterval)
	}
}
