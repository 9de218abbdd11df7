// Package records is the storage layer of the profile store: it keeps opaque
// values (ciphertext produced by the encryption layer above) addressed by
// org, sandbox and record id.
//
// Two backends implement [Backend]: embedded SQLite ([OpenSQLite]) for
// single-node deployments and PostgreSQL ([OpenPostgres]) for shared ones.
// Both pass the same conformance suite (package recordstest), so callers can
// switch between them without noticing.
//
// Guarantees:
//   - Records of different orgs or sandboxes never see each other: the same
//     id in two sandboxes is two records.
//   - Upsert is atomic per record; concurrent upserts of one id all succeed
//     and the last to commit wins. A record's Updated time never goes back.
//   - List walks a sandbox in byte order of id with keyset pagination: a walk
//     returns every record that existed for its whole duration exactly once,
//     even while other records are inserted or deleted.
//   - Values are stored and returned byte for byte; the backends never
//     inspect them. The caller owns the values Get and List return (the
//     profile store decrypts them in place), and may reuse a value it
//     passed to Upsert once Upsert has returned.
package records

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Errors callers branch on.
var (
	// ErrNotFound is returned by Get and Delete when the record does not exist.
	ErrNotFound = errors.New("record not found")
	// ErrInvalid wraps every rejected argument; the message names the limit.
	ErrInvalid = errors.New("invalid argument")
)

// Limits enforced on every backend.
const (
	// MaxIDBytes bounds org, sandbox and record ids. Ids are primary-key
	// columns; keeping them short keeps the index small, and 512 bytes leaves
	// room for any id scheme the layer above uses (UUIDs, hashes, paths).
	MaxIDBytes = 512
	// MaxValueBytes bounds a value. Profile records are small documents;
	// 4 MiB is well above any real one and keeps a single record from
	// dominating a page or a database round trip.
	MaxValueBytes = 4 << 20
	// MaxPageSize bounds List's limit so one call cannot pull a whole sandbox.
	MaxPageSize = 1000
	// MaxPageBytes bounds List's byte budget: a page stops before a value
	// that would take its values past the budget, so 1,000 records of 4 MiB
	// never end up in memory at once. A page still holds at least one
	// record, so a walk always progresses.
	MaxPageBytes = 32 << 20
)

// Record is one stored value.
type Record struct {
	ID      string
	Value   []byte // never nil; empty for an empty value
	Updated time.Time
}

// Usage is what an org stores.
type Usage struct {
	Records int64
	Bytes   int64 // of the values
}

// Plus returns u + v, field by field.
func (u Usage) Plus(v Usage) Usage {
	return Usage{Records: u.Records + v.Records, Bytes: u.Bytes + v.Bytes}
}

// Minus returns u - v, field by field.
func (u Usage) Minus(v Usage) Usage {
	return Usage{Records: u.Records - v.Records, Bytes: u.Bytes - v.Bytes}
}

// Page is one page of a List walk.
type Page struct {
	Records []Record
	// Next is the cursor for the following page; "" means this is the last
	// page. It is opaque: pass it back to List unchanged.
	Next string
}

// Backend stores records. Implementations are safe for concurrent use.
//
// Org, sandbox and id must be non-empty, valid UTF-8 without NUL bytes, and
// at most MaxIDBytes long; values at most MaxValueBytes. Violations return
// an error wrapping ErrInvalid before the database is touched. When ctx ends
// before an operation completes, the returned error wraps ctx.Err().
type Backend interface {
	// Upsert creates the record or replaces its value.
	Upsert(ctx context.Context, org, sandbox, id string, value []byte) error
	// Get returns the record, or an error wrapping ErrNotFound.
	Get(ctx context.Context, org, sandbox, id string) (Record, error)
	// Delete removes the record, or returns an error wrapping ErrNotFound.
	Delete(ctx context.Context, org, sandbox, id string) error
	// List returns up to limit (1..MaxPageSize) records of the sandbox with
	// ids after cursor ("" starts at the beginning), ordered by id bytes.
	// It stops before a record whose value would take the page's values
	// past maxBytes (1..MaxPageBytes), but always returns at least one
	// record when one follows the cursor. So a page may hold fewer than
	// limit records; only Next == "" marks the end.
	List(ctx context.Context, org, sandbox, cursor string, limit, maxBytes int) (Page, error)
	// Usage counts an org's records and the bytes of their values, over
	// all its sandboxes. It reads no values; its cost grows with the
	// number of the org's records.
	Usage(ctx context.Context, org string) (Usage, error)
	// DeleteOrg removes every record of an org (org deletion). Deleting an
	// org that has no records is not an error.
	DeleteOrg(ctx context.Context, org string) error
	// Close releases the backend's connections.
	Close() error
}

// checkName validates an org, sandbox or record id; what names it in errors.
func checkName(what, v string) error {
	switch {
	case v == "":
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	case len(v) > MaxIDBytes:
		return fmt.Errorf("%w: %s is %d bytes; at most %d are allowed", ErrInvalid, what, len(v), MaxIDBytes)
	case !utf8.ValidString(v):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, what)
	case strings.IndexByte(v, 0) >= 0:
		// PostgreSQL text cannot hold NUL; refuse it everywhere so both
		// backends accept the same ids.
		return fmt.Errorf("%w: %s contains a NUL byte", ErrInvalid, what)
	}
	return nil
}

