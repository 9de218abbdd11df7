package audit

import (
	"context"

	"github.com/cmk-project/cmk/internal/store"
)

// Store is the part of the state store the audit recorder uses (*store.Store
// implements it).
type Store interface {
	// AddAudit records an entry.
	AddAudit(ctx context.Context, e store.AuditEntry) error
}

var _ Store = (*store.Store)(nil)
