package records

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/cmk-project/cmk/internal/privfile"

	"modernc.org/sqlite" // also registers the "sqlite" driver
)

// SQLite is the embedded backend: one database file, pure Go, no cgo.
//
// SQLite allows one writer at a time, so writes go through a pool of exactly
// one connection and queue in Go (honouring ctx) instead of spinning on
// SQLITE_BUSY; reads use a separate pool and, in WAL mode, never wait for
// the writer.
type SQLite struct {
	write, read *sql.DB

	upsert, del, delOrg *sql.Stmt // on write
	get, list, usage    *sql.Stmt // on read
}

var _ Backend = (*SQLite)(nil)

// sqlitePragmas apply to every connection. WAL lets readers run alongside
// the writer; synchronous=NORMAL is safe in WAL (a power cut can lose the
// last commits but never corrupts the file) and avoids an fsync per commit;
// busy_timeout covers other processes sharing the file.
const sqlitePragmas = "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"

// OpenSQLite opens (creating if needed) the SQLite database at path and
// creates the profile_records table if missing. The file may be shared with
// other tables, e.g. the store package's. A new file is created readable by
// its owner only (0600, whatever the umask), and so are its -wal and -shm
// files, which SQLite gives the database file's mode.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create database directory %s: %w", dir, err)
		}
	}
	if err := privfile.Create(path); err != nil {
		return nil, fmt.Errorf("create profile records database %s: %w", path, err)
	}
	write, err := sql.Open("sqlite", "file:"+path+"?"+sqlitePragmas+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open profile records database %s: %w", path, err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)

	s := &SQLite{write: write}
	if err := retryBusy(ctx, func() error { return s.migrate(ctx) }); err != nil {
		write.Close()
		return nil, fmt.Errorf("open profile records database %s: %w", path, err)
	}

	read, err := sql.Open("sqlite", "file:"+path+"?"+sqlitePragmas+"&_pragma=query_only(1)")
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("open profile records database %s: %w", path, err)
	}
	readers := max(4, runtime.GOMAXPROCS(0))
	read.SetMaxOpenConns(readers)
	read.SetMaxIdleConns(readers)
	read.SetConnMaxLifetime(0)
	s.read = read

	if err := s.prepare(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open profile records database %s: %w", path, err)
	}
	return s, nil
}

func (s *SQLite) migrate(ctx context.Context) error {
	migs, err := loadMigrations("sqlite")
	if err != nil {
		return err
	}
	// In a write transaction (BEGIN IMMEDIATE), which takes the write lock
	// up front rather than upgrading a read lock.
	if err := s.inWriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, migrationsTable)
		return err
	}); err != nil {
		return fmt.Errorf("create migrations table: %w", err)
	}
	for _, m := range migs {
		if err := s.apply(ctx, m); err != nil {
			return fmt.Errorf("migrate %s: %w", m.version, err)
		}
	}
	return nil
}

// apply runs one migration in a write transaction (BEGIN IMMEDIATE), so two
// processes opening the same file apply it once.
func (s *SQLite) apply(ctx context.Context, m migration) error {
	return s.inWriteTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM profile_records_migrations WHERE version = ?`, m.version).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		for _, stmt := range m.stmts {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("%w\n%s", err, stmt)
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO profile_records_migrations (version, applied_at) VALUES (?, ?)`, m.version, millis(time.Now()))
		return err
	})
}

// busyWait bounds how long opening waits out other processes opening the
// same new file, as busy_timeout does for statements.
const busyWait = 10 * time.Second

// retryBusy runs f until it does not fail with SQLITE_BUSY, for up to
// busyWait. Setting up a new file (switching it to WAL, creating tables)
// can answer "database is locked" at once, without the busy timeout, when
// several processes do it together.
func retryBusy(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(busyWait)
	for pause := 5 * time.Millisecond; ; pause = min(2*pause, 200*time.Millisecond) {
		err := f()
		var se *sqlite.Error
		if !errors.As(err, &se) || se.Code()&0xff != sqliteBusy || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pause):
		}
	}
}

// sqliteBusy is SQLite's primary result code SQLITE_BUSY.
const sqliteBusy = 5

