package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/preflight"
)

// Config statuses, as the API returns them.
const (
	StatusNew       = cmkapi.StatusNew
	StatusRunning   = cmkapi.StatusRunning
	StatusUpdating  = cmkapi.StatusUpdating
	StatusCompleted = cmkapi.StatusCompleted
	StatusFailed    = cmkapi.StatusFailed
)

// Config is a CMK configuration and the state of its enablement job.
type Config struct {
	ID            string
	OrgID         string
	Name          string
	Type          string
	ProviderType  string
	KeyIdentifier string
	VaultURL      string
	KeyName       string
	KeyVersion    string
	Status        string
	Checks        []preflight.Result // the validation checks of the last attempt
	Failure       *cmkapi.Failure    // why the job FAILED
	LastError     *cmkapi.Problem    // the latest retryable problem of an unfinished job; cleared when it finishes
	ColumnErr     error              // a JSON column above that did not decode (left empty)
	ProgressDone  int
	ProgressTotal int
	Attempts      int
	NextAttemptAt time.Time
	LeaseOwner    string
	LeaseUntil    time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// Active reports whether the job has not finished.
func (c *Config) Active() bool { return c.Status != StatusCompleted && c.Status != StatusFailed }

const configCols = `id, org_id, name, type, provider_type, key_identifier, vault_url, key_name, key_version, status, checks, failure, last_error,
	progress_done, progress_total, attempts, next_attempt_at, lease_owner, lease_until, created_at, updated_at`

func scanConfig(sc scanner) (*Config, error) {
	var c Config
	var next, lease, created, updated int64
	var checks, failure, lastError string
	err := sc.Scan(&c.ID, &c.OrgID, &c.Name, &c.Type, &c.ProviderType, &c.KeyIdentifier, &c.VaultURL, &c.KeyName, &c.KeyVersion, &c.Status,
		&checks, &failure, &lastError, &c.ProgressDone, &c.ProgressTotal, &c.Attempts, &next, &c.LeaseOwner, &lease, &created, &updated)
	if err != nil {
		return nil, err
	}
	c.NextAttemptAt, c.LeaseUntil, c.CreatedAt, c.UpdatedAt = fromMS(next), fromMS(lease), fromMS(created), fromMS(updated)
	// A column that does not decode is left empty and reported in
	// ColumnErr; the row is still returned, so one damaged row never stops
	// the job queue of every org or the listing of its own org.
	damaged := func(col string, err error) {
		c.ColumnErr = errors.Join(c.ColumnErr, fmt.Errorf("configuration %s of org %s: column %s: %w", c.ID, c.OrgID, col, err))
	}
	if err := decodeJSON(checks, &c.Checks); err != nil {
		c.Checks = nil
		damaged("checks", err)
	}
	if err := decodeJSON(failure, &c.Failure); err != nil {
		c.Failure = nil
		damaged("failure", err)
	}
	if err := decodeJSON(lastError, &c.LastError); err != nil {
		c.LastError = nil
		damaged("last_error", err)
	}
	return &c, nil
}

// KeptFailedConfigs is how many FAILED configurations an org keeps: enough
// to follow a stubborn setup problem through many attempts, while an org
// retrying in a loop cannot grow the list (which every listing reads, and
// whose names stay taken) without bound. CreateConfig deletes older ones.
const KeptFailedConfigs = 20

// CreateConfig inserts a NEW configuration and deletes the org's FAILED
// configurations but the newest KeptFailedConfigs, in one transaction. It
// fails with ErrAlreadyEnabled when the org already uses its customer key,
// ErrJobActive when another job is unfinished, and ErrDuplicateName when
// the name is taken in the org.
func (s *Store) CreateConfig(ctx context.Context, c *Config) error {
	return s.tx(ctx, func(tx txn) error {
		var mode string
		if err := tx.QueryRowContext(ctx, `SELECT kek_mode FROM orgs WHERE id = ?`, c.OrgID).Scan(&mode); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("org %s: %w", c.OrgID, ErrNotFound)
			}
			return err
		}
		var sameName, active int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(CASE WHEN name = ? THEN 1 ELSE 0 END), 0), COALESCE(SUM(CASE WHEN active = 1 THEN 1 ELSE 0 END), 0) FROM configs WHERE org_id = ?`,
			c.Name, c.OrgID).Scan(&sameName, &active); err != nil {
			return err
		}
		switch {
		case sameName > 0:
			return ErrDuplicateName
		case active > 0:
			return ErrJobActive
		case mode == ModeCustomer:
			return ErrAlreadyEnabled
		}
		now := s.now()
		c.Status, c.CreatedAt, c.UpdatedAt = StatusNew, now, now
		_, err := tx.ExecContext(ctx, `INSERT INTO configs (id, org_id, name, type, provider_type, key_identifier, vault_url, key_name, key_version, status, active, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)`,
			c.ID, c.OrgID, c.Name, c.Type, c.ProviderType, c.KeyIdentifier, c.VaultURL, c.KeyName, c.KeyVersion, c.Status, ms(now), ms(now))
		if isUnique(err) {
			// Lost a race with a concurrent submission.
			return ErrJobActive
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM configs WHERE org_id = ? AND status = ? AND id NOT IN
			(SELECT id FROM configs WHERE org_id = ? AND status = ? ORDER BY created_at DESC, id DESC LIMIT ?)`,
			c.OrgID, StatusFailed, c.OrgID, StatusFailed, KeptFailedConfigs)
		if err != nil {
			return fmt.Errorf("prune failed configurations of org %s: %w", c.OrgID, err)
		}
		return nil
	})
}

