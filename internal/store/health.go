package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

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
	// The memo is advisory (flap history, check count): a row whose memo
	// does not decode is still returned, so one damaged row never stops the
	// scans that read every org (gate load and sync, due checks).
	if err := decodeJSON(memo, &h.Memo); err != nil {
		h.Memo, h.MemoErr = keyhealth.Memo{}, fmt.Errorf("key health of %s: monitor memo: %w", h.OrgID, err)
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
		q := `SELECT org_id FROM key_health WHERE next_check <= ? AND (lease_owner = '' OR lease_until < ?) ORDER BY next_check LIMIT ?`
		if tx.d == postgres {
			// Replicas claiming at the same moment take different rows
			// instead of queueing behind one another's locks on the same
			// first rows and coming away with nothing.
			q += ` FOR UPDATE SKIP LOCKED`
		}
		rows, err := tx.QueryContext(ctx, q, ms(now), ms(now), limit)
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
	return s.saveHealth(ctx, s.db, h, owner)
}

func (s *Store) saveHealth(ctx context.Context, x execer, h *Health, owner string) error {
	h.UpdatedAt = s.now()
	memo, merr := encodeJSON(h.Memo)
	if merr != nil {
		return fmt.Errorf("save key health of %s: %w", h.OrgID, merr)
	}
	// key_version is only moved by FinishRotation, and rotate_to only set
	// here (never cleared), so a check that read the row before a rotation
	// finished cannot undo it.
	res, err := x.ExecContext(ctx, `UPDATE key_health SET
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

// ReleaseChecks gives up owner's check leases on every org but those in
// keep (the checks owner still runs). A monitor calls it when a claim or a
// save failed, for instance while the database was unreachable: a claim
// may have been committed without its answer arriving, or a check may have
// ended without saving, and either would hold its org's lease until it
// expired, leaving the org unchecked that long.
func (s *Store) ReleaseChecks(ctx context.Context, owner string, keep []string) error {
	q := `UPDATE key_health SET lease_owner = '', lease_until = 0 WHERE lease_owner = ?`
	args := []any{owner}
	if len(keep) > 0 {
		q += ` AND org_id NOT IN (?` + strings.Repeat(`, ?`, len(keep)-1) + `)`
		for _, org := range keep {
			args = append(args, org)
		}
	}
	if _, err := s.db.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("release the check leases of %s: %w", owner, err)
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

// AllHealth returns every monitored org's health.
func (s *Store) AllHealth(ctx context.Context) ([]*Health, error) {
	return queryAll(ctx, s.db, scanHealth, `SELECT `+healthCols+` FROM key_health ORDER BY org_id`)
}
