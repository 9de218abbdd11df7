package monitor

import (
	"context"
	"time"

	"github.com/cmk-project/cmk/internal/keyhealth"
	"github.com/cmk-project/cmk/internal/store"
)

// Store is the part of the state store the monitor uses (*store.Store
// implements it).
type Store interface {
	// Org returns an org.
	Org(ctx context.Context, id string) (store.Org, error)
	// Health returns an org's key health, or store.ErrNotFound when it is not monitored.
	Health(ctx context.Context, org string) (*store.Health, error)
	// ClaimDueChecks leases up to limit orgs whose check is due.
	ClaimDueChecks(ctx context.Context, owner string, lease time.Duration, limit int) ([]*store.Health, error)
	// ClaimCheck leases one org's check now (an on-demand re-check), if no
	// other check holds it.
	ClaimCheck(ctx context.Context, org, owner string, lease time.Duration) (*store.Health, error)
	// ReleaseChecks gives up owner's check leases on every org but those
	// in keep.
	ReleaseChecks(ctx context.Context, owner string, keep []string) error
	// SaveHealth writes the outcome of a check and releases the lease, if owner
	// still holds it (store.ErrLeaseLost otherwise: a newer check owns the row).
	SaveHealth(ctx context.Context, h *store.Health, owner string) error
	// SaveHealthStep is SaveHealth with the check's step of the org's
	// episode history, written in the same transaction under the same lease.
	SaveHealthStep(ctx context.Context, h *store.Health, owner string, step keyhealth.EpisodeStep) error
	// CustomerKeysNotAt pages through an org's customer-wrapped data keys whose
	// key version is not version.
	CustomerKeysNotAt(ctx context.Context, org, version, afterID string, limit int) ([]store.DataKey, error)
	// ClaimRotation leases one org whose data keys are being re-wrapped to a new
	// key version.
	ClaimRotation(ctx context.Context, owner string, lease time.Duration) (*store.Health, error)
	// RenewRotation extends a rotation lease; store.ErrLeaseLost when another owner has it.
	RenewRotation(ctx context.Context, org, owner string, lease time.Duration) error
	// FinishRotation records that every data key of the org is wrapped by
	// version, if owner still holds the rotation lease and the target is still
	// version.
	FinishRotation(ctx context.Context, org, owner, version string) error
	// DeferRotation keeps the rotation lease until until, so a rotation that
	// failed is retried after a backoff rather than at once.
	DeferRotation(ctx context.Context, org, owner string, until time.Time) error
	// ReleaseRotation gives up a rotation lease.
	ReleaseRotation(ctx context.Context, org, owner string) error
	// ReplaceVersion swaps a customer-wrapped data key to a new wrapping only if
	// it is still at fromVersion.
	ReplaceVersion(ctx context.Context, id, fromVersion string, to store.DataKey) error
}

var _ Store = (*store.Store)(nil)
