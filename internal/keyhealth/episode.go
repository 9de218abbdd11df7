package keyhealth

import "time"

// An Episode is one stretch of an org's key not being HEALTHY: from the
// first check that left HEALTHY to the check that returned to it. The
// monitor writes it with the health row (same lease, same transaction), so
// replicas never duplicate one; the gate's counts of refused requests are
// added to it per store.
type Episode struct {
	ID     string
	OrgID  string
	Start  time.Time
	End    time.Time // zero while the episode goes on
	Worst  string    // the worst state reached: DEGRADED < COASTING < REVOKED
	KeyRef string    // the customer key the org used then
	Causes []EpisodeCause
	// BlockedFrom is when the gate first closed in the episode (REVOKED, or
	// the grace of COASTING running out), BlockedUntil when it last opened
	// again; both zero when data was never refused. Blocked is the total
	// time the gate was closed, counting a span still open up to the
	// moment it is read (BlockedAt: the start of that span, else zero).
	BlockedFrom, BlockedUntil, BlockedAt time.Time
	Blocked                              time.Duration
	// Stores are the refusals per store, summed over replicas.
	Stores []StoreUse
}

// EpisodeCause is one state and cause an episode went through.
type EpisodeCause struct {
	At      time.Time `json:"at"`
	State   string    `json:"state"`
	Cause   string    `json:"cause"`
	Message string    `json:"message,omitempty"`
}

// Severity orders the states for an episode's worst: HEALTHY 0, DEGRADED
// 1, COASTING 2, REVOKED 3.
func Severity(state string) int {
	switch state {
	case Degraded:
		return 1
	case Coasting:
		return 2
	case Revoked:
		return 3
	}
	return 0
}

// EpisodeStep is what one check changes in the org's episode history.
type EpisodeStep struct {
	Open  bool          // the check left HEALTHY: open an episode (unless one is open)
	Close bool          // the check returned to HEALTHY: end the open episode at At
	At    time.Time     // the check's time
	Cause *EpisodeCause // a state or cause entered (nil: unchanged)
	Worst string        // the check's state, for the episode's worst
	// Block is when the gate closed (zero: it is open after this check);
	// Unblock is when it opened again (zero: not opened by this check).
	Block, Unblock time.Time
	KeyRef         string
}

// Empty reports whether the step changes nothing.
func (s EpisodeStep) Empty() bool {
	return !s.Open && !s.Close && s.Cause == nil && s.Block.IsZero() && s.Unblock.IsZero()
}

// closedAt is when the gate closed for h as of now: the state's start for
// REVOKED, the grace's end for a COASTING org past it, zero when open.
func closedAt(h Health, now time.Time, grace time.Duration) time.Time {
	switch h.State {
	case Revoked:
		if h.Since.IsZero() {
			return now
		}
		return h.Since
	case Coasting:
		if grace > 0 && !h.Since.IsZero() && !now.Before(h.Since.Add(grace)) {
			return h.Since.Add(grace)
		}
	}
	return time.Time{}
}

// StepOf is the change in the org's history from health prev to next,
// decided by a check at now (grace: the monitor's, which the gate enforces
// too). It is a pure function; the store applies the step idempotently.
func StepOf(prev, next Health, now time.Time, grace time.Duration, keyRef string) EpisodeStep {
	s := EpisodeStep{At: now, KeyRef: keyRef}
	wasOK, isOK := prev.State == "" || prev.State == Healthy, next.State == Healthy
	switch {
	case wasOK && !isOK:
		s.Open = true
	case !wasOK && isOK:
		s.Close = true
	}
	if !isOK {
		s.Worst = next.State
		if s.Open || prev.State != next.State || prev.Cause != next.Cause {
			s.Cause = &EpisodeCause{At: now, State: next.State, Cause: next.Cause, Message: next.Message}
		}
	}
	pc, nc := closedAt(prev, now, grace), closedAt(next, now, grace)
	switch {
	case !nc.IsZero():
		s.Block = nc
		if !pc.IsZero() && pc.Before(nc) {
			s.Block = pc
		}
	case !pc.IsZero():
		// Closed before this check (perhaps only by the grace running out
		// at the gate), open after it.
		s.Block, s.Unblock = pc, now
	}
	return s
}
