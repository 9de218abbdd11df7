package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/keyhealth"
)

// Health is the stored form of an org's key health.
type Health = keyhealth.Health

const healthCols = `org_id, state, cause, message, key_version, since, last_check, last_ok, next_check, transitions, probe, probe_version, rotate_to, updated_at, changed_at, version`

func scanHealth(sc scanner) (*Health, error) {
	var h Health
	var since, lc, lo, nc, up, ch int64
	var memo string
	err := sc.Scan(&h.OrgID, &h.State, &h.Cause, &h.Message, &h.KeyVersion, &since, &lc, &lo, &nc, &memo, &h.Probe, &h.ProbeVersion, &h.RotateTo, &up, &ch, &h.Version)
	if err != nil {
		return nil, err
	}
	h.Since, h.LastCheck, h.LastOK, h.NextCheck, h.UpdatedAt, h.ChangedAt = fromMS(since), fromMS(lc), fromMS(lo), fromMS(nc), fromMS(up), fromMS(ch)
	if err := decodeJSON(memo, &h.Memo); err != nil {
		return nil, fmt.Errorf("key health of %s: monitor memo: %w", h.OrgID, err)
	}
	return &h, nil
}

// Health returns an org's key health, or ErrNotFound when it is not monitored.
func (s *Store) Health(ctx context.Context, org string) (*Health, error) {
	h, err := scanHealth(s.db.QueryRowContext(ctx, `SELECT `+healthCols+` FROM key_health WHERE org_id = ?`, org))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return h, err
}

// HealthChangedSince lists the health rows whose state changed after t
// (replicas poll it).
func (s *Store) HealthChangedSince(ctx context.Context, t time.Time) ([]*Health, error) {
	return queryAll(ctx, s.db, scanHealth, `SELECT `+healthCols+` FROM key_health WHERE changed_at > ? ORDER BY changed_at`, ms(t))
}

