package orgkeys

import (
	"context"

	"github.com/cmk-project/cmk/internal/store"
)

// Store is the part of the state store the resolver uses (*store.Store
// implements it).
type Store interface {
	// ActiveDataKey returns the data key new objects of a store are sealed with:
	// the store's newest.
	ActiveDataKey(ctx context.Context, org, sandbox, storeKind string) (store.DataKey, error)
	// DataKey returns one data key by id.
	DataKey(ctx context.Context, id string) (store.DataKey, error)
	// ReserveUses reserves n more uses of a data key and returns the total
	// reserved so far (including these n).
	ReserveUses(ctx context.Context, id string, n int64) (int64, error)
}

var _ Store = (*store.Store)(nil)