// inWriteTx runs f in a write transaction (BEGIN IMMEDIATE, see the write
// pool's DSN) and commits it if f succeeds.
func (s *SQLite) inWriteTx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *SQLite) prepare(ctx context.Context) error {
	stmts := []struct {
		dst  **sql.Stmt
		db   *sql.DB
		text string
	}{
		{&s.upsert, s.write, `INSERT INTO profile_records (org_id, sandbox, id, value, updated_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (org_id, sandbox, id) DO UPDATE
			SET value = excluded.value, updated_at = max(profile_records.updated_at, excluded.updated_at)`},
		{&s.del, s.write, `DELETE FROM profile_records WHERE org_id = ? AND sandbox = ? AND id = ?`},
		{&s.delOrg, s.write, `DELETE FROM profile_records WHERE org_id = ?`},
		{&s.get, s.read, `SELECT value, updated_at FROM profile_records WHERE org_id = ? AND sandbox = ? AND id = ?`},
		{&s.list, s.read, `SELECT id, value, updated_at FROM profile_records
			WHERE org_id = ? AND sandbox = ? AND id > ? ORDER BY id LIMIT ?`},
		// length() of a BLOB reads its size from the row header, not its content.
		{&s.usage, s.read, `SELECT COUNT(*), COALESCE(SUM(length(value)), 0) FROM profile_records WHERE org_id = ?`},
	}
	for _, st := range stmts {
		p, err := st.db.PrepareContext(ctx, st.text)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", st.text, err)
		}
		*st.dst = p
	}
	return nil
}

// Upsert implements Backend.
func (s *SQLite) Upsert(ctx context.Context, org, sandbox, id string, value []byte) error {
	if err := checkKey(org, sandbox, id); err != nil {
		return err
	}
	if err := checkValue(value); err != nil {
		return err
	}
	if _, err := s.upsert.ExecContext(ctx, org, sandbox, id, nonNil(value), millis(time.Now())); err != nil {
		return wrapCtx(ctx, fmt.Sprintf("upsert profile record %s/%s/%s", org, sandbox, id), err)
	}
	return nil
}

// Get implements Backend.
func (s *SQLite) Get(ctx context.Context, org, sandbox, id string) (Record, error) {
	if err := checkKey(org, sandbox, id); err != nil {
		return Record{}, err
	}
	var value []byte
	var updated int64
	err := s.get.QueryRowContext(ctx, org, sandbox, id).Scan(&value, &updated)
	return gotRecord(ctx, org, sandbox, id, value, updated, errors.Is(err, sql.ErrNoRows), err)
}

// Delete implements Backend.
func (s *SQLite) Delete(ctx context.Context, org, sandbox, id string) error {
	if err := checkKey(org, sandbox, id); err != nil {
		return err
	}
	res, err := s.del.ExecContext(ctx, org, sandbox, id)
	var n int64
	if err == nil {
		n, err = res.RowsAffected()
	}
	return deleted(ctx, org, sandbox, id, n, err)
}

// List implements Backend.
func (s *SQLite) List(ctx context.Context, org, sandbox, cursor string, limit, maxBytes int) (Page, error) {
	after, err := checkList(org, sandbox, cursor, limit, maxBytes)
	if err != nil {
		return Page{}, err
	}
	op := fmt.Sprintf("list profile records of %s/%s", org, sandbox)
	rows, err := s.list.QueryContext(ctx, org, sandbox, after, limit+1)
	if err != nil {
		return Page{}, wrapCtx(ctx, op, err)
	}
	return readPage(ctx, op, rows, func() { rows.Close() }, limit, maxBytes)
}

// Usage implements Backend.
func (s *SQLite) Usage(ctx context.Context, org string) (Usage, error) {
	if err := checkName("org", org); err != nil {
		return Usage{}, err
	}
	var u Usage
	if err := s.usage.QueryRowContext(ctx, org).Scan(&u.Records, &u.Bytes); err != nil {
		return Usage{}, wrapCtx(ctx, fmt.Sprintf("count profile records of org %s", org), err)
	}
	return u, nil
}

// DeleteOrg implements Backend.
func (s *SQLite) DeleteOrg(ctx context.Context, org string) error {
	if err := checkName("org", org); err != nil {
		return err
	}
	if _, err := s.delOrg.ExecContext(ctx, org); err != nil {
		return wrapCtx(ctx, fmt.Sprintf("delete profile records of org %s", org), err)
	}
	return nil
}

// Close implements Backend.
func (s *SQLite) Close() error {
	var errs []error
	for _, st := range []*sql.Stmt{s.upsert, s.del, s.delOrg, s.get, s.list, s.usage} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	for _, db := range []*sql.DB{s.read, s.write} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	return errors.Join(errs...)
}