// ClaimDueChecks leases up to limit orgs whose check is due.
func (s *Store) ClaimDueChecks(ctx context.Context, owner string, lease time.Duration, limit int) ([]*Health, error) {
	var out []*Health
	err := s.tx(ctx, func(tx txn) error {
		now := s.now()
		rows, err := tx.QueryContext(ctx, `SELECT org_id FROM key_health WHERE next_check <= ? AND (lease_owner = '' OR lease_until < ?) ORDER BY next_check LIMIT ?`, ms(now), ms(now), limit)
		if err != nil {
			return err
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		rows.Close()
		for _, id := range ids {
			res, err := tx.ExecContext(ctx, `UPDATE key_health SET lease_owner = ?, lease_until = ? WHERE org_id = ? AND next_check <= ? AND (lease_owner = '' OR lease_until < ?)`,
				owner, ms(now.Add(lease)), id, ms(now), ms(now))
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n != 1 {
				continue // another replica took it
			}
			h, err := scanHealth(tx.QueryRowContext(ctx, `SELECT `+healthCols+` FROM key_health WHERE org_id = ?`, id))
			if err != nil {
				return err
			}
			out = append(out, h)
		}
		return nil
	})
	return out, err
}

// CheckNow makes an org's check due immediately.
func (s *Store) CheckNow(ctx context.Context, org string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE key_health SET next_check = 0, lease_owner = '', lease_until = 0 WHERE org_id = ?`, org)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// SaveHealth writes the outcome of a check and releases the lease, if owner
// still holds it (ErrLeaseLost otherwise: a newer check owns the row).
func (s *Store) SaveHealth(ctx context.Context, h *Health, owner string) error {
	h.UpdatedAt = s.now()
	memo, merr := encodeJSON(h.Memo)
	if merr != nil {
		return fmt.Errorf("save key health of %s: %w", h.OrgID, merr)
	}
	// key_version is only moved by FinishRotation, and rotate_to only set
	// here (never cleared), so a check that read the row before a rotation
	// finished cannot undo it.
	res, err := s.db.ExecContext(ctx, `UPDATE key_health SET
		changed_at = CASE WHEN state <> ? OR cause <> ? THEN ? ELSE changed_at END,
		state = ?, cause = ?, message = ?, since = ?, last_check = ?, last_ok = ?, next_check = ?,
		transitions = ?, probe = ?, probe_version = ?, rotate_to = CASE WHEN ? <> '' AND ? <> key_version THEN ? ELSE rotate_to END,
		lease_owner = '', lease_until = 0, updated_at = ?, version = version + 1 WHERE org_id = ? AND lease_owner = ?`,
		h.State, h.Cause, ms(h.UpdatedAt),
		h.State, h.Cause, h.Message, ms(h.Since), ms(h.LastCheck), ms(h.LastOK), ms(h.NextCheck), memo, h.Probe, h.ProbeVersion,
		h.RotateTo, h.RotateTo, h.RotateTo, ms(h.UpdatedAt), h.OrgID, owner)
	if err != nil {
		return fmt.Errorf("save key health of %s: %w", h.OrgID, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("save key health of %s: %w", h.OrgID, ErrLeaseLost)
	}
	return nil
}

// ClaimCheck leases one org's check now (an on-demand re-check), if no
// other check holds it.
func (s *Store) ClaimCheck(ctx context.Context, org, owner string, lease time.Duration) (*Health, error) {
	now := s.now()
	res, err := s.db.ExecContext(ctx, `UPDATE key_health SET lease_owner = ?, lease_until = ? WHERE org_id = ? AND (lease_owner = '' OR lease_until < ?)`,
		owner, ms(now.Add(lease)), org, ms(now))
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		if _, err := s.Health(ctx, org); err != nil {
			return nil, err
		}
		return nil, ErrLeaseLost
	}
	return s.Health(ctx, org)
}

// ---- alerts ----

// Alert statuses.
const (
	AlertOpen     = cmkapi.AlertOpen
	AlertResolved = cmkapi.AlertResolved
)

// Alert is one alert about an org's key.
type Alert struct {
	ID             string
	OrgID          string
	Kind           string
	Cause          string
	Detail         string // JSON
	Status         string
	Occurrences    int
	FirstSeen      time.Time
	LastSeen       time.Time
	ResolvedAt     time.Time
	AcknowledgedAt time.Time
	AcknowledgedBy string
}

const alertCols = `id, org_id, kind, cause, detail, status, occurrences, first_seen, last_seen, resolved_at, acknowledged_at, acknowledged_by`

func scanAlert(sc scanner) (*Alert, error) {
	var a Alert
	var fs, ls, ra, aa int64
	if err := sc.Scan(&a.ID, &a.OrgID, &a.Kind, &a.Cause, &a.Detail, &a.Status, &a.Occurrences, &fs, &ls, &ra, &aa, &a.AcknowledgedBy); err != nil {
		return nil, err
	}
	a.FirstSeen, a.LastSeen, a.ResolvedAt, a.AcknowledgedAt = fromMS(fs), fromMS(ls), fromMS(ra), fromMS(aa)
	return &a, nil
}

// RaiseAlert opens an alert, or when one is already open for the same org,
// kind and cause, bumps its last-seen time and count. It reports whether a
// new alert was opened.
func (s *Store) RaiseAlert(ctx context.Context, a *Alert) (opened bool, err error) {
	err = s.tx(ctx, func(tx txn) error {
		now := s.now()
		key := a.OrgID + "/" + a.Kind + "/" + a.Cause
		existing, err := scanAlert(tx.QueryRowContext(ctx, `SELECT `+alertCols+` FROM alerts WHERE open_key = ?`, key))
		if err == nil {
			_, err = tx.ExecContext(ctx, `UPDATE alerts SET occurrences = occurrences + 1, last_seen = ?, detail = ? WHERE id = ?`, ms(now), a.Detail, existing.ID)
			*a = *existing
			a.Occurrences++
			a.LastSeen = now
			return err
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		a.Status, a.Occurrences, a.FirstSeen, a.LastSeen = AlertOpen, 1, now, now
		_, err = tx.ExecContext(ctx, `INSERT INTO alerts (id, org_id, kind, cause, detail, status, open_key, occurrences, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)`,
			a.ID, a.OrgID, a.Kind, a.Cause, a.Detail, AlertOpen, key, ms(now), ms(now))
		opened = err == nil
		return err
	})
	return opened, err
}

// ResolveAlerts resolves the org's open alerts (all kinds when kinds is
// empty) and returns the ones it resolved.
func (s *Store) ResolveAlerts(ctx context.Context, org string, kinds ...string) ([]*Alert, error) {
	var out []*Alert
	err := s.tx(ctx, func(tx txn) error {
		q := `SELECT ` + alertCols + ` FROM alerts WHERE org_id = ? AND status = ?`
		args := []any{org, AlertOpen}
		if len(kinds) > 0 {
			q += ` AND kind IN (?` + strings.Repeat(", ?", len(kinds)-1) + `)`
			for _, k := range kinds {
				args = append(args, k)
			}
		}
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			a, err := scanAlert(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out = append(out, a)
		}
		rows.Close()
		now := s.now()
		for _, a := range out {
			if _, err := tx.ExecContext(ctx, `UPDATE alerts SET status = ?, open_key = NULL, resolved_at = ? WHERE id = ?`, AlertResolved, ms(now), a.ID); err != nil {
				return err
			}
			a.Status, a.ResolvedAt = AlertResolved, now
		}
		return nil
	})
	return out, err
}

// Alerts lists an org's alerts, newest first; status "" means all.
func (s *Store) Alerts(ctx context.Context, org, status string) ([]*Alert, error) {
	q := `SELECT ` + alertCols + ` FROM alerts WHERE org_id = ?`
	args := []any{org}
	if status != "" {
		q += ` AND status = ?`
		args = append(args, status)
	}
	return queryAll(ctx, s.db, scanAlert, q+` ORDER BY first_seen DESC, id`, args...)
}

// Alert returns one alert of an org.
func (s *Store) Alert(ctx context.Context, org, id string) (*Alert, error) {
	a, err := scanAlert(s.db.QueryRowContext(ctx, `SELECT `+alertCols+` FROM alerts WHERE org_id = ? AND id = ?`, org, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return a, err
}

// AcknowledgeAlert records who acknowledged an alert.
func (s *Store) AcknowledgeAlert(ctx context.Context, org, id, by string) (*Alert, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE alerts SET acknowledged_at = ?, acknowledged_by = ? WHERE org_id = ? AND id = ?`, s.now().UnixMilli(), by, org, id)
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, ErrNotFound
	}
	return s.Alert(ctx, org, id)
}