func checkKey(org, sandbox, id string) error {
	if err := checkName("org", org); err != nil {
		return err
	}
	if err := checkName("sandbox", sandbox); err != nil {
		return err
	}
	return checkName("record id", id)
}

func checkValue(value []byte) error {
	if len(value) > MaxValueBytes {
		return fmt.Errorf("%w: value is %d bytes; at most %d (4 MiB) are allowed", ErrInvalid, len(value), MaxValueBytes)
	}
	return nil
}

// checkList validates List's arguments and returns the id to start after.
func checkList(org, sandbox, cursor string, limit, maxBytes int) (after string, err error) {
	if err := checkName("org", org); err != nil {
		return "", err
	}
	if err := checkName("sandbox", sandbox); err != nil {
		return "", err
	}
	if limit < 1 || limit > MaxPageSize {
		return "", fmt.Errorf("%w: page size is %d; it must be between 1 and %d", ErrInvalid, limit, MaxPageSize)
	}
	if maxBytes < 1 || maxBytes > MaxPageBytes {
		return "", fmt.Errorf("%w: page byte budget is %d; it must be between 1 and %d (32 MiB)", ErrInvalid, maxBytes, MaxPageBytes)
	}
	return decodeCursor(cursor)
}

// cursorPrefix versions the cursor format so it can change without
// misreading cursors handed out by an older release.
const cursorPrefix = "1."

func encodeCursor(lastID string) string {
	return cursorPrefix + base64.RawURLEncoding.EncodeToString([]byte(lastID))
}

func decodeCursor(cursor string) (string, error) {
	if cursor == "" {
		return "", nil
	}
	rest, ok := strings.CutPrefix(cursor, cursorPrefix)
	if !ok {
		return "", fmt.Errorf("%w: page cursor is malformed; pass back the Next value of the previous page", ErrInvalid)
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || checkName("cursor", string(b)) != nil {
		return "", fmt.Errorf("%w: page cursor is malformed; pass back the Next value of the previous page", ErrInvalid)
	}
	return string(b), nil
}

// pager assembles a page from rows read in id order; the backends query
// limit+1 rows so a page knows whether another one follows.
type pager struct {
	limit    int
	maxBytes int
	bytes    int
	page     Page
}

// add appends r and reports whether the caller should read another row.
// A row that does not fit (the page holds limit records, or r's value
// would take it past maxBytes) only sets Next.
func (p *pager) add(r Record) bool {
	if n := len(p.page.Records); n == p.limit || (n > 0 && p.bytes+len(r.Value) > p.maxBytes) {
		p.page.Next = encodeCursor(p.page.Records[n-1].ID)
		return false
	}
	p.page.Records = append(p.page.Records, r)
	p.bytes += len(r.Value)
	return true
}

// wrapCtx makes a driver error caused by a cancelled or expired context
// match ctx.Err() with errors.Is, whatever the driver returned.
func wrapCtx(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%s: %w (%v)", op, cerr, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func millis(t time.Time) int64 { return t.UnixMilli() }

func fromMillis(v int64) time.Time { return time.UnixMilli(v).UTC() }

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// gotRecord turns what a backend's point query returned into Get's result:
// missing means no row matched.
func gotRecord(ctx context.Context, org, sandbox, id string, value []byte, updated int64, missing bool, err error) (Record, error) {
	op := fmt.Sprintf("get profile record %s/%s/%s", org, sandbox, id)
	if missing {
		return Record{}, fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	if err != nil {
		return Record{}, wrapCtx(ctx, op, err)
	}
	return Record{ID: id, Value: nonNil(value), Updated: fromMillis(updated)}, nil
}

// deleted turns what a backend's delete returned into Delete's result.
func deleted(ctx context.Context, org, sandbox, id string, rows int64, err error) error {
	op := fmt.Sprintf("delete profile record %s/%s/%s", org, sandbox, id)
	if err != nil {
		return wrapCtx(ctx, op, err)
	}
	if rows == 0 {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	return nil
}

// rows is what both database drivers' query results offer.
type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// readPage reads a List query's rows (id, value, updated_at; limit+1 of
// them at most) into a page. It calls closeRows before it looks at the
// final error, as pgx requires when reading stops early.
func readPage(ctx context.Context, op string, rs rows, closeRows func(), limit, maxBytes int) (Page, error) {
	defer closeRows()
	pg := pager{limit: limit, maxBytes: maxBytes, page: Page{Records: make([]Record, 0, min(limit, 64))}}
	for rs.Next() {
		var r Record
		var updated int64
		if err := rs.Scan(&r.ID, &r.Value, &updated); err != nil {
			return Page{}, wrapCtx(ctx, op, err)
		}
		r.Value = nonNil(r.Value)
		r.Updated = fromMillis(updated)
		if !pg.add(r) {
			break
		}
	}
	closeRows()
	if err := rs.Err(); err != nil {
		return Page{}, wrapCtx(ctx, op, err)
	}
	return pg.page, nil
}
