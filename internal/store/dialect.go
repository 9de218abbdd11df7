package store

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
)

// dialect hides the few differences between SQLite and PostgreSQL: the
// placeholder style and the binary column type. Queries are written once,
// with '?' placeholders.
type dialect int

const (
	sqlite dialect = iota
	postgres
)

// rebind rewrites '?' placeholders to $1, $2, ... for PostgreSQL. No query
// in this package has a '?' inside a string literal.
func (d dialect) rebind(q string) string {
	if d != postgres || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	n := 0
	for _, c := range q {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// ddl adapts a migration statement.
func (d dialect) ddl(stmt string) string {
	if d == postgres {
		stmt = strings.ReplaceAll(stmt, " BLOB", " BYTEA")
	}
	return stmt
}

// db is *sql.DB with placeholders rebound for the dialect.
type db struct {
	*sql.DB
	d dialect
}

func (x db) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return x.DB.ExecContext(ctx, x.d.rebind(q), args...)
}

func (x db) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return x.DB.QueryContext(ctx, x.d.rebind(q), args...)
}

func (x db) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return x.DB.QueryRowContext(ctx, x.d.rebind(q), args...)
}

// txn is *sql.Tx with placeholders rebound for the dialect.
type txn struct {
	*sql.Tx
	d dialect
}

func (x txn) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return x.Tx.ExecContext(ctx, x.d.rebind(q), args...)
}

func (x txn) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return x.Tx.QueryContext(ctx, x.d.rebind(q), args...)
}

func (x txn) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return x.Tx.QueryRowContext(ctx, x.d.rebind(q), args...)
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(...any) error }

// queryAll runs q and scans every row with scan.
func queryAll[T any](ctx context.Context, x db, scan func(scanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := x.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