// ---- audit ----

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

// ClaimRotation leases one org whose data keys are being re-wrapped to a new
// key version.
func (s *Store) ClaimRotation(ctx context.Context, owner string, lease time.Duration) (*Health, error) {
	var out *Health
	err := s.tx(ctx, func(tx txn) error {
		now := s.now()
		var id string
		err := tx.QueryRowContext(ctx, `SELECT org_id FROM key_health WHERE rotate_to <> '' AND state = ? AND (rotate_owner = '' OR rotate_until < ?) LIMIT 1`, keyhealth.Healthy, ms(now)).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE key_health SET rotate_owner = ?, rotate_until = ? WHERE org_id = ? AND (rotate_owner = '' OR rotate_until < ?)`, owner, ms(now.Add(lease)), id, ms(now))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrNotFound // another replica took it
		}
		out, err = scanHealth(tx.QueryRowContext(ctx, `SELECT `+healthCols+` FROM key_health WHERE org_id = ?`, id))
		return err
	})
	return out, err
}

// RenewRotation extends a rotation lease; ErrLeaseLost when another owner has it.
func (s *Store) RenewRotation(ctx context.Context, org, owner string, lease time.Duration) error {
	res, err := s.db.ExecContext(ctx, `UPDATE key_health SET rotate_until = ? WHERE org_id = ? AND rotate_owner = ?`, ms(s.now().Add(lease)), org, owner)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrLeaseLost
	}
	return nil
}

// FinishRotation records that every data key of the org is wrapped by
// version, if owner still holds the rotation lease and the target is still
// version.
func (s *Store) FinishRotation(ctx context.Context, org, owner, version string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE key_health SET key_version = ?, rotate_to = '', rotate_owner = '', rotate_until = 0, updated_at = ?, version = version + 1 WHERE org_id = ? AND rotate_owner = ? AND rotate_to = ?`,
		version, s.now().UnixMilli(), org, owner, version)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrLeaseLost
	}
	return nil
}

// DeferRotation keeps the rotation lease until until, so a rotation that
// failed is retried after a backoff rather than at once.
func (s *Store) DeferRotation(ctx context.Context, org, owner string, until time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE key_health SET rotate_until = ? WHERE org_id = ? AND rotate_owner = ?`, ms(until), org, owner)
	return err
}

// ReleaseRotation gives up a rotation lease.
func (s *Store) ReleaseRotation(ctx context.Context, org, owner string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE key_health SET rotate_owner = '', rotate_until = 0 WHERE org_id = ? AND rotate_owner = ?`, org, owner)
	return err
}

// CustomerKeysNotAt pages through an org's customer-wrapped data keys whose
// key version is not version.
func (s *Store) CustomerKeysNotAt(ctx context.Context, org, version, afterID string, limit int) ([]DataKey, error) {
	return queryAll(ctx, s.db, scanDataKey, `SELECT `+dataKeyCols+` FROM data_keys WHERE org_id = ? AND kek = ? AND kek_version <> ? AND id > ? ORDER BY id LIMIT ?`,
		org, KEKCustomer, version, afterID, limit)
}

// CountAtVersion counts an org's customer-wrapped data keys at version.
func (s *Store) CountAtVersion(ctx context.Context, org, version string) (total, at int, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(CASE WHEN kek_version = ? THEN 1 ELSE 0 END), 0) FROM data_keys WHERE org_id = ? AND kek = ?`,
		version, org, KEKCustomer).Scan(&total, &at)
	return total, at, err
}

// ReplaceVersion swaps a customer-wrapped data key to a new wrapping only if
// it is still at fromVersion.
func (s *Store) ReplaceVersion(ctx context.Context, id, fromVersion string, to DataKey) error {
	res, err := s.db.ExecContext(ctx, `UPDATE data_keys SET kek_version = ?, alg = ?, wrapped = ?, updated_at = ? WHERE id = ? AND kek = ? AND kek_version = ?`,
		to.KEKVersion, to.Alg, to.Wrapped, s.now().UnixMilli(), id, KEKCustomer, fromVersion)
	if err != nil {
		return fmt.Errorf("rewrap data key %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("rewrap data key %s: %w", id, ErrWrappingChanged)
	}
	return nil
}

// AllHealth returns every monitored org's health.
func (s *Store) AllHealth(ctx context.Context) ([]*Health, error) {
	return queryAll(ctx, s.db, scanHealth, `SELECT `+healthCols+` FROM key_health ORDER BY org_id`)
}

// PruneAudit deletes audit entries older than before and returns how many.
func (s *Store) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM audit WHERE at < ?`, ms(before))
	if err != nil {
		return 0, fmt.Errorf("prune audit trail: %w", err)
	}
	return res.RowsAffected()
}
