package monitor

import (
	"slices"
	"time"

	"github.com/cmk-project/cmk/internal/alerts"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/kms"
)

// A check has three steps: probe calls the key service and classifies what
// it found (an outcome), decide turns the org's previous health and that
// outcome into the next health and the effects that follow (a decision),
// and apply carries the effects out. Only probe and apply touch the world;
// decide is a pure function, so every transition is tested without a vault,
// a database or a real clock.

// outcome is what one probe of an org's key found.
type outcome struct {
	version    string        // the key's newest version; "" when describe failed
	expires    *time.Time    // that version's expiry (exp); nil when none or describe failed
	kind       kms.Kind      // the first failure's kind; "" when every call worked
	message    string        // that failure, for a person (guidance.Describe)
	retryAfter time.Duration // the vault's Retry-After of a throttled failure
	wrapOnly   bool          // unwrap was proved; only wrap failed
	wrappedAt  time.Time     // when wrap was proved; zero when it was not
	probe      []byte        // a new probe ciphertext (wrap was proved), or nil
	probeVer   string        // the key version that wrapped probe
	// dataKey: the failing unwrap was of a data key's stored wrapping
	// (there was no probe yet), not of a ciphertext the monitor made.
	dataKey bool
}

// lossOfAccess reports whether o's failure is an answer the monitor
// recognises as the key being lost to the platform (see the package doc).
// An unwrap failure counts only for a ciphertext the monitor itself wrapped
// under that version (its probe): the vault then says it cannot decrypt what
// it produced. A data key's stored wrapping that does not open may be one
// damaged row, which is no reason to refuse all of the org's data.
func lossOfAccess(o outcome) bool {
	if !o.kind.LossOfAccess() {
		return false
	}
	return o.kind != kms.KindUnwrapFailed || !o.dataKey
}

// policy is what decide needs of the monitor's configuration.
type policy struct {
	interval   time.Duration // between checks
	nextIn     time.Duration // this check's delay to the next: the interval, jittered
	grace      time.Duration // how long a transient failure may last before data is refused
	flapWindow time.Duration // state changes within it count towards flapping
	flapCount  int           // that many changes within the window are flapping
}

// Audit operations the monitor records.
const (
	opRevocation = "revocation"
	opRecovery   = "recovery"
	opRotation   = "rotation"
)

// auditRecord is one audit entry a check writes.
type auditRecord struct {
	op, version, outcome, detail string
}

// alertRaise is one alert a check raises (or counts again, when open).
type alertRaise struct {
	kind, cause, message string
	blocked              bool // the org's data is refused
}

// openAlert names an alert of the org that was open when the check began
// (or one the check resolves): its kind and cause.
type openAlert struct{ kind, cause string }

// decision is the next health of an org and the effects of getting there,
// in the order check applies them.
type decision struct {
	next keyhealth.Health

	// failClosed publishes next (REVOKED) to the gate before it is saved:
	// failing closed must not wait for the database. Any other state is
	// published only once saved, so a check that lost its lease cannot
	// open the gate.
	failClosed bool
	// wipe drops the org's data keys from memory: it has just been revoked.
	wipe bool
	// audits are written after the wipe, before the save.
	audits []auditRecord
	// flapping: a flapping episode is under way (see decide).
	flapping bool
	// raise lists the alerts to raise, in order, after the save.
	raise []alertRaise
	// resolve lists the open alerts to close, after the raises. It names
	// only alerts that were open, so a check with nothing to close touches
	// no alert.
	resolve []openAlert
}

