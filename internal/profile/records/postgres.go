package records

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is the shared backend: any number of cmk processes may use one
// database. Statements are prepared once per connection and cached by pgx.
type Postgres struct {
	pool *pgxpool.Pool
}

var _ Backend = (*Postgres)(nil)

// migrationLock is the pg_advisory_xact_lock key that serialises schema
// changes between processes starting at once ("cmkprof" in ASCII).
const migrationLock int64 = 0x636d6b70726f66

// OpenPostgres connects to the database named by dsn (a libpq URL or
// key=value string) and creates the profile_records table if missing.
func OpenPostgres(ctx context.Context, dsn string) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The parse error can quote the DSN, password included.
		return nil, fmt.Errorf("open profile records database: invalid PostgreSQL DSN")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open profile records database %s/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Database, err)
	}
	p := &Postgres{pool: pool}
	if err := p.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open profile records database %s/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Database, err)
	}
	return p, nil
}

func (p *Postgres) migrate(ctx context.Context) error {
	migs, err := loadMigrations("postgres")
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return fmt.Errorf("lock schema: %w", err)
		}
		if _, err := tx.Exec(ctx, migrationsTable); err != nil {
			return fmt.Errorf("create migrations table: %w", err)
		}
		for _, m := range migs {
			var n int
			if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM profile_records_migrations WHERE version = $1`, m.version).Scan(&n); err != nil {
				return fmt.Errorf("migrate %s: %w", m.version, err)
			}
			if n > 0 {
				continue
			}
			for _, stmt := range m.stmts {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return fmt.Errorf("migrate %s: %w\n%s", m.version, err, stmt)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO profile_records_migrations (version, applied_at) VALUES ($1, $2)`, m.version, millis(time.Now())); err != nil {
				return fmt.Errorf("migrate %s: %w", m.version, err)
			}
		}
		return nil
	})
}

// Upsert implements Backend.
func (p *Postgres) Upsert(ctx context.Context, org, sandbox, id string, value []byte) error {
	if err := checkKey(org, sandbox, id); err != nil {
		return err
	}
	if err := checkValue(value); err != nil {
		return err
	}
	// nonNil: pgx sends a nil slice as NULL.
	_, err := p.pool.Exec(ctx, `INSERT INTO profile_records (org_id, sandbox, id, value, updated_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (org_id, sandbox, id) DO UPDATE
		SET value = excluded.value, updated_at = GREATEST(profile_records.updated_at, excluded.updated_at)`,
		org, sandbox, id, nonNil(value), millis(time.Now()))
	if err != nil {
		return wrapCtx(ctx, fmt.Sprintf("upsert profile record %s/%s/%s", org, sandbox, id), err)
	}
	return nil
}

// Get implements Backend.
func (p *Postgres) Get(ctx context.Context, org, sandbox, id string) (Record, error) {
	if err := checkKey(org, sandbox, id); err != nil {
		return Record{}, err
	}
	var value []byte
	var updated int64
	err := p.pool.QueryRow(ctx, `SELECT value, updated_at FROM profile_records WHERE org_id = $1 AND sandbox = $2 AND id = $3`,
		org, sandbox, id).Scan(&value, &updated)
	return gotRecord(ctx, org, sandbox, id, value, updated, errors.Is(err, pgx.ErrNoRows), err)
}

// Delete implements Backend.
func (p *Postgres) Delete(ctx context.Context, org, sandbox, id string) error {
	if err := checkKey(org, sandbox, id); err != nil {
		return err
	}
	tag, err := p.pool.Exec(ctx, `DELETE FROM profile_records WHERE org_id = $1 AND sandbox = $2 AND id = $3`, org, sandbox, id)
	return deleted(ctx, org, sandbox, id, tag.RowsAffected(), err)
}

// List implements Backend.
func (p *Postgres) List(ctx context.Context, org, sandbox, cursor string, limit, maxBytes int) (Page, error) {
	after, err := checkList(org, sandbox, cursor, limit, maxBytes)
	if err != nil {
		return Page{}, err
	}
	op := fmt.Sprintf("list profile records of %s/%s", org, sandbox)
	rows, err := p.pool.Query(ctx, `SELECT id, value, updated_at FROM profile_records
		WHERE org_id = $1 AND sandbox = $2 AND id > $3 ORDER BY id LIMIT $4`, org, sandbox, after, limit+1)
	if err != nil {
		return Page{}, wrapCtx(ctx, op, err)
	}
	return readPage(ctx, op, rows, rows.Close, limit, maxBytes)
}

// Usage implements Backend. octet_length of a value stored out of line
// (STORAGE EXTERNAL) reads its size from the TOAST pointer, not the value.
func (p *Postgres) Usage(ctx context.Context, org string) (Usage, error) {
	if err := checkName("org", org); err != nil {
		return Usage{}, err
	}
	var u Usage
	err := p.pool.QueryRow(ctx, `SELECT COUNT(*), COALESCE(SUM(octet_length(value)), 0) FROM profile_records WHERE org_id = $1`, org).Scan(&u.Records, &u.Bytes)
	if err != nil {
		return Usage{}, wrapCtx(ctx, fmt.Sprintf("count profile records of org %s", org), err)
	}
	return u, nil
}

// DeleteOrg implements Backend.
func (p *Postgres) DeleteOrg(ctx context.Context, org string) error {
	if err := checkName("org", org); err != nil {
		return err
	}
	if _, err := p.pool.Exec(ctx, `DELETE FROM profile_records WHERE org_id = $1`, org); err != nil {
		return wrapCtx(ctx, fmt.Sprintf("delete profile records of org %s", org), err)
	}
	return nil
}

// Close implements Backend. It waits for operations in flight to finish.
func (p *Postgres) Close() error {
	p.pool.Close()
	return nil
}
