// Package store keeps cmk's durable state: orgs, sandboxes, the data keys
// that protect each store, and CMK configurations with their enablement jobs.
//
// The default backend is embedded SQLite (pure Go, no cgo). The SQL is kept
// portable so PostgreSQL can be added without touching callers, and jobs are
// coordinated through leases held in the database rather than in-process
// locks, so several cmk processes can share one database.
//
// Guarantees:
//   - A data key always has exactly one durable wrapping: replacing it is a
//     single-row compare-and-swap (ReplaceWrapping).
//   - At most one unfinished configuration (job) exists per org, enforced by a
//     unique index, so two submissions cannot race.
//   - An org whose key-encryption mode is CUSTOMER never returns to SYSTEM.
package store

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "modernc.org/sqlite"             // registers the "sqlite" driver

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/keyhealth"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Errors callers branch on.
var (
	ErrNotFound        = errors.New("not found")
	ErrDuplicateName   = errors.New("a configuration with this name already exists")
	ErrJobActive       = errors.New("another configuration job is still running for this org")
	ErrAlreadyEnabled  = errors.New("customer-managed keys are already enabled for this org")
	ErrLeaseLost       = errors.New("job lease lost to another worker")
	ErrWrappingChanged = errors.New("data key wrapping changed concurrently")
	ErrKeyInUse        = errors.New("the key already protects another org")
)

// Key-encryption modes of an org.
const (
	ModeSystem   = "SYSTEM"
	ModeCustomer = "CUSTOMER"
)

// Config statuses, as the API returns them.
const (
	StatusNew       = cmkapi.StatusNew
	StatusRunning   = cmkapi.StatusRunning
	StatusUpdating  = cmkapi.StatusUpdating
	StatusCompleted = cmkapi.StatusCompleted
	StatusFailed    = cmkapi.StatusFailed
)

// KEK kinds on a data key.
const (
	KEKSystem   = "system"
	KEKCustomer = "customer"
)

// Store kinds every sandbox has.
var StoreKinds = []string{"lake", "profile"}

// Org is a tenant organisation.
type Org struct {
	ID        string
	KEKMode   string
	VaultURL  string
	KeyName   string
	CreatedAt time.Time
}

// DataKey is one wrapped data-encryption key of one store.
type DataKey struct {
	ID         string
	OrgID      string
	Sandbox    string
	Store      string
	KEK        string // KEKSystem or KEKCustomer
	KEKRef     string
	KEKVersion string
	Alg        string
	Wrapped    []byte
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

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
	Checks        string // JSON
	Failure       string // JSON
	LastError     string // JSON
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

// Store is the database handle.
type Store struct {
	db  db
	now func() time.Time
}

// Open opens (creating if needed) the SQLite database at path and applies
// migrations.
func Open(ctx context.Context, path string) (*Store, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create database directory %s: %w", dir, err)
		}
	}
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	sqlDB, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return open(ctx, sqlDB, sqlite)
}

// OpenPostgres connects to PostgreSQL at dsn and applies migrations. Several
// cmk processes may share one database: jobs, checks and rotations are
// coordinated by leases in it.
func OpenPostgres(ctx context.Context, dsn string) (*Store, error) {
	sqlDB, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, errors.New("open PostgreSQL: the DSN does not parse")
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	return open(ctx, sqlDB, postgres)
}

func open(ctx context.Context, sqlDB *sql.DB, d dialect) (*Store, error) {
	s := &Store{db: db{DB: sqlDB, d: d}, now: time.Now}
	if err := s.migrate(ctx); err != nil {
		sqlDB.Close()
		return nil, err
	}
	return s, nil
}

// SetClock replaces the clock (tests).
func (s *Store) SetClock(now func() time.Time) { s.now = now }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func (s *Store) migrate(ctx context.Context) error {
	if s.db.d == postgres {
		// Replicas starting together take turns.
		conn, err := s.db.Conn(ctx)
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(73410001)`); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(73410001)`)
	}
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		version := strings.TrimSuffix(filepath.Base(name), ".sql")
		var n int
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n); err != nil {
			return fmt.Errorf("migrate %s: %w", version, err)
		}
		if n > 0 {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		err = s.tx(ctx, func(tx txn) error {
			for _, stmt := range splitSQL(string(body)) {
				if _, err := tx.ExecContext(ctx, s.db.d.ddl(stmt)); err != nil {
					return fmt.Errorf("%w\n%s", err, stmt)
				}
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, version, s.now().UnixMilli())
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate %s: %w", version, err)
		}
	}
	return nil
}

