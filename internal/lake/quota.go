package lake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cmk-project/cmk/internal/lake/blob"
	"github.com/cmk-project/cmk/internal/usage"
)

// Quota bounds what the lake stores. Zero fields take the defaults.
type Quota struct {
	// FileBytes bounds one file's plaintext (DefaultFileBytes).
	FileBytes int64
	// OrgBytes bounds the stored bytes of all of an org's files, over all
	// its sandboxes (DefaultOrgBytes).
	OrgBytes int64
	// UsageTTL is how long a count of what an org stores is trusted
	// (DefaultUsageTTL); see usageTracker.
	UsageTTL time.Duration
}

// Defaults of Quota.
const (
	// DefaultFileBytes: 64 GiB holds any single dataset file we expect
	// and stays well under what one Azure block blob can hold (50,000
	// blocks of 4 MiB, 195 GiB), so a large upload meets our limit, named
	// in the answer, before the store's.
	DefaultFileBytes = 64 << 30
	// DefaultOrgBytes keeps one org from filling the storage every org
	// shares: 1 TiB.
	DefaultOrgBytes = 1 << 40
	// DefaultUsageTTL: an org's files are counted again after a minute, so
	// other replicas' uploads count against its quota within one.
	DefaultUsageTTL = time.Minute
)

// WithDefaults returns q with its zero fields set to the defaults.
func (q Quota) WithDefaults() Quota {
	if q.FileBytes <= 0 {
		q.FileBytes = DefaultFileBytes
	}
	if q.OrgBytes <= 0 {
		q.OrgBytes = DefaultOrgBytes
	}
	if q.UsageTTL <= 0 {
		q.UsageTTL = DefaultUsageTTL
	}
	return q
}

// Errors of the quota, matched by a *LimitError.
var (
	ErrFileTooLarge = errors.New("file too large")
	ErrOrgFull      = errors.New("org has reached its lake storage")
)

// LimitError is an upload refused by the Quota; nothing was stored, and a
// file it was to replace is intact. errors.Is matches it to Err.
type LimitError struct {
	Err      error // ErrFileTooLarge or ErrOrgFull
	Limit    int64 // bytes
	Declared int64 // ErrFileTooLarge: the size the upload declared; -1 = it passed the limit while streaming
	Used     int64 // ErrOrgFull: what the org stores without this upload
}

func (e *LimitError) Error() string {
	if e.Err == ErrOrgFull {
		return fmt.Sprintf("%v: %d of %d bytes used", e.Err, e.Used, e.Limit)
	}
	return fmt.Sprintf("%v: the limit is %d bytes", e.Err, e.Limit)
}

func (e *LimitError) Unwrap() error { return e.Err }

// metered passes an upload's plaintext through, counting it against the
// file limit and claiming it from the org's quota as it is read, so a
// stream of unknown length stops at the first read past either. Its
// error ends the backend's Put, which then stores nothing.
type metered struct {
	ctx   context.Context
	r     io.Reader
	limit int64 // the file limit
	n     int64 // read so far
	claim *claim
}

func (m *metered) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	m.n += int64(n)
	if m.n > m.limit {
		return 0, &LimitError{Err: ErrFileTooLarge, Limit: m.limit, Declared: -1}
	}
	if cerr := m.claim.cover(m.ctx, m.n); cerr != nil {
		return 0, cerr
	}
	return n, err
}

// usageTracker knows what each org stores in the lake, for its quota
// (package usage holds the mechanism).
//
// The figure is the sum of the sizes the backend lists under the org,
// counted and kept, not a counter in the state store. The backend is the
// truth: a counter could not change atomically with an object (a crash
// between the two, or two overwrites of one file racing, would make it
// drift), and would need the old size of every replaced or deleted file.
// Listing an org is too slow to do per upload (a page of 5,000 objects per
// Azure request), so a count is trusted for UsageTTL, and this process
// adds its own uploads: each claims its bytes as it streams, so
// concurrent uploads cannot together pass the quota, and adds the bytes
// stored when it completes.
//
// A replaced or deleted file is not taken off (its size is unknown), so
// between counts the figure only errs high; a replacement needs room for
// both files until it completes in any case (the new one is staged beside
// the old). Before refusing an upload the lake counts again unless its
// count is under recountAfter old, so an upload is refused only on a
// fresh count, and room freed by deletes shows within recountAfter.
// Uploads through other replicas show at the next count: with several
// replicas an org can pass its quota by what the others store within
// UsageTTL.
type usageTracker struct {
	usage.Tracker[usage.Int]
}

// recountAfter is how old a count may be and still refuse an upload: it
// bounds how often an org uploading at its quota makes the lake list all
// its files.
const recountAfter = usage.RecountAfter

// forget drops what is known of an org (deleted).
func (t *usageTracker) forget(org string) { t.Forget(org) }

// claim is one upload's share of its org's quota.
type claim struct {
	c *usage.Claim[usage.Int]
	q Quota
}

func (t *usageTracker) claim(b blob.Backend, org string, q Quota) *claim {
	return &claim{c: t.Claim(org, q.UsageTTL, func(ctx context.Context) (usage.Int, error) {
		return count(ctx, b, org)
	}), q: q}
}

// grow claims n more bytes, counting the org first if its count is stale,
// or returns a *LimitError.
func (c *claim) grow(ctx context.Context, n int64) error {
	err := c.c.Grow(ctx, usage.Int(n), func(used, held usage.Int) error {
		if int64(used)+n <= c.q.OrgBytes {
			return nil
		}
		return &LimitError{Err: ErrOrgFull, Limit: c.q.OrgBytes, Used: int64(used - held)}
	})
	if errors.Is(err, usage.ErrEnded) {
		// A sealing goroutine reading on after its upload failed.
		return errClaimEnded
	}
	return err
}

// cover makes the claim at least total bytes.
func (c *claim) cover(ctx context.Context, total int64) error {
	more := total - int64(c.c.Held())
	if more <= 0 {
		return nil
	}
	return c.grow(ctx, more)
}

// end gives the claim back; stored is what the backend stored (0 when the
// upload failed).
func (c *claim) end(stored int64) { c.c.End(usage.Int(stored)) }

var errClaimEnded = errors.New("lake: upload already ended")

// count lists the org's files and sums their sizes.
func count(ctx context.Context, b blob.Backend, org string) (usage.Int, error) {
	objs, err := b.List(ctx, org+"/")
	if err != nil {
		return 0, fmt.Errorf("count the lake files of org %s: %w", org, err)
	}
	var sum int64
	for _, obj := range objs {
		sum += obj.Size
	}
	return usage.Int(sum), nil
}
