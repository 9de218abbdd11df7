// Package store keeps cmk's durable state, one file per concept: orgs and
// their sandboxes (orgs.go), the Azure tenants bound to each org
// (tenants.go), the data keys that protect each store (datakeys.go), CMK
// configurations and their enablement jobs (configs.go), key health with
// its check and rotation leases (health.go), alerts (alerts.go), the audit
// trail (audit.go) and webhooks with their deliveries (webhooks.go).
// Consumers declare the small interface of the methods they use; only the
// composition root holds a *Store.
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

	"github.com/cmk-project/cmk/internal/privfile"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "modernc.org/sqlite"             // registers the "sqlite" driver
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

// Store is the database handle.
type Store struct {
	db  db
	now func() time.Time
}

// Open opens (creating if needed) the SQLite database at path and applies
// migrations. A new database file is created readable by its owner only
// (0600, whatever the umask), and so are its -wal and -shm files, which
// SQLite gives the database file's mode.
func Open(ctx context.Context, path string) (*Store, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create database directory %s: %w", dir, err)
		}
	}
	if err := privfile.Create(path); err != nil {
		return nil, fmt.Errorf("create database %s: %w", path, err)
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
	sqlDB.SetMaxIdleConns(PostgresIdleConns)
	sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	return open(ctx, sqlDB, postgres)
}

// PostgresIdleConns is how many connections to PostgreSQL a process keeps
// open between queries. database/sql keeps 2, so a replica running its 64
// concurrent key checks closed and reopened connections all the time (a
// server process each: the fleet benchmark saw about 50 a second); this
// covers the checks, the enablement workers and the request path. Idle
// ones close after five minutes.
const PostgresIdleConns = 64

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