// splitSQL splits a migration into statements, dropping comments.
func splitSQL(body string) []string {
	var lines []string
	for _, l := range strings.Split(body, "\n") {
		if i := strings.Index(l, "--"); i >= 0 {
			l = l[:i]
		}
		lines = append(lines, l)
	}
	var out []string
	for _, stmt := range strings.Split(strings.Join(lines, "\n"), ";") {
		if strings.TrimSpace(stmt) != "" {
			out = append(out, strings.TrimSpace(stmt))
		}
	}
	return out
}

func (s *Store) tx(ctx context.Context, fn func(txn) error) error {
	sqlTx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	tx := txn{Tx: sqlTx, d: s.db.d}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

func isUnique(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "UNIQUE constraint") || strings.Contains(err.Error(), "duplicate key"))
}

// ---- orgs and sandboxes ----

// EnsureOrg creates the org if it does not exist and reports whether it did.
func (s *Store) EnsureOrg(ctx context.Context, id string) (created bool, err error) {
	res, err := s.db.ExecContext(ctx, `INSERT INTO orgs (id, created_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`, id, s.now().UnixMilli())
	if err != nil {
		return false, fmt.Errorf("create org %s: %w", id, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// Org returns an org.
func (s *Store) Org(ctx context.Context, id string) (Org, error) {
	var o Org
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT id, kek_mode, vault_url, key_name, created_at FROM orgs WHERE id = ?`, id).
		Scan(&o.ID, &o.KEKMode, &o.VaultURL, &o.KeyName, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return o, ErrNotFound
	}
	if err != nil {
		return o, fmt.Errorf("read org %s: %w", id, err)
	}
	o.CreatedAt = fromMS(created)
	return o, nil
}

// SetCustomerKEK switches an org to its customer key for all new data keys.
// It is one-way: there is no function that switches back.
func (s *Store) SetCustomerKEK(ctx context.Context, org, vaultURL, keyName string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE orgs SET kek_mode = ?, vault_url = ?, key_name = ? WHERE id = ?`, ModeCustomer, vaultURL, keyName, org)
	if err != nil {
		return fmt.Errorf("set customer key for org %s: %w", org, err)
	}
	return nil
}

// BeginCustomerKEK is the one-way switch of an enablement job: in one
// transaction, and only while owner holds the job's lease, the org starts
// using its customer key for new data keys, monitoring of the key starts,
// and the job moves to UPDATE_EXISTING_RESOURCES.
func (s *Store) BeginCustomerKEK(ctx context.Context, jobID, owner string, c *Config, keyVersion, checks string) error {
	return s.tx(ctx, func(tx txn) error {
		now := s.now().UnixMilli()
		res, err := tx.ExecContext(ctx, `UPDATE configs SET status = ?, checks = ?, key_version = ?, last_error = '', updated_at = ? WHERE id = ? AND lease_owner = ?`,
			StatusUpdating, checks, keyVersion, now, jobID, owner)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("job %s: %w", jobID, ErrLeaseLost)
		}
		var others int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM orgs WHERE id <> ? AND kek_mode = ? AND LOWER(vault_url) = LOWER(?) AND LOWER(key_name) = LOWER(?)`,
			c.OrgID, ModeCustomer, c.VaultURL, c.KeyName).Scan(&others); err != nil {
			return err
		}
		if others > 0 {
			return ErrKeyInUse
		}
		if _, err := tx.ExecContext(ctx, `UPDATE orgs SET kek_mode = ?, vault_url = ?, key_name = ? WHERE id = ?`, ModeCustomer, c.VaultURL, c.KeyName, c.OrgID); err != nil {
			return err
		}
		// The first version is the time in microseconds, so a row of an org
		// deleted and created again never sorts behind what replicas
		// remember of the old one.
		_, err = tx.ExecContext(ctx, `INSERT INTO key_health (org_id, state, key_version, since, last_ok, next_check, updated_at, changed_at, version) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?)
			ON CONFLICT (org_id) DO NOTHING`, c.OrgID, keyhealth.Healthy, keyVersion, now, now, now, now, s.now().UnixMicro())
		return err
	})
}

// KeyInUseElsewhere reports another org that uses (or is enabling) the same
// vault key: a key protects one org's data only.
func (s *Store) KeyInUseElsewhere(ctx context.Context, org, vaultURL, keyName string) (bool, error) {
	var n int
	// Key Vault names are case-insensitive.
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM orgs WHERE id <> ? AND kek_mode = ? AND LOWER(vault_url) = LOWER(?) AND LOWER(key_name) = LOWER(?)`, org, ModeCustomer, vaultURL, keyName).Scan(&n)
	if err != nil || n > 0 {
		return n > 0, err
	}
	err = s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM configs WHERE org_id <> ? AND active = 1 AND LOWER(vault_url) = LOWER(?) AND LOWER(key_name) = LOWER(?)`, org, vaultURL, keyName).Scan(&n)
	return n > 0, err
}

// ErrModeChanged is returned when a data key was wrapped for the org's old
// key-encryption mode; the caller wraps it again and retries.
var ErrModeChanged = errors.New("the org's key-encryption mode changed; wrap the data key again")

// checkMode refuses system-wrapped keys for an org that uses its customer key.
func checkMode(ctx context.Context, tx txn, org string, keys []DataKey) error {
	// On PostgreSQL the row is share-locked, so the switch to the customer
	// key (which updates it) waits for this transaction, and vice versa;
	// SQLite transactions here are already exclusive.
	q := `SELECT kek_mode FROM orgs WHERE id = ?`
	if tx.d == postgres {
		q += ` FOR SHARE`
	}
	var mode string
	if err := tx.QueryRowContext(ctx, q, org).Scan(&mode); err != nil {
		return err
	}
	for _, k := range keys {
		if mode == ModeCustomer && k.KEK != KEKCustomer {
			return ErrModeChanged
		}
	}
	return nil
}

// CreateSandbox adds a sandbox with the data keys of its stores, atomically.
func (s *Store) CreateSandbox(ctx context.Context, org, name string, keys []DataKey) error {
	return s.tx(ctx, func(tx txn) error {
		now := s.now().UnixMilli()
		if err := checkMode(ctx, tx, org, keys); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO sandboxes (org_id, name, created_at) VALUES (?, ?, ?)`, org, name, now); err != nil {
			if isUnique(err) {
				return fmt.Errorf("sandbox %s: %w", name, ErrDuplicateName)
			}
			return fmt.Errorf("create sandbox %s/%s: %w", org, name, err)
		}
		for _, k := range keys {
			if err := insertDataKey(ctx, tx, k, now); err != nil {
				return err
			}
		}
		return nil
	})
}

