// Package keyhealth holds what cmk knows about each org's customer key
// right now: the four health states, the health record the monitor writes,
// and the Gate every data-plane request consults before it touches an org's
// data.
//
// The monitor writes health (it decides the state); the data path only reads
// the Gate. Neither imports the other: both import this package. Across
// replicas, Sync keeps each process's Gate current with the rows the others
// write.
package keyhealth

import (
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
)

// Health states of an org that uses its customer key. The values are stable:
// they are stored, returned by the API and counted in metrics.
const (
	Healthy  = cmkapi.StateHealthy  // the last check proved wrap and unwrap
	Degraded = cmkapi.StateDegraded // unwrap works, wrap does not (e.g. key expired): data readable, new keys cannot be made
	Coasting = cmkapi.StateCoasting // the vault is unreachable for a transient reason; cached keys serve within the grace
	Revoked  = cmkapi.StateRevoked  // access is withdrawn (or the grace ran out): all data of the org is refused
)

// Health is the monitor's view of one org's key, as stored.
type Health struct {
	OrgID        string
	State        string
	Cause        string
	Message      string
	KeyVersion   string
	Since        time.Time
	LastCheck    time.Time
	LastOK       time.Time
	NextCheck    time.Time
	Memo         Memo
	MemoErr      error // the stored memo did not decode: Memo starts afresh
	Probe        []byte
	ProbeVersion string
	RotateTo     string
	UpdatedAt    time.Time
	ChangedAt    time.Time // last change of state or cause
	Version      int64     // bumped on every write
}

// Memo is the monitor's small per-org memory, kept with the health row.
type Memo struct {
	Changes  []time.Time `json:"changes,omitempty"` // recent state changes, for flapping
	Checks   int         `json:"checks"`
	LastWrap time.Time   `json:"lastWrap,omitzero"`
	// Throttled counts the checks in a row the vault throttled, for the
	// backoff of the next one.
	Throttled int        `json:"throttled,omitempty"`
	Expiry    ExpiryMemo `json:"expiry,omitzero"`
}

// ExpiryMemo remembers the expiry warnings raised for the key's expiry date:
// Warned is the smallest threshold, in days, warned of for Expires (0:
// none yet). Another expiry date starts afresh.
type ExpiryMemo struct {
	Expires time.Time `json:"expires,omitzero"`
	Warned  int       `json:"warned,omitempty"`
}