// decide is the monitor's policy (see the package doc) as a function of the
// previous health, the org's alerts open when the check began, the probe's
// outcome, the time and the configuration; it reads nothing else and
// changes none of its arguments (the next health's list of changes is a
// copy).
//
// Alerts tell the truth about the key at every check:
//   - While the org's data is refused (REVOKED), the alert naming the
//     blocking cause is raised at every check (Key access disabled for a
//     disabled key), flapping or not.
//   - Flapping is reported in addition: a notification that opens when the
//     state has changed flapCount times within flapWindow, counts one
//     occurrence per state change (never per check), and closes once the
//     state has not changed for a whole window. While it is open and the
//     org is not blocked, it stands for the cause alerts of each flap.
//   - A healthy check closes the open alerts about access (not an expiry
//     warning, which only a new date closes, nor a flapping notification
//     whose window is still running), and nothing when none is open.
func decide(prev keyhealth.Health, open []openAlert, o outcome, now time.Time, p policy) decision {
	var d decision
	next := prev
	next.LastCheck = now
	next.NextCheck = now.Add(p.nextIn)
	if o.probe != nil {
		next.Probe, next.ProbeVersion = o.probe, o.probeVer
	}
	mem := prev.Memo
	mem.Changes = slices.Clone(prev.Memo.Changes)
	mem.Checks++
	if o.kind != kms.KindThrottled {
		mem.Throttled = 0
	}
	if !o.wrappedAt.IsZero() {
		mem.LastWrap = o.wrappedAt
	}

	switch {
	case o.kind == "":
		next.State, next.Cause, next.Message, next.LastOK = keyhealth.Healthy, "", "", now
		if o.version != "" && o.version != prev.KeyVersion && o.version != prev.RotateTo {
			next.RotateTo = o.version
			d.audits = append(d.audits, auditRecord{opRotation, o.version, "started", "new key version detected; re-wrapping data keys from " + prev.KeyVersion})
		}
	case o.kind == kms.KindThrottled:
		// The vault answered: access is not in question. Check again when
		// it asks us to or, when it did not say, after Key Vault's
		// documented backoff (1, 2, 4, 8, 16 s for throttled checks in a
		// row), and never sooner than the interval.
		mem.Throttled++
		wait := o.retryAfter
		if wait <= 0 {
			wait = time.Second << min(mem.Throttled-1, 4)
		}
		next.NextCheck = now.Add(max(wait, p.interval))
	case o.kind.Transient() || !lossOfAccess(o):
		// No answer, or an answer not recognised as a loss of access (an
		// unknown 400, an api-version the vault refuses): coast as through
		// an outage, with the same bound.
		switch prev.State {
		case keyhealth.Healthy, keyhealth.Degraded:
			next.State, next.Cause, next.Message = keyhealth.Coasting, string(o.kind), o.message
		case keyhealth.Coasting:
			if now.Sub(prev.Since) >= p.grace {
				why := "The key vault has been unreachable for longer than the grace period: "
				if !kms.Kind(prev.Cause).Transient() {
					why = "The key vault has answered in a way the platform does not recognise for longer than the grace period: "
				}
				next.State, next.Cause, next.Message = keyhealth.Revoked, cmkapi.CauseGraceExhausted, why+o.message
			}
		}
	case o.wrapOnly:
		next.State, next.Cause, next.Message = keyhealth.Degraded, string(o.kind), o.message
	default:
		next.State, next.Cause, next.Message = keyhealth.Revoked, string(o.kind), o.message
	}
	if next.State != prev.State {
		next.Since = now
		mem.Changes = append(mem.Changes, now)
	}
	cut := 0
	for cut < len(mem.Changes) && now.Sub(mem.Changes[cut]) > p.flapWindow {
		cut++
	}
	mem.Changes = mem.Changes[cut:]
	next.Memo = mem
	next.UpdatedAt = now
	next.Version = prev.Version + 1
	d.next = next

	revoked := next.State == keyhealth.Revoked
	d.failClosed = revoked
	if revoked && prev.State != keyhealth.Revoked {
		d.wipe = true
		d.audits = append(d.audits, auditRecord{opRevocation, o.version, next.Cause, next.Message})
	}
	if prev.State != keyhealth.Healthy && next.State == keyhealth.Healthy {
		d.audits = append(d.audits, auditRecord{opRecovery, o.version, "ok", "access restored after " + prev.State + " (" + prev.Cause + ")"})
	}

	changed := next.State != prev.State
	flap := openAlert{alerts.KindNotification, cmkapi.CauseFlapping}
	flapOpen := slices.Contains(open, flap)
	// An episode starts at flapCount changes within the window and lasts
	// while its notification is open and a change is still within the
	// window (older changes were pruned above).
	d.flapping = len(mem.Changes) >= p.flapCount || (flapOpen && len(mem.Changes) > 0)
	switch {
	case next.State == keyhealth.Healthy:
		for _, a := range open {
			if a.cause == cmkapi.CauseKeyNearExpiry || (a == flap && d.flapping) {
				continue
			}
			d.resolve = append(d.resolve, a)
		}
	case revoked || !d.flapping:
		kind := alerts.KindFor(next.Cause)
		switch {
		case revoked && kind == alerts.KindNotification:
			kind = alerts.KindAccessFailure
		case next.State == keyhealth.Coasting:
			// Whatever the answer, coasting is no verdict on the key.
			kind = alerts.KindNotification
		}
		d.raise = append(d.raise, alertRaise{kind, next.Cause, next.Message, revoked})
	}
	if d.flapping && (changed || !flapOpen) {
		d.raise = append(d.raise, alertRaise{flap.kind, flap.cause, next.Message, revoked})
	}
	if flapOpen && !d.flapping && next.State != keyhealth.Healthy {
		d.resolve = append(d.resolve, flap)
	}
	return d
}