func insertDataKey(ctx context.Context, tx txn, k DataKey, now int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO data_keys (id, org_id, sandbox, store, kek, kek_ref, kek_version, alg, wrapped, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.OrgID, k.Sandbox, k.Store, k.KEK, k.KEKRef, k.KEKVersion, k.Alg, k.Wrapped, now, now)
	if err != nil {
		return fmt.Errorf("store data key for %s/%s/%s: %w", k.OrgID, k.Sandbox, k.Store, err)
	}
	return nil
}

// Sandboxes lists an org's sandbox names in order.
func (s *Store) Sandboxes(ctx context.Context, org string) ([]string, error) {
	out, err := queryAll(ctx, s.db, func(sc scanner) (n string, err error) {
		err = sc.Scan(&n)
		return n, err
	},
		`SELECT name FROM sandboxes WHERE org_id = ? ORDER BY name`, org)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes of %s: %w", org, err)
	}
	return out, nil
}

// ---- data keys ----

const dataKeyCols = `id, org_id, sandbox, store, kek, kek_ref, kek_version, alg, wrapped, created_at, updated_at`

func scanDataKey(sc scanner) (DataKey, error) {
	var k DataKey
	var c, u int64
	err := sc.Scan(&k.ID, &k.OrgID, &k.Sandbox, &k.Store, &k.KEK, &k.KEKRef, &k.KEKVersion, &k.Alg, &k.Wrapped, &c, &u)
	k.CreatedAt, k.UpdatedAt = fromMS(c), fromMS(u)
	return k, err
}

