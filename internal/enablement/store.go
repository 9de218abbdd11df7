package enablement

import (
	"context"
	"time"

	"github.com/cmk-project/cmk/internal/preflight"
	"github.com/cmk-project/cmk/internal/store"
)

// Store is the part of the state store the enablement job uses (*store.Store
// implements it).
type Store interface {
	// ClaimJob leases one runnable job (unfinished, due, lease free or expired)
	// to owner until now+lease. It returns store.ErrNotFound when there is none.
	ClaimJob(ctx context.Context, owner string, lease time.Duration) (*store.Config, error)
	// UpdateJob applies u to job id if owner still holds its lease.
	UpdateJob(ctx context.Context, id, owner string, u store.JobUpdate) error
	// Org returns an org.
	Org(ctx context.Context, id string) (store.Org, error)
	// OrgTenants lists the Azure tenants an org is bound to.
	OrgTenants(ctx context.Context, org string) ([]string, error)
	// CountDataKeys returns how many data keys an org has, and how many of them
	// are wrapped by the customer key.
	CountDataKeys(ctx context.Context, org string) (total, customer int, err error)
	// DataKeysByKEK pages through an org's data keys wrapped by the given KEK
	// kind, in id order, starting after afterID.
	DataKeysByKEK(ctx context.Context, org, kek, afterID string, limit int) ([]store.DataKey, error)
	// ReplaceWrapping swaps a data key's wrapping in one statement, only if it
	// is still wrapped by fromKEK. The new wrapping is durable when this returns.
	ReplaceWrapping(ctx context.Context, id, fromKEK string, to store.DataKey) error
	// BeginCustomerKEK is the one-way switch of an enablement job: in one
	// transaction, and only while owner holds the job's lease, the org starts
	// using its customer key for new data keys, monitoring of the key starts,
	// and the job moves to UPDATE_EXISTING_RESOURCES. vaultTenant is the
	// tenant the ownership check found the key's vault in.
	BeginCustomerKEK(ctx context.Context, jobID, owner string, c *store.Config, keyVersion, vaultTenant string, checks []preflight.Result) error
}

var _ Store = (*store.Store)(nil)
