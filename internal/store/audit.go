package store

import (
	"context"
	"fmt"
	"time"
)

// AuditEntry is one recorded key operation. It never holds key material.
type AuditEntry struct {
	ID         string
	At         time.Time
	OrgID      string
	Op         string
	KeyRef     string
	KeyVersion string
	Outcome    string
	RequestID  string
	Detail     string
	// Actor is who acted: a token subject for an administrator's action,
	// "system" for the service's own work (the default when empty).
	Actor string
}

// SystemActor is the actor of the service's own work: the monitor, the
// enablement job, rotation and retention.
const SystemActor = "system"

// AuditFilter selects audit entries of one org.
type AuditFilter struct {
	Op    string    // "" = every operation
	Actor string    // "" = every actor
	Since time.Time // zero = from the start (inclusive)
	Until time.Time // zero = up to now (exclusive)
	Limit int
}

// AddAudit records an entry.
func (s *Store) AddAudit(ctx context.Context, e AuditEntry) error {
	if e.At.IsZero() {
		e.At = s.now()
	}
	if e.Actor == "" {
		e.Actor = SystemActor
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO audit (id, at, org_id, op, key_ref, key_version, outcome, request_id, detail, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, ms(e.At), e.OrgID, e.Op, e.KeyRef, e.KeyVersion, e.Outcome, e.RequestID, e.Detail, e.Actor)
	if err != nil {
		return fmt.Errorf("record audit entry: %w", err)
	}
	return nil
}

// Audit lists an org's audit entries, newest first, optionally filtered by
// op and by time (since), at most limit.
func (s *Store) Audit(ctx context.Context, org, op string, since time.Time, limit int) ([]AuditEntry, error) {
	return s.AuditQuery(ctx, org, AuditFilter{Op: op, Since: since, Limit: limit})
}

// AuditQuery lists an org's audit entries that pass f, newest first.
func (s *Store) AuditQuery(ctx context.Context, org string, f AuditFilter) ([]AuditEntry, error) {
	q := `SELECT id, at, org_id, op, key_ref, key_version, outcome, request_id, detail, actor FROM audit WHERE org_id = ? AND at >= ?`
	args := []any{org, ms(f.Since)}
	if !f.Until.IsZero() {
		q += ` AND at < ?`
		args = append(args, ms(f.Until))
	}
	if f.Op != "" {
		q += ` AND op = ?`
		args = append(args, f.Op)
	}
	if f.Actor != "" {
		q += ` AND actor = ?`
		args = append(args, f.Actor)
	}
	q += ` ORDER BY at DESC, id LIMIT ?`
	args = append(args, f.Limit)
	return queryAll(ctx, s.db, func(sc scanner) (AuditEntry, error) {
		var e AuditEntry
		var at int64
		err := sc.Scan(&e.ID, &at, &e.OrgID, &e.Op, &e.KeyRef, &e.KeyVersion, &e.Outcome, &e.RequestID, &e.Detail, &e.Actor)
		e.At = fromMS(at)
		return e, err
	}, q, args...)
}

// PruneAudit deletes audit entries older than before and returns how many.
func (s *Store) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM audit WHERE at < ?`, ms(before))
	if err != nil {
		return 0, fmt.Errorf("prune audit trail: %w", err)
	}
	return res.RowsAffected()
}