// DataKeysByKEK pages through an org's data keys wrapped by the given KEK
// kind, in id order, starting after afterID.
func (s *Store) DataKeysByKEK(ctx context.Context, org, kek, afterID string, limit int) ([]DataKey, error) {
	out, err := queryAll(ctx, s.db, scanDataKey, `SELECT `+dataKeyCols+` FROM data_keys WHERE org_id = ? AND kek = ? AND id > ? ORDER BY id LIMIT ?`, org, kek, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("list data keys of %s: %w", org, err)
	}
	return out, nil
}

// DataKeys returns every data key of an org (tests, small orgs).
func (s *Store) DataKeys(ctx context.Context, org string) ([]DataKey, error) {
	out, err := queryAll(ctx, s.db, scanDataKey, `SELECT `+dataKeyCols+` FROM data_keys WHERE org_id = ? ORDER BY id`, org)
	if err != nil {
		return nil, fmt.Errorf("list data keys of %s: %w", org, err)
	}
	return out, nil
}

// CountDataKeys returns how many data keys an org has, and how many of them
// are wrapped by the customer key.
func (s *Store) CountDataKeys(ctx context.Context, org string) (total, customer int, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(CASE WHEN kek = ? THEN 1 ELSE 0 END), 0) FROM data_keys WHERE org_id = ?`, KEKCustomer, org).Scan(&total, &customer)
	if err != nil {
		return 0, 0, fmt.Errorf("count data keys of %s: %w", org, err)
	}
	return total, customer, nil
}

// ReplaceWrapping swaps a data key's wrapping in one statement, only if it
// is still wrapped by fromKEK. The new wrapping is durable when this returns.
func (s *Store) ReplaceWrapping(ctx context.Context, id, fromKEK string, to DataKey) error {
	res, err := s.db.ExecContext(ctx, `UPDATE data_keys SET kek = ?, kek_ref = ?, kek_version = ?, alg = ?, wrapped = ?, updated_at = ? WHERE id = ? AND kek = ?`,
		to.KEK, to.KEKRef, to.KEKVersion, to.Alg, to.Wrapped, s.now().UnixMilli(), id, fromKEK)
	if err != nil {
		return fmt.Errorf("rewrap data key %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("rewrap data key %s: %w", id, ErrWrappingChanged)
	}
	return nil
}

// ---- configs and jobs ----

const configCols = `id, org_id, name, type, provider_type, key_identifier, vault_url, key_name, key_version, status, checks, failure, last_error,
	progress_done, progress_total, attempts, next_attempt_at, lease_owner, lease_until, created_at, updated_at`

func scanConfig(sc scanner) (*Config, error) {
	var c Config
	var next, lease, created, updated int64
	err := sc.Scan(&c.ID, &c.OrgID, &c.Name, &c.Type, &c.ProviderType, &c.KeyIdentifier, &c.VaultURL, &c.KeyName, &c.KeyVersion, &c.Status,
		&c.Checks, &c.Failure, &c.LastError, &c.ProgressDone, &c.ProgressTotal, &c.Attempts, &next, &c.LeaseOwner, &lease, &created, &updated)
	if err != nil {
		return nil, err
	}
	c.NextAttemptAt, c.LeaseUntil, c.CreatedAt, c.UpdatedAt = fromMS(next), fromMS(lease), fromMS(created), fromMS(updated)
	return &c, nil
}

// CreateConfig inserts a NEW configuration. It fails with ErrAlreadyEnabled
// when the org already uses its customer key, ErrJobActive when another job
// is unfinished, and ErrDuplicateName when the name is taken in the org.
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
		return err
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
	Status        *string
	Checks        *string
	Failure       *string
	LastError     *string
	KeyVersion    *string
	ProgressDone  *int
	ProgressTotal *int
	NextAttemptAt *time.Time
	LeaseUntil    *time.Time // extend the lease
	Release       bool       // give the lease up
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
	if u.Checks != nil {
		add("checks", *u.Checks)
	}
	if u.Failure != nil {
		add("failure", *u.Failure)
	}
	if u.LastError != nil {
		add("last_error", *u.LastError)
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

// ActiveDataKey returns the data key new objects of a store are sealed with:
// the store's newest.
func (s *Store) ActiveDataKey(ctx context.Context, org, sandbox, storeKind string) (DataKey, error) {
	k, err := scanDataKey(s.db.QueryRowContext(ctx, `SELECT `+dataKeyCols+` FROM data_keys WHERE org_id = ? AND sandbox = ? AND store = ? ORDER BY created_at DESC, id DESC LIMIT 1`,
		org, sandbox, storeKind))
	if errors.Is(err, sql.ErrNoRows) {
		return k, ErrNotFound
	}
	return k, err
}

// DataKey returns one data key by id.
func (s *Store) DataKey(ctx context.Context, id string) (DataKey, error) {
	k, err := scanDataKey(s.db.QueryRowContext(ctx, `SELECT `+dataKeyCols+` FROM data_keys WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return k, ErrNotFound
	}
	return k, err
}

