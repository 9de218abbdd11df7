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
}

// AddAudit records an entry.
func (s *Store) AddAudit(ctx context.Context, e AuditEntry) error {
	if e.At.IsZero() {
		e.At = s.now()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO audit (id, at, org_id, op, key_ref, key_version, outcome, request_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, ms(e.At), e.OrgID, e.Op, e.KeyRef, e.KeyVersion, e.Outcome, e.RequestID, e.Detail)
	if err != nil {
		return fmt.Errorf("record audit entry: %w", err)
	}
	return nil
}

// Audit lists an org's audit entries, newest first, optionally filtered by
// op and by time (since), at most limit.
func (s *Store) Audit(ctx context.Context, org, op string, since time.Time, limit int) ([]AuditEntry, error) {
	q := `SELECT id, at, org_id, op, key_ref, key_version, outcome, request_id, detail FROM audit WHERE org_id = ? AND at >= ?`
	args := []any{org, ms(since)}
	if op != "" {
		q += ` AND op = ?`
		args = append(args, op)
	}
	q += ` ORDER BY at DESC, id LIMIT ?`
	args = append(args, limit)
	return queryAll(ctx, s.db, func(sc scanner) (AuditEntry, error) {
		var e AuditEntry
		var at int64
		err := sc.Scan(&e.ID, &at, &e.OrgID, &e.Op, &e.KeyRef, &e.KeyVersion, &e.Outcome, &e.RequestID, &e.Detail)
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
