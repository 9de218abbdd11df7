package keyring

import (
	"context"

	"github.com/cmk-project/cmk/internal/store"
)

// Store is the part of the state store the keyring uses (*store.Store
// implements it).
type Store interface {
	// Org returns an org.
	Org(ctx context.Context, id string) (store.Org, error)
	// CreateSandbox adds a sandbox with the data keys of its stores, atomically.
	CreateSandbox(ctx context.Context, org, name string, keys []store.DataKey) error
	// AddDataKey stores a new data key for an existing store (data-key rotation).
	AddDataKey(ctx context.Context, k store.DataKey) error
}

var _ Store = (*store.Store)(nil)