// AddDataKey stores a new data key for an existing store (data-key rotation).
func (s *Store) AddDataKey(ctx context.Context, k DataKey) error {
	return s.tx(ctx, func(tx txn) error {
		if err := checkMode(ctx, tx, k.OrgID, []DataKey{k}); err != nil {
			return err
		}
		return insertDataKey(ctx, tx, k, s.now().UnixMilli())
	})
}

// ReserveUses reserves n more uses of a data key and returns the total
// reserved so far (including these n).
func (s *Store) ReserveUses(ctx context.Context, id string, n int64) (int64, error) {
	var total int64
	err := s.tx(ctx, func(tx txn) error {
		if _, err := tx.ExecContext(ctx, `UPDATE data_keys SET uses_reserved = uses_reserved + ? WHERE id = ?`, n, id); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT uses_reserved FROM data_keys WHERE id = ?`, id).Scan(&total)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrNotFound
	}
	return total, err
}

// SandboxExists reports whether an org has the sandbox.
func (s *Store) SandboxExists(ctx context.Context, org, name string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sandboxes WHERE org_id = ? AND name = ?`, org, name).Scan(&n)
	return n > 0, err
}

// OrgsDeletedSince lists orgs deleted after t, with the newest deletion time.
func (s *Store) OrgsDeletedSince(ctx context.Context, t time.Time) ([]string, time.Time, error) {
	type del struct {
		org string
		at  int64
	}
	dels, err := queryAll(ctx, s.db, func(sc scanner) (d del, err error) {
		err = sc.Scan(&d.org, &d.at)
		return d, err
	}, `SELECT org_id, deleted_at FROM org_deletions WHERE deleted_at > ? ORDER BY deleted_at`, ms(t))
	var orgs []string
	last := t
	for _, d := range dels {
		orgs = append(orgs, d.org)
		if at := fromMS(d.at); at.After(last) {
			last = at
		}
	}
	return orgs, last, err
}

// DeleteOrg removes an org and everything the database holds for it: its
// sandboxes and their data keys (which makes every stored ciphertext of the
// org unreadable), configurations, key health, alerts, webhooks and
// pending deliveries. The audit trail is kept.
func (s *Store) DeleteOrg(ctx context.Context, org string) error {
	return s.tx(ctx, func(tx txn) error {
		// Explicit deletes in dependency order, so the outcome does not hang
		// on foreign-key enforcement being switched on.
		for _, q := range []string{
			`DELETE FROM deliveries WHERE webhook_id IN (SELECT id FROM webhooks WHERE org_id = ?)`,
			`DELETE FROM webhooks WHERE org_id = ?`,
			`DELETE FROM alerts WHERE org_id = ?`,
			`DELETE FROM key_health WHERE org_id = ?`,
			`DELETE FROM configs WHERE org_id = ?`,
			`DELETE FROM data_keys WHERE org_id = ?`,
			`DELETE FROM sandboxes WHERE org_id = ?`,
		} {
			if _, err := tx.ExecContext(ctx, q, org); err != nil {
				return fmt.Errorf("delete org %s: %w", org, err)
			}
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM orgs WHERE id = ?`, org)
		if err != nil {
			return fmt.Errorf("delete org %s: %w", org, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO org_deletions (org_id, deleted_at) VALUES (?, ?)`, org, s.now().UnixMilli())
		return err
	})
}

// decodeJSON reads a JSON column into v; an empty column leaves v as it is.
func decodeJSON(col string, v any) error {
	if col == "" {
		return nil
	}
	if err := json.Unmarshal([]byte(col), v); err != nil {
		return fmt.Errorf("decode stored JSON: %w", err)
	}
	return nil
}

// encodeJSON writes v for a JSON column.
func encodeJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode JSON column: %w", err)
	}
	return string(b), nil
}