// ConfigByName returns an org's configuration by its case-sensitive name.
func (s *Store) ConfigByName(ctx context.Context, org, name string) (*Config, error) {
	c, err := scanConfig(s.db.QueryRowContext(ctx, `SELECT `+configCols+` FROM configs WHERE org_id = ? AND name = ?`, org, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return c, err
}

// Config returns a configuration by id.
func (s *Store) Config(ctx context.Context, id string) (*Config, error) {
	c, err := scanConfig(s.db.QueryRowContext(ctx, `SELECT `+configCols+` FROM configs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return c, err
}

// UnfinishedJobs lists every org's enablement jobs that are neither
// COMPLETED nor FAILED, oldest first (the operator's view and metrics).
func (s *Store) UnfinishedJobs(ctx context.Context) ([]*Config, error) {
	return queryAll(ctx, s.db, scanConfig, `SELECT `+configCols+` FROM configs WHERE status <> ? AND status <> ? ORDER BY created_at, id`, StatusCompleted, StatusFailed)
}

// Configs lists an org's configurations, newest first.
func (s *Store) Configs(ctx context.Context, org string) ([]*Config, error) {
	return queryAll(ctx, s.db, scanConfig, `SELECT `+configCols+` FROM configs WHERE org_id = ? ORDER BY created_at DESC`, org)
}

// ClaimJob leases one runnable job (unfinished, due, lease free or expired)
// to owner until now+lease. It returns ErrNotFound when there is none.
func (s *Store) ClaimJob(ctx context.Context, owner string, lease time.Duration) (*Config, error) {
	var claimed *Config
	err := s.tx(ctx, func(tx txn) error {
		now := s.now()
		var id string
		err := tx.QueryRowContext(ctx, `SELECT id FROM configs WHERE active = 1 AND next_attempt_at <= ? AND (lease_owner = '' OR lease_until < ?) ORDER BY next_attempt_at, created_at LIMIT 1`,
			ms(now), ms(now)).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE configs SET lease_owner = ?, lease_until = ?, attempts = attempts + 1 WHERE id = ? AND (lease_owner = '' OR lease_until < ?)`,
			owner, ms(now.Add(lease)), id, ms(now))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrNotFound
		}
		claimed, err = scanConfig(tx.QueryRowContext(ctx, `SELECT `+configCols+` FROM configs WHERE id = ?`, id))
		return err
	})
	return claimed, err
}

// JobUpdate is a change to a job made by the worker holding its lease.
// Nil fields are left as they are.
type JobUpdate struct {
	Status         *string
	Checks         []preflight.Result // nil = unchanged
	Failure        *cmkapi.Failure    // nil = unchanged
	LastError      *cmkapi.Problem    // nil = unchanged
	ClearLastError bool               // the job finished: no retry to announce
	KeyVersion     *string
	ProgressDone   *int
	ProgressTotal  *int
	NextAttemptAt  *time.Time
	LeaseUntil     *time.Time // extend the lease
	Release        bool       // give the lease up
}

// UpdateJob applies u to job id if owner still holds its lease.
func (s *Store) UpdateJob(ctx context.Context, id, owner string, u JobUpdate) error {
	sets := []string{"updated_at = ?"}
	args := []any{s.now().UnixMilli()}
	add := func(col string, v any) { sets = append(sets, col+" = ?"); args = append(args, v) }
	if u.Status != nil {
		add("status", *u.Status)
		if *u.Status == StatusCompleted || *u.Status == StatusFailed {
			sets = append(sets, "active = NULL")
		}
	}
	for _, col := range []struct {
		name string
		set  bool
		v    any
	}{{"checks", u.Checks != nil, u.Checks}, {"failure", u.Failure != nil, u.Failure}, {"last_error", u.LastError != nil, u.LastError}} {
		if !col.set {
			continue
		}
		raw, err := encodeJSON(col.v)
		if err != nil {
			return fmt.Errorf("update job %s: %s: %w", id, col.name, err)
		}
		add(col.name, raw)
	}
	if u.ClearLastError {
		add("last_error", "")
	}
	if u.KeyVersion != nil {
		add("key_version", *u.KeyVersion)
	}
	if u.ProgressDone != nil {
		add("progress_done", *u.ProgressDone)
	}
	if u.ProgressTotal != nil {
		add("progress_total", *u.ProgressTotal)
	}
	if u.NextAttemptAt != nil {
		add("next_attempt_at", ms(*u.NextAttemptAt))
	}
	if u.LeaseUntil != nil {
		add("lease_until", ms(*u.LeaseUntil))
	}
	if u.Release {
		add("lease_owner", "")
		add("lease_until", 0)
	}
	args = append(args, id, owner)
	res, err := s.db.ExecContext(ctx, `UPDATE configs SET `+strings.Join(sets, ", ")+` WHERE id = ? AND lease_owner = ?`, args...)
	if err != nil {
		return fmt.Errorf("update job %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("update job %s: %w", id, ErrLeaseLost)
	}
	return nil
}
